"""The MLflow side of a job: the run's lifecycle and honest status, params, metrics, artifacts.

MLflow on its own leaves a run RUNNING on SIGTERM and FINISHED after an uncaught exception
outside a `with` block; `tracked_run` ends every run as FINISHED, FAILED or KILLED itself.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException
from omegaconf import DictConfig, OmegaConf

from runner.interrupts import Terminated, install_sigterm, signal_name, signals_ignored

log = logging.getLogger(__name__)

MAX_PARAM_LENGTH = 6000  # MLflow cuts longer param values
PARENT_RUN_ENV = "RUNNER_PARENT_RUN_ID"  # set by a sweep so each job becomes a child run


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; lists stay values (MLflow params are strings)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def config_params(cfg: DictConfig) -> dict[str, str]:
    resolved = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    return {key: str(value)[:MAX_PARAM_LENGTH] for key, value in flatten(resolved).items()}


def git_tags(root: Path) -> dict[str, str]:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()

    try:
        return {
            "git_commit": git("rev-parse", "HEAD"),
            "git_dirty": str(bool(git("status", "--porcelain"))),
        }
    except (OSError, subprocess.SubprocessError):
        return {}


@contextmanager
def store_lock(tracking_uri: str) -> Iterator[None]:
    """An exclusive file lock beside a SQLite store while it may be created: MLflow's schema
    migration fails when two processes create one new database at the same moment."""
    if not tracking_uri.startswith("sqlite:///"):
        yield
        return
    database = Path(tracking_uri.removeprefix("sqlite:///"))
    database.parent.mkdir(parents=True, exist_ok=True)
    with open(database.with_name(database.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def use_experiment(tracking_uri: str, name: str, artifact_location: str | None) -> str:
    """Point MLflow at the store and return the experiment id, creating the experiment once."""
    mlflow.set_tracking_uri(tracking_uri)
    with store_lock(tracking_uri):
        return _use_experiment(name, artifact_location)


def _use_experiment(name: str, artifact_location: str | None) -> str:
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = None
    if artifact_location:
        location = (
            artifact_location
            if "://" in artifact_location
            else Path(artifact_location).absolute().as_uri()
        )
    try:
        return mlflow.create_experiment(name, artifact_location=location)
    except MlflowException:
        # Another job of a parallel sweep created it first.
        experiment = mlflow.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


@contextmanager
def tracked_run(
    cfg: DictConfig,
    *,
    run_name: str,
    tags: dict[str, str],
    checkpoint_dir: Path,
    run_id: str | None = None,
) -> Iterator[mlflow.ActiveRun]:
    """One MLflow run for one job, ended with a status that tells what happened.

    With `run_id`, an existing run is resumed: back to RUNNING, its params left as logged (the
    config was checked to be the same). On failure or interruption the checkpoints written so
    far are logged to the run, so a crashed job keeps its best model.
    """
    experiment_id = use_experiment(
        cfg.logger.tracking_uri, cfg.logger.experiment, cfg.logger.artifact_location
    )
    if run_id is None:
        run = mlflow.start_run(
            experiment_id=experiment_id,
            run_name=run_name,
            parent_run_id=os.environ.get(PARENT_RUN_ENV) or None,
            tags=tags,
        )
    else:
        run = mlflow.start_run(run_id=run_id)
        mlflow.set_tags(tags)
    previous_handler = install_sigterm()
    try:
        if run_id is None:
            mlflow.log_params(config_params(cfg))
        yield run
    except (KeyboardInterrupt, Terminated) as interrupt:
        _end_run(run, "KILLED", f"interrupted by {signal_name(interrupt)}", checkpoint_dir)
        raise
    except BaseException as error:
        _end_run(run, "FAILED", f"{type(error).__name__}: {error}", checkpoint_dir)
        try:
            error.run_logged = True  # type: ignore[attr-defined] - read by a sweep's handler
        except AttributeError:
            pass
        raise
    else:
        mlflow.end_run("FINISHED")
    finally:
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)


def _end_run(run: mlflow.ActiveRun, status: str, reason: str, checkpoint_dir: Path) -> None:
    """Status first, then the uploads: a second signal during a long upload cannot leave the
    run RUNNING. Only checkpoints that load and hold finite weights are uploaded."""
    run_id = run.info.run_id
    with signals_ignored():
        try:
            mlflow.set_tag("error", reason[:MAX_PARAM_LENGTH])
        except Exception:  # the original error matters more than a failed log
            log.exception("Could not record the end of the run in MLflow")
        mlflow.end_run(status)
        try:
            upload_checkpoints(run_id, checkpoint_dir)
        except Exception:
            log.exception("Could not upload the checkpoints of run %s", run_id)


def upload_checkpoints(run_id: str, checkpoint_dir: Path) -> None:
    from runner.checkpoints import check_checkpoint

    client = mlflow.MlflowClient()
    for path in sorted(checkpoint_dir.glob("*.keras")) if checkpoint_dir.is_dir() else []:
        problem = check_checkpoint(path)
        if problem:
            client.set_tag(run_id, "checkpoint", f"{path.name} not logged: {problem}")
            log.warning("checkpoint %s not logged: %s", path, problem)
        else:
            client.log_artifact(run_id, str(path), "checkpoints")


def record_failed_job(cfg: DictConfig, error: BaseException) -> None:
    """A FAILED run for a sweep's job that failed before its own run was created."""
    use_experiment(cfg.logger.tracking_uri, cfg.logger.experiment, cfg.logger.artifact_location)
    from hydra.core.hydra_config import HydraConfig

    hydra = HydraConfig.get()
    with mlflow.start_run(
        experiment_id=mlflow.get_experiment_by_name(cfg.logger.experiment).experiment_id,
        run_name=f"{cfg.model.name}-{cfg.data.name} #{hydra.job.num}",
        parent_run_id=os.environ.get(PARENT_RUN_ENV) or None,
        tags={
            "overrides": " ".join(hydra.overrides.task) or "(none)",
            "error": f"{type(error).__name__}: {error}"[:MAX_PARAM_LENGTH],
        },
    ):
        mlflow.log_params(config_params(cfg))
        mlflow.end_run("FAILED")


