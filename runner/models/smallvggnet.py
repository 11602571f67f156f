"""SmallVGGNet from the animals tutorial: VGG-style blocks of 3x3 convs, each followed by
ReLU and batch norm, closed by max pooling and dropout; then FC512-RELU-BN-DROP and the head."""

from __future__ import annotations

import keras
from keras import layers

from runner.config import SmallVGGNetConfig
from runner.data.base import DataInfo
from runner.models.heads import classifier_head, image_input


def build(info: DataInfo, cfg: SmallVGGNetConfig) -> keras.Model:
    inputs, x = image_input(info)
    for block, (filters, convs) in enumerate(cfg.blocks, start=1):
        for conv in range(1, convs + 1):
            x = layers.Conv2D(filters, 3, padding="same", name=f"block{block}_conv{conv}")(x)
            x = layers.Activation("relu", name=f"block{block}_relu{conv}")(x)
            x = layers.BatchNormalization(name=f"block{block}_bn{conv}")(x)
        x = layers.MaxPooling2D(pool_size=2, name=f"block{block}_pool")(x)
        x = layers.Dropout(cfg.conv_dropout, name=f"block{block}_dropout")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(cfg.dense_units, name="fc1")(x)
    x = layers.Activation("relu", name="fc1_relu")(x)
    x = layers.BatchNormalization(name="fc1_bn")(x)
    x = layers.Dropout(cfg.dense_dropout, name="fc1_dropout")(x)
    return keras.Model(inputs, classifier_head(x, info), name="smallvggnet")
