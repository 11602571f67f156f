"""LAMB (You et al., 2019): Adam with a per-layer trust ratio, made for large batches."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from runner.config.registry import OPTIMIZERS
from runner.core.lazy import keras
from runner.optimizers.common import MomentsConfig, keyword_args, moments


@dataclass
class LambConfig(MomentsConfig):
    """Keras' defaults."""


@OPTIMIZERS.register("lamb", LambConfig)
def build(cfg: LambConfig, lr: Any, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    return keras.optimizers.Lamb(
        learning_rate=lr,
        **moments(cfg),
        **keyword_args(cfg),
    )