def log_epoch(metrics: Mapping[str, float], epoch: int) -> None:
    mlflow.log_metrics({name: float(value) for name, value in metrics.items()}, step=epoch)


def log_missing_epochs(run_id: str, history: Mapping[str, Sequence[float]]) -> int:
    """Send the epochs a killed run saved but did not get to log; returns how many values."""
    client = mlflow.MlflowClient()
    sent = 0
    for name, values in history.items():
        logged = {m.step for m in client.get_metric_history(run_id, name)}
        for step, value in enumerate(values):
            if step not in logged:
                mlflow.log_metric(name, float(value), step=step)
                sent += 1
    return sent


def set_tag(key: str, value: str) -> None:
    mlflow.set_tag(key, value[:MAX_PARAM_LENGTH])


def log_metrics(metrics: Mapping[str, float]) -> None:
    mlflow.log_metrics(dict(metrics))


def log_dataset(
    class_names: Sequence[str],
    input_shape: tuple,
    task: str,
    sizes: Mapping[str, int],
    digests: Mapping[str, str],
) -> None:
    """What the data turned out to be: sizes, shape, classes (as params and class_names.json),
    and a fingerprint of each split (tags `data.<split>_digest`: equal digests, equal splits)."""
    mlflow.set_tags({f"data.{split}_digest": value for split, value in digests.items()})
    mlflow.log_params(
        {
            **{f"data.size.{split}": size for split, size in sizes.items()},
            "data.input_shape": str(input_shape),
            "data.num_classes": len(class_names),
        }
    )
    mlflow.set_tag("task", task)
    mlflow.log_dict(list(class_names), "class_names.json")


def log_skipped(skipped: Sequence[Any]) -> None:
    """How many files were left out of the data, and which ones with the reason."""
    mlflow.log_metric("skipped_files", len(skipped))
    if skipped:
        mlflow.log_dict(
            [{"path": item.path, "reason": item.reason} for item in skipped],
            "data/skipped_files.json",
        )


def log_json(data: Any, artifact_file: str) -> None:
    mlflow.log_dict(data, artifact_file)


def log_text(text: str, artifact_file: str) -> None:
    mlflow.log_text(text, artifact_file)


def log_figure(figure: Any, artifact_file: str) -> None:
    mlflow.log_figure(figure, artifact_file)


def log_config(cfg: DictConfig, hydra_dir: Path) -> None:
    """Hydra's own files (composed config, overrides) and the fully resolved config."""
    for name in ("config.yaml", "overrides.yaml", "hydra.yaml"):
        if (hydra_dir / name).exists():
            mlflow.log_artifact(str(hydra_dir / name), "config")
    mlflow.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config/resolved.yaml")


def log_keras_model(model: Any, sample: Any, class_names: list[str]) -> None:
    """Log the model as an MLflow Keras model with an input signature and its class names."""
    import keras
    import tensorflow as tf
    from mlflow.models import infer_signature

    signature = infer_signature(sample, model.predict(sample, verbose=0))
    mlflow.keras.log_model(
        model,
        name="model",
        signature=signature,
        # Pinned here instead of inferred: inference re-loads the model in a subprocess.
        pip_requirements=[f"tensorflow=={tf.__version__}", f"keras=={keras.__version__}"],
        metadata={"class_names": class_names},
    )
