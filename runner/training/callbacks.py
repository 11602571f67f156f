"""`callbacks.*`: the Keras callbacks a run switches on and tunes from its config.

EarlyStopping, ModelCheckpoint (atomic, into the job folder), ReduceLROnPlateau, TensorBoard and
CSVLogger are Keras' own; this module only reads their keys, fixes their direction (a monitor
ending in "loss" is minimized, any other maximized) and puts their files in the job folder.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
from omegaconf import DictConfig

from runner import optimizers
from runner.augmentation import transforms as augment
from runner.config.callbacks import Keep
from runner.config.schema import Evaluate
from runner.core import backend
from runner.core.errors import RunnerError
from runner.core.joblog import to_log_file
from runner.tracking.run_log import RunLog
from runner.training.distribution import saving_alone


def mode_of(monitor: str) -> str:
    return "min" if monitor.endswith("loss") else "max"


def checkpoint_monitor(cfg: DictConfig, objective_metric: str) -> str:
    return cfg.callbacks.model_checkpoint.monitor or objective_metric


class MlflowEpochLogger(keras.callbacks.Callback):
    """Per-epoch metrics under Keras' own names, step = epoch, plus the learning rate, the
    epoch's wall time (`epoch_seconds`, training and validation), the training throughput
    (`images_per_second`, training steps only) and, on a GPU/TPU, the peak accelerator memory
    so far (`device_peak_memory_mb`)."""

    def __init__(self, run_log: RunLog, train_examples: int) -> None:
        super().__init__()
        self.run_log, self.train_examples = run_log, train_examples

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
        # `lr` whatever the schedule (or ReduceLROnPlateau) set; `learning_rate`, its older
        # name, stays for runs compared with earlier ones.
        rate = optimizers.current_learning_rate(self.model.optimizer)
        metrics["lr"] = metrics["learning_rate"] = rate
        peak = backend.peak_accelerator_memory_mb()
        if peak is not None:
            metrics["device_peak_memory_mb"] = peak
        self.run_log.log_epoch(metrics, epoch)
        # The job's log file holds the run too (Keras prints its progress to the console only).
        line = "  ".join(f"{name}={value:.4g}" for name, value in sorted(metrics.items()))
        to_log_file(f"epoch {epoch + 1}: {line}")


class CheckpointOf(keras.callbacks.ModelCheckpoint):
    """ModelCheckpoint saving `model` while a part of it (the head, on cached features) trains,
    atomically: Keras writes a partial file, renamed over `path` once complete, so a kill in
    the middle of a save never leaves a cut-off checkpoint (the previous best stays)."""

    def __init__(self, model: keras.Model, path: Path, **kwargs: Any) -> None:
        self.partial, self.path = path.with_name(f".{path.stem}.partial.keras"), path
        super().__init__(self.partial, **kwargs)
        self._saved = model

    def set_model(self, model: keras.Model) -> None:
        super().set_model(self._saved)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        with saving_alone():
            super().on_epoch_end(epoch, logs)
        if self.partial.exists():
            os.replace(self.partial, self.path)


class SaveLast(keras.callbacks.Callback):
    """`checkpoints/last.keras` at the end of training, before early stopping restores the
    best weights (placed first among the callbacks)."""

    def __init__(self, model: keras.Model, path: Path) -> None:
        super().__init__()
        self._saved, self.path = model, path

    def on_train_end(self, logs: dict | None = None) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with saving_alone():
            augment.unwrap_model(self._saved).save(self.path)


def tensorboard(keys: Any, output_dir: Path) -> keras.callbacks.Callback:
    return keras.callbacks.TensorBoard(
        log_dir=str(output_dir / "tensorboard"),
        histogram_freq=keys.histogram_freq,
        profile_batch=keys.profile_batch,
    )


def csv_logger(keys: Any, output_dir: Path) -> keras.callbacks.Callback:
    # append: a resumed run adds its epochs under the ones already written.
    return keras.callbacks.CSVLogger(str(output_dir / "history.csv"), append=True)


# `callbacks.<name>` (its schema in runner/config/callbacks.py, with `enabled`) -> the callback
# built from its keys and the job folder. A new callback is a schema field and a line here.
# (Early stopping, the checkpoints and ReduceLROnPlateau have state a resumed run restores:
# they are built below, in their own slots.)
OPTIONAL_CALLBACKS: dict[str, Callable[[Any, Path], keras.callbacks.Callback]] = {
    "tensorboard": tensorboard,
    "csv_logger": csv_logger,
}


class _Hook(keras.callbacks.Callback):
    def __init__(self, on_epoch_end: Callable[[], None]) -> None:
        super().__init__()
        self.hook = on_epoch_end

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.hook()


class Lookahead(keras.callbacks.Callback):
    """`optimizer.lookahead` (airbench94's weight averaging, after Lookahead, Zhang et al.
    2019): every `every` steps the average moves toward the model's weights by 1 - decay and
    the model is set to it; decay = `final_decay` * (step / total steps)^3, so training moves
    freely early and averages strongly at the end. The last step of each epoch averages too
    (whatever its number), so the epoch ends with the model equal to the average, taking in
    that epoch's last steps: nothing beyond the weights is needed to resume. Floating-point
    weights only (BatchNorm's moving statistics included; seed states and counters left
    alone)."""

    def __init__(self, every: int, final_decay: float, first_epoch: int) -> None:
        super().__init__()
        self.every, self.final_decay, self.first_epoch = every, final_decay, first_epoch
        self.average: list | None = None
        self.epoch = first_epoch

    def _weights(self) -> list:
        sync = getattr(self.model, "jax_state_sync", None)
        if sync is not None:  # JAX keeps the training state outside the variables
            sync()
        return [w for w in self.model.weights if "float" in str(w.dtype)]

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch = epoch
        self.average = [keras.ops.convert_to_numpy(w) for w in self._weights()]

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        steps = self.params["steps"]
        step = (self.epoch - self.first_epoch) * steps + batch + 1
        last_of_epoch = batch + 1 == steps
        if step % self.every and not last_of_epoch:
            return
        total = (self.params["epochs"] - self.first_epoch) * steps
        decay = self.final_decay * (step / total) ** 3
        for index, weight in enumerate(self._weights()):
            current = keras.ops.convert_to_numpy(weight)
            self.average[index] = decay * self.average[index] + (1 - decay) * current
            weight.assign(self.average[index])


@dataclass(frozen=True)
class EmaWeights:
    """`optimizer.ema`: validation, checkpoints and early stopping's best weights see the
    moving average of the weights; the resume state keeps the raw ones (and the average in the
    optimizer), so a resumed run trains on from exactly where it stopped.

    Keras' SwapEMAWeights swaps the average in for validation; `swap_in` (first at the end of
    an epoch) and `swap_out` (just before the resume state) hold it in while the checkpoints
    are written. At the end of `fit`, Keras puts the average into the model for good."""

    swap: keras.callbacks.SwapEMAWeights
    swap_in: keras.callbacks.Callback
    swap_out: keras.callbacks.Callback

    @classmethod
    def create(cls) -> EmaWeights:
        swap = keras.callbacks.SwapEMAWeights(swap_on_epoch=False)
        return cls(swap, _Hook(lambda: swap.on_test_begin()), _Hook(lambda: swap.on_test_end()))


@dataclass
class RunCallbacks:
    """The callbacks of one run, built once; runner/training/fit.py puts them in order for each
    `fit` (a fine-tuning phase is a second `fit` with the same checkpoint)."""

    checkpoint: CheckpointOf | None
    last: SaveLast | None
    plateau: keras.callbacks.ReduceLROnPlateau | None
    extra: list  # TensorBoard, CSVLogger
    trial: Any = None  # an Optuna sweep's trial reporter (runner/sweeps/trials.py)

    def early_stopping(self, cfg: DictConfig) -> keras.callbacks.EarlyStopping | None:
        """A fresh one per `fit` (a fine-tuning phase starts its own patience)."""
        stopping = cfg.callbacks.early_stopping
        if not stopping.enabled:
            return None
        return keras.callbacks.EarlyStopping(
            monitor=stopping.monitor,
            mode=mode_of(stopping.monitor),
            patience=stopping.patience,
            min_delta=stopping.min_delta,
            restore_best_weights=stopping.restore_best_weights,
            verbose=1,
        )


def build(
    cfg: DictConfig,
    model: keras.Model,
    output_dir: Path,
    objective_metric: str,
    *,
    writes_files: bool = True,
) -> RunCallbacks:
    """`writes_files=False`: only the callbacks that steer the training (early stopping,
    ReduceLROnPlateau), for a process that trains beside process 0 and writes nothing."""
    callbacks = cfg.callbacks
    checkpoint_dir = output_dir / "checkpoints"
    checkpoint = None
    if callbacks.model_checkpoint.enabled and writes_files:
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        monitor = checkpoint_monitor(cfg, objective_metric)
        checkpoint = CheckpointOf(
            model,
            checkpoint_dir / "best.keras",
            monitor=monitor,
            mode=mode_of(monitor),
            save_best_only=True,
        )
    keeps_last = Keep(callbacks.model_checkpoint.keep) is Keep.best_and_last
    last = None
    if writes_files and (keeps_last or Evaluate(cfg.trainer.evaluate) is Evaluate.last):
        last = SaveLast(model, checkpoint_dir / "last.keras")
    extra: list = []
    plateau = None
    if callbacks.reduce_lr_on_plateau.enabled:
        keys = callbacks.reduce_lr_on_plateau
        plateau = keras.callbacks.ReduceLROnPlateau(
            monitor=keys.monitor,
            mode=mode_of(keys.monitor),
            factor=keys.factor,
            patience=keys.patience,
            min_delta=keys.min_delta,
            min_lr=keys.min_lr,
            verbose=1,
        )
    for name, make in OPTIONAL_CALLBACKS.items():
        if callbacks[name].enabled and writes_files:
            extra.append(make(callbacks[name], output_dir))
    return RunCallbacks(checkpoint, last, plateau, extra)


def check(cfg: DictConfig, objective_metric: str, metrics: list, *, validated: bool) -> None:
    """Fail before training when a callback watches a metric this run will never report, or
    the weights to evaluate will not exist. `validated`: a validation split is held out."""
    names = ["loss", *(getattr(metric, "name", metric) for metric in metrics)]
    available = names + ([f"val_{name}" for name in names] if validated else [])
    callbacks = cfg.callbacks
    watched = {"objective.metric": objective_metric}
    if callbacks.early_stopping.enabled:
        watched["callbacks.early_stopping.monitor"] = callbacks.early_stopping.monitor
    if callbacks.model_checkpoint.enabled:
        watched["callbacks.model_checkpoint.monitor"] = checkpoint_monitor(cfg, objective_metric)
    if callbacks.reduce_lr_on_plateau.enabled:
        watched["callbacks.reduce_lr_on_plateau.monitor"] = callbacks.reduce_lr_on_plateau.monitor
    blind = [f"{key}={metric!r}" for key, metric in watched.items() if metric.startswith("val_")]
    if blind and not validated:
        raise RunnerError(
            f"trainer.validation_split=0 holds out no validation data, but {', '.join(blind)} "
            f"watch(es) it: switch that callback off or watch a training metric ({available})."
        )
    for key, metric in watched.items():
        if metric not in available:
            raise RunnerError(
                f"{key}={metric!r} is not a metric of this run; choose one of {available}."
            )


def files_to_log(output_dir: Path) -> list[tuple[Path, str]]:
    """(local path, artifact folder) of what the callbacks wrote in the job folder."""
    found = []
    if (output_dir / "tensorboard").is_dir():
        found.append((output_dir / "tensorboard", "tensorboard"))
    if (output_dir / "history.csv").is_file():
        found.append((output_dir / "history.csv", ""))
    return found
