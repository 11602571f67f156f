"""Config values the schema's types allow but training does not, checked before any work.

Run on the composed config before TensorFlow is imported, before any data is read and before
an MLflow run exists: a bad value costs a second and leaves nothing behind.
"""

from __future__ import annotations

import math
from typing import Any

from omegaconf import DictConfig, OmegaConf

from runner.config.schema import Evaluate, Schedule
from runner.core.errors import RunnerError

FILL_MODES = ("nearest", "reflect", "wrap", "constant")


def check_config(cfg: DictConfig) -> None:
    check_trainer(cfg.trainer)
    check_strategy(cfg)
    check_callbacks(cfg)
    check_optimizer(cfg.optimizer)
    check_augmentation(cfg.augmentation)


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def check_minimums(node: DictConfig, prefix: str, minimums: dict[str, float]) -> None:
    for key, minimum in minimums.items():
        value = OmegaConf.select(node, key)
        if not (_finite(value) and value >= minimum):
            raise RunnerError(f"{prefix}.{key} should be >= {minimum}. Received: {value}")


def check_trainer(trainer: DictConfig) -> None:
    minimums = {"epochs": 1, "batch_size": 1, "intra_op_threads": 0, "inter_op_threads": 0,
                "steps_per_execution": 1}  # fmt: skip
    check_minimums(trainer, "trainer", minimums)
    if str(trainer.jit_compile).lower() not in ("auto", "true", "false"):
        raise RunnerError(
            f"trainer.jit_compile should be auto, true or false. Received: {trainer.jit_compile!r}"
        )
    split = trainer.validation_split
    if not (_finite(split) and 0.0 < split < 1.0):
        raise RunnerError(
            f"trainer.validation_split should be between 0 and 1 (exclusive). Received: {split}"
        )


def check_strategy(cfg: DictConfig) -> None:
    """Keras 3 on TensorFlow cannot run several steps per call under tf.distribute: the first
    step fails deep inside TensorFlow ("You must feed a value for placeholder tensor",
    keras-team/keras#19246, open), after the data is read and the run has started."""
    steps = cfg.trainer.steps_per_execution
    if cfg.strategy.name != "default" and steps > 1:
        raise RunnerError(
            f"trainer.steps_per_execution={steps} cannot be combined with "
            f"strategy={cfg.strategy.name}: Keras fails at the first step under tf.distribute "
            "(keras-team/keras#19246). Use trainer.steps_per_execution=1 with this strategy."
        )


def check_callbacks(cfg: DictConfig) -> None:
    callbacks = cfg.callbacks
    minimums = {
        "early_stopping.patience": 0,
        "early_stopping.min_delta": 0,
        "reduce_lr_on_plateau.patience": 0,
        "reduce_lr_on_plateau.min_delta": 0,
        "reduce_lr_on_plateau.min_lr": 0,
        "tensorboard.histogram_freq": 0,
    }
    check_minimums(callbacks, "callbacks", minimums)
    plateau = callbacks.reduce_lr_on_plateau
    if not (_finite(plateau.factor) and 0 < plateau.factor < 1):
        raise RunnerError(
            "callbacks.reduce_lr_on_plateau.factor should be between 0 and 1 (exclusive). "
            f"Received: {plateau.factor}"
        )
    if plateau.enabled and Schedule(cfg.optimizer.schedule) is not Schedule.constant:
        raise RunnerError(
            "callbacks.reduce_lr_on_plateau sets the learning rate itself; it cannot be combined "
            f"with optimizer.schedule={Schedule(cfg.optimizer.schedule).value}. Use one of the two."
        )
    if Evaluate(cfg.trainer.evaluate) is Evaluate.best and not callbacks.model_checkpoint.enabled:
        raise RunnerError(
            "trainer.evaluate=best scores checkpoints/best.keras, which "
            "callbacks.model_checkpoint.enabled=false does not write: enable it, or set "
            "trainer.evaluate=last."
        )


def check_optimizer(optimizer: DictConfig) -> None:
    if not (_finite(optimizer.lr) and optimizer.lr > 0):
        raise RunnerError(
            f"optimizer.lr should be a positive number. Received: optimizer.lr={optimizer.lr}"
        )
    decay = optimizer.decay_rate
    if decay is not None and not (_finite(decay) and decay >= 0):
        raise RunnerError(f"optimizer.decay_rate should be >= 0 or null. Received: {decay}")
    ranges = {"momentum": (0.0, 1.0), "rho": (0.0, 1.0), "beta_1": (0.0, 1.0),
              "beta_2": (0.0, 1.0)}  # fmt: skip
    for key, (low, high) in ranges.items():
        value = OmegaConf.select(optimizer, key, default=None)
        if value is not None and not (_finite(value) and low <= value < high):
            raise RunnerError(f"optimizer.{key} should be in [{low}, {high}). Received: {value}")
    epsilon = OmegaConf.select(optimizer, "epsilon", default=None)
    if epsilon is not None and not (_finite(epsilon) and epsilon > 0):
        raise RunnerError(f"optimizer.epsilon should be positive. Received: {epsilon}")


def check_augmentation(cfg: DictConfig) -> None:
    if cfg.fill_mode not in FILL_MODES:
        raise RunnerError(
            f"augmentation.fill_mode should be one of {list(FILL_MODES)}. "
            f"Received: {cfg.fill_mode!r}"
        )
    for key in ("rotation", "width_shift", "height_shift", "shear", "zoom", "brightness",
                "contrast"):  # fmt: skip
        if not (_finite(cfg[key]) and cfg[key] >= 0):
            raise RunnerError(f"augmentation.{key} should be >= 0. Received: {cfg[key]}")
    if cfg.zoom >= 1:
        raise RunnerError(f"augmentation.zoom should be below 1. Received: {cfg.zoom}")
