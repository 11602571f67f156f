"""Typed schemas for every config group, registered in Hydra's ConfigStore.

Hydra merges `conf/**.yaml` into these dataclasses, so an unknown key or a value of the wrong
type is rejected while the config is composed: before TensorFlow is even imported.

Each group option's YAML file starts with a defaults list naming its schema
(`- /schema/model/lenet@_here_`), the pattern of Hydra's "structured config schema" tutorial: the
group's field is typed with the base class, the option picks the subclass that holds its own keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

# --------------------------------------------------------------------------------------- data


@dataclass
class FileSpec:
    """One file of a dataset: its name on the mirror and in the cache, and its sha256."""

    name: str = MISSING
    sha256: str | None = None


@dataclass
class DataConfig:
    name: str = MISSING


@dataclass
class DownloadedDataConfig(DataConfig):
    """A dataset fetched from `mirror` into `paths.data_dir/<name>/` and checked file by file."""

    mirror: str = MISSING
    files: dict[str, FileSpec] = field(default_factory=dict)
    verify_checksum: bool = True


@dataclass
class DigitsDataConfig(DataConfig):
    """scikit-learn's bundled 8x8 digits, upscaled: works offline, trains in seconds."""

    image_size: int = 28
    test_fraction: float = 0.2


# -------------------------------------------------------------------------------------- model


@dataclass
class ModelConfig:
    name: str = MISSING


@dataclass
class LeNetConfig(ModelConfig):
    filters: list[int] = field(default_factory=lambda: [20, 50])
    kernel_size: int = 5
    dense_units: int = 500
    activation: str = "relu"
    # Dropout before the dense layer; 0 is the tutorial's LeNet.
    dropout: float = 0.0


@dataclass
class MLPConfig(ModelConfig):
    hidden_units: list[int] = field(default_factory=lambda: [1024, 512])
    activation: str = "sigmoid"
    dropout: float = 0.0


@dataclass
class CifarCNNConfig(ModelConfig):
    filters: int = 32
    dense_units: int = 1024
    conv_dropout: float = 0.25
    dense_dropout: float = 0.5


# ---------------------------------------------------------------------------------- optimizer


class Schedule(Enum):
    constant = "constant"
    # lr / (1 + decay_rate * step): the tutorials' legacy `SGD(decay=...)`.
    inverse_time = "inverse_time"


@dataclass
class OptimizerConfig:
    name: str = MISSING
    lr: float = 0.01
    schedule: Schedule = Schedule.constant
    # Per-step decay of the inverse-time schedule; null means the tutorials' rule lr / epochs.
    decay_rate: float | None = None


@dataclass
class SGDConfig(OptimizerConfig):
    momentum: float = 0.0
    nesterov: bool = False


@dataclass
class AdamConfig(OptimizerConfig):
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-7


@dataclass
class RMSpropConfig(OptimizerConfig):
    rho: float = 0.9
    momentum: float = 0.0
    epsilon: float = 1e-7


# ------------------------------------------------------------------------------- augmentation


@dataclass
class AugmentationConfig:
    name: str = "none"


# ------------------------------------------------------------------------ trainer and logging


@dataclass
class EarlyStoppingConfig:
    enabled: bool = True
    monitor: str = "val_loss"
    patience: int = 5
    restore_best_weights: bool = True


@dataclass
class CheckpointConfig:
    enabled: bool = True
    monitor: str = "val_loss"
    save_best_only: bool = True


@dataclass
class TrainerConfig:
    epochs: int = 20
    batch_size: int = 128
    seed: int = 42
    validation_split: float = 0.1
    # Keras' fit verbosity: 1 = progress bar, 2 = one line per epoch; null picks 1 on a terminal.
    verbose: int | None = None
    # TensorFlow thread pools; 0 lets TensorFlow decide (all cores).
    intra_op_threads: int = 0
    inter_op_threads: int = 0
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)


@dataclass
class LoggerConfig:
    tracking_uri: str = MISSING
    experiment: str = "runner"
    # Where a newly created experiment keeps its artifacts; null lets the tracking server decide.
    artifact_location: str | None = None
    run_name: str | None = None
    log_model: bool = True


@dataclass
class PathsConfig:
    root: str = MISSING
    data_dir: str = MISSING
    # Hydra's output folder of the job; unknown (None) when only printing the config.
    output_dir: str | None = None


class Mode(Enum):
    max = "max"
    min = "min"


@dataclass
class ObjectiveConfig:
    """What a job returns to a sweeper: the best value of `metric` over its epochs."""

    metric: str = "val_accuracy"
    mode: Mode = Mode.max


@dataclass
class Config:
    data: DataConfig = MISSING
    model: ModelConfig = MISSING
    optimizer: OptimizerConfig = MISSING
    augmentation: AugmentationConfig = MISSING
    trainer: TrainerConfig = MISSING
    logger: LoggerConfig = MISSING
    paths: PathsConfig = MISSING
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    # Free-form: an `experiment=` preset may record what it reproduces here.
    notes: Any = None


SCHEMAS: dict[str, dict[str, type]] = {
    "data": {
        "downloaded": DownloadedDataConfig,
        "digits": DigitsDataConfig,
    },
    "model": {
        "lenet": LeNetConfig,
        "mlp": MLPConfig,
        "cifar_cnn": CifarCNNConfig,
    },
    "optimizer": {
        "sgd": SGDConfig,
        "adam": AdamConfig,
        "rmsprop": RMSpropConfig,
    },
    "augmentation": {"augmentation": AugmentationConfig},
    "trainer": {"trainer": TrainerConfig},
    "logger": {"logger": LoggerConfig},
    "paths": {"paths": PathsConfig},
}


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=Config)
    for group, options in SCHEMAS.items():
        for name, node in options.items():
            cs.store(group=f"schema/{group}", name=name, node=node)
