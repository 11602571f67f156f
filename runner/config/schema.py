"""Typed schemas for every config group, registered in Hydra's ConfigStore.

Hydra merges `conf/**.yaml` into these dataclasses, so an unknown key or a value of the wrong
type is rejected while the config is composed: before TensorFlow is even imported.

Here live the base schemas and the groups with one schema (augmentation, trainer, logger, paths).
A data, model or optimizer option declares its own schema beside its code
(runner/config/registry.py) and its YAML file starts with a defaults list naming it
(`- /schema/model/lenet@_here_`), the pattern of Hydra's "structured config schema" tutorial:
the group's field is typed with the base class, the option picks the subclass that holds its own
keys and their defaults.
"""

from __future__ import annotations

import os
import re
import uuid
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from runner.config.callbacks import CallbacksConfig
from runner.config.rules import (
    at_least,
    between,
    in_range,
    one_of,
    optional_at_least,
    positive,
    within,
)
from runner.core.errors import RunnerError

SEEDS = 2**32  # NumPy's and TensorFlow's seeds are unsigned 32-bit integers
MAX_RUN_NAME = 250  # MLflow's limit for keys and names
MAX_PARAM_LENGTH = 6000  # MLflow's limit for a param's value

# --------------------------------------------------------------------------------------- data


@dataclass
class FileSpec:
    """One file of a dataset: its name on the mirror and in the cache, and its checksum."""

    name: str = MISSING
    sha256: str | None = None
    md5: str | None = None  # only where no sha256 is published (Pascal VOC)
    # sha256 of a gzip file's decompressed bytes: a copy compressed again (Debian's, `gzip -9`:
    # the same data in other bytes) passes too.
    content_sha256: str | None = None


@dataclass
class DataConfig:
    name: str = MISSING
    # Decides the train/validation/test splits; trainer.seed does not, so runs with different
    # training seeds are compared on one test set.
    split_seed: int = 42

    def check(self, at: str) -> None:
        in_range(f"{at}.split_seed", self.split_seed, 0, SEEDS)


@dataclass
class DownloadedDataConfig(DataConfig):
    """A dataset fetched from `mirror` into `paths.data_dir/<name>/` and checked file by file."""

    mirror: str = MISSING
    files: dict[str, FileSpec] = field(default_factory=dict)
    verify_checksum: bool = True
    timeout: float = 60.0  # seconds without a byte from the mirror before a download fails


@dataclass
class ExtractedDataConfig(DataConfig):
    """A dataset read from an archive extracted into the cache (runner/data/archives.py)."""

    # What an extraction may write, checked against the sizes the archive declares before any
    # byte is written: MB in all, and MB per MB of archive (a bomb declares 1000x).
    max_extract_mb: float = 20_000
    max_extract_ratio: float = 100

    def check(self, at: str) -> None:
        super().check(at)
        positive(f"{at}.max_extract_mb", self.max_extract_mb)
        positive(f"{at}.max_extract_ratio", self.max_extract_ratio)


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


# -------------------------------------------------------------------------------------- model


@dataclass
class ModelConfig:
    name: str = MISSING
    # Image size and color this model is meant for; image datasets decode to it unless
    # data.image_size / data.color_mode say otherwise. Arrays (MNIST, CIFAR) keep their own.
    # (Optional only so that `pretrained` can leave it to its backbone.)
    input_size: list[int] | None = field(default_factory=lambda: [32, 32])
    color_mode: ColorMode = ColorMode.rgb


# ---------------------------------------------------------------------------------- optimizer


class Schedule(Enum):
    """How the learning rate moves over training (runner/optimizers/schedules.py); every
    schedule steps per batch and spans the phase's epochs."""

    constant = "constant"
    # lr / (1 + decay_rate * step): the tutorials' legacy `SGD(decay=...)`.
    inverse_time = "inverse_time"
    # Linear warmup over warmup_epochs from 0 to lr, then a half cosine down to min_lr.
    cosine = "cosine"
    # Up from lr / 25 to lr over warmup_epochs (default 30% of the epochs), then a half cosine
    # down to min_lr (Smith's one-cycle policy, PyTorch's OneCycleLR shape).
    onecycle = "onecycle"
    # lr, multiplied by gamma at each epoch of `milestones` (PyTorch's MultiStepLR).
    step = "step"
    # lr until the first milestone, then rates[i] from milestones[i] on.
    piecewise = "piecewise"


WARMUP_SCHEDULES = (Schedule.cosine, Schedule.onecycle)


