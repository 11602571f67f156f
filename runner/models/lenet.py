"""LeNet as in the MNIST tutorial: (CONV 5x5 same - RELU - MAXPOOL 2/2) x2, FC500, softmax."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from runner.config.registry import MODELS
from runner.config.schema import ColorMode, ModelConfig
from runner.core.lazy import keras
from runner.models.heads import classifier_head, image_input

if TYPE_CHECKING:
    from runner.data.base import DataInfo


@dataclass
class LeNetConfig(ModelConfig):
    filters: list[int] = field(default_factory=lambda: [20, 50])
    kernel_size: int = 5
    dense_units: int = 500
    activation: str = "relu"
    dropout: float = 0.0  # before the dense layer; 0 is the tutorial's LeNet
    input_size: list[int] | None = field(default_factory=lambda: [28, 28])
    color_mode: ColorMode = ColorMode.grayscale


@MODELS.register("lenet", LeNetConfig)
def build(info: DataInfo, cfg: LeNetConfig) -> keras.Model:
    inputs, x = image_input(info)
    for block, filters in enumerate(cfg.filters, start=1):
        x = keras.layers.Conv2D(
            filters,
            cfg.kernel_size,
            padding="same",
            activation=cfg.activation,
            name=f"block{block}_conv",
        )(x)
        x = keras.layers.MaxPooling2D(pool_size=2, strides=2, name=f"block{block}_pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    if cfg.dropout > 0:
        x = keras.layers.Dropout(cfg.dropout, name="flatten_dropout")(x)
    x = keras.layers.Dense(cfg.dense_units, activation=cfg.activation, name="fc1")(x)
    return keras.Model(inputs, classifier_head(x, info), name="lenet")
