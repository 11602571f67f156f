"""Muon (Jordan et al., 2024): momentum orthogonalized by Newton-Schulz iterations for 2-D
weights (Dense kernels); every other weight (convolutions, biases, BatchNorm, embeddings)
steps with AdamW, as Keras' Muon does."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from runner.config.registry import OPTIMIZERS
from runner.config.rules import at_least, in_range
from runner.config.schema import OptimizerConfig
from runner.core.lazy import keras
from runner.optimizers.common import keyword_args


@dataclass
class MuonConfig(OptimizerConfig):
    lr: float = 0.001
    weight_decay: float | None = 0.004  # Keras' Muon default
    momentum: float = 0.95
    nesterov: bool = True
    ns_steps: int = 5  # Newton-Schulz iterations
    adam_lr_ratio: float = 1.0  # the AdamW part's lr, as a multiple of lr

    def check(self, at: str) -> None:
        super().check(at)
        in_range(f"{at}.momentum", self.momentum, 0, 1)
        at_least(f"{at}.ns_steps", self.ns_steps, 1)
        at_least(f"{at}.adam_lr_ratio", self.adam_lr_ratio, 0)


@OPTIMIZERS.register("muon", MuonConfig)
def build(cfg: MuonConfig, lr: Any, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    args = keyword_args(cfg)
    return keras.optimizers.Muon(
        learning_rate=lr,
        momentum=cfg.momentum,
        nesterov=cfg.nesterov,
        ns_steps=cfg.ns_steps,
        adam_lr_ratio=cfg.adam_lr_ratio,
        adam_weight_decay=args.get("weight_decay", 0.004),
        # The output layer (the head's kernel) is a 2-D weight Muon is not meant for.
        exclude_layers=["predictions", "logits"],
        **args,
    )
