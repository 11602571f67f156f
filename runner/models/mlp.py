"""The tutorials' simple neural network: flattened pixels through dense layers."""

from __future__ import annotations

import keras
from keras import layers

from runner.config import MLPConfig
from runner.data.base import DataInfo
from runner.models.heads import classifier_head, image_input


def build(info: DataInfo, cfg: MLPConfig) -> keras.Model:
    inputs, x = image_input(info)
    x = layers.Flatten(name="flatten")(x)
    for index, units in enumerate(cfg.hidden_units, start=1):
        x = layers.Dense(units, activation=cfg.activation, name=f"fc{index}")(x)
        if cfg.dropout > 0:
            x = layers.Dropout(cfg.dropout, name=f"fc{index}_dropout")(x)
    return keras.Model(inputs, classifier_head(x, info), name="mlp")
