"""Model registry: `model.name` -> builder(info, cfg) -> keras.Model.

Input shape and number of classes always come from the data (`DataInfo`), never from the user.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras

from runner.data.base import DataInfo
from runner.errors import RunnerError
from runner.models import cifar_cnn, convnet_small, lenet, mlp, smallvggnet, vgg16

Builder = Callable[[DataInfo, Any], keras.Model]

BUILDERS: dict[str, Builder] = {
    "lenet": lenet.build,
    "mlp": mlp.build,
    "cifar_cnn": cifar_cnn.build,
    "simple_nn": mlp.build,  # the tutorials' name for the MLP
    "smallvggnet": smallvggnet.build,
    "convnet_small": convnet_small.build,
    "vgg16": vgg16.build,
}


def build(model_cfg: Any, info: DataInfo) -> keras.Model:
    try:
        builder = BUILDERS[model_cfg.name]
    except KeyError:
        raise RunnerError(
            f"model.name should be one of {sorted(BUILDERS)}. "
            f"Received: model.name={model_cfg.name!r}"
        ) from None
    try:
        model = builder(info, model_cfg)
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