class Anneal(Enum):
    """How one-cycle falls from its peak to min_lr (PyTorch OneCycleLR's anneal_strategy)."""

    cos = "cos"  # a half cosine
    linear = "linear"  # a straight line: with a linear rise, airbench's triangle


@dataclass
class OptimizerConfig:
    """Keys every optimizer has: the learning rate and its schedule, decay, clipping, an
    exponential moving average of the weights and gradient accumulation."""

    name: str = MISSING
    lr: float = 0.01
    schedule: Schedule = Schedule.constant
    # Per-step decay of the inverse-time schedule; null means the tutorials' rule lr / epochs.
    decay_rate: float | None = None
    # cosine / onecycle: epochs of linear warmup (fractions allowed; onecycle: null = 30%).
    warmup_epochs: float | None = None
    # cosine / onecycle: the rate the schedule ends at.
    min_lr: float = 0.0
    # onecycle: it starts at lr / div_factor and falls by anneal_strategy (PyTorch's names).
    div_factor: float = 25.0
    anneal_strategy: Anneal = Anneal.cos
    # step / piecewise: the epochs where the rate changes, ascending.
    milestones: list[float] = field(default_factory=list)
    gamma: float = 0.1  # step: the factor at each milestone
    rates: list[float] = field(default_factory=list)  # piecewise: the rate from each milestone
    # Decoupled weight decay (Keras' `weight_decay`, applied as w -= lr * decay * w on every
    # optimizer); null: the optimizer's own default (none, AdamW/Lion/Lamb/Muon: their own).
    weight_decay: float | None = None
    clipnorm: float | None = None  # clip each gradient to this L2 norm; null: no clipping
    # Keep an exponential moving average of the weights (optimizer `use_ema`): validation,
    # checkpoints and the final model use the averaged weights.
    ema: bool = False
    ema_momentum: float = 0.99
    # Sum gradients over this many batches before one update (a larger effective batch).
    gradient_accumulation_steps: int | None = None
    # airbench's Lookahead: every lookahead_steps batches, a moving average of the weights
    # (BatchNorm statistics too) takes in the model's and the model goes back to it; its decay
    # grows as (step / total)^3 up to lookahead_decay. The model is the average at each
    # epoch's end, so validation, checkpoints and resume see it.
    lookahead: bool = False
    lookahead_steps: int = 5
    lookahead_decay: float = 0.95**5

    def check(self, at: str) -> None:
        positive(f"{at}.lr", self.lr)
        optional_at_least(f"{at}.decay_rate", self.decay_rate, 0)
        optional_at_least(f"{at}.weight_decay", self.weight_decay, 0)
        optional_at_least(f"{at}.warmup_epochs", self.warmup_epochs, 0)
        at_least(f"{at}.min_lr", self.min_lr, 0)
        at_least(f"{at}.div_factor", self.div_factor, 1)
        if self.clipnorm is not None:
            positive(f"{at}.clipnorm", self.clipnorm)
        in_range(f"{at}.ema_momentum", self.ema_momentum, 0, 1)
        if self.gradient_accumulation_steps is not None:
            at_least(f"{at}.gradient_accumulation_steps", self.gradient_accumulation_steps, 1)
        at_least(f"{at}.lookahead_steps", self.lookahead_steps, 1)
        in_range(f"{at}.lookahead_decay", self.lookahead_decay, 0, 1)
        self.check_schedule(at)

    def check_schedule(self, at: str) -> None:
        schedule = Schedule(self.schedule)
        if self.warmup_epochs and schedule not in WARMUP_SCHEDULES:
            raise RunnerError(
                f"{at}.warmup_epochs={self.warmup_epochs} needs {at}.schedule=cosine or "
                f"onecycle; {at}.schedule={schedule.value} has no warmup."
            )
        if schedule in WARMUP_SCHEDULES and self.min_lr >= self.lr:
            raise RunnerError(
                f"{at}.min_lr={self.min_lr} should be below {at}.lr={self.lr}: the "
                f"{schedule.value} schedule decays from lr down to min_lr."
            )
        milestones = list(self.milestones)
        if schedule in (Schedule.step, Schedule.piecewise):
            if not milestones:
                raise RunnerError(
                    f"{at}.schedule={schedule.value} needs {at}.milestones: the epochs where the "
                    f"rate changes, e.g. {at}.milestones=[30,60]"
                )
            for milestone in milestones:
                positive(f"{at}.milestones", milestone)
            if milestones != sorted(set(milestones)):
                raise RunnerError(
                    f"{at}.milestones should be ascending and distinct. Received: {milestones}"
                )
        if schedule is Schedule.step:
            between(f"{at}.gamma", self.gamma, 0, 1)
        if schedule is Schedule.piecewise:
            if len(self.rates) != len(milestones):
                raise RunnerError(
                    f"{at}.rates needs one rate per milestone ({len(milestones)}); received "
                    f"{len(self.rates)}: {list(self.rates)}"
                )
            for rate in self.rates:
                positive(f"{at}.rates", rate)


