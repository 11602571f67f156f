"""Typed schemas for every config group, registered in Hydra's ConfigStore.

Hydra merges `conf/**.yaml` into these dataclasses, so an unknown key or a value of the wrong
type is rejected while the config is composed: before TensorFlow is even imported.

Each group option's YAML file starts with a defaults list naming its schema
(`- /schema/model/lenet@_here_`), the pattern of Hydra's "structured config schema" tutorial: the
group's field is typed with the base class, the option picks the subclass that holds its own keys.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

# --------------------------------------------------------------------------------------- data


@dataclass
class FileSpec:
    """One file of a dataset: its name on the mirror and in the cache, and its checksum."""

    name: str = MISSING
    sha256: str | None = None
    md5: str | None = None  # only where no sha256 is published (Pascal VOC)


@dataclass
class DataConfig:
    name: str = MISSING
    # Decides the train/validation/test splits; trainer.seed does not, so runs with different
    # training seeds are compared on one test set.
    split_seed: int = 42


@dataclass
class DownloadedDataConfig(DataConfig):
    """A dataset fetched from `mirror` into `paths.data_dir/<name>/` and checked file by file."""

    mirror: str = MISSING
    files: dict[str, FileSpec] = field(default_factory=dict)
    verify_checksum: bool = True
    timeout: float = 60.0  # seconds without a byte from the mirror before a download fails


@dataclass
class DigitsDataConfig(DataConfig):
    """scikit-learn's bundled 8x8 digits, upscaled: works offline, trains in seconds."""

    image_size: int = 28
    test_fraction: float = 0.2


class ColorMode(Enum):
    rgb = "rgb"
    grayscale = "grayscale"


@dataclass
class ImageDataConfig(DataConfig):
    """Images decoded from files. Size and color default to the model's (`model.input_size`)."""

    path: str | None = None
    image_size: list[int] | None = None  # [height, width]
    color_mode: ColorMode | None = None
    # Decoded images up to this size are kept in memory; a larger dataset streams from disk.
    max_memory_mb: float = 4096
    # Files declaring more pixels are skipped before decoding (PIL's default limit).
    max_pixels: int = 89_478_485


@dataclass
class FolderDataConfig(ImageDataConfig):
    """One sub-folder per class. Test is a seeded, stratified fraction; validation comes from
    the rest (trainer.validation_split)."""

    test_split: float = 0.25


@dataclass
class CatsVsDogsDataConfig(ImageDataConfig):
    """Kaggle's train/ (cat.N.jpg, dog.N.jpg), its zip, or Microsoft's PetImages/Cat|Dog/N.jpg.
    Ordered by N: the first `train_per_class` of each class train, the next ones validation,
    then test."""

    train_per_class: int = 1000
    val_per_class: int = 500
    test_per_class: int = 500


class VocSplit(Enum):
    imagesets = "imagesets"  # ImageSets/Main train.txt / val.txt
    random = "random"  # seeded fractions of all annotation files


class Difficult(Enum):
    include = "include"  # an object flagged difficult still makes its class present
    exclude = "exclude"  # ignore difficult objects (the class is present only via others)


@dataclass
class VocDataConfig(ImageDataConfig, DownloadedDataConfig):
    """Pascal VOC, multi-label over the 20 classes, from VOCdevkit/VOC20XX (`path`) or fetched
    like the other downloaded datasets (mirror, files, verify_checksum)."""

    year: str = "2012"
    split: VocSplit = VocSplit.imagesets
    # For split=random: fractions of the annotation files (the tutorial's 70/20/10).
    train_fraction: float = 0.7
    val_fraction: float = 0.2
    difficult: Difficult = Difficult.include
    threshold: float = 0.5  # a class is predicted present at this probability


# -------------------------------------------------------------------------------------- model


@dataclass
class ModelConfig:
    name: str = MISSING
    # Image size and color this model is meant for; image datasets decode to it unless
    # data.image_size / data.color_mode say otherwise. Arrays (MNIST, CIFAR) keep their own.
    # (Optional only so that `pretrained` can leave it to its backbone.)
    input_size: list[int] | None = field(default_factory=lambda: [32, 32])
    color_mode: ColorMode = ColorMode.rgb


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
class SmallVGGNetConfig(ModelConfig):
    # (filters, convs) per block; each block ends with max pooling and dropout.
    blocks: list[list[int]] = field(default_factory=lambda: [[32, 1], [64, 2], [128, 3]])
    dense_units: int = 512
    conv_dropout: float = 0.25
    dense_dropout: float = 0.5


@dataclass
class ConvNetSmallConfig(ModelConfig):
    filters: list[int] = field(default_factory=lambda: [32, 64, 128, 128])
    dense_units: int = 512
    dropout: float = 0.0  # before the dense layer; 0.5 in the augmented variant


@dataclass
class VGG16Config(ModelConfig):
    fc_units: int = 4096  # width of the two fully connected layers of the head
    dropout: float = 0.0


@dataclass
class CifarCNNConfig(ModelConfig):
    filters: int = 32
    dense_units: int = 1024
    conv_dropout: float = 0.25
    dense_dropout: float = 0.5


class Backbone(Enum):
    """`keras.applications` networks usable as pretrained backbones (runner/models/backbones.py)."""

    vgg16 = "vgg16"
    vgg19 = "vgg19"
    resnet50 = "resnet50"
    inception_v3 = "inception_v3"
    inception_resnet_v2 = "inception_resnet_v2"
    xception = "xception"
    mobilenet = "mobilenet"
    mobilenet_v2 = "mobilenet_v2"
    efficientnet_b0 = "efficientnet_b0"


