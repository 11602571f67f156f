"""RMSprop (the cats-vs-dogs tutorial's optimizer), with Keras' defaults."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from runner.config.registry import OPTIMIZERS
from runner.config.schema import OptimizerConfig
from runner.core.lazy import keras


@dataclass
class RMSpropConfig(OptimizerConfig):
    lr: float = 0.001
    rho: float = 0.9
    momentum: float = 0.0
    epsilon: float = 1e-7


@OPTIMIZERS.register("rmsprop", RMSpropConfig)
def build(cfg: RMSpropConfig, lr: Any) -> keras.optimizers.Optimizer:
    return keras.optimizers.RMSprop(
        learning_rate=lr, rho=cfg.rho, momentum=cfg.momentum, epsilon=cfg.epsilon
    )
