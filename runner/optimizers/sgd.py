"""Stochastic gradient descent, with optional (Nesterov) momentum: the tutorials' optimizer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from runner.config.registry import OPTIMIZERS
from runner.config.schema import OptimizerConfig
from runner.core.lazy import keras


@dataclass
class SGDConfig(OptimizerConfig):
    momentum: float = 0.0
    nesterov: bool = False


@OPTIMIZERS.register("sgd", SGDConfig)
def build(cfg: SGDConfig, lr: Any) -> keras.optimizers.Optimizer:
    return keras.optimizers.SGD(learning_rate=lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
