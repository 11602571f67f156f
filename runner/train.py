"""One job, top to bottom: data -> model -> fit -> evaluate the best weights -> log to MLflow."""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from runner import augment, models, normalize, optimizers, plots, tracking
from runner import data as data_sources
from runner.config import ColorMode, Mode, Strategy
from runner.data.base import ArraySplit, DataInfo, LoadContext, Splits
from runner.data.pipeline import to_dataset
from runner.errors import RunnerError
from runner.evaluate import evaluate
from runner.models import pretrained

log = logging.getLogger(__name__)


class MlflowEpochLogger(keras.callbacks.Callback):
    """Per-epoch metrics under Keras' own names, step = epoch, plus the learning rate and the
    epoch's wall time (`epoch_seconds`, training and validation)."""

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        metrics = dict(logs or {})
        metrics["epoch_seconds"] = time.perf_counter() - self.started
        metrics["learning_rate"] = optimizers.current_learning_rate(self.model.optimizer)
        tracking.log_epoch(metrics, epoch)


def configure_tensorflow(cfg: DictConfig) -> str:
    """Seed everything, size the thread pools; describe the device the job trains on."""
    keras.backend.clear_session()  # a sweep runs jobs one after another in this process
    intra, inter = thread_pools(cfg.trainer)
    try:
        if intra:
            tf.config.threading.set_intra_op_parallelism_threads(intra)
        if inter:
            tf.config.threading.set_inter_op_parallelism_threads(inter)
    except RuntimeError:
        pass  # already fixed by an earlier job in this process
    keras.utils.set_random_seed(cfg.trainer.seed)
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        return f"GPU x{len(gpus)}"
    threads = tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count()
    return f"CPU ({threads} threads)"


def thread_pools(trainer: DictConfig) -> tuple[int, int]:
    """Configured sizes; with N parallel jobs (joblib launcher) each gets its share of cores."""
    intra, inter = trainer.intra_op_threads, trainer.inter_op_threads
    n_jobs = OmegaConf.select(HydraConfig.get(), "launcher.n_jobs", default=None)
    if isinstance(n_jobs, int) and n_jobs != 1:
        cores = os.cpu_count() or 1
        share = max(1, cores // (cores if n_jobs < 0 else n_jobs))
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
        seed=cfg.trainer.seed,
        validation_split=cfg.trainer.validation_split,
        image_size=(int(size[0]), int(size[1])),
        channels=1 if ColorMode(color) is ColorMode.grayscale else 3,
        max_memory_mb=OmegaConf.select(cfg, "data.max_memory_mb", default=4096),
    )


def run_name(cfg: DictConfig) -> str:
    """`logger.run_name`, else model-data, numbered within a sweep.

    (MLflow's random names would repeat: they come from Python's `random`, seeded per job.)
    """
    if cfg.logger.run_name:
        return cfg.logger.run_name
    hydra = HydraConfig.get()
    name = f"{cfg.model.name}-{cfg.data.name}"
    return f"{name} #{hydra.job.num}" if hydra.mode == RunMode.MULTIRUN else name


def job_tags(cfg: DictConfig, device: str) -> dict[str, str]:
    hydra = HydraConfig.get()
    overrides = list(hydra.overrides.task)
    return {
        "model": cfg.model.name,
        "data": cfg.data.name,
        "optimizer": cfg.optimizer.name,
        "augmentation": cfg.augmentation.name,
        "overrides": " ".join(overrides) if overrides else "(none)",
        "output_dir": str(Path(hydra.runtime.output_dir).resolve()),
        "device": device,
        # The commit of the runner code that ran (not of the folder the command ran in).
        **tracking.git_tags(Path(__file__).resolve().parents[1]),
    }


