"""The MLflow side of a job: the run's lifecycle and honest status, params, metrics, artifacts.

MLflow on its own leaves a run RUNNING on SIGTERM and FINISHED after an uncaught exception
outside a `with` block; `tracked_run` ends every run as FINISHED, FAILED or KILLED itself.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException
from omegaconf import DictConfig, OmegaConf

from runner.checks import unreachable_server
from runner.errors import RunnerError
from runner.interrupts import Terminated, install_sigterm, signal_name, signals_ignored
from runner.locks import sqlite_lock
from runner.outbox import Outbox
from runner.store import is_remote, sqlite_file

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


SERVER_PATIENCE = {  # for a remote tracking server: fail in seconds, not minutes
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}


def use_experiment(tracking_uri: str, name: str, artifact_location: str | None) -> str:
    """Point MLflow at the store and return the experiment id, creating the experiment once.

    A tracking server that does not answer is reported in seconds, before any work: MLflow's
    own retries (about 4 minutes per call) are shortened unless the environment sets them.
    """
    mlflow.set_tracking_uri(tracking_uri)
    if is_remote(tracking_uri):
        for key, value in SERVER_PATIENCE.items():
            os.environ.setdefault(key, value)
        artifact_location = None  # the server decides where artifacts go (its proxy)
    elif artifact_location is None and (database := sqlite_file(tracking_uri)) is not None:
        artifact_location = str(database.parent / "artifacts")  # beside the database
    try:
        # MLflow's schema migration fails when two processes create one new SQLite database at
        # the same moment: a file lock beside it while it may be created.
        with sqlite_lock(tracking_uri):
            return _use_experiment(name, artifact_location)
    except RunnerError:
        raise
    except Exception as error:
        if is_remote(tracking_uri) and _unreachable(error):
            raise unreachable_server(tracking_uri) from error
        if "unable to open database file" in str(error) or isinstance(error, OSError):
            raise RunnerError(
                f"Cannot open the MLflow store {tracking_uri} ({type(error).__name__}): its "
                "folder must be a writable directory. Set logger.tracking_uri, "
                "MLFLOW_TRACKING_URI or RUNNER_ROOT to another place."
            ) from error
        raise


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


# ------------------------------------------------------------------- delivery to the server


@dataclass
class _Link:
    """The current run's connection to a remote tracking server (http), and its outbox."""

    run_id: str | None = None
    outbox: Outbox | None = None
    offline_since: float | None = None
    last_try: float = 0.0


_link = _Link()
RETRY_SECONDS = 5.0  # while the server is away, try it again at most this often


def _unreachable(error: BaseException) -> bool:
    """A server that does not answer (as opposed to one that refuses a request)."""
    import requests

    if isinstance(error, requests.exceptions.RequestException | ConnectionError | TimeoutError):
        return True
    text = str(error)
    return isinstance(error, MlflowException) and (
        "Max retries exceeded" in text or "Connection" in text or "timed out" in text
    )


def _deliver(send: Callable[[], Any], keep: Callable[[], dict[str, Any]]) -> None:
    """`send()` now; when the tracking server is away, `keep()` a record in the outbox instead
    (it is replayed, in order, once the server answers again)."""
    link = _link
    if link.outbox is None:  # no remote server: a local store's errors are real errors
        send()
        return
    if link.offline_since is not None and not _reconnect():
        link.outbox.add(keep())
        return
    try:
        send()
    except Exception as error:
        if not _unreachable(error):
            raise
        link.offline_since = link.last_try = time.monotonic()
        log.warning(
            "the tracking server %s does not answer; training goes on, and what it misses is "
            "kept in %s until it does", mlflow.get_tracking_uri(), link.outbox.folder,
        )  # fmt: skip
        link.outbox.add(keep())


def _reconnect(force: bool = False) -> bool:
    link = _link
    if not force and time.monotonic() - link.last_try < RETRY_SECONDS:
        return False
    link.last_try = time.monotonic()
    client = mlflow.MlflowClient()
    try:
        client.get_run(link.run_id)
        sent = link.outbox.send(client, link.run_id)
    except Exception as error:
        if not _unreachable(error):
            raise
        return False
    link.offline_since = None
    log.warning("the tracking server answers again: sent the %d record(s) it had missed", sent)
    return True


