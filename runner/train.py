"""One job, top to bottom: data -> model -> fit -> evaluate the best weights -> log to MLflow."""

from __future__ import annotations

import json
import logging
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from runner import (
    augment,
    callbacks,
    distribute,
    epoch_state,
    models,
    normalize,
    optimizers,
    plots,
    resume,
    search,
    tracking,
)  # fmt: skip
from runner import data as data_sources
from runner.checkpoints import load_checkpoint
from runner.checks import check_config
from runner.config import ColorMode, Evaluate, Mode, Precision
from runner.data.base import ArraySplit, DataInfo, LoadContext, Splits, digest
from runner.data.images import DEFAULT_MAX_PIXELS
from runner.data.pipeline import to_dataset, training_batches
from runner.errors import Interrupted, RunnerError
from runner.evaluate import evaluate
from runner.interrupts import Terminated, signal_name
from runner.joblog import to_log_file
from runner.models import heads, pretrained
from runner.models.pretrained import Strategy
from runner.store import run_link
from runner.sweep import SWEPT_KEYS_ENV

log = logging.getLogger(__name__)
# Replicas of the current job's strategy: batches hold trainer.batch_size images per replica.
_replicas = 1


def global_batch(cfg: DictConfig) -> int:
    return cfg.trainer.batch_size * _replicas


class MlflowEpochLogger(keras.callbacks.Callback):
    """Per-epoch metrics under Keras' own names, step = epoch, plus the learning rate, the
    epoch's wall time (`epoch_seconds`, training and validation) and the training throughput
    (`images_per_second`, training steps only)."""

    def __init__(self, train_examples: int) -> None:
        super().__init__()
        self.train_examples = train_examples

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.started = time.perf_counter()
        self.trained: float | None = None

    def on_test_begin(self, logs: dict | None = None) -> None:
        if self.trained is None:  # validation begins: the epoch's training steps are done
            self.trained = time.perf_counter() - self.started

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        metrics = dict(logs or {})
        metrics["epoch_seconds"] = time.perf_counter() - self.started
        training = self.trained or metrics["epoch_seconds"]
        metrics["images_per_second"] = self.train_examples / max(training, 1e-9)
        metrics["learning_rate"] = optimizers.current_learning_rate(self.model.optimizer)
        tracking.log_epoch(metrics, epoch)
        # The job's log file holds the run too (Keras prints its progress to the console only).
        line = "  ".join(f"{name}={value:.4g}" for name, value in sorted(metrics.items()))
        to_log_file(f"epoch {epoch + 1}: {line}")


def configure_tensorflow(cfg: DictConfig) -> tuple[str, tf.distribute.Strategy]:
    """Seed everything, size the thread pools, set the precision policy, pick the distribution
    strategy; describe the devices the job trains on."""
    distribute.prepare_devices(cfg)  # before anything starts TensorFlow's runtime
    keras.backend.clear_session()  # a sweep runs jobs one after another in this process
    # Set for every job: a sweep's jobs share this process and may differ in precision.
    keras.mixed_precision.set_global_policy(Precision(cfg.trainer.precision).value)
    intra, inter = thread_pools(cfg.trainer)
    try:
        if intra:
            tf.config.threading.set_intra_op_parallelism_threads(intra)
        if inter:
            tf.config.threading.set_inter_op_parallelism_threads(inter)
    except RuntimeError:
        pass  # already fixed by an earlier job in this process
    keras.utils.set_random_seed(cfg.trainer.seed)
    strategy = distribute.build(cfg)
    gpus = tf.config.list_physical_devices("GPU")
    threads = tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count()
    device = f"GPU x{len(gpus)}" if gpus else f"CPU ({threads} threads)"
    replicas = strategy.num_replicas_in_sync
    return (f"{device}, {replicas} replicas" if replicas > 1 else device), strategy


