"""Resuming a run: per-epoch state in the job folder, and finding the run to continue.

After every epoch `EpochState` writes `<output_dir>/resume/`: the weights of the model being fit
with its optimizer's variables (Keras' `save_weights`), and `state.json` with the epoch counter,
the metric history and the early-stopping and checkpoint callbacks' bests. Every file is written
under a temporary name and renamed, and `state.json` names the weights file it belongs to, so a
run killed at any moment (SIGKILL included) leaves the last complete epoch behind. Data order
and augmentation depend on (seed, epoch) only (`runner.data.pipeline.training_batches`), so the
resumed run sees the batches an uninterrupted run would have seen.

`trainer.resume=<run id | output dir | true>` picks the run: `true` is the latest unfinished
run with the same config (the same job of the same sweep, in a sweep).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from runner.config.checks import wants_resume
from runner.config.schema import Mode
from runner.core.errors import RunnerError

STATE_DIR = "resume"
STATE_FILE = "state.json"
PREVIOUS_STATE_FILE = "previous-state.json"  # the epoch before: a fallback if files are damaged
CONFIG_FILE = "config.json"
# Keys that may differ between a run and its resumption.
IGNORED_KEYS = ("trainer.resume", "paths.output_dir", "trainer.verbose", "logger.run_name")
LATEST = ("true", "latest")
log = logging.getLogger("runner.resume")


# ------------------------------------------------------------------------------ the config


def comparable_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config, flattened, without the keys a resumption may change."""
    from runner.tracking.params import flatten

    resolved = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    flat = flatten(resolved)
    return {key: flat[key] for key in sorted(flat) if key not in IGNORED_KEYS}