class Strategy(Enum):
    feature_extraction = "feature_extraction"  # backbone frozen, only the new head trains
    fine_tune = "fine_tune"  # the head first, then the top of the backbone at a lower rate
    full = "full"  # every layer trains from the first epoch


class Pooling(Enum):
    avg = "avg"
    max = "max"
    flatten = "flatten"


@dataclass
class FineTuneConfig:
    """The second phase of `strategy=fine_tune`, after `trainer.epochs` epochs of the head."""

    epochs: int = 10
    lr: float = 1e-5
    # The top `unfreeze_layers` layers of the backbone train, or every layer from the one named
    # `unfreeze_from` (e.g. block5_conv1 for VGG16) when set. BatchNorm layers stay frozen.
    unfreeze_layers: int = 4
    unfreeze_from: str | None = None


@dataclass
class PretrainedConfig(ModelConfig):
    backbone: Backbone = Backbone.vgg16
    # imagenet (fetched like a dataset file), null (random initialisation) or a weights file.
    weights: str | None = "imagenet"
    weights_mirror: str = "https://storage.googleapis.com"
    # Checksum of the fetched weights file; null: the md5 Keras publishes for it.
    weights_hash: str | None = None
    input_size: list[int] | None = None  # null: the backbone's default (224, or 299)
    strategy: Strategy = Strategy.feature_extraction
    pooling: Pooling = Pooling.avg
    dense_units: int = 0  # a hidden ReLU layer in the head; 0: none
    dropout: float = 0.0
    # feature_extraction without augmentation: run the frozen backbone once per image.
    cache_features: bool = True
    fine_tune: FineTuneConfig = field(default_factory=FineTuneConfig)


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


class Placement(Enum):
    pipeline = "pipeline"  # in the tf.data input pipeline, on the CPU, overlapped with training
    model = "model"  # a layer in front of the model while training: on the GPU when there is one


@dataclass
class AugmentationConfig:
    """ImageDataGenerator's random transforms, applied to training batches only."""

    name: str = "none"
    placement: Placement = Placement.pipeline
    rotation: float = 0.0  # degrees, uniform in [-rotation, rotation]
    width_shift: float = 0.0  # fraction of the width, uniform in [-s, s]
    height_shift: float = 0.0  # fraction of the height
    shear: float = 0.0  # degrees (ImageDataGenerator's shear_range unit)
    zoom: float = 0.0  # scale uniform in [1 - zoom, 1 + zoom] per axis
    horizontal_flip: bool = False
    vertical_flip: bool = False
    fill_mode: str = "nearest"  # nearest | reflect | wrap | constant
    fill_value: float = 0.0  # for fill_mode=constant
    brightness: float = 0.0  # add uniform [-b, b] x 255
    contrast: float = 0.0  # scale around the image mean by uniform [1 - c, 1 + c]
    # Normalization, fitted on the training split and built into the model (all splits and
    # predictions go through it): per-channel mean / std, per-image mean and std, ZCA.
    featurewise_center: bool = False
    featurewise_std_normalization: bool = False
    samplewise_normalization: bool = False
    zca_whitening: bool = False
    zca_epsilon: float = 1e-6


# ------------------------------------------------------------------------ trainer and logging


@dataclass
class EarlyStoppingConfig:
    enabled: bool = True
    monitor: str = "val_loss"
    patience: int = 5
    restore_best_weights: bool = True


class Keep(Enum):
    best = "best"  # checkpoints/best.keras
    best_and_last = "best_and_last"  # and checkpoints/last.keras, the weights of the last epoch


@dataclass
class CheckpointConfig:
    enabled: bool = True
    monitor: str = "val_loss"
    save_best_only: bool = True
    keep: Keep = Keep.best


@dataclass
class TrainerConfig:
    epochs: int = 20
    batch_size: int = 128
    seed: int = 42  # initialisation, data order, augmentation (not the splits: data.split_seed)
    validation_split: float = 0.1
    # Continue an unfinished run in its MLflow run: a run id, its job folder, or true (the
    # latest unfinished run with this config; in a sweep, the same job of the same sweep).
    resume: str | None = None
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
    # Also log `serving`: the model for `mlflow models serve`, taking base64-encoded image files.
    log_serving_model: bool = True
    # Register the logged model under this name (a new version per run); at the end of a sweep
    # the best job's model is registered and gets the alias `champion`.
    register_model: str | None = None


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

    # null: val_accuracy, or val_pr_auc (precision-recall AUC) for multi-label data, where
    # element-wise accuracy rewards predicting every label absent.
    metric: str | None = None
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
        "folder": FolderDataConfig,
        "cats_vs_dogs": CatsVsDogsDataConfig,
        "voc": VocDataConfig,
    },
    "model": {
        "lenet": LeNetConfig,
        "mlp": MLPConfig,
        "cifar_cnn": CifarCNNConfig,
        "smallvggnet": SmallVGGNetConfig,
        "convnet_small": ConvNetSmallConfig,
        "vgg16": VGG16Config,
        "pretrained": PretrainedConfig,
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
    # A short random suffix for job folders; cached, so every use in one process agrees.
    OmegaConf.register_new_resolver(
        "runner_unique", lambda: uuid.uuid4().hex[:6], use_cache=True, replace=True
    )
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=Config)
    for group, options in SCHEMAS.items():
        for name, node in options.items():
            cs.store(group=f"schema/{group}", name=name, node=node)
