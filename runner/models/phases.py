"""How a model asks to be trained: the phases of its run, each one `fit`.

Most models train in one phase of `trainer.epochs` epochs. A model module that needs more
defines `training_phases(cfg, *, epochs, augmented) -> list[Phase]` beside its builder (the
pretrained backbones: the head on cached features, then the top of the backbone at a lower
rate); the job runs whatever phases the model declares and names no model itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from runner.config.registry import MODELS

if TYPE_CHECKING:
    import keras


@dataclass(frozen=True)
class PhaseNote:
    """What a phase's preparation did, for the run's log: a line and a JSON artifact."""

    message: str
    artifact: str
    data: Any


@dataclass(frozen=True)
class Phase:
    """One `fit` of a run."""

    epochs: int
    lr: float | None = None  # a learning rate of its own; None: optimizer.lr
    # Called on the model before the phase trains (e.g. unfreeze the top of a backbone).
    prepare: Callable[[keras.Model], PhaseNote] | None = None
    # Splits the model into (extractor: images -> features, head: features -> outputs): the
    # extractor runs once per image, and each epoch trains the head on the cached features.
    cached_features: Callable[[keras.Model], tuple[keras.Model, keras.Model]] | None = None


def training_phases(model_cfg: Any, *, epochs: int, augmented: bool) -> list[Phase]:
    """The model's phases (its module's `training_phases` hook), else one of `epochs`."""
    hook = MODELS[model_cfg.name].hook("training_phases")
    if hook is None:
        return [Phase(epochs)]
    return hook(model_cfg, epochs=epochs, augmented=augmented)