# ------------------------------------------------------------------------------- augmentation


class Placement(Enum):
    pipeline = "pipeline"  # in the tf.data input pipeline, on the CPU, overlapped with training
    model = "model"  # a layer in front of the model while training: on the GPU when there is one


FILL_MODES = ("nearest", "reflect", "wrap", "constant")


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
    # With horizontal_flip: each image mirrored in every other epoch instead of at random
    # (airbench's alternating flips: every image is seen both ways within two epochs). Which
    # epochs is fixed per image by the parity of its pixel sum; input pipeline only.
    alternate_flips: bool = False
    vertical_flip: bool = False
    fill_mode: str = "nearest"  # nearest | reflect | wrap | constant
    fill_value: float = 0.0  # for fill_mode=constant
    brightness: float = 0.0  # add uniform [-b, b] x 255
    contrast: float = 0.0  # scale around the image mean by uniform [1 - c, 1 + c]
    # The recipes of today's small-image records (runner/augmentation/regions.py,
    # randaugment.py, mixing.py): pad by this many pixels and crop back at a random offset
    # (CIFAR: 4; zeros, or the mirrored edge with fill_mode=reflect) ...
    random_crop: int = 0
    # ... RandAugment: this many random ops per image (0: off; 2 is the paper's) at a
    # magnitude on its 0-10 scale ...
    randaugment: int = 0
    randaugment_magnitude: float = 9.0
    # ... AugMix: three chains of 1-3 ops blended with the image, op strength up to severity/10 ...
    augmix: bool = False
    augmix_severity: float = 3.0
    # ... random erasing: this share of the images gets a rectangle of noise ...
    random_erasing: float = 0.0
    # ... MixUp / CutMix: Beta(alpha, alpha) blends of the batch with itself reversed, labels
    # blended alike (0: off; 1.0 is timm's CutMix, 0.2-0.8 its MixUp); always in the input
    # pipeline, since they change the labels.
    mixup: float = 0.0
    cutmix: float = 0.0
    # Normalization, fitted on the training split and built into the model (all splits and
    # predictions go through it): per-channel mean / std, per-image mean and std, ZCA.
    featurewise_center: bool = False
    featurewise_std_normalization: bool = False
    samplewise_normalization: bool = False
    zca_whitening: bool = False
    zca_epsilon: float = 1e-6

    def check(self, at: str) -> None:
        one_of(f"{at}.fill_mode", self.fill_mode, FILL_MODES)
        for key in ("rotation", "width_shift", "height_shift", "shear", "zoom"):
            at_least(f"{at}.{key}", getattr(self, key), 0)
        for key in ("brightness", "contrast"):
            at_least(f"{at}.{key}", getattr(self, key), 0)
        if self.zoom >= 1:
            raise RunnerError(f"{at}.zoom should be below 1. Received: {self.zoom}")
        for key in ("random_crop", "randaugment", "mixup", "cutmix"):
            at_least(f"{at}.{key}", getattr(self, key), 0)
        within(f"{at}.randaugment_magnitude", self.randaugment_magnitude, 0, 10)
        within(f"{at}.augmix_severity", self.augmix_severity, 0, 10)
        within(f"{at}.random_erasing", self.random_erasing, 0, 1)
        if self.randaugment and self.augmix:
            raise RunnerError(
                f"{at}.randaugment and {at}.augmix are two ways to do one thing (random ops "
                "per image); choose one."
            )
        positive(f"{at}.zca_epsilon", self.zca_epsilon)
        if self.alternate_flips and not self.horizontal_flip:
            raise RunnerError(
                f"{at}.alternate_flips=true decides when each image is mirrored, but "
                f"{at}.horizontal_flip is false: set {at}.horizontal_flip=true."
            )
        if self.alternate_flips and Placement(self.placement) is Placement.model:
            raise RunnerError(
                f"{at}.alternate_flips=true needs the epoch of each batch, which the input "
                f"pipeline knows and a model layer does not: set {at}.placement=pipeline."
            )


