"""The CIFAR-10 tutorial's CNN: CONV32 3x3 - MAXPOOL - DROP, FC1024 - DROP, softmax."""

from __future__ import annotations

import keras
from keras import layers

from runner.config import CifarCNNConfig
from runner.data.base import DataInfo
from runner.models.heads import classifier_head, image_input


def build(info: DataInfo, cfg: CifarCNNConfig) -> keras.Model:
    inputs, x = image_input(info)
    x = layers.Conv2D(cfg.filters, 3, activation="relu", name="block1_conv")(x)
    x = layers.MaxPooling2D(pool_size=2, name="block1_pool")(x)
    x = layers.Dropout(cfg.conv_dropout, name="block1_dropout")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(cfg.dense_units, activation="relu", name="fc1")(x)
    x = layers.Dropout(cfg.dense_dropout, name="fc1_dropout")(x)
    return keras.Model(inputs, classifier_head(x, info), name="cifar_cnn")