def run(cfg: DictConfig) -> float:
    """Train and evaluate one configuration; return the objective (best `objective.metric`)."""
    output_dir = Path(cfg.paths.output_dir)
    checkpoint_dir = output_dir / "checkpoints"
    check_trainer(cfg.trainer)
    augment.validate(cfg.augmentation)
    models.validate(cfg.model, normalizing=normalize.is_active(cfg.augmentation))
    # Before the run exists: no network and no cached file is a config problem, not a failed run.
    weights = models.weights_file(cfg.model, Path(cfg.paths.data_dir).expanduser())
    device = configure_tensorflow(cfg)
    with tracking.tracked_run(
        cfg, run_name=run_name(cfg), tags=job_tags(cfg, device), checkpoint_dir=checkpoint_dir
    ) as run:
        tracking.log_config(cfg, output_dir / ".hydra")
        splits = data_sources.load(cfg.data, load_context(cfg))
        info = splits.info
        _log_data(splits)
        if augment.is_active(cfg.augmentation):
            _log_augmentation_preview(cfg, splits)
        if normalize.is_active(cfg.augmentation):
            info = replace(
                info,
                preprocessing=tuple(
                    normalize.fit(cfg.augmentation, splits.train.sample(normalize.FIT_SAMPLE))
                ),
            )
        model = models.build(cfg.model, info, weights)
        loss, metrics = models.heads.loss_and_metrics(info)
        check_monitors(cfg.trainer, cfg.objective, metrics)
        tracking.log_text(_summary_text(model), "model_summary.txt")
        if augment.in_model(cfg.augmentation):
            model = augment.wrap_model(model, cfg.augmentation, seed=cfg.trainer.seed)
        _compile(model, cfg.optimizer, info, epochs=cfg.trainer.epochs)
        history = _fit(cfg, model, splits, checkpoint_dir)
        best = augment.unwrap_model(_best_model(cfg, model, checkpoint_dir))
        loss, metrics = models.heads.loss_and_metrics(info)  # fresh metric objects
        best.compile(loss=loss, metrics=metrics)  # to evaluate; it trains no further
        test_metrics = evaluate(
            best,
            splits,
            batch_size=cfg.trainer.batch_size,
            threshold=OmegaConf.select(cfg, "data.threshold", default=0.5),
            title=f"{cfg.model.name} on {info.name}",
        )
        _log_plots(history, info, cfg)
        if cfg.logger.log_model:
            tracking.log_keras_model(best, splits.test.sample(8), list(info.class_names))
        objective = _objective(history, cfg.objective)
        _print_summary(run, test_metrics, output_dir, cfg, device)
    return objective


def _log_data(splits: Splits) -> None:
    info = splits.info
    tracking.log_dataset(info.class_names, info.input_shape, info.task, splits.sizes())
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


def _compile(model: keras.Model, optimizer_cfg: DictConfig, info: DataInfo, *, epochs: int) -> None:
    loss, metrics = models.heads.loss_and_metrics(info)  # fresh metric objects per compile
    model.compile(
        optimizer=optimizers.build(optimizer_cfg, epochs=epochs), loss=loss, metrics=metrics
    )


class _CheckpointOf(keras.callbacks.ModelCheckpoint):
    """ModelCheckpoint saving `model` while a part of it (the head, on cached features) trains."""

    def __init__(self, model: keras.Model, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._saved = model

    def set_model(self, model: keras.Model) -> None:
        super().set_model(self._saved)


def _callbacks(cfg: DictConfig, model: keras.Model, checkpoint_dir: Path) -> list:
    """Callbacks of one phase; the checkpoint, when any, is last (phases share it)."""
    trainer = cfg.trainer
    callbacks: list[keras.callbacks.Callback] = [
        MlflowEpochLogger(),
        keras.callbacks.TerminateOnNaN(),
    ]
    if trainer.early_stopping.enabled:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor=trainer.early_stopping.monitor,
                patience=trainer.early_stopping.patience,
                restore_best_weights=trainer.early_stopping.restore_best_weights,
                verbose=1,
            )
        )
    if trainer.checkpoint.enabled:
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        callbacks.append(
            _CheckpointOf(
                model,
                checkpoint_dir / "best.keras",
                monitor=trainer.checkpoint.monitor,
                save_best_only=trainer.checkpoint.save_best_only,
            )
        )
    return callbacks


