"""A BatchNorm CNN for small grayscale images (MNIST, Fashion-MNIST), the shape of today's
99.5%+ MNIST recipes: stages of two 3x3 conv - BN - ReLU and a 2x2 max pool at 32, 64 and 128
filters, global average pooling, dropout, the head. 289,066 parameters on 28x28x1 input with
10 classes (the default `filters`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from runner.config.registry import MODELS
from runner.config.rules import at_least, in_range
from runner.config.schema import ColorMode, ModelConfig
from runner.core.lazy import keras
from runner.models.heads import classifier_head, image_input

if TYPE_CHECKING:
    from runner.data.base import DataInfo


@dataclass
class BNCNNConfig(ModelConfig):
    filters: list[int] = field(default_factory=lambda: [32, 64, 128])  # one stage each
    dropout: float = 0.3  # before the head
    # BatchNorm's running statistics follow the batches this fast (Keras' default 0.99 lags for
    # hundreds of steps: small datasets would validate on stale statistics).
    batchnorm_momentum: float = 0.9
    input_size: list[int] | None = field(default_factory=lambda: [28, 28])
    color_mode: ColorMode = ColorMode.grayscale

    def check(self, at: str) -> None:
        for filters in self.filters:
            at_least(f"{at}.filters", filters, 1)
        in_range(f"{at}.dropout", self.dropout, 0, 1)
        in_range(f"{at}.batchnorm_momentum", self.batchnorm_momentum, 0, 1)


def conv_bn_relu(
    x: keras.KerasTensor, filters: int, momentum: float, name: str
) -> keras.KerasTensor:
    x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(momentum=momentum, name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


@MODELS.register("bn_cnn", BNCNNConfig)
def build(info: DataInfo, cfg: BNCNNConfig) -> keras.Model:
    inputs, x = image_input(info)
    for stage, filters in enumerate(cfg.filters, start=1):
        x = conv_bn_relu(x, filters, cfg.batchnorm_momentum, f"stage{stage}_1")
        x = conv_bn_relu(x, filters, cfg.batchnorm_momentum, f"stage{stage}_2")
        x = keras.layers.MaxPooling2D(2, name=f"stage{stage}_pool")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    if cfg.dropout:
        x = keras.layers.Dropout(cfg.dropout, name="dropout")(x)
    return keras.Model(inputs, classifier_head(x, info), name="bn_cnn")
