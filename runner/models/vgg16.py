"""VGG16 from scratch (Simonyan & Zisserman): 13 convs 3x3 same in 5 blocks, each block closed
by 2x2 max pooling, then two fully connected layers of `fc_units` and the head."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from runner.config.registry import MODELS
from runner.config.schema import ModelConfig
from runner.core.lazy import keras
from runner.models.heads import classifier_head, image_input

if TYPE_CHECKING:
    from runner.data.base import DataInfo

BLOCKS = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))  # (filters, convs)


@dataclass
class VGG16Config(ModelConfig):
    fc_units: int = 4096  # width of the two fully connected layers of the head
    dropout: float = 0.0  # after each of them
    input_size: list[int] | None = field(default_factory=lambda: [224, 224])


@MODELS.register("vgg16", VGG16Config)
def build(info: DataInfo, cfg: VGG16Config) -> keras.Model:
    inputs, x = image_input(info)
    for block, (filters, convs) in enumerate(BLOCKS, start=1):
        for conv in range(1, convs + 1):
            x = keras.layers.Conv2D(
                filters, 3, padding="same", activation="relu", name=f"block{block}_conv{conv}"
            )(x)
        x = keras.layers.MaxPooling2D(pool_size=2, strides=2, name=f"block{block}_pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    for index in (1, 2):
        x = keras.layers.Dense(cfg.fc_units, activation="relu", name=f"fc{index}")(x)
        if cfg.dropout > 0:
            x = keras.layers.Dropout(cfg.dropout, name=f"fc{index}_dropout")(x)
    return keras.Model(inputs, classifier_head(x, info), name="vgg16")
