"""The CIFAR-10 tutorial's CNN: CONV32 3x3 - MAXPOOL - DROP, FC1024 - DROP, softmax."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from runner.config.registry import MODELS
from runner.config.schema import ModelConfig
from runner.core.lazy import keras
from runner.models.heads import classifier_head, image_input

if TYPE_CHECKING:
    from runner.data.base import DataInfo


@dataclass
class CifarCNNConfig(ModelConfig):
    filters: int = 32
    dense_units: int = 1024
    conv_dropout: float = 0.25
    dense_dropout: float = 0.5


@MODELS.register("cifar_cnn", CifarCNNConfig)
def build(info: DataInfo, cfg: CifarCNNConfig) -> keras.Model:
    inputs, x = image_input(info)
    x = keras.layers.Conv2D(cfg.filters, 3, activation="relu", name="block1_conv")(x)
    x = keras.layers.MaxPooling2D(pool_size=2, name="block1_pool")(x)
    x = keras.layers.Dropout(cfg.conv_dropout, name="block1_dropout")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(cfg.dense_units, activation="relu", name="fc1")(x)
    x = keras.layers.Dropout(cfg.dense_dropout, name="fc1_dropout")(x)
    return keras.Model(inputs, classifier_head(x, info), name="cifar_cnn")