def _fit(cfg: DictConfig, model: keras.Model, splits: Splits, checkpoint_dir: Path) -> dict:
    """Train; a pretrained backbone with `strategy=fine_tune` trains in two phases of one run."""
    trainer = cfg.trainer
    verbose = trainer.verbose if trainer.verbose is not None else (1 if sys.stdout.isatty() else 2)
    callbacks = _callbacks(cfg, model, checkpoint_dir)
    if _caches_features(cfg):
        fit_model, train, validation = _head_on_cached_features(cfg, model, splits)
    else:
        fit_model, (train, validation) = model, input_pipelines(cfg, splits)
    history = fit_model.fit(
        train,
        validation_data=validation,
        epochs=trainer.epochs,
        callbacks=callbacks,
        verbose=verbose,
        shuffle=False,  # the training dataset shuffles itself each epoch
    ).history
    if _strategy(cfg) is Strategy.fine_tune:
        history = _fine_tune(cfg, model, splits, history, callbacks, verbose)
    losses = history.get("loss", [])
    if losses and not np.isfinite(losses[-1]):
        raise RunnerError(
            f"Training diverged: the loss became {losses[-1]} in epoch {len(losses)}. "
            f"Lower optimizer.lr (now {cfg.optimizer.lr}) or check the data for bad values."
        )
    return history


def _strategy(cfg: DictConfig) -> Strategy | None:
    return Strategy(cfg.model.strategy) if cfg.model.name == "pretrained" else None


def _caches_features(cfg: DictConfig) -> bool:
    """A frozen backbone sees each image the same way every epoch unless it is augmented."""
    return (
        _strategy(cfg) in (Strategy.feature_extraction, Strategy.fine_tune)
        and cfg.model.cache_features
        and not augment.is_active(cfg.augmentation)
    )


def _head_on_cached_features(
    cfg: DictConfig, model: keras.Model, splits: Splits
) -> tuple[keras.Model, tf.data.Dataset, tf.data.Dataset]:
    """The head and the backbone's features of every training and validation image."""
    trainer = cfg.trainer
    extractor, head = pretrained.split_at_features(model)
    started = time.perf_counter()
    features = {
        name: ArraySplit(
            extractor.predict(to_dataset(split, batch_size=trainer.batch_size), verbose=0),
            split.y,
        )
        for name, split in (("train", splits.train), ("val", splits.val))
    }
    log.info(
        "feature extraction: backbone features of %d training and %d validation images "
        "computed once in %.1f s (model.cache_features); each epoch trains the head only",
        len(splits.train), len(splits.val), time.perf_counter() - started,
    )  # fmt: skip
    _compile(head, cfg.optimizer, splits.info, epochs=trainer.epochs)
    train = to_dataset(
        features["train"], batch_size=trainer.batch_size, shuffle=True, seed=trainer.seed
    )
    return head, train, to_dataset(features["val"], batch_size=trainer.batch_size)


def _fine_tune(
    cfg: DictConfig, model: keras.Model, splits: Splits, history: dict, callbacks: list,
    verbose: int,
) -> dict:  # fmt: skip
    """Phase two: unfreeze the top of the backbone, recompile at `fine_tune.lr`, train on."""
    tune = cfg.model.fine_tune
    done = len(history.get("loss", []))
    unfrozen = pretrained.unfreeze_top(model, cfg.model)
    tracking.log_json(unfrozen, "model/fine_tuned_layers.json")
    log.info(
        "fine-tuning: %d layers of the backbone unfrozen (%s ... %s), lr %g, epochs %d-%d",
        len(unfrozen), unfrozen[0], unfrozen[-1], tune.lr, done + 1, done + tune.epochs,
    )  # fmt: skip
    optimizer_cfg = OmegaConf.merge(cfg.optimizer, {"lr": tune.lr})
    _compile(model, optimizer_cfg, splits.info, epochs=tune.epochs)
    train, validation = input_pipelines(cfg, splits)
    # The checkpoint carries its best value over; early stopping starts afresh for the phase.
    phase_callbacks = _callbacks(cfg, model, Path(cfg.paths.output_dir) / "checkpoints")
    if cfg.trainer.checkpoint.enabled:
        phase_callbacks[-1] = callbacks[-1]
    second = model.fit(
        train,
        validation_data=validation,
        initial_epoch=done,
        epochs=done + tune.epochs,
        callbacks=phase_callbacks,
        verbose=verbose,
        shuffle=False,
    ).history
    return {key: list(history.get(key, [])) + list(second.get(key, [])) for key in second}


