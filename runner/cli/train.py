"""`python -m runner [group=option ...] [key=value ...]`: compose the config, run one job.

TensorFlow is imported only once Hydra has composed and validated the config, so a typo on the
command line is reported in a moment, not after seconds of imports.

What a user sees when a job cannot go on is one line on stderr; the traceback goes to the job's
log file (`runner.log` in its folder). Exit codes: 2 a problem the runner reports (config, data,
environment), 130 SIGINT, 143 SIGTERM, 1 anything else (and Hydra's own command-line errors).
"""

from __future__ import annotations

import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from runner.cli.app import CONF_DIR, USER_ERROR, stop
from runner.cli.quick_exit import skip_final_collection
from runner.config.checks import check_config
from runner.config.migrate import migrate_argv
from runner.config.schema import Mode, register_configs
from runner.core import backend
from runner.core.errors import Interrupted, RunnerError, environment_problem
from runner.core.interrupts import Terminated, install_sigterm
from runner.core.joblog import to_log_file
from runner.tracking.experiments import check_tracking_server

register_configs()
log = logging.getLogger("runner")


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def main(cfg: DictConfig) -> float | None:
    skip_final_collection()  # here too: joblib, submitit and Ray run jobs in processes of theirs
    in_sweep = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        check_config(cfg)  # before TensorFlow: a bad value costs a second, not an import
        check_tracking_server(cfg.logger.tracking_uri)
        # Before Keras is imported (it fixes its backend then); the name `auto` stood for is
        # what the run logs.
        cfg.backend = backend.select(cfg.backend)
        from runner.training import resume  # MLflow, not yet TensorFlow

        target = resume.requested_target(cfg)  # another config is refused here, in a second
        quiet_libraries()
        if target is not None and target.finished:
            return resume.finished_objective(cfg, target)
        from runner.training.job import run  # heavy: Keras and its backend

        quiet_libraries()
        return run(cfg, target)
    except Interrupted as interrupt:
        stop(interrupt.message, interrupt, interrupt.exit_code)
    except (KeyboardInterrupt, Terminated) as interrupt:  # before a run existed
        name = "SIGINT" if isinstance(interrupt, KeyboardInterrupt) else interrupt.signal_name
        stop(
            f"interrupted by {name} before training started",
            interrupt,
            Interrupted(name, "").exit_code,
        )
    except Exception as error:
        if in_sweep:
            return _failed_job(cfg, error)
        problem = environment_problem(error)
        if problem is not None:
            stop(f"error: {problem}{unmarked_note(error)}", error, USER_ERROR)
        if not isinstance(error, RunnerError):
            raise
        stop(f"error: {error}", error, USER_ERROR)
    return None


def unmarked_note(error: BaseException) -> str:
    """What the line adds when the run's end could not be recorded (a full store disk)."""
    run_id = getattr(error, "run_unmarked", None)
    if run_id is None:
        return ""
    return (
        f" Run {run_id} could not be marked FAILED and shows RUNNING: once the store can be "
        "written, `python -m runner.runs --mark-killed` marks it."
    )


def quiet_libraries() -> None:
    """Warnings and errors only from chatty libraries; again after an import that sets its
    own levels (MLflow does)."""
    for noisy in ("alembic", "mlflow", "absl"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.ERROR)  # retries: the runner reports them
    # MLflow logs a store's database error with its traceback, then raises it: the runner
    # reports what it raises, in one line.
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)


def _failed_job(cfg: DictConfig, error: Exception) -> float:
    """A sweep goes on past a failed job, which it counts: a job that failed before its MLflow
    run existed gets a FAILED run with the reason, like the others."""
    to_log_file(f"job failed: {error}", error)
    log.error("job failed: %s", error)
    if not getattr(error, "run_logged", False):
        try:
            from runner.tracking.run import record_failed_job

            record_failed_job(cfg, error)
        except Exception as tracking_error:  # the failure itself matters more
            log.warning("could not record the failed job in MLflow: %s", tracking_error)
    # The worst possible value (an exception would end a basic sweep at its first failed job),
    # marked FAIL with the reason: the Optuna sweeper records a FAIL trial.
    from runner.sweeps.trials import failed

    return failed(
        float("-inf") if Mode(cfg.objective.mode) is Mode.max else float("inf"), str(error)
    )


def entry() -> None:
    skip_final_collection()
    install_sigterm()
    migrate_argv()
    try:
        main()
    except (KeyboardInterrupt, Terminated) as interrupt:  # between a sweep's jobs, say
        name = "SIGINT" if isinstance(interrupt, KeyboardInterrupt) else interrupt.signal_name
        print(f"interrupted by {name}", file=sys.stderr, flush=True)
        sys.exit(Interrupted(name, "").exit_code)