def _stage_text(text: str, artifact_file: str) -> dict[str, Any]:
    staged = _link.outbox.folder / "files" / f"{time.time_ns()}" / Path(artifact_file).name
    staged.parent.mkdir(parents=True, exist_ok=True)
    staged.write_text(text)
    return _artifact_record(staged, artifact_file)


def _artifact_record(staged: Path, artifact_file: str) -> dict[str, Any]:
    folder = str(Path(artifact_file).parent)
    return {
        "op": "artifact",
        "file": str(staged),
        "artifact_path": None if folder == "." else folder,
    }


def _close_link(tracking_uri: str) -> None:
    """At the end of a run: send what is pending if the server is back, and say where it is."""
    run_id, outbox = _link.run_id, _link.outbox
    try:
        if outbox is None or not outbox.pending():
            if outbox is not None:
                shutil.rmtree(outbox.folder, ignore_errors=True)
            return
        if _reconnect(force=True):
            print(f"[runner] the tracking server {tracking_uri} is back: everything was sent.")
            return
        print(
            f"[runner] the tracking server {tracking_uri} did not answer: {outbox.pending()} "
            f"record(s) of run {run_id} are kept in {outbox.folder}; send them with "
            f"`python -m runner.sync {outbox.folder.parent}` once it is back.",
            flush=True,
        )
    finally:
        _link.__init__()


# ------------------------------------------------------------------------------ the run


@contextmanager
def tracked_run(
    cfg: DictConfig,
    *,
    run_name: str,
    tags: dict[str, str],
    checkpoint_dir: Path,
    run_id: str | None = None,
    output_dir: Path | None = None,
) -> Iterator[mlflow.ActiveRun]:
    """One MLflow run for one job, ended with a status that tells what happened.

    With `run_id`, an existing run is resumed: back to RUNNING, its params left as logged (the
    config was checked to be the same). On failure or interruption the checkpoints written so
    far are logged to the run, so a crashed job keeps its best model.
    """
    output_dir = output_dir or checkpoint_dir.parent
    experiment_id = use_experiment(
        cfg.logger.tracking_uri, cfg.logger.experiment, cfg.logger.artifact_location
    )
    system_metrics = bool(OmegaConf.select(cfg, "logger.system_metrics", default=False))
    if system_metrics:
        from mlflow.system_metrics import set_system_metrics_sampling_interval

        set_system_metrics_sampling_interval(float(cfg.logger.system_metrics_interval))
    if run_id is None:
        run = mlflow.start_run(
            experiment_id=experiment_id,
            run_name=run_name,
            parent_run_id=os.environ.get(PARENT_RUN_ENV) or None,
            tags=tags,
            log_system_metrics=system_metrics,
        )
    else:
        run = mlflow.start_run(run_id=run_id, log_system_metrics=system_metrics)
        mlflow.set_tags(tags)
    if is_remote(cfg.logger.tracking_uri):
        _link.run_id, _link.outbox = run.info.run_id, Outbox(output_dir)
        _link.outbox.open(run.info.run_id, cfg.logger.tracking_uri)
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
        _end_status("FINISHED")
    finally:
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)
        _close_link(cfg.logger.tracking_uri)


def _end_status(status: str) -> None:
    """End the active run; if the server is away, its status waits in the outbox."""
    record = {"op": "status", "status": status}
    if _link.outbox is not None and _link.offline_since is not None and not _reconnect():
        _link.outbox.add(record)
        mlflow.tracking.fluent._active_run_stack.get().clear()  # ended here, sent later
        return
    _deliver(lambda: mlflow.end_run(status), lambda: record)  # end_run pops the run first


def _end_run(run: mlflow.ActiveRun, status: str, reason: str, checkpoint_dir: Path) -> None:
    """Status first, then the uploads: a second signal during a long upload cannot leave the
    run RUNNING. Only checkpoints that load and hold finite weights are uploaded."""
    run_id = run.info.run_id
    with signals_ignored():
        try:
            set_tag("error", reason)
            _end_status(status)
        except Exception:  # the original error matters more than a failed log
            log.exception("Could not record the end of the run in MLflow")
            mlflow.tracking.fluent._active_run_stack.get().clear()
        try:
            upload_checkpoints(run_id, checkpoint_dir)
        except Exception:
            log.exception("Could not upload the checkpoints of run %s", run_id)


