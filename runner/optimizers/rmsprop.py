"""RMSprop (the cats-vs-dogs tutorial's optimizer), with Keras' defaults."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from runner.config.registry import OPTIMIZERS
from runner.config.rules import in_range, positive
from runner.config.schema import OptimizerConfig
from runner.core.lazy import keras
from runner.optimizers.common import keyword_args


@dataclass
class RMSpropConfig(OptimizerConfig):
    lr: float = 0.001
    rho: float = 0.9
    momentum: float = 0.0
    epsilon: float = 1e-7

    def check(self, at: str) -> None:
        super().check(at)
        in_range(f"{at}.rho", self.rho, 0, 1)
        in_range(f"{at}.momentum", self.momentum, 0, 1)
        positive(f"{at}.epsilon", self.epsilon)


@OPTIMIZERS.register("rmsprop", RMSpropConfig)
def build(cfg: RMSpropConfig, lr: Any, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    return keras.optimizers.RMSprop(
        learning_rate=lr,
        rho=cfg.rho,
        momentum=cfg.momentum,
        epsilon=cfg.epsilon,
        **keyword_args(cfg),
    )
