"""Lion (Chen et al., 2023, "Symbolic Discovery of Optimization Algorithms"): the sign of an
interpolated momentum. Its updates are larger than Adam's: use a 3-10x smaller lr and a
3-10x larger weight decay (the paper's advice)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from runner.config.registry import OPTIMIZERS
from runner.config.rules import in_range
from runner.config.schema import OptimizerConfig
from runner.core.lazy import keras
from runner.optimizers.common import keyword_args


@dataclass
class LionConfig(OptimizerConfig):
    lr: float = 0.0001
    beta_1: float = 0.9
    beta_2: float = 0.99

    def check(self, at: str) -> None:
        super().check(at)
        in_range(f"{at}.beta_1", self.beta_1, 0, 1)
        in_range(f"{at}.beta_2", self.beta_2, 0, 1)


@OPTIMIZERS.register("lion", LionConfig)
def build(cfg: LionConfig, lr: Any, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    return keras.optimizers.Lion(
        learning_rate=lr, beta_1=cfg.beta_1, beta_2=cfg.beta_2, **keyword_args(cfg)
    )