# ------------------------------------------------------------------------ trainer and logging


class Precision(Enum):
    float32 = "float32"
    mixed_float16 = "mixed_float16"  # GPUs with float16 tensor cores (loss scaling is automatic)
    mixed_bfloat16 = "mixed_bfloat16"  # TPUs, recent GPUs and CPUs with bfloat16


class Evaluate(Enum):
    best = "best"  # checkpoints/best.keras: the best epoch by callbacks.model_checkpoint.monitor
    last = "last"  # the weights after the last epoch trained


@dataclass
class TrainerConfig:
    epochs: int = 20
    batch_size: int = 128
    seed: int = 42  # initialisation, data order, augmentation (not the splits: data.split_seed)
    # Fraction of the training data held out for validation; 0 trains on all of it (then
    # checkpoints and the objective watch training metrics, and no callback may watch val_*).
    validation_split: float = 0.1
    # Continue an unfinished run in its MLflow run: a run id, its job folder, or true (the
    # latest unfinished run with this config; in a sweep, the same job of the same sweep).
    resume: str | None = None
    # Keras' fit verbosity: 1 = progress bar, 2 = one line per epoch; null picks 1 on a terminal.
    verbose: int | None = None
    # TensorFlow thread pools; 0 lets TensorFlow decide (all cores).
    intra_op_threads: int = 0
    inter_op_threads: int = 0
    # Which weights the test split scores and the run logs as its model.
    evaluate: Evaluate = Evaluate.best
    # Speed on accelerators: the Keras mixed-precision policy (the output layer and the loss stay
    # float32), XLA compilation, and training steps run per call into TensorFlow.
    precision: Precision = Precision.float32
    # auto (Keras decides: XLA where the model supports it) | true | false
    jit_compile: str = "auto"
    steps_per_execution: int = 1
    # Train towards (1 - s) on the true class and s spread over all classes (Szegedy et al.);
    # the test split is still scored with plain cross-entropy.
    label_smoothing: float = 0.0

    def check(self, at: str) -> None:
        for key, minimum in {
            "epochs": 1,
            "batch_size": 1,
            "intra_op_threads": 0,
            "inter_op_threads": 0,
            "steps_per_execution": 1,
        }.items():
            at_least(f"{at}.{key}", getattr(self, key), minimum)
        in_range(f"{at}.seed", self.seed, 0, SEEDS)
        one_of(f"{at}.jit_compile", str(self.jit_compile).lower(), ("auto", "true", "false"))
        in_range(f"{at}.validation_split", self.validation_split, 0, 1)
        in_range(f"{at}.label_smoothing", self.label_smoothing, 0, 1)


@dataclass
class StrategyConfig:
    """How many devices train one model. On TensorFlow, tf.distribute
    (runner/training/distribute.py): `default` one device, `mirrored` one replica per local GPU.
    On JAX, keras.distribution (runner/training/distribution.py): `default`, `data_parallel`
    over the local devices and, with `num_processes` > 1, over several processes or hosts.
    trainer.batch_size is per replica: each step takes batch_size x replicas."""

    name: str = MISSING
    # mirrored: these devices (e.g. [/gpu:0, /gpu:1]); null: all GPUs
    devices: list[str] | None = None
    # Split the CPU into this many logical devices (mirrored or data_parallel without GPUs).
    cpu_devices: int = 0
    # data_parallel over processes: host:port of process 0, how many processes, this one's
    # rank. null: from KERAS_DISTRIBUTION_* or the cluster's environment (Slurm), where JAX
    # finds them.
    coordinator: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    # Seconds a process waits for all the others to join at the coordinator, and seconds a
    # process may go silent (killed, its host down) before the others fail the run (JAX's
    # initialization and heartbeat timeouts).
    join_timeout: int = 300
    heartbeat_timeout: int = 100

    def check(self, at: str) -> None:
        at_least(f"{at}.cpu_devices", self.cpu_devices, 0)
        if self.coordinator and not re.fullmatch(r"\S+:\d{1,5}", self.coordinator):
            raise RunnerError(
                f"{at}.coordinator should be host:port of process 0 (e.g. 10.0.0.1:23456). "
                f"Received: {self.coordinator}"
            )
        at_least(f"{at}.join_timeout", self.join_timeout, 1)
        at_least(f"{at}.heartbeat_timeout", self.heartbeat_timeout, 1)
        if self.num_processes is not None:
            at_least(f"{at}.num_processes", self.num_processes, 1)
            if self.process_id is not None:
                in_range(f"{at}.process_id", self.process_id, 0, self.num_processes)
        found = os.environ.get("KERAS_DISTRIBUTION_JOB_ADDRESSES") or os.environ.get("SLURM_JOB_ID")
        if (self.num_processes or 1) > 1 and not found:
            missing = [key for key in ("coordinator", "process_id") if getattr(self, key) is None]
            if missing:
                raise RunnerError(
                    f"{at}.num_processes={self.num_processes} needs "
                    f"{' and '.join(f'{at}.{key}' for key in missing)} (host:port of process 0, "
                    "this process' rank from 0), or a cluster that sets them (Slurm)."
                )


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
    # CPU, memory, disk, network and (NVIDIA) GPU use, sampled every `system_metrics_interval`
    # seconds by MLflow into the run's system/* metrics.
    system_metrics: bool = False
    system_metrics_interval: float = 10.0
    # Register the logged model under this name (a new version per run); at the end of a sweep
    # the best job's model is registered and gets the alias `champion`.
    register_model: str | None = None

    def check(self, at: str) -> None:
        if self.run_name is not None and len(self.run_name) > MAX_RUN_NAME:
            raise RunnerError(
                f"{at}.run_name is {len(self.run_name):,} characters long; at most {MAX_RUN_NAME} "
                "(MLflow shows and searches names, not essays): put the rest in `notes`."
            )


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


