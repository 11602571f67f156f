"""Stochastic gradient descent, with optional (Nesterov) momentum: the tutorials' optimizer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from runner.config.registry import OPTIMIZERS
from runner.config.rules import in_range
from runner.config.schema import OptimizerConfig
from runner.core.lazy import keras
from runner.optimizers.common import keyword_args


@dataclass
class SGDConfig(OptimizerConfig):
    momentum: float = 0.0
    nesterov: bool = False

    def check(self, at: str) -> None:
        super().check(at)
        in_range(f"{at}.momentum", self.momentum, 0, 1)


@OPTIMIZERS.register("sgd", SGDConfig)
def build(cfg: SGDConfig, lr: Any, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    return keras.optimizers.SGD(
        learning_rate=lr,
        momentum=cfg.momentum,
        nesterov=cfg.nesterov,
        **keyword_args(cfg),
    )
