"""What a user reads at the end of a job (stage 8): the test metrics, the MLflow run and where
its artifacts are, how to open the UI; after Ctrl-C or SIGTERM, where it stopped and the
command that continues it; and the line of a resumed run."""

from __future__ import annotations

from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from runner.core.errors import Interrupted
from runner.core.interrupts import signal_name
from runner.tracking.run_log import RunLog
from runner.tracking.store import is_remote, run_link
from runner.training import resume


def print_summary(
    run_log: RunLog, test_metrics: dict[str, float], output_dir: Path, cfg: DictConfig, device: str
) -> None:
    metrics = "  ".join(f"{name}={value:.4f}" for name, value in sorted(test_metrics.items()))
    uri = cfg.logger.tracking_uri
    run_id, experiment_id = run_log.run_id, run_log.info.experiment_id
    link = run_link(uri, experiment_id, run_id)
    if is_remote(uri):  # the team's server: its own address
        opener = f"[runner] open the UI: {link}"
    else:
        ui = f"mlflow ui --backend-store-uri {uri}" if uri.startswith("sqlite:") else uri
        opener = f"[runner] open the UI: `make ui` or `{ui}`, then {link}"
    print(
        f"\n[runner] done on {device} with {cfg.backend}: {metrics}\n"
        f"[runner] MLflow run {run_id} (experiment '{cfg.logger.experiment}', id {experiment_id})\n"
        f"[runner] artifacts: {run_log.info.artifact_uri}\n"
        f"[runner] outputs (config, checkpoints, log): {output_dir.resolve()}\n{opener}",
        flush=True,
    )


def announce_resume(run_log: RunLog, progress: resume.Progress, output_dir: Path) -> None:
    sent = run_log.log_missing_epochs(progress.history)
    print(
        f"[runner] resuming run {run_log.run_id} at epoch {progress.epochs_done + 1} "
        f"(job folder {output_dir})"
        + (f"; sent {sent} metric value(s) it had not logged" if sent else ""),
        flush=True,
    )


def interrupted(
    interrupt: BaseException,
    *,
    run_id: str | None,
    progress: resume.Progress | None,
    total_epochs: int,
    output_dir: Path,
    last_phase: int = 1,
) -> Interrupted:
    """The one line a user reads after Ctrl-C or SIGTERM: where it stopped, what was kept, and
    the command that continues it."""
    name = signal_name(interrupt)
    at = ""
    trained = progress is not None and (
        progress.epochs_done >= total_epochs
        or (progress.phase_complete and progress.phase >= last_phase)  # stopped early
    )
    if progress and trained:  # while choosing weights, evaluating and logging
        done = min(progress.epochs_done, total_epochs)
        at = f" after training ended (epoch {done}/{total_epochs})"
    elif progress:
        at = f" at epoch {progress.epochs_done + 1}/{total_epochs}"
    best = output_dir / "checkpoints" / "best.keras"
    kept = f"; checkpoint kept at {best}" if best.exists() else ""
    if run_id is None:
        return Interrupted(name, f"interrupted by {name}{at}; no MLflow run was started yet")
    overrides = [o for o in HydraConfig.get().overrides.task if not o.startswith("trainer.resume")]
    command = " ".join(["python -m runner", *overrides, f"trainer.resume={run_id}"])
    return Interrupted(
        name, f"interrupted by {name}{at}{kept}; run {run_id} is KILLED; resume with: {command}"
    )