def input_pipelines(cfg: DictConfig, splits: Splits) -> tuple[tf.data.Dataset, tf.data.Dataset]:
    """Training batches: shuffled each epoch, then augmented. Validation: as read, in order."""
    trainer = cfg.trainer
    train = to_dataset(splits.train, batch_size=trainer.batch_size, shuffle=True, seed=trainer.seed)
    validation = to_dataset(splits.val, batch_size=trainer.batch_size)
    return augment.apply(train, cfg.augmentation, seed=trainer.seed), validation


def check_trainer(trainer: DictConfig) -> None:
    """Values the schema's types allow but training does not, caught before any work."""
    minimums = {
        "epochs": 1,
        "batch_size": 1,
        "early_stopping.patience": 0,
        "intra_op_threads": 0,
        "inter_op_threads": 0,
    }
    for key, minimum in minimums.items():
        value = OmegaConf.select(trainer, key)
        if value < minimum:
            raise RunnerError(f"trainer.{key} should be >= {minimum}. Received: {value}")
    if not 0.0 < trainer.validation_split < 1.0:
        raise RunnerError(
            "trainer.validation_split should be between 0 and 1 (exclusive). "
            f"Received: {trainer.validation_split}"
        )


def check_monitors(trainer: DictConfig, objective: DictConfig, metrics: list) -> None:
    """Fail before training when a callback watches a metric this run will never report."""
    names = ["loss", *(getattr(metric, "name", metric) for metric in metrics)]
    available = names + [f"val_{name}" for name in names]
    watched = {
        f"trainer.{key}.monitor": trainer[key].monitor
        for key in ("early_stopping", "checkpoint")
        if trainer[key].enabled
    }
    watched["objective.metric"] = objective.metric
    for key, metric in watched.items():
        if metric not in available:
            raise RunnerError(
                f"{key}={metric!r} is not a metric of this run; choose one of {available}."
            )


def _best_model(cfg: DictConfig, model: keras.Model, checkpoint_dir: Path) -> keras.Model:
    """The checkpointed best model, loaded back in safe mode (proves the file is usable)."""
    path = checkpoint_dir / "best.keras"
    if cfg.trainer.checkpoint.enabled and path.exists():
        # Without its optimizer: it trains no further (and with cached features the head's
        # optimizer, not the saved model's, did the training).
        return keras.saving.load_model(path, safe_mode=True, compile=False)
    return model


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


def _objective(history: dict, objective: DictConfig) -> float:
    """Best value of the objective metric over the epochs, logged as best_<metric>."""
    values = np.asarray(history[objective.metric], dtype=float)
    best = float(np.nanmax(values) if Mode(objective.mode) is Mode.max else np.nanmin(values))
    tracking.log_metrics({f"best_{objective.metric}": best})
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
    ui = f"mlflow ui --backend-store-uri {uri}" if uri.startswith("sqlite:") else uri
    run_id, experiment_id = run.info.run_id, run.info.experiment_id
    print(
        f"\n[runner] done on {device}: {metrics}\n"
        f"[runner] MLflow run {run_id} (experiment '{cfg.logger.experiment}', id {experiment_id})\n"
        f"[runner] artifacts: {run.info.artifact_uri}\n"
        f"[runner] outputs (config, checkpoints, log): {output_dir.resolve()}\n"
        f"[runner] open the UI: `make ui` or `{ui}`, then "
        f"http://127.0.0.1:5000/#/experiments/{experiment_id}/runs/{run_id}",
        flush=True,
    )
