"""LAMB (You et al., 2019): Adam with a per-layer trust ratio, made for large batches."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from runner.config.registry import OPTIMIZERS
from runner.config.rules import in_range, positive
from runner.config.schema import OptimizerConfig
from runner.core.lazy import keras
from runner.optimizers.common import keyword_args


@dataclass
class LambConfig(OptimizerConfig):
    lr: float = 0.001
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-7

    def check(self, at: str) -> None:
        super().check(at)
        in_range(f"{at}.beta_1", self.beta_1, 0, 1)
        in_range(f"{at}.beta_2", self.beta_2, 0, 1)
        positive(f"{at}.epsilon", self.epsilon)


@OPTIMIZERS.register("lamb", LambConfig)
def build(cfg: LambConfig, lr: Any, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    return keras.optimizers.Lamb(
        learning_rate=lr,
        beta_1=cfg.beta_1,
        beta_2=cfg.beta_2,
        epsilon=cfg.epsilon,
        **keyword_args(cfg),
    )