def upload_checkpoints(run_id: str, checkpoint_dir: Path) -> None:
    from runner.checkpoints import check_checkpoint

    client = mlflow.MlflowClient()
    found = sorted(checkpoint_dir.glob("[!.]*.keras")) if checkpoint_dir.is_dir() else []
    for path in found:  # not a partial save (hidden name)
        problem = check_checkpoint(path)
        if problem:
            note = {"checkpoint": f"{path.name} not logged: {problem}"}
            _deliver(lambda n=note: client.set_tag(run_id, *next(iter(n.items()))),
                     lambda n=note: {"op": "tags", "values": n})  # fmt: skip
            log.warning("checkpoint %s not logged: %s", path, problem)
        else:
            _deliver(
                lambda p=path: client.log_artifact(run_id, str(p), "checkpoints"),
                lambda p=path: _artifact_record(_link.outbox.stage(p), f"checkpoints/{p.name}"),
            )


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
    values = {name: float(value) for name, value in metrics.items()}
    _deliver(
        lambda: mlflow.log_metrics(values, step=epoch),
        lambda: {"op": "metrics", "values": values, "step": epoch},
    )


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
    set_tags({key: value})


def set_tags(tags: Mapping[str, str]) -> None:
    values = {key: str(value)[:MAX_PARAM_LENGTH] for key, value in tags.items()}
    _deliver(lambda: mlflow.set_tags(values), lambda: {"op": "tags", "values": values})


def log_metrics(metrics: Mapping[str, float]) -> None:
    values = {name: float(value) for name, value in metrics.items()}
    _deliver(lambda: mlflow.log_metrics(values), lambda: {"op": "metrics", "values": values})


def log_dataset(
    class_names: Sequence[str],
    input_shape: tuple,
    task: str,
    sizes: Mapping[str, int],
    digests: Mapping[str, str],
) -> None:
    """What the data turned out to be: sizes, shape, classes (as params and class_names.json),
    and a fingerprint of each split (tags `data.<split>_digest`: equal digests, equal splits)."""
    set_tags({"task": task, **{f"data.{split}_digest": v for split, v in digests.items()}})
    params = {
        **{f"data.size.{split}": str(size) for split, size in sizes.items()},
        "data.input_shape": str(input_shape),
        "data.num_classes": str(len(class_names)),
    }
    _deliver(lambda: mlflow.log_params(params), lambda: {"op": "params", "values": params})
    log_json(list(class_names), "class_names.json")


def log_inputs(name: str, source: str, digests: Mapping[str, str], sizes: Mapping[str, int]):
    """The splits as MLflow dataset inputs (name, digest, source, size): the runs table's
    Dataset column, and runs comparable by the data they saw."""
    import warnings

    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        origin = resolve_dataset_source(source)
    contexts = {"train": "training", "val": "validation", "test": "testing"}
    datasets = [MetaDataset(origin, name=name, digest=digests[split]) for split in contexts]
    tags = [{"split": split, "size": str(sizes[split])} for split in contexts]
    try:
        mlflow.log_inputs(datasets, contexts=list(contexts.values()), tags_list=tags)
    except Exception as error:  # a description of the run, not worth failing it for
        if _link.outbox is None:
            raise
        log.warning("dataset inputs not logged (%s)", str(error).splitlines()[0][:120])


def log_skipped(skipped: Sequence[Any]) -> None:
    """How many files were left out of the data, and which ones with the reason."""
    log_metrics({"skipped_files": len(skipped)})
    if skipped:
        log_json(
            [{"path": item.path, "reason": item.reason} for item in skipped],
            "data/skipped_files.json",
        )


def log_json(data: Any, artifact_file: str) -> None:
    _deliver(
        lambda: mlflow.log_dict(data, artifact_file),
        lambda: _stage_text(json.dumps(data, indent=2), artifact_file),
    )


def log_text(text: str, artifact_file: str) -> None:
    _deliver(lambda: mlflow.log_text(text, artifact_file), lambda: _stage_text(text, artifact_file))


