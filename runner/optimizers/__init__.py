"""Optimizers: `optimizer=<name>` -> the Keras optimizer its module registers
(runner/config/registry.py), with the learning-rate schedule (schedules.py) and the keys
(common.py) every optimizer shares.

Each module here declares an optimizer's schema beside its builder:
`build(cfg, lr, steps_per_epoch)`.
"""

from __future__ import annotations

from typing import Any

from runner.config.registry import OPTIMIZERS
from runner.core.lazy import keras
from runner.optimizers.schedules import learning_rate


def build(cfg: Any, *, epochs: int, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    # (Each optimizer schema checks its keys: its `check` method, run before TensorFlow starts.)
    lr = learning_rate(cfg, epochs=epochs, steps_per_epoch=steps_per_epoch)
    return OPTIMIZERS[cfg.name].build(cfg, lr, steps_per_epoch)


def current_learning_rate(optimizer: keras.optimizers.Optimizer) -> float:
    """The rate the next step will use (a schedule evaluated at the optimizer's step count)."""
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))
