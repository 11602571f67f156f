"""SmallVGGNet from the animals tutorial: VGG-style blocks of 3x3 convs, each followed by
ReLU and batch norm, closed by max pooling and dropout; then FC512-RELU-BN-DROP and the head."""

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
class SmallVGGNetConfig(ModelConfig):
    # [filters, convs] per block; each block ends with max pooling and dropout.
    blocks: list[list[int]] = field(default_factory=lambda: [[32, 1], [64, 2], [128, 3]])
    dense_units: int = 512
    conv_dropout: float = 0.25
    dense_dropout: float = 0.5
    input_size: list[int] | None = field(default_factory=lambda: [64, 64])


@MODELS.register("smallvggnet", SmallVGGNetConfig)
def build(info: DataInfo, cfg: SmallVGGNetConfig) -> keras.Model:
    inputs, x = image_input(info)
    for block, (filters, convs) in enumerate(cfg.blocks, start=1):
        for conv in range(1, convs + 1):
            x = keras.layers.Conv2D(filters, 3, padding="same", name=f"block{block}_conv{conv}")(x)
            x = keras.layers.Activation("relu", name=f"block{block}_relu{conv}")(x)
            x = keras.layers.BatchNormalization(name=f"block{block}_bn{conv}")(x)
        x = keras.layers.MaxPooling2D(pool_size=2, name=f"block{block}_pool")(x)
        x = keras.layers.Dropout(cfg.conv_dropout, name=f"block{block}_dropout")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(cfg.dense_units, name="fc1")(x)
    x = keras.layers.Activation("relu", name="fc1_relu")(x)
    x = keras.layers.BatchNormalization(name="fc1_bn")(x)
    x = keras.layers.Dropout(cfg.dense_dropout, name="fc1_dropout")(x)
    return keras.Model(inputs, classifier_head(x, info), name="smallvggnet")