def device_names() -> str:
    """What the job trains on, by name: each GPU's model, else the CPU's."""
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = [tf.config.experimental.get_device_details(gpu) for gpu in gpus]
        return ", ".join(d.get("device_name", g.name) for d, g in zip(details, gpus, strict=True))
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def thread_pools(trainer: DictConfig) -> tuple[int, int]:
    """Configured sizes; else a job that shares the machine gets its share of the cores: 1/N of
    them with N parallel jobs (joblib launcher), the CPUs Ray reserves for each job
    (`hydra.launcher.ray.remote.num_cpus`)."""
    intra, inter = trainer.intra_op_threads, trainer.inter_op_threads
    launcher = HydraConfig.get().launcher
    share = None
    n_jobs = OmegaConf.select(launcher, "n_jobs", default=None)
    if isinstance(n_jobs, int) and n_jobs != 1:
        cores = os.cpu_count() or 1
        share = max(1, cores // (cores if n_jobs < 0 else n_jobs))
    reserved = OmegaConf.select(launcher, "ray.remote.num_cpus", default=None)
    if isinstance(reserved, int | float) and reserved >= 1:
        share = int(reserved)
    if share:
        intra, inter = intra or share, inter or min(2, share)
    return intra, inter


def load_context(cfg: DictConfig) -> LoadContext:
    """Image size and color: the data config's if set, else what the model is meant for."""
    size = OmegaConf.select(cfg, "data.image_size", default=None) or models.input_size(cfg.model)
    if isinstance(size, int):  # digits: the side of a square
        size = [size, size]
    color = OmegaConf.select(cfg, "data.color_mode", default=None) or cfg.model.color_mode
    if len(size) != 2 or min(size) < 1:
        raise RunnerError(f"data.image_size should be [height, width]. Received: {list(size)}")
    return LoadContext(
        data_dir=Path(cfg.paths.data_dir).expanduser(),
        seed=cfg.data.split_seed,
        validation_split=cfg.trainer.validation_split,
        image_size=(int(size[0]), int(size[1])),
        channels=1 if ColorMode(color) is ColorMode.grayscale else 3,
        max_memory_mb=OmegaConf.select(cfg, "data.max_memory_mb", default=4096),
        max_pixels=OmegaConf.select(cfg, "data.max_pixels", default=DEFAULT_MAX_PIXELS),
    )


def run_name(cfg: DictConfig) -> str:
    """`logger.run_name`, else model-data; in a sweep with the values this job was given
    (`lenet-digits lr=0.01 batch_size=32`), else its job number.

    (MLflow's random names would repeat: they come from Python's `random`, seeded per job.)
    """
    if cfg.logger.run_name:
        return cfg.logger.run_name
    hydra = HydraConfig.get()
    name = f"{cfg.model.name}-{cfg.data.name}"
    if hydra.mode != RunMode.MULTIRUN:
        return name
    swept = [k for k in os.environ.get(SWEPT_KEYS_ENV, "").split(",") if k]
    values = dict(o.split("=", 1) for o in hydra.overrides.task if "=" in o)
    given = [f"{key.split('.')[-1]}={values[key]}" for key in swept if key in values]
    return " ".join([name, *given]) if given else f"{name} #{hydra.job.num}"


def job_tags(cfg: DictConfig, device: str, output_dir: Path) -> dict[str, str]:
    hydra = HydraConfig.get()
    overrides = list(hydra.overrides.task)
    return {
        "model": cfg.model.name,
        "data": cfg.data.name,
        "optimizer": cfg.optimizer.name,
        "augmentation": cfg.augmentation.name,
        "overrides": " ".join(overrides) if overrides else "(none)",
        "output_dir": str(output_dir.resolve()),
        "device": device,
        "device_names": device_names(),
        # The commit of the runner code that ran (not of the folder the command ran in).
        **tracking.git_tags(Path(__file__).resolve().parents[1]),
        **search.trial_tags(),  # an Optuna trial: its study and number
    }


def run(cfg: DictConfig, target: resume.Target | None) -> float:
    """Train and evaluate one configuration; return the objective (best `objective.metric`).
    `target`: the unfinished run to resume (`resume.requested_target`), None for a new run."""
    check_config(cfg)  # also done before TensorFlow is imported; cheap, and run() stands alone
    models.validate(cfg.model, normalizing=normalize.is_active(cfg.augmentation))
    # Before the run exists: no network and no cached file is a config problem, not a failed run.
    weights = models.weights_file(cfg.model, Path(cfg.paths.data_dir).expanduser())
    # A resumed run keeps training in its own job folder (checkpoints, resume state).
    output_dir = target.output_dir if target else Path(cfg.paths.output_dir)
    checkpoint_dir = output_dir / "checkpoints"
    device, strategy = configure_tensorflow(cfg)
    global _replicas
    _replicas = strategy.num_replicas_in_sync
    config = resume.comparable_config(cfg)
    tags = {
        **job_tags(cfg, device, output_dir),
        "config_digest": resume.config_digest(config),
        **resume.process_tags(),
    }
    where = {"run_id": target.run_id if target else None, "progress": target and target.progress}
    try:
        with tracking.tracked_run(
            cfg,
            run_name=run_name(cfg),
            tags=tags,
            checkpoint_dir=checkpoint_dir,
            run_id=target.run_id if target else None,
            output_dir=output_dir,
        ) as run:
            where["run_id"] = run.info.run_id
            if target is None:
                resume.save_config(output_dir, config, run.info.run_id)
                progress = resume.Progress(run_id=run.info.run_id)
            else:
                progress = target.progress or resume.Progress(run_id=run.info.run_id)
                _announce_resume(run.info.run_id, progress, output_dir)
            where["progress"] = progress
            tracking.log_config(cfg, Path(cfg.paths.output_dir) / ".hydra")
            splits = data_sources.load(cfg.data, load_context(cfg))
            info = splits.info
            _log_data(splits, cfg.data)
            if augment.is_active(cfg.augmentation):
                augment.warn_if_mirroring(cfg.augmentation, info.name)
                _log_augmentation_preview(cfg, splits)
            info = with_normalization(cfg, splits)
            # Model, optimizer and metrics live on every replica (tf.distribute).
            with strategy.scope():
                model = models.build(cfg.model, info, weights)
                metadata = model_metadata(cfg, info)  # how to read the model's outputs
                checkpoint_dir.mkdir(parents=True, exist_ok=True)
                (checkpoint_dir / "classes.json").write_text(  # for predict on a .keras file
                    json.dumps({"class_names": list(info.class_names), **metadata})
                )
                loss, metrics = heads.loss_and_metrics(info)
                objective_metric = cfg.objective.metric or heads.default_objective(info)
                tracking.set_tag("objective_metric", objective_metric)
                callbacks.check(cfg, objective_metric, metrics)
                tracking.log_text(_summary_text(model), "model_summary.txt")
                if augment.in_model(cfg.augmentation):
                    model = augment.wrap_model(model, cfg.augmentation, seed=cfg.trainer.seed)
                _compile(model, cfg.optimizer, info, epochs=cfg.trainer.epochs, trainer=cfg.trainer)
                run_callbacks = callbacks.build(cfg, model, output_dir, objective_metric)
                trial = search.job_trial()  # an Optuna sweep's trial: report, maybe prune
                if trial is not None:
                    trial.set_user_attr("mlflow_run_id", run.info.run_id)
                    run_callbacks.trial = search.reporter(trial, objective_metric)
                history = _fit(cfg, model, splits, output_dir, progress, run_callbacks)
            reporter = run_callbacks.trial
            if reporter is not None and reporter.pruned_after:
                tracking.set_tag("optuna.trial_state", "PRUNED")
                tracking.set_tag("pruned", reporter.why)
                log.info("trial pruned %s", reporter.why)
            for path, folder in callbacks.files_to_log(output_dir):
                tracking.log_files(path, folder)
            monitor = callbacks.checkpoint_monitor(cfg, objective_metric)
            best = augment.unwrap_model(
                _evaluated_model(cfg, model, checkpoint_dir, history, monitor)
            )
            _compile_to_evaluate(best, info)  # it trains no further
            test_metrics = evaluate(
                best,
                splits,
                batch_size=global_batch(cfg),
                threshold=metadata["threshold"],
                title=f"{cfg.model.name} on {info.name}",
            )
            _log_plots(history, info, cfg)
            if cfg.logger.log_model:
                tracking.log_model(
                    best, splits.test.sample(8), list(info.class_names),
                    register_as=cfg.logger.register_model, metadata=metadata,
                    serving=cfg.logger.log_serving_model,
                )  # fmt: skip
            objective = _objective(history, objective_metric, Mode(cfg.objective.mode))
            _print_summary(run, test_metrics, output_dir, cfg, device)
    except (KeyboardInterrupt, Terminated) as interrupt:
        raise _interrupted(interrupt, cfg, where, output_dir) from interrupt
    resume.remove_state(output_dir)  # FINISHED: nothing left to resume
    return search.outcome(objective, reporter)


def _interrupted(
    interrupt: BaseException, cfg: DictConfig, where: dict, output_dir: Path
) -> Interrupted:
    """The one line a user reads after Ctrl-C or SIGTERM: where it stopped, what was kept, and
    the command that continues it."""
    name = signal_name(interrupt)
    run_id, progress = where["run_id"], where["progress"]
    total = cfg.trainer.epochs + (
        cfg.model.fine_tune.epochs if _strategy(cfg) is Strategy.fine_tune else 0
    )
    at = f" at epoch {progress.epochs_done + 1}/{total}" if progress else ""
    best = output_dir / "checkpoints" / "best.keras"
    kept = f"; checkpoint kept at {best}" if best.exists() else ""
    if run_id is None:
        return Interrupted(name, f"interrupted by {name}{at}; no MLflow run was started yet")
    overrides = [o for o in HydraConfig.get().overrides.task if not o.startswith("trainer.resume")]
    command = " ".join(["python -m runner", *overrides, f"trainer.resume={run_id}"])
    return Interrupted(
        name, f"interrupted by {name}{at}{kept}; run {run_id} is KILLED; resume with: {command}"
    )


def _announce_resume(run_id: str, progress: resume.Progress, output_dir: Path) -> None:
    sent = tracking.log_missing_epochs(run_id, progress.history)
    print(
        f"[runner] resuming run {run_id} at epoch {progress.epochs_done + 1} "
        f"(job folder {output_dir})"
        + (f"; sent {sent} metric value(s) it had not logged" if sent else ""),
        flush=True,
    )


def with_normalization(cfg: DictConfig, splits: Splits) -> DataInfo:
    """The data's description, with the normalization layers fitted on the training split
    (never validation or test) when the augmentation config asks for them."""
    if not normalize.is_active(cfg.augmentation):
        return splits.info
    return replace(splits.info, preprocessing=tuple(normalize.fit(cfg.augmentation, splits.train)))


def model_metadata(cfg: DictConfig, info: DataInfo) -> dict:
    """How to read the model's outputs: the task, and the threshold of a multi-label one."""
    return {"task": info.task, "threshold": OmegaConf.select(cfg, "data.threshold", default=0.5)}


def data_source(data_cfg: DictConfig) -> str:
    """Where the data came from: a folder, the first file's URL on the mirror, or a library."""
    path = OmegaConf.select(data_cfg, "path", default=None)
    complete = data_sources.DATASETS[data_cfg.name].hook("download_config")
    if complete and not path:  # a dataset that derives its files (VOC: from data.year)
        data_cfg = complete(data_cfg)
    files = OmegaConf.select(data_cfg, "files", default=None)
    if path:
        return str(Path(path).expanduser())
    if files:
        first = next(iter(files.values()))
        return f"{data_cfg.mirror.rstrip('/')}/{first.name}"
    return f"sklearn.datasets.load_{data_cfg.name}" if data_cfg.name == "digits" else data_cfg.name


def _log_data(splits: Splits, data_cfg: DictConfig) -> None:
    info = splits.info
    digests = {name: digest(getattr(splits, name)) for name in ("train", "val", "test")}
    tracking.log_dataset(info.class_names, info.input_shape, info.task, splits.sizes(), digests)
    tracking.log_inputs(info.name, data_source(data_cfg), digests, splits.sizes())
    tracking.log_skipped(splits.skipped)
    if splits.skipped:
        log.warning(
            "skipped %d file(s) that are not usable images (listed in the run's "
            "data/skipped_files.json), e.g. %s: %s",
            len(splits.skipped), splits.skipped[0].path, splits.skipped[0].reason,
        )  # fmt: skip
    log.info(
        "data=%s: %s, %d classes; train %d, validation %d, test %d",
        info.name, info.input_shape, info.num_classes, *splits.sizes().values(),
    )  # fmt: skip


def _compile(
    model: keras.Model, optimizer_cfg: DictConfig, info: DataInfo, *, epochs: int,
    trainer: DictConfig,
) -> None:  # fmt: skip
    """Compile for training, with fresh metric objects; the optimizer is built now, so a saved
    model holds all of its variables and loads back without warnings."""
    loss, metrics = heads.loss_and_metrics(info)
    jit = str(trainer.jit_compile).lower()
    model.compile(
        optimizer=optimizers.build(optimizer_cfg, epochs=epochs),
        loss=loss,
        metrics=metrics,
        jit_compile="auto" if jit == "auto" else jit == "true",
        steps_per_execution=trainer.steps_per_execution,
    )
    model.optimizer.build(model.trainable_variables)


def _compile_to_evaluate(model: keras.Model, info: DataInfo) -> None:
    """Compile a model that is only evaluated and logged: plain SGD (no per-weight slots,
    never stepped), built so the logged model loads back without warnings."""
    loss, metrics = heads.loss_and_metrics(info)
    model.compile(optimizer="sgd", loss=loss, metrics=metrics)
    model.optimizer.build(model.trainable_variables)


@dataclass
class _Phase:
    """One `fit` of a run: what trains, on which batches, over which epochs."""

    number: int
    fit_model: keras.Model
    batches: Callable[[range], tuple[tf.data.Dataset, int]]  # epochs -> (stream, steps/epoch)
    validation: tf.data.Dataset
    start: int
    end: int
    examples: int  # training examples per epoch (for images_per_second)


def _fit(
    cfg: DictConfig, model: keras.Model, splits: Splits, output_dir: Path,
    progress: resume.Progress, run_callbacks: callbacks.RunCallbacks,
) -> dict:  # fmt: skip
    """Train; a pretrained backbone with `strategy=fine_tune` trains in two phases of one run.
    Returns the metric history of every epoch, those before a resumption included."""
    trainer = cfg.trainer
    if _caches_features(cfg):
        first = _head_on_cached_features(cfg, model, splits)
    else:
        first = _Phase(1, model, _image_batches(cfg, splits), _validation(cfg, splits), 0, 0,
                       len(splits.train))  # fmt: skip
    first.end = trainer.epochs
    _train_phase(cfg, first, progress, output_dir, run_callbacks)
    pruned = run_callbacks.trial is not None and run_callbacks.trial.pruned_after
    if _strategy(cfg) is Strategy.fine_tune and not pruned:
        tune = cfg.model.fine_tune
        unfrozen = pretrained.unfreeze_top(model, cfg.model)
        tracking.log_json(unfrozen, "model/fine_tuned_layers.json")
        start = progress.phase_start if progress.phase == 2 else progress.epochs_done
        log.info(
            "fine-tuning: %d layers of the backbone unfrozen (%s ... %s), lr %g, epochs %d-%d",
            len(unfrozen), unfrozen[0], unfrozen[-1], tune.lr, start + 1, start + tune.epochs,
        )  # fmt: skip
        _compile(model, OmegaConf.merge(cfg.optimizer, {"lr": tune.lr}), splits.info,
                 epochs=tune.epochs, trainer=trainer)  # fmt: skip
        second = _Phase(2, model, _image_batches(cfg, splits), _validation(cfg, splits), start,
                        start + tune.epochs, len(splits.train))  # fmt: skip
        _train_phase(cfg, second, progress, output_dir, run_callbacks)
    history = progress.history
    losses = history.get("loss", [])
    if losses and not np.isfinite(losses[-1]):
        raise RunnerError(
            f"Training diverged: the loss became {losses[-1]} in epoch {len(losses)}. "
            f"Lower optimizer.lr (now {cfg.optimizer.lr}) or check the data for bad values."
        )
    return history


def _train_phase(
    cfg: DictConfig, phase: _Phase, progress: resume.Progress, output_dir: Path,
    run_callbacks: callbacks.RunCallbacks,
) -> None:  # fmt: skip
    """`fit` over the phase's epochs, from where a resumed run stopped."""
    if progress.weights and (
        progress.phase > phase.number
        or (progress.phase == phase.number and progress.phase_complete)
    ):
        if progress.phase == phase.number:  # ended before the kill: its last weights, then on
            epoch_state.restore_weights(phase.fit_model, output_dir, progress)
        return
    resumed = progress.weights is not None and progress.phase == phase.number
    first_epoch = progress.epochs_done if resumed else phase.start
    stopping = run_callbacks.early_stopping(cfg)
    checkpoint, last = run_callbacks.checkpoint, run_callbacks.last
    state = epoch_state.EpochState(
        output_dir, progress, phase=phase.number, phase_start=phase.start, phase_end=phase.end,
        early_stopping=stopping, checkpoint=checkpoint, plateau=run_callbacks.plateau,
    )  # fmt: skip
    # Order matters: the last weights before early stopping restores the best; the state after
    # the callbacks whose bests it records; MLflow after the state (see runner/epoch_state.py).
    in_order = [c for c in (last, stopping, checkpoint, run_callbacks.plateau) if c is not None]
    in_order += [*run_callbacks.extra, state, MlflowEpochLogger(phase.examples),
                 keras.callbacks.TerminateOnNaN()]  # fmt: skip
    if run_callbacks.trial is not None:  # after MLflow: a pruned epoch is logged too
        in_order.append(run_callbacks.trial)
    train, steps = phase.batches(range(first_epoch, phase.end))
    verbose = cfg.trainer.verbose
    phase.fit_model.fit(
        train,
        validation_data=phase.validation,
        initial_epoch=first_epoch,
        epochs=phase.end,
        steps_per_epoch=steps,
        shuffle=False,  # the stream shuffles each epoch itself
        callbacks=in_order,
        verbose=verbose if verbose is not None else (1 if sys.stdout.isatty() else 2),
    )


def _strategy(cfg: DictConfig) -> Strategy | None:
    return Strategy(cfg.model.strategy) if cfg.model.name == "pretrained" else None


def _caches_features(cfg: DictConfig) -> bool:
    """A frozen backbone sees each image the same way every epoch unless it is augmented."""
    return (
        _strategy(cfg) in (Strategy.feature_extraction, Strategy.fine_tune)
        and cfg.model.cache_features
        and not augment.is_active(cfg.augmentation)
    )


def _image_batches(cfg: DictConfig, splits: Splits) -> Callable[[range], tuple]:
    """Training batches over some epochs: each epoch's order and augmentation depend on
    (trainer.seed, epoch) only, so a resumed run sees what an uninterrupted one would."""
    trainer = cfg.trainer
    transform = None
    if augment.is_active(cfg.augmentation) and not augment.in_model(cfg.augmentation):

        def transform(images: tf.Tensor, batch_seed: tf.Tensor) -> tf.Tensor:
            return augment.augment_batch(images, batch_seed, cfg.augmentation)

    return lambda epochs: training_batches(
        splits.train, batch_size=global_batch(cfg), seed=trainer.seed, epochs=epochs,
        transform=transform,
    )  # fmt: skip


def _validation(cfg: DictConfig, splits: Splits) -> tf.data.Dataset:
    return to_dataset(splits.val, batch_size=global_batch(cfg))


def input_pipelines(
    cfg: DictConfig, splits: Splits, epochs: range = range(1)
) -> tuple[tf.data.Dataset, tf.data.Dataset]:
    """Training batches of `epochs` (shuffled, augmented), and validation batches as read."""
    train, _ = _image_batches(cfg, splits)(epochs)
    return train, _validation(cfg, splits)


def _head_on_cached_features(cfg: DictConfig, model: keras.Model, splits: Splits) -> _Phase:
    """The head, trained on the backbone's features of every training and validation image."""
    trainer = cfg.trainer
    extractor, head = pretrained.split_at_features(model)
    started = time.perf_counter()
    features = {
        name: ArraySplit(
            extractor.predict(to_dataset(split, batch_size=global_batch(cfg)), verbose=0),
            split.y,
        )
        for name, split in (("train", splits.train), ("val", splits.val))
    }
    log.info(
        "feature extraction: backbone features of %d training and %d validation images "
        "computed once in %.1f s (model.cache_features); each epoch trains the head only",
        len(splits.train), len(splits.val), time.perf_counter() - started,
    )  # fmt: skip
    _compile(head, cfg.optimizer, splits.info, epochs=trainer.epochs, trainer=trainer)

    def batches(epochs: range) -> tuple[tf.data.Dataset, int]:
        return training_batches(features["train"], batch_size=global_batch(cfg),
                                seed=trainer.seed, epochs=epochs)  # fmt: skip

    validation = to_dataset(features["val"], batch_size=global_batch(cfg))
    return _Phase(1, head, batches, validation, 0, trainer.epochs, len(features["train"]))


def _evaluated_model(
    cfg: DictConfig, model: keras.Model, checkpoint_dir: Path, history: dict, monitor: str
) -> keras.Model:
    """The weights `trainer.evaluate` names, loaded back in safe mode (which proves the file is
    usable), and which epoch they are from: logged as the metric `evaluated_epoch` and the tag
    `evaluated_weights`. The model in memory when the file is missing or not usable."""
    which = Evaluate(cfg.trainer.evaluate)
    epochs = len(history.get("loss", []))
    if which is Evaluate.best:
        path = checkpoint_dir / "best.keras"
        values = np.asarray(history.get(monitor, [np.nan]), dtype=float)
        epoch, value = epochs, ""
        if np.isfinite(values).any():
            pick = np.nanargmin if callbacks.mode_of(monitor) == "min" else np.nanargmax
            epoch = int(pick(values)) + 1
            value = f" = {values[epoch - 1]:.4g}"
        described = f"best: {path.name}, epoch {epoch} of {epochs} by {monitor}{value}"
    else:
        path, epoch = checkpoint_dir / "last.keras", epochs
        described = f"last: {path.name}, epoch {epoch} of {epochs}"
    loaded, problem = load_checkpoint(path) if path.exists() else (None, "it was not written")
    if problem:
        log.warning("%s is not usable (%s): evaluating the model in memory instead", path, problem)
        tracking.set_tag("checkpoint", f"{path.name} not used: {problem}")
        described, epoch = (
            f"the model in memory after epoch {epochs} ({path.name}: {problem})",
            epochs,
        )
    tracking.set_tag("evaluated_weights", described)
    tracking.log_metrics({"evaluated_epoch": epoch})
    log.info("evaluating %s", described)
    # Without its optimizer (loaded uncompiled): it trains no further (and with cached features
    # the head's optimizer, not the saved model's, did the training).
    return model if problem else loaded


def _log_augmentation_preview(cfg: DictConfig, splits: Splits) -> None:
    figure = plots.augmentation_grid(
        *augment.preview(splits.train.sample(6), cfg.augmentation, seed=cfg.trainer.seed),
        title=f"augmentation={cfg.augmentation.name} on {splits.info.name} (training images)",
    )
    tracking.log_figure(figure, "plots/augmentation_preview.png")
    plots.close(figure)


def _log_plots(history: dict, info: DataInfo, cfg: DictConfig) -> None:
    figure = plots.learning_curves(history, f"{cfg.model.name} on {info.name}")
    tracking.log_figure(figure, "plots/learning_curves.png")
    plots.close(figure)


def _objective(history: dict, metric: str, mode: Mode) -> float:
    """Best value of the objective metric over the epochs, logged as best_<metric>."""
    values = np.asarray(history[metric], dtype=float)
    best = float(np.nanmax(values) if mode is Mode.max else np.nanmin(values))
    tracking.log_metrics({f"best_{metric}": best})
    return best


def _summary_text(model: keras.Model) -> str:
    lines: list[str] = []
    model.summary(print_fn=lambda line, **_: lines.append(line))
    return "\n".join(lines)


def _print_summary(
    run, test_metrics: dict[str, float], output_dir: Path, cfg: DictConfig, device: str
) -> None:
    metrics = "  ".join(f"{name}={value:.4f}" for name, value in sorted(test_metrics.items()))
    uri = cfg.logger.tracking_uri
    run_id, experiment_id = run.info.run_id, run.info.experiment_id
    link = run_link(uri, experiment_id, run_id)
    if tracking.is_remote(uri):  # the team's server: its own address
        opener = f"[runner] open the UI: {link}"
    else:
        ui = f"mlflow ui --backend-store-uri {uri}" if uri.startswith("sqlite:") else uri
        opener = f"[runner] open the UI: `make ui` or `{ui}`, then {link}"
    print(
        f"\n[runner] done on {device}: {metrics}\n"
        f"[runner] MLflow run {run_id} (experiment '{cfg.logger.experiment}', id {experiment_id})\n"
        f"[runner] artifacts: {run.info.artifact_uri}\n"
        f"[runner] outputs (config, checkpoints, log): {output_dir.resolve()}\n{opener}",
        flush=True,
    )
