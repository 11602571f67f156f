"""One MLflow run's lifecycle, the same for every command that logs (training jobs, a sweep's
failed jobs, `runner.evaluate`): opened, then ended FINISHED, FAILED or KILLED by what happened.

MLflow on its own leaves a run RUNNING on SIGTERM and FINISHED after an uncaught exception
outside a `with` block; `open_run` ends every run itself, with the reason in its `error` tag,
and keeps the checkpoints of a run that failed or was interrupted.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import mlflow
from omegaconf import DictConfig, OmegaConf

from runner.core.interrupts import Terminated, install_sigterm, signal_name, signals_ignored
from runner.tracking.delivery import Delivery
from runner.tracking.experiments import use_experiment
from runner.tracking.outbox import Outbox
from runner.tracking.params import config_params
from runner.tracking.run_log import RunLog
from runner.tracking.store import is_remote

log = logging.getLogger(__name__)

PARENT_RUN_ENV = "RUNNER_PARENT_RUN_ID"  # set by a sweep so each job becomes a child run


@contextmanager
def open_run(
    cfg: DictConfig,
    *,
    run_name: str,
    tags: Mapping[str, str],
    output_dir: Path,
    params: Mapping[str, str] | None = None,
    checkpoint_dir: Path | None = None,
    run_id: str | None = None,
) -> Iterator[RunLog]:
    """One MLflow run in `cfg.logger`'s experiment, ended with a status that tells what
    happened. `params`: logged when the run starts (default: the whole config). In a sweep the
    run is a child of the sweep's parent run.

    With `run_id`, an existing run is resumed: back to RUNNING, its params left as logged (the
    config was checked to be the same). On failure or interruption the checkpoints written so
    far (`checkpoint_dir`) are logged to the run, so a crashed job keeps its best model.
    """
    logger = cfg.logger
    experiment_id = use_experiment(logger.tracking_uri, logger.experiment, logger.artifact_location)
    system_metrics = bool(OmegaConf.select(cfg, "logger.system_metrics", default=False))
    if system_metrics:
        from mlflow.system_metrics import set_system_metrics_sampling_interval

        set_system_metrics_sampling_interval(float(logger.system_metrics_interval))
    if run_id is None:
        run = mlflow.start_run(
            experiment_id=experiment_id,
            run_name=run_name,
            parent_run_id=os.environ.get(PARENT_RUN_ENV) or None,
            tags=dict(tags),
            log_system_metrics=system_metrics,
        )
    else:
        run = mlflow.start_run(run_id=run_id, log_system_metrics=system_metrics)
        mlflow.set_tags(dict(tags))
        stale = run.data.tags.get("error")
        if stale:  # why it ended last time: history now, not the run's state
            mlflow.set_tag("resumed_after", stale)
            mlflow.MlflowClient().delete_tag(run.info.run_id, "error")
    outbox = None
    if is_remote(logger.tracking_uri):
        outbox = Outbox(output_dir)
        outbox.open(run.info.run_id, logger.tracking_uri)
    run_log = RunLog(run, Delivery(run.info.run_id, outbox))
    previous_handler = install_sigterm()
    try:
        if run_id is None:
            mlflow.log_params(dict(config_params(cfg) if params is None else params))
        yield run_log
    except (KeyboardInterrupt, Terminated) as interrupt:
        _end(run_log, "KILLED", f"interrupted by {signal_name(interrupt)}", checkpoint_dir)
        raise
    except BaseException as error:
        recorded = _end(run_log, "FAILED", f"{type(error).__name__}: {error}", checkpoint_dir)
        try:
            error.run_logged = True  # type: ignore[attr-defined] - read by a sweep's handler
            if not recorded:  # read by the one line the command prints
                error.run_unmarked = run_log.run_id  # type: ignore[attr-defined]
        except AttributeError:
            pass
        raise
    else:
        run_log.delivery.end("FINISHED")
    finally:
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)
        run_log.delivery.close(logger.tracking_uri)


def _end(run_log: RunLog, status: str, reason: str, checkpoint_dir: Path | None) -> bool:
    """Status first, then the uploads: a second signal during a long upload cannot leave the
    run RUNNING. Only checkpoints that load and hold finite weights are uploaded. False when
    the status could not be recorded (the store's disk is full, say)."""
    recorded = True
    with signals_ignored():
        try:
            run_log.set_tag("error", reason)
            run_log.delivery.end(status)
            if run_log.delivery.outbox is None:
                _check_marked(run_log.run_id, status)
        except Exception as error:  # the original error matters more than a failed log
            mlflow.tracking.fluent._active_run_stack.get().clear()
            recorded = _mark_again(run_log, status, reason, error)
        if checkpoint_dir is not None:
            try:
                run_log.upload_checkpoints(checkpoint_dir)
            except Exception as error:
                log.error(
                    "could not upload the checkpoints of run %s: %s",
                    run_log.run_id,
                    one_line(error),
                )
                log.debug("the store's error", exc_info=True)
    return recorded


class Unmarked(Exception):
    """The store took the end of the run but still shows another status."""


def _check_marked(run_id: str, status: str) -> None:
    """Read the status back: an interruption that cut a store request half-way can leave the
    run RUNNING although `end_run` returned (seen once in CI, not reproduced since)."""
    found = mlflow.MlflowClient().get_run(run_id).info.status
    if found != status:
        raise Unmarked(f"run {run_id} is {found} after being ended {status}")


def _mark_again(run_log: RunLog, status: str, reason: str, error: Exception) -> bool:
    """A second try, through a client of its own: the first may have failed on what the
    interruption broke (a store request cut off half-way). False when the store refuses."""
    log.warning("marking run %s %s again after: %s", run_log.run_id, status, one_line(error))
    try:
        client = mlflow.MlflowClient()
        client.set_tag(run_log.run_id, "error", reason)
        client.set_terminated(run_log.run_id, status)
        _check_marked(run_log.run_id, status)
        return True
    except Exception as again:
        log.error("could not mark the run %s in MLflow: %s", status, one_line(error))
        log.debug("the store's errors: %s; then %s", error, again, exc_info=True)
        return False


def one_line(error: BaseException) -> str:
    """The error's first line (SQLAlchemy's go on with the statement and its parameters)."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:300]


def record_failed_job(cfg: DictConfig, error: BaseException) -> None:
    """A FAILED run for a sweep's job that failed before its own run was created: the error
    ends the run as any error inside one does."""
    from hydra.core.hydra_config import HydraConfig

    hydra = HydraConfig.get()
    try:
        with open_run(
            cfg,
            run_name=f"{cfg.model.name}-{cfg.data.name} #{hydra.job.num}",
            tags={"overrides": " ".join(hydra.overrides.task) or "(none)"},
            output_dir=Path(cfg.paths.output_dir),
        ):
            raise error
    except type(error):
        pass
