"""Adam (Kingma & Ba), with Keras' defaults."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from runner.config.registry import OPTIMIZERS
from runner.config.schema import OptimizerConfig
from runner.core.lazy import keras


@dataclass
class AdamConfig(OptimizerConfig):
    lr: float = 0.001
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-7


@OPTIMIZERS.register("adam", AdamConfig)
def build(cfg: AdamConfig, lr: Any) -> keras.optimizers.Optimizer:
    return keras.optimizers.Adam(
        learning_rate=lr, beta_1=cfg.beta_1, beta_2=cfg.beta_2, epsilon=cfg.epsilon
    )