def log_files(path: Path, artifact_path: str = "") -> None:
    """A file, or every file under a folder (sub-folders kept), as artifacts under
    `artifact_path` ("": the run's root)."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        where = Path(artifact_path) / file.parent.relative_to(path) if path.is_dir() else None
        folder = str(where) if where is not None else artifact_path
        folder = "" if folder == "." else folder
        _deliver(
            lambda f=file, d=folder: mlflow.log_artifact(str(f), d or None),
            lambda f=file, d=folder: _artifact_record(
                _link.outbox.stage(f), f"{d}/{f.name}" if d else f.name
            ),
        )


def log_figure(figure: Any, artifact_file: str) -> None:
    def keep() -> dict[str, Any]:
        staged = _link.outbox.folder / "files" / f"{time.time_ns()}" / Path(artifact_file).name
        staged.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(staged)
        return _artifact_record(staged, artifact_file)

    _deliver(lambda: mlflow.log_figure(figure, artifact_file), keep)


def log_config(cfg: DictConfig, hydra_dir: Path) -> None:
    """Hydra's own files (composed config, overrides) and the fully resolved config."""
    for name in ("config.yaml", "overrides.yaml", "hydra.yaml"):
        path = hydra_dir / name
        if path.exists():
            _deliver(
                lambda p=path: mlflow.log_artifact(str(p), "config"),
                lambda p=path: _artifact_record(_link.outbox.stage(p), f"config/{p.name}"),
            )
    log_text(OmegaConf.to_yaml(cfg, resolve=True), "config/resolved.yaml")


def log_model(
    model: Any,
    sample: Any,
    class_names: list[str],
    register_as: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    serving: bool = False,
) -> None:
    """The run's model (registered as a new version of `register_as`, if set); kept as a
    `.keras` file (and sample) while the server is away."""

    def send() -> None:
        info = log_keras_model(model, sample, class_names, metadata)
        if serving:
            log_serving_model(model, class_names, metadata)
        if register_as:
            version = mlflow.register_model(info.model_uri, register_as)
            mlflow.set_tag("registered_model", f"{register_as} version {version.version}")

    def keep() -> dict[str, Any]:
        import numpy as np

        folder = _link.outbox.folder / "files" / "model"
        folder.mkdir(parents=True, exist_ok=True)
        model.save(folder / "model.keras")
        np.save(folder / "sample.npy", np.asarray(sample))
        return {"op": "model", "file": str(folder / "model.keras"),
                "sample": str(folder / "sample.npy"), "class_names": list(class_names)}  # fmt: skip

    _deliver(send, keep)


def log_serving_model(
    model: Any, class_names: list[str], metadata: Mapping[str, Any] | None = None
) -> Any:
    """The same model for `mlflow models serve`, also taking encoded image files (base64):
    runner/serving_model.py, logged as an MLflow model from code (no pickle)."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        keras_file, classes = Path(folder) / "model.keras", Path(folder) / "classes.json"
        model.save(keras_file)
        classes.write_text(json.dumps({"class_names": list(class_names), **(metadata or {})}))
        return _log_serving(keras_file, classes)


def _log_serving(keras_file: Path, classes: Path) -> Any:
    import keras
    import tensorflow as tf

    from runner import serving_model

    return mlflow.pyfunc.log_model(
        name="serving",
        python_model=serving_model.__file__,
        artifacts={"keras_model": str(keras_file), "classes": str(classes)},
        pip_requirements=[
            f"tensorflow=={tf.__version__}",
            f"keras=={keras.__version__}",
            "pandas",
            "numpy",
        ],
    )


def log_keras_model(
    model: Any, sample: Any, class_names: list[str], metadata: Mapping[str, Any] | None = None
) -> Any:
    """Log the model as an MLflow Keras model with an input signature and its class names."""
    import keras
    import numpy as np
    import tensorflow as tf
    from mlflow.models import infer_signature

    # The output's shape and dtype, symbolically: no prediction (no tracing) for the signature.
    sample = np.asarray(sample)
    output = model.compute_output_spec(keras.KerasTensor(sample.shape, dtype=str(sample.dtype)))
    signature = infer_signature(sample, np.zeros(output.shape, dtype=output.dtype))
    return mlflow.keras.log_model(
        model,
        name="model",
        signature=signature,
        # Pinned here instead of inferred: inference re-loads the model in a subprocess.
        pip_requirements=[f"tensorflow=={tf.__version__}", f"keras=={keras.__version__}"],
        metadata={"class_names": class_names, **(metadata or {})},
    )
