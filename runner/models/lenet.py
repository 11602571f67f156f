"""LeNet as in the MNIST tutorial: (CONV 5x5 same - RELU - MAXPOOL 2/2) x2, FC500, softmax."""

from __future__ import annotations

import keras
from keras import layers

from runner.config import LeNetConfig
from runner.data.base import DataInfo
from runner.models.heads import classifier_head, image_input


def build(info: DataInfo, cfg: LeNetConfig) -> keras.Model:
    inputs, x = image_input(info)
    for block, filters in enumerate(cfg.filters, start=1):
        x = layers.Conv2D(
            filters, cfg.kernel_size, padding="same", activation=cfg.activation,
            name=f"block{block}_conv",
        )(x)  # fmt: skip
        x = layers.MaxPooling2D(pool_size=2, strides=2, name=f"block{block}_pool")(x)
    x = layers.Flatten(name="flatten")(x)
    if cfg.dropout > 0:
        x = layers.Dropout(cfg.dropout, name="flatten_dropout")(x)
    x = layers.Dense(cfg.dense_units, activation=cfg.activation, name="fc1")(x)
    return keras.Model(inputs, classifier_head(x, info), name="lenet")
