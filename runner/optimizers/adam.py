"""Adam (Kingma & Ba), with Keras' defaults."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from runner.config.registry import OPTIMIZERS
from runner.core.lazy import keras
from runner.optimizers.common import MomentsConfig, keyword_args, moments


@dataclass
class AdamConfig(MomentsConfig):
    """Keras' defaults."""


@OPTIMIZERS.register("adam", AdamConfig)
def build(cfg: AdamConfig, lr: Any, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    return keras.optimizers.Adam(
        learning_rate=lr,
        **moments(cfg),
        **keyword_args(cfg),
    )
