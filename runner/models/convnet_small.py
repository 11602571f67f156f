"""The cats-vs-dogs convnet: four CONV 3x3 (valid) - MAXPOOL blocks, Dense 512, the head.
With `dropout` > 0 it is the augmented variant (Dropout before the dense layer)."""

from __future__ import annotations

import keras
from keras import layers

from runner.config import ConvNetSmallConfig
from runner.data.base import DataInfo
from runner.models.heads import classifier_head, image_input


def build(info: DataInfo, cfg: ConvNetSmallConfig) -> keras.Model:
    inputs, x = image_input(info)
    for block, filters in enumerate(cfg.filters, start=1):
        x = layers.Conv2D(filters, 3, activation="relu", name=f"block{block}_conv")(x)
        x = layers.MaxPooling2D(pool_size=2, name=f"block{block}_pool")(x)
    x = layers.Flatten(name="flatten")(x)
    if cfg.dropout > 0:
        x = layers.Dropout(cfg.dropout, name="flatten_dropout")(x)
    x = layers.Dense(cfg.dense_units, activation="relu", name="fc1")(x)
    return keras.Model(inputs, classifier_head(x, info), name="convnet_small")
