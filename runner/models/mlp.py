"""The tutorials' simple neural network: flattened pixels through dense layers."""

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
class MLPConfig(ModelConfig):
    hidden_units: list[int] = field(default_factory=lambda: [1024, 512])
    activation: str = "sigmoid"
    dropout: float = 0.0  # after each hidden layer
    # input_size: the tutorials flatten 32x32x3 = 3072 pixels (the default).


@MODELS.register("mlp", MLPConfig, aliases=("simple_nn",))  # simple_nn: the tutorials' name
def build(info: DataInfo, cfg: MLPConfig) -> keras.Model:
    inputs, x = image_input(info)
    x = keras.layers.Flatten(name="flatten")(x)
    for index, units in enumerate(cfg.hidden_units, start=1):
        x = keras.layers.Dense(units, activation=cfg.activation, name=f"fc{index}")(x)
        if cfg.dropout > 0:
            x = keras.layers.Dropout(cfg.dropout, name=f"fc{index}_dropout")(x)
    return keras.Model(inputs, classifier_head(x, info), name="mlp")
