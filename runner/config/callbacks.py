"""`callbacks.*`: the schema of the Keras callbacks a run switches on (`enabled`) and tunes.

One dataclass per callback, each checking its own keys; runner/training/callbacks.py builds them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from omegaconf import MISSING

from runner.config.rules import at_least, between, check_fields

# Keras callbacks a run switches on and tunes from the config (runner/training/callbacks.py).
# A monitor ending in "loss" is minimized, any other (accuracy, pr_auc) maximized.


@dataclass
class EarlyStoppingConfig:
    enabled: bool = True
    monitor: str = "val_loss"
    patience: int = 5
    min_delta: float = 0.0
    restore_best_weights: bool = True

    def check(self, at: str) -> None:
        at_least(f"{at}.patience", self.patience, 0)
        at_least(f"{at}.min_delta", self.min_delta, 0)


class Keep(Enum):
    best = "best"  # checkpoints/best.keras
    best_and_last = "best_and_last"  # and checkpoints/last.keras, the weights of the last epoch


@dataclass
class ModelCheckpointConfig:
    """checkpoints/best.keras: the model of the best epoch by `monitor`, kept as training goes."""

    enabled: bool = True
    # null: the objective's metric (objective.metric), so the evaluated weights and the value
    # a sweep ranks come from the same epoch.
    monitor: str | None = None
    keep: Keep = Keep.best


@dataclass
class ReduceLROnPlateauConfig:
    enabled: bool = False
    monitor: str = "val_loss"
    factor: float = 0.1
    patience: int = 3
    min_delta: float = 1e-4  # a change smaller than this is no improvement
    min_lr: float = 0.0

    def check(self, at: str) -> None:
        between(f"{at}.factor", self.factor, 0, 1)
        at_least(f"{at}.patience", self.patience, 0)
        at_least(f"{at}.min_delta", self.min_delta, 0)
        at_least(f"{at}.min_lr", self.min_lr, 0)


@dataclass
class TensorBoardConfig:
    """Event files in the job folder's `tensorboard/`, logged to the MLflow run at the end."""

    enabled: bool = False
    histogram_freq: int = 0  # epochs between weight histograms; 0: none
    profile_batch: int = 0  # profile this batch (0: no profiling)

    def check(self, at: str) -> None:
        at_least(f"{at}.histogram_freq", self.histogram_freq, 0)
        at_least(f"{at}.profile_batch", self.profile_batch, 0)


@dataclass
class CSVLoggerConfig:
    """`history.csv` in the job folder (a row per epoch), logged to the MLflow run."""

    enabled: bool = False


@dataclass
class CallbacksConfig:
    """A callback is one field here (its dataclass, with `enabled` unless it is always on) and
    one builder in runner/training/callbacks.py's OPTIONAL_CALLBACKS."""

    name: str = MISSING
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    model_checkpoint: ModelCheckpointConfig = field(default_factory=ModelCheckpointConfig)
    reduce_lr_on_plateau: ReduceLROnPlateauConfig = field(default_factory=ReduceLROnPlateauConfig)
    tensorboard: TensorBoardConfig = field(default_factory=TensorBoardConfig)
    csv_logger: CSVLoggerConfig = field(default_factory=CSVLoggerConfig)

    def check(self, at: str) -> None:
        check_fields(self, at)
