"""Optimizers: `optimizer=<name>` -> the Keras optimizer its module registers
(runner/config/registry.py), with the learning-rate schedule every optimizer shares.

Each module here declares an optimizer's schema beside its builder: `build(cfg, lr)`.
"""

from __future__ import annotations

from typing import Any

from runner.config.registry import OPTIMIZERS
from runner.config.schema import Schedule
from runner.core.lazy import keras


def learning_rate(
    cfg: Any, *, epochs: int
) -> float | keras.optimizers.schedules.LearningRateSchedule:
    if Schedule(cfg.schedule) is Schedule.constant:
        return cfg.lr
    # Keras 2's `SGD(decay=d)`: lr / (1 + d * iteration), an InverseTimeDecay stepping per batch.
    decay_rate = cfg.decay_rate if cfg.decay_rate is not None else cfg.lr / epochs
    return keras.optimizers.schedules.InverseTimeDecay(
        initial_learning_rate=cfg.lr, decay_steps=1, decay_rate=decay_rate
    )


def build(cfg: Any, *, epochs: int) -> keras.optimizers.Optimizer:
    # (Each optimizer schema checks its keys: its `check` method, run before TensorFlow starts.)
    return OPTIMIZERS[cfg.name].build(cfg, learning_rate(cfg, epochs=epochs))


def current_learning_rate(optimizer: keras.optimizers.Optimizer) -> float:
    """The rate the next step will use (a schedule evaluated at the optimizer's step count)."""
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))