class TTA(Enum):
    none = "none"
    flip = "flip"  # the mean of the probabilities of each image and its left-right mirror
    # Half on those two, a quarter each on both shifted a pixel up-left and down-right.
    flip_translate = "flip_translate"


@dataclass
class EvaluateConfig:
    """How the test split is scored, beyond the plain predictions every run reports."""

    # Test-time augmentation: also score the test split with it, as test_tta_<metric>.
    tta: TTA = TTA.none


@dataclass
class Config:
    data: DataConfig = MISSING
    model: ModelConfig = MISSING
    optimizer: OptimizerConfig = MISSING
    augmentation: AugmentationConfig = MISSING
    trainer: TrainerConfig = MISSING
    callbacks: CallbacksConfig = MISSING
    strategy: StrategyConfig = MISSING
    logger: LoggerConfig = MISSING
    paths: PathsConfig = MISSING
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    # Keras' backend: auto (KERAS_BACKEND if set, else tensorflow if installed, else jax),
    # tensorflow, jax or torch (runner/core/backend.py).
    backend: str = "auto"
    # Free-form: an `experiment=` preset may record what it reproduces here.
    notes: Any = None


# Groups with one schema; data, model and optimizer options register theirs beside their code.
SCHEMAS: dict[str, type] = {
    "augmentation": AugmentationConfig,
    "trainer": TrainerConfig,
    "callbacks": CallbacksConfig,
    "strategy": StrategyConfig,
    "logger": LoggerConfig,
    "paths": PathsConfig,
}


CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def config_groups() -> str:
    """`group: option, option, ...` for every folder of conf/, as Hydra's help prints them."""
    lines = []
    # (conf/hydra/ holds presets for Hydra's own groups: `--hydra-help` lists those.)
    for folder in sorted(p for p in CONF_DIR.iterdir() if p.is_dir() and p.name != "hydra"):
        names = sorted(path.stem for path in folder.glob("*.yaml"))
        lines.append(f"{folder.name}: {', '.join(names)}")
    return "\n".join(lines)


def register_configs() -> None:
    """Store every schema in Hydra's ConfigStore (as `schema/<group>/<name>`); cheap: option
    modules load Keras and TensorFlow only when they build something."""
    from runner.config.registry import DATASETS, MODELS, OPTIMIZERS

    # A short random suffix for job folders; cached, so every use in one process agrees.
    OmegaConf.register_new_resolver(
        "runner_unique", lambda: uuid.uuid4().hex[:6], use_cache=True, replace=True
    )
    # For `--help`: the groups a user picks from (Hydra's own list shows the schema/ groups too).
    OmegaConf.register_new_resolver("runner_config_groups", config_groups, replace=True)
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=Config)
    for group, node in SCHEMAS.items():
        cs.store(group=f"schema/{group}", name=group, node=node)
    for registry in (DATASETS, MODELS, OPTIMIZERS):
        for name, option in registry.options().items():
            schema = OmegaConf.structured(option.schema)
            schema.name = name  # the option's name is its registered name: never restated
            cs.store(group=f"schema/{registry.group}", name=name, node=schema)