def config_digest(config: dict[str, Any]) -> str:
    canonical = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def differing_keys(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    keys = sorted(set(saved) | set(current))
    return [
        f"{key}: {saved.get(key, '(absent)')!r} -> {current.get(key, '(absent)')!r}"
        for key in keys
        if json.dumps(saved.get(key), default=str) != json.dumps(current.get(key), default=str)
    ]


# ------------------------------------------------------------------------- the job folder


@dataclass
class Progress:
    """What `state.json` holds: where training stands after the last complete epoch."""

    run_id: str
    phase: int = 1  # 2: the fine-tuning phase of a pretrained backbone
    epochs_done: int = 0  # epochs completed over all phases (the next epoch's index)
    phase_start: int = 0  # first epoch of the current phase
    phase_complete: bool = False  # early stopping ended it, or it ran all its epochs
    weights: str | None = None  # file in resume/ holding the fit model's weights and optimizer
    early_stopping: dict[str, Any] = field(default_factory=dict)
    best_weights: str | None = None  # early stopping's best weights (.npz of arrays)
    checkpoint_best: float | None = None
    plateau: dict[str, Any] = field(default_factory=dict)  # ReduceLROnPlateau's counters
    history: dict[str, list[float]] = field(default_factory=dict)


def state_dir(output_dir: Path) -> Path:
    return output_dir / STATE_DIR


def write_json(path: Path, data: Any) -> None:
    """Atomically: a reader (or a killed writer) never sees half a file."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(data, indent=1, default=str))
    os.replace(temporary, path)


def save_config(output_dir: Path, config: dict[str, Any], run_id: str) -> None:
    folder = state_dir(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / CONFIG_FILE, {"run_id": run_id, "config": config})


def load_progress(output_dir: Path) -> Progress | None:
    """The last state whose files all read back; the one before it when the last is damaged
    (a disk or a copy that cut a file), said in one line. None: no state, a run not started."""
    folder = state_dir(output_dir)
    latest, previous = folder / STATE_FILE, folder / PREVIOUS_STATE_FILE
    if not latest.exists() and not previous.exists():
        return None
    problems = []
    for path in (latest, previous):
        if not path.exists():
            continue
        try:
            progress = Progress(**json.loads(path.read_text()))
            check_state_files(folder, progress)
        except (ValueError, TypeError, OSError) as error:
            problems.append(f"{path.name}: {' '.join(str(error).split())[:200]}")
            continue
        if problems:
            log.warning(
                "resume: the last saved state is damaged (%s); resuming from the one before, "
                "after epoch %d (the epochs after it are trained again, and logged again)",
                "; ".join(problems),
                progress.epochs_done,
            )
        return progress
    raise RunnerError(
        f"The resume state in {folder} is damaged ({'; '.join(problems)}). Delete {folder} to "
        "start the run's training over, or resume another run."
    )


def check_state_files(folder: Path, progress: Progress) -> None:
    """Every array of the state's weight files reads back (a cut HDF5 or npz file does not)."""
    import h5py
    import numpy as np

    if progress.weights:
        with h5py.File(folder / progress.weights, "r") as weights:
            weights.visititems(lambda _, item: item[()] if isinstance(item, h5py.Dataset) else None)
    if progress.best_weights:
        with np.load(folder / progress.best_weights, allow_pickle=False) as arrays:
            for name in arrays.files:
                arrays[name]


def saved_config(output_dir: Path) -> dict[str, Any] | None:
    path = state_dir(output_dir) / CONFIG_FILE
    return json.loads(path.read_text()) if path.exists() else None


def remove_state(output_dir: Path) -> None:
    shutil.rmtree(state_dir(output_dir), ignore_errors=True)


# ---------------------------------------------------------------------- finding the run


@dataclass
class Target:
    """The run to continue (run_id, output_dir), or a finished one to leave alone."""

    run_id: str
    output_dir: Path
    finished: bool = False
    progress: Progress | None = None


def process_alive(tags: dict[str, str]) -> bool:
    """Whether the process that last ran this run still runs (on this host; elsewhere unknown,
    taken as alive)."""
    if tags.get("runner.host") != socket.gethostname():
        return "runner.host" in tags
    try:
        pid = int(tags.get("runner.pid", ""))
    except ValueError:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    cmdline = Path(f"/proc/{pid}/cmdline")
    return not cmdline.exists() or b"runner" in cmdline.read_bytes()


def requested_target(cfg: DictConfig) -> Target | None:
    """The run `trainer.resume` names, checked (another config is refused); None for a new run.
    MLflow only, no TensorFlow: a refusal or a finished run costs a second, not an import."""
    wanted = cfg.trainer.resume
    if not wants_resume(wanted):
        return None
    from mlflow import MlflowClient

    from runner.tracking.experiments import use_experiment
    from runner.tracking.run import PARENT_RUN_ENV

    experiment_id = use_experiment(
        cfg.logger.tracking_uri, cfg.logger.experiment, cfg.logger.artifact_location
    )
    client = MlflowClient(tracking_uri=cfg.logger.tracking_uri)
    parent = os.environ.get(PARENT_RUN_ENV) or None
    target = find_target(cfg, client, experiment_id, parent)
    if target is None:
        log.info("trainer.resume=%s: no unfinished run with this config; starting one", wanted)
    return target


def finished_objective(cfg: DictConfig, target: Target) -> float:
    """What a job whose run already FINISHED returns to its sweep: its best objective value."""
    from mlflow import MlflowClient

    run = MlflowClient(tracking_uri=cfg.logger.tracking_uri).get_run(target.run_id)
    folder = f" (its job folder: {target.output_dir})" if run.data.tags.get("output_dir") else ""
    message = f"[runner] run {target.run_id} is already FINISHED: nothing to resume{folder}."
    print(message, flush=True)
    mode = Mode(cfg.objective.mode)
    metric = cfg.objective.metric or run.data.tags.get("objective_metric", "val_accuracy")
    worst = float("-inf") if mode is Mode.max else float("inf")
    return float(run.data.metrics.get(f"best_{metric}", worst))


def find_target(
    cfg: DictConfig, client: Any, experiment_id: str, parent_id: str | None
) -> Target | None:
    """The run `trainer.resume` asks for; None: nothing to resume, start a new run."""
    wanted = str(cfg.trainer.resume)
    current = comparable_config(cfg)
    digest = config_digest(current)
    if wanted.lower() in LATEST:
        run = _latest_same_config(client, experiment_id, parent_id, digest)
        if run is None:
            return None
    elif Path(wanted).expanduser().is_dir():
        saved = saved_config(Path(wanted).expanduser())
        if saved is None:
            raise RunnerError(
                f"trainer.resume={wanted}: this folder holds no resume state "
                f"({STATE_DIR}/{CONFIG_FILE}); it is not a runner job folder, or its run "
                "finished and its state was removed."
            )
        run = _get_run(client, saved["run_id"], wanted)
    else:
        run = _get_run(client, wanted, wanted)
    if run.data.tags.get("evaluation") == "true":
        raise RunnerError(
            f"Run {run.info.run_id} is an evaluation run (runner.evaluate), not a training run: "
            "nothing to resume."
        )
    if run.data.tags.get("sweep") == "parent":
        raise RunnerError(
            f"Run {run.info.run_id} is a sweep's parent run, not a training run: resume the "
            "sweep with `python -m runner -m <its overrides> trainer.resume=true`."
        )
    output_dir = Path(run.data.tags.get("output_dir", ""))
    if run.info.status == "FINISHED":
        # Its resume state is gone: its config is read back from the run (digest, params).
        if run.data.tags.get("config_digest", digest) != digest:
            raise RunnerError(
                f"Run {run.info.run_id} FINISHED with another config: nothing to resume, and "
                "these overrides would train something else (drop trainer.resume to start a "
                "new run). Differing keys: " + "; ".join(_differing_params(run, cfg, current))
            )
        return Target(run.info.run_id, output_dir, finished=True)
    if run.info.status == "RUNNING" and process_alive(run.data.tags):
        raise RunnerError(
            f"Run {run.info.run_id} is still running (process {run.data.tags.get('runner.pid')} "
            f"on {run.data.tags.get('runner.host')}). Stop it first, or if it is gone, mark it "
            "with `python -m runner.runs --mark-killed`."
        )
    saved = saved_config(output_dir)
    if saved is None:
        raise RunnerError(
            f"Run {run.info.run_id} has no resume state in {output_dir}/{STATE_DIR}/: its job "
            "folder was moved or deleted. Start a new run instead."
        )
    differences = differing_keys(saved["config"], current)
    if differences:
        raise RunnerError(
            f"Run {run.info.run_id} was started with another config; resume it with the same "
            "overrides. Differing keys: " + "; ".join(differences)
        )
    return Target(run.info.run_id, output_dir, progress=load_progress(output_dir))


def _differing_params(run: Any, cfg: DictConfig, current: dict[str, Any]) -> list[str]:
    """The compared config keys whose value differs from the run's params: this config as it
    would be logged (`tracking.config_params`) against the config as it was."""
    from runner.tracking.params import config_params

    logged = run.data.params
    ours = {k: v for k, v in config_params(cfg).items() if k in current and k in logged}
    return differing_keys({key: logged[key] for key in ours}, ours) or ["(not among its params)"]


def _get_run(client: Any, run_id: str, wanted: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id)
    except MlflowException:
        raise RunnerError(
            f"trainer.resume={wanted} is neither a run id in this tracking store nor a job "
            "folder. Use a run id (`python -m runner.runs` lists them), a job folder under "
            "outputs/, or true for the latest unfinished run with this config."
        ) from None


def _latest_same_config(
    client: Any, experiment_id: str, parent_id: str | None, digest: str
) -> Any | None:
    query = f"tags.config_digest = '{digest}'"
    if parent_id:
        query += f" and tags.mlflow.parentRunId = '{parent_id}'"
    runs = client.search_runs(
        [experiment_id], filter_string=query, order_by=["attributes.start_time DESC"]
    )
    unfinished = [r for r in runs if r.info.status != "FINISHED"]
    resumable = [r for r in unfinished if saved_config(Path(r.data.tags.get("output_dir", "")))]
    if resumable:
        return resumable[0]
    finished = [r for r in runs if r.info.status == "FINISHED"]
    return finished[0] if finished else None


def process_tags() -> dict[str, str]:
    return {"runner.pid": str(os.getpid()), "runner.host": socket.gethostname()}
