"""One job, as named stages a reader follows top to bottom:

    runtime -> data -> model -> fit -> choose weights -> evaluate -> log -> summary

each a module of this package (runtime.py, inputs.py, building.py, fit.py, weights.py,
runner/evaluation/test_split.py, results.py, summary.py) with its inputs and outputs passed
explicitly. The model's own phases (runner/models/phases.py) decide how `fit` runs; the MLflow
run (runner/tracking/run.py) ends FINISHED, FAILED or KILLED by what happened.
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from runner import models
from runner.augmentation import normalize
from runner.augmentation import transforms as augment
from runner.config.checks import check_config
from runner.config.schema import Mode
from runner.core import backend
from runner.core.interrupts import Terminated
from runner.evaluation.test_split import evaluate
from runner.models.phases import training_phases
from runner.sweeps import trials
from runner.tracking.run import open_run
from runner.tracking.run_log import QuietRunLog, RunLog
from runner.training import (
    building,
    callbacks,
    distribution,
    fit,
    identity,
    inputs,
    results,
    resume,
    runtime,
    summary,
    weights,
)

log = logging.getLogger(__name__)


def run(cfg: DictConfig, target: resume.Target | None) -> float:
    """Train and evaluate one configuration; return the objective (best `objective.metric`).
    `target`: the unfinished run to resume (`resume.requested_target`), None for a new run."""
    check_config(cfg)  # also done before TensorFlow is imported; cheap, and run() stands alone
    cfg.backend = backend.select(cfg.backend)  # `auto` logs the name it stands for, here too
    models.validate(cfg.model, normalizing=normalize.is_active(cfg.augmentation))
    # Before the run exists: no network and no cached file is a config problem, not a failed run.
    initial_weights = models.weights_file(cfg.model, Path(cfg.paths.data_dir).expanduser())
    # A resumed run keeps training in its own job folder (checkpoints, resume state).
    output_dir = target.output_dir if target else Path(cfg.paths.output_dir)
    checkpoint_dir = output_dir / "checkpoints"
    phases = training_phases(
        cfg.model, epochs=cfg.trainer.epochs, augmented=augment.is_active(cfg.augmentation)
    )
    run_id = target.run_id if target else None
    progress = target.progress if target else None

    job_runtime = runtime.configure(cfg)  # 1. runtime
    batch_size = job_runtime.global_batch(cfg.trainer.batch_size)
    if not job_runtime.is_chief:
        return _train_beside_chief(cfg, job_runtime, phases, initial_weights, batch_size)
    config = resume.comparable_config(cfg)
    tags = identity.job_tags(cfg, job_runtime, output_dir, resume.config_digest(config))
    try:
        with open_run(
            cfg,
            run_name=identity.run_name(cfg),
            tags=tags,
            output_dir=output_dir,
            checkpoint_dir=checkpoint_dir,
            run_id=run_id,
        ) as run_log:
            run_id = run_log.run_id
            progress = _progress(run_log, target, output_dir, config)
            run_log.log_config(cfg, Path(cfg.paths.output_dir) / ".hydra")

            splits = inputs.load(cfg, run_log)  # 2. data

            with (
                job_runtime.scope(),  # the model lives on every replica
                distribution.peers_watched(job_runtime),
            ):
                built = building.build(  # 3. model
                    cfg,
                    splits.info,
                    initial_weights,
                    checkpoint_dir,
                    run_log,
                    steps_per_epoch=fit.steps_per_epoch(len(splits.train), batch_size),
                    train=splits.train,
                    validation=len(splits.val),
                )
                run_callbacks = callbacks.build(
                    cfg, built.model, output_dir, built.objective_metric
                )
                run_callbacks.trial = _trial_reporter(run_log, built.objective_metric)
                history = fit.fit(  # 4. fit
                    cfg,
                    built.model,
                    splits,
                    phases=phases,
                    batch_size=batch_size,
                    output_dir=output_dir,
                    progress=progress,
                    run_callbacks=run_callbacks,
                    run_log=run_log,
                )
            _log_pruned(run_log, run_callbacks.trial)
            trained = built.model
            if job_runtime.num_processes > 1:  # the other processes stop here
                with distribution.peers_watched(job_runtime):
                    run_log.set_tag("weights_digest", distribution.agreed_weights(trained))
                trained = distribution.leave(trained, copy=True)
            for path, folder in callbacks.files_to_log(output_dir):
                run_log.log_files(path, folder)

            monitor = callbacks.checkpoint_monitor(cfg, built.objective_metric)
            best = weights.choose(  # 5. choose the weights
                cfg, trained, checkpoint_dir, history, monitor, run_log
            )
            building.compile_to_evaluate(best, splits.info)  # it trains no further

            test_metrics = evaluate(  # 6. evaluate
                best,
                splits,
                run_log,
                batch_size=batch_size,
                threshold=built.metadata["threshold"],
                title=f"{cfg.model.name} on {splits.info.name}",
                tta=cfg.evaluate.tta,
            )

            results.log_learning_curves(run_log, history, cfg, splits.info.name)  # 7. log
            results.log_model(run_log, cfg, best, splits, built.metadata)
            objective = results.log_objective(
                run_log, history, built.objective_metric, Mode(cfg.objective.mode)
            )

            summary.print_summary(  # 8. summary
                run_log, test_metrics, output_dir, cfg, job_runtime.device
            )
    except (KeyboardInterrupt, Terminated) as interrupt:
        raise summary.interrupted(
            interrupt,
            run_id=run_id,
            progress=progress,
            total_epochs=sum(phase.epochs for phase in phases),
            last_phase=len(phases),
            output_dir=output_dir,
        ) from interrupt
    resume.remove_state(output_dir)  # FINISHED: nothing left to resume
    return trials.outcome(objective, run_callbacks.trial)


def _train_beside_chief(
    cfg: DictConfig,
    job_runtime: runtime.Runtime,
    phases: list,
    initial_weights: Path | None,
    batch_size: int,
) -> float:
    """Process i > 0 of a multi-process run: the same data, model and steps as process 0, with
    which it trains one model; process 0 logs the run, chooses the weights, evaluates and writes
    the checkpoints; this process logs and writes nothing. Returns the objective too."""
    quiet = QuietRunLog()
    splits = inputs.load(cfg, quiet)
    with job_runtime.scope(), distribution.peers_watched(job_runtime):
        built = building.build(
            cfg,
            splits.info,
            initial_weights,
            None,
            quiet,
            steps_per_epoch=fit.steps_per_epoch(len(splits.train), batch_size),
            train=splits.train,
            validation=len(splits.val),
        )
        steering = callbacks.build(
            cfg, built.model, Path(cfg.paths.output_dir), built.objective_metric, writes_files=False
        )
        history = fit.fit(
            cfg,
            built.model,
            splits,
            phases=phases,
            batch_size=batch_size,
            output_dir=None,
            progress=resume.Progress(run_id=""),
            run_callbacks=steering,
            run_log=quiet,
        )
        digest = distribution.agreed_weights(built.model)
    distribution.leave(built.model, copy=False)
    print(
        f"[runner] process {job_runtime.process_id} of {job_runtime.num_processes} done: "
        f"weights {digest}, the same as process 0's, which logs the run.",
        flush=True,
    )
    return results.log_objective(quiet, history, built.objective_metric, Mode(cfg.objective.mode))


def _progress(
    run_log: RunLog, target: resume.Target | None, output_dir: Path, config: dict
) -> resume.Progress:
    """Where training stands: a new run saves its config for a later resume; a resumed one
    goes on from its saved state."""
    if target is None:
        resume.save_config(output_dir, config, run_log.run_id)
        return resume.Progress(run_id=run_log.run_id)
    progress = target.progress or resume.Progress(run_id=run_log.run_id)
    summary.announce_resume(run_log, progress, output_dir)
    return progress


def _trial_reporter(run_log: RunLog, objective_metric: str) -> object | None:
    """In an Optuna sweep: the callback that reports each epoch to the trial (and prunes)."""
    trial = trials.job_trial()
    if trial is None:
        return None
    trial.set_user_attr("mlflow_run_id", run_log.run_id)
    return trials.reporter(trial, objective_metric)


def _log_pruned(run_log: RunLog, reporter: object | None) -> None:
    if reporter is not None and reporter.pruned_after:
        run_log.set_tag("optuna.trial_state", "PRUNED")
        run_log.set_tag("pruned", reporter.why)
        log.info("trial pruned %s", reporter.why)
