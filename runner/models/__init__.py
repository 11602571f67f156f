"""Models: `model=<name>` -> the builder its module registers (runner/config/registry.py).

Each module here declares a model's schema beside its builder: `build(info, cfg) -> keras.Model`.
Input shape and number of classes always come from the data (`DataInfo`), never from the user.
A module may also define `input_size(cfg)`, `validate(cfg, normalizing=...)` and
`weights_file(cfg, data_dir)` (see pretrained.py) for what a model needs before any data, and
`initialize(model, cfg, train)` for weights fixed from the training split before training
(airbench.py's whitening stem).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner.config.registry import MODELS
from runner.core.errors import RunnerError

if TYPE_CHECKING:
    import keras

    from runner.data.base import DataInfo, Split


def input_size(model_cfg: Any) -> tuple[int, int]:
    """The image size a model is meant for (a pretrained backbone's default when unset)."""
    hook = MODELS[model_cfg.name].hook("input_size")
    if hook:
        return hook(model_cfg)
    if not model_cfg.input_size:
        raise RunnerError(f"model.input_size should be [height, width] for model={model_cfg.name}")
    return int(model_cfg.input_size[0]), int(model_cfg.input_size[1])


def validate(model_cfg: Any, *, normalizing: bool = False) -> None:
    """Checks made before any data is loaded."""
    hook = MODELS[model_cfg.name].hook("validate")
    if hook:
        hook(model_cfg, normalizing=normalizing)


def weights_file(model_cfg: Any, data_dir: Path) -> Path | None:
    """Initial weights to fetch or read before training (pretrained backbones only)."""
    hook = MODELS[model_cfg.name].hook("weights_file")
    return hook(model_cfg, data_dir) if hook else None


def build(model_cfg: Any, info: DataInfo, weights: Path | None = None) -> keras.Model:
    builder = MODELS[model_cfg.name].build
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


def initialize(model_cfg: Any, model: keras.Model, train: Split) -> None:
    """Weights the model fixes from the training split (never validation or test) before it
    trains; a resumed run then loads its checkpoint over them."""
    hook = MODELS[model_cfg.name].hook("initialize")
    if hook:
        hook(model, model_cfg, train)
