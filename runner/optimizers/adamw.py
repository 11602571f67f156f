"""AdamW (Loshchilov & Hutter): Adam with decoupled weight decay, Keras' defaults."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from runner.config.registry import OPTIMIZERS
from runner.core.lazy import keras
from runner.optimizers.common import MomentsConfig, keyword_args, moments


@dataclass
class AdamWConfig(MomentsConfig):
    weight_decay: float | None = 0.004  # Keras' AdamW default


@OPTIMIZERS.register("adamw", AdamWConfig)
def build(cfg: AdamWConfig, lr: Any, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    return keras.optimizers.AdamW(
        learning_rate=lr,
        **moments(cfg),
        **keyword_args(cfg),
    )
