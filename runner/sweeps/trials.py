"""Optuna searches (`hydra/sweeper=optuna`): where a search's study lives, and a job's side of
its trial.

The sweeper (`hydra_plugins/runner_optuna_sweeper`) asks the study for trials and launches one
job per trial. It names the trial to the job through three environment variables (Hydra's
`hydra.job.env_set`), so a job in any process, or on any machine that reaches the storage,
reports each epoch's objective to its trial and stops when the pruner says so. A job returns
its objective as a `JobOutcome`, a float that also says how the job ended, so the sweeper can
tell the study COMPLETE, PRUNED or FAIL (with the reason), and any other sweeper still reads
a number.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from runner.sweeps.identity import sweep_key
from runner.tracking.store import project_store_uri, sqlite_file

STORAGE_ENV = "RUNNER_OPTUNA_STORAGE"
STUDY_ENV = "RUNNER_OPTUNA_STUDY"
TRIAL_ENV = "RUNNER_OPTUNA_TRIAL"
SWEEPER_TARGET = "hydra_plugins.runner_optuna_sweeper.optuna_sweeper.OptunaSweeper"


class JobOutcome(float):
    """A job's objective value, and how the job ended: COMPLETE, PRUNED or FAIL (`reason`)."""

    state: str
    reason: str

    def __new__(cls, value: float, state: str = "COMPLETE", reason: str = "") -> JobOutcome:
        outcome = super().__new__(cls, value)
        outcome.state, outcome.reason = state, reason
        return outcome

    def __reduce__(self) -> tuple:  # across processes (joblib, submitit, Ray)
        return (JobOutcome, (float(self), self.state, self.reason))


# ------------------------------------------------------------------------- where a study lives


@dataclass(frozen=True)
class StudyLocation:
    storage: str  # SQLAlchemy URL
    name: str

    @property
    def display(self) -> str:
        """The URL without its password, for logs and tags."""
        from sqlalchemy.engine import make_url

        return make_url(self.storage).render_as_string(hide_password=True)


def is_optuna_sweep(config: DictConfig) -> bool:
    return OmegaConf.select(config, "hydra.sweeper._target_", default="") == SWEEPER_TARGET


def default_storage(tracking_uri: str) -> str:
    """`optuna.db` beside the MLflow SQLite store; beside the project's local store when the
    runs go to a tracking server."""
    database = sqlite_file(tracking_uri) or sqlite_file(project_store_uri())
    assert database is not None  # the project's store is SQLite
    return f"sqlite:///{database.with_name('optuna.db')}"


def study_location(config: DictConfig) -> StudyLocation:
    """The study of a sweep: `hydra.sweeper.storage` and `.study_name`, else the defaults; the
    default name comes from the sweep's command line, so the same command finds its study."""
    sweeper = config.hydra.sweeper
    storage = sweeper.storage or default_storage(config.logger.tracking_uri)
    name = sweeper.study_name
    if not name:
        preset = OmegaConf.select(config, "hydra.runtime.choices.hparams_search", default=None)
        name = f"{preset or 'search'}-{sweep_key(list(config.hydra.overrides.task))}"
    return StudyLocation(storage=str(storage), name=str(name))


def open_storage(url: str) -> Any:
    """Optuna's RDB storage; SQLite waits for a lock instead of failing at once (several local
    sweepers share one file), and its folder is created."""
    import optuna

    database = sqlite_file(url)
    if database is not None:
        database.parent.mkdir(parents=True, exist_ok=True)
        engine = {"connect_args": {"timeout": 60}}
    else:
        engine = {"pool_pre_ping": True}
    return optuna.storages.RDBStorage(url, engine_kwargs=engine)


# ----------------------------------------------------------------------- a job's side of a trial


def job_trial() -> Any:
    """The Optuna trial this job runs, or None outside an Optuna sweep."""
    number = os.environ.get(TRIAL_ENV)
    if not number:
        return None
    import optuna
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import instantiate

    pruner_cfg = OmegaConf.select(HydraConfig.get(), "sweeper.pruner", default=None)
    storage = open_storage(os.environ[STORAGE_ENV])
    name = os.environ[STUDY_ENV]
    study = optuna.load_study(
        study_name=name, storage=storage, pruner=instantiate(pruner_cfg) if pruner_cfg else None
    )
    study_id = storage.get_study_id_from_name(name)
    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, int(number))
    return optuna.trial.Trial(study, trial_id)


def trial_tags() -> dict[str, str]:
    """Tags that link a job's MLflow run to its trial."""
    if not os.environ.get(TRIAL_ENV):
        return {}
    return {"optuna.study": os.environ[STUDY_ENV], "optuna.trial": os.environ[TRIAL_ENV]}


def reporter(trial: Any, monitor: str) -> Any:
    """A Keras callback reporting `monitor` to the trial each epoch; it stops training when
    the study's pruner says the trial is not worth finishing."""
    import keras

    class ReportToTrial(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.pruned_after: int | None = None  # epochs done when pruned
            self.why = ""

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            value = (logs or {}).get(monitor)
            if value is None or not math.isfinite(float(value)):
                return
            trial.report(float(value), step=epoch)
            if trial.should_prune():
                self.pruned_after = epoch + 1
                pruner = type(trial.study.pruner).__name__
                self.why = f"after epoch {epoch + 1} by {pruner}: {monitor}={float(value):.4g}"
                self.model.stop_training = True

    return ReportToTrial()


def outcome(value: float, reporter: Any = None) -> float:
    """The job's return value: its objective, PRUNED with the reason when the pruner stopped
    it."""
    if reporter is None or reporter.pruned_after is None:
        return JobOutcome(value)
    return JobOutcome(value, "PRUNED", f"pruned {reporter.why}")


def failed(value: float, reason: str) -> JobOutcome:
    return JobOutcome(value, "FAIL", reason)
