"""Model registry: `model.name` -> builder(info, cfg) -> keras.Model.

Input shape and number of classes always come from the data (`DataInfo`), never from the user.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras

from runner.data.base import DataInfo
from runner.errors import RunnerError
from runner.models import (
    cifar_cnn,
    convnet_small,
    lenet,
    mlp,
    pretrained,
    smallvggnet,
    vgg16,
)

Builder = Callable[[DataInfo, Any], keras.Model]

BUILDERS: dict[str, Builder] = {
    "lenet": lenet.build,
    "mlp": mlp.build,
    "cifar_cnn": cifar_cnn.build,
    "simple_nn": mlp.build,  # the tutorials' name for the MLP
    "smallvggnet": smallvggnet.build,
    "convnet_small": convnet_small.build,
    "vgg16": vgg16.build,
    "pretrained": pretrained.build,  # keras.applications backbones; takes a weights file
}


def input_size(model_cfg: Any) -> tuple[int, int]:
    """The image size a model is meant for (a pretrained backbone's default when unset)."""
    if model_cfg.name == "pretrained":
        return pretrained.input_size(model_cfg)
    if not model_cfg.input_size:
        raise RunnerError(f"model.input_size should be [height, width] for model={model_cfg.name}")
    return int(model_cfg.input_size[0]), int(model_cfg.input_size[1])


def validate(model_cfg: Any, *, normalizing: bool = False) -> None:
    """Checks made before any data is loaded."""
    if model_cfg.name == "pretrained":
        pretrained.validate(model_cfg, normalizing=normalizing)


def weights_file(model_cfg: Any, data_dir: Path) -> Path | None:
    """Initial weights to fetch or read before training (pretrained backbones only)."""
    if model_cfg.name == "pretrained":
        return pretrained.weights_file(model_cfg, data_dir)
    return None


def build(model_cfg: Any, info: DataInfo, weights: Path | None = None) -> keras.Model:
    try:
        builder = BUILDERS[model_cfg.name]
    except KeyError:
        raise RunnerError(
            f"model.name should be one of {sorted(BUILDERS)}. "
            f"Received: model.name={model_cfg.name!r}"
        ) from None
    try:
        model = builder(info, model_cfg, weights) if weights else builder(info, model_cfg)
    except ValueError as error:
        # e.g. a model whose pooling shrinks a small input below 1x1.
        raise RunnerError(
            f"model={model_cfg.name} cannot be built for data={info.name} "
            f"(input {info.input_shape}, {info.num_classes} classes): {error}"
        ) from None
    for layer, weights in info.preprocessing:
        if weights is not None:
            layer.set_weights(weights)
    return model
