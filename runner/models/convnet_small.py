"""The cats-vs-dogs convnet: four CONV 3x3 (valid) - MAXPOOL blocks, Dense 512, the head.
With `dropout` > 0 it is the augmented variant (Dropout before the dense layer)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from runner.config.registry import MODELS
from runner.config.schema import ModelConfig
from runner.core.lazy import keras
from runner.models.heads import classifier_head, image_input

if TYPE_CHECKING:
    from runner.data.base import DataInfo


@dataclass
class ConvNetSmallConfig(ModelConfig):
    filters: list[int] = field(default_factory=lambda: [32, 64, 128, 128])
    dense_units: int = 512
    dropout: float = 0.0  # before the dense layer; 0.5 in the augmented variant
    input_size: list[int] | None = field(default_factory=lambda: [150, 150])


@MODELS.register("convnet_small", ConvNetSmallConfig)
def build(info: DataInfo, cfg: ConvNetSmallConfig) -> keras.Model:
    inputs, x = image_input(info)
    for block, filters in enumerate(cfg.filters, start=1):
        x = keras.layers.Conv2D(filters, 3, activation="relu", name=f"block{block}_conv")(x)
        x = keras.layers.MaxPooling2D(pool_size=2, name=f"block{block}_pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    if cfg.dropout > 0:
        x = keras.layers.Dropout(cfg.dropout, name="flatten_dropout")(x)
    x = keras.layers.Dense(cfg.dense_units, activation="relu", name="fc1")(x)
    return keras.Model(inputs, classifier_head(x, info), name="convnet_small")
