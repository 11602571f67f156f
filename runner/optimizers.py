"""Optimizer registry: `optimizer.name` -> a Keras optimizer, with an optional lr schedule."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras

from runner.config import Schedule
from runner.errors import RunnerError


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


def _sgd(cfg: Any, lr: Any) -> keras.optimizers.Optimizer:
    return keras.optimizers.SGD(learning_rate=lr, momentum=cfg.momentum, nesterov=cfg.nesterov)


def _adam(cfg: Any, lr: Any) -> keras.optimizers.Optimizer:
    return keras.optimizers.Adam(
        learning_rate=lr, beta_1=cfg.beta_1, beta_2=cfg.beta_2, epsilon=cfg.epsilon
    )


def _rmsprop(cfg: Any, lr: Any) -> keras.optimizers.Optimizer:
    return keras.optimizers.RMSprop(
        learning_rate=lr, rho=cfg.rho, momentum=cfg.momentum, epsilon=cfg.epsilon
    )


BUILDERS: dict[str, Callable[[Any, Any], keras.optimizers.Optimizer]] = {
    "sgd": _sgd,
    "adam": _adam,
    "rmsprop": _rmsprop,
}


def build(cfg: Any, *, epochs: int) -> keras.optimizers.Optimizer:
    if cfg.name not in BUILDERS:
        raise RunnerError(
            f"optimizer.name should be one of {sorted(BUILDERS)}. Received: {cfg.name!r}"
        )
    if cfg.lr <= 0:
        raise RunnerError(f"optimizer.lr should be positive. Received: optimizer.lr={cfg.lr}")
    return BUILDERS[cfg.name](cfg, learning_rate(cfg, epochs=epochs))


def current_learning_rate(optimizer: keras.optimizers.Optimizer) -> float:
    """The rate the next step will use (a schedule evaluated at the optimizer's step count)."""
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))
