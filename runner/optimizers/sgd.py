"""Stochastic gradient descent, with optional (Nesterov) momentum: the tutorials' optimizer.

`norm_bias_lr_scale` (airbench's "bias scaler") multiplies the learning rate of the shifts
(the normalization layers' `beta`, and biases a model marks as shifts: airbench's whitening
stem), not their weight decay.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from runner.config.registry import OPTIMIZERS
from runner.config.rules import in_range, positive
from runner.config.schema import OptimizerConfig
from runner.core.lazy import keras
from runner.core.shifts import is_shift
from runner.optimizers.common import keyword_args


@dataclass
class SGDConfig(OptimizerConfig):
    momentum: float = 0.0
    nesterov: bool = False
    norm_bias_lr_scale: float = 1.0  # the shifts (BatchNorm/LayerNorm beta) learn this much faster

    def check(self, at: str) -> None:
        super().check(at)
        in_range(f"{at}.momentum", self.momentum, 0, 1)
        positive(f"{at}.norm_bias_lr_scale", self.norm_bias_lr_scale)


@OPTIMIZERS.register("sgd", SGDConfig)
def build(cfg: SGDConfig, lr: Any, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    args = {"learning_rate": lr, "momentum": cfg.momentum, "nesterov": cfg.nesterov}
    if cfg.norm_bias_lr_scale == 1:
        return keras.optimizers.SGD(**args, **keyword_args(cfg))
    return scaled_sgd_class()(
        **args, norm_bias_lr_scale=cfg.norm_bias_lr_scale, **keyword_args(cfg)
    )


@functools.cache
def scaled_sgd_class() -> type:
    """Keras' SGD with a larger rate for the normalization shifts, defined (and registered with
    Keras, so a checkpoint's optimizer loads in safe mode) on first use, as the one-cycle
    schedule. With momentum, a gradient scaled by k is a learning rate scaled by k; Keras'
    decoupled weight decay is applied apart, so it stays unscaled."""

    @keras.saving.register_keras_serializable(package="runner")
    class NormBiasScaledSGD(keras.optimizers.SGD):
        def __init__(self, *args: Any, norm_bias_lr_scale: float = 1.0, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.norm_bias_lr_scale = float(norm_bias_lr_scale)

        def build(self, variables: list) -> None:
            super().build(variables)
            self._scaled = {self._var_key(variable) for variable in variables if is_shift(variable)}

        def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
            if self._var_key(variable) in self._scaled:
                gradient = keras.ops.multiply(gradient, self.norm_bias_lr_scale)
            super().update_step(gradient, variable, learning_rate)

        def get_config(self) -> dict:
            return {**super().get_config(), "norm_bias_lr_scale": self.norm_bias_lr_scale}

    return NormBiasScaledSGD
