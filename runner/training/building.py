"""Stage 3, the model: built for the data (inside the distribution strategy's scope), described
to MLflow, compiled with the configured optimizer; and the compile of a model that is only
evaluated."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import keras
from omegaconf import DictConfig, OmegaConf

from runner import models, optimizers
from runner.augmentation import transforms as augment
from runner.data.base import DataInfo, Split
from runner.evaluation.classifiers import CLASSES_FILE
from runner.models import heads
from runner.tracking.run_log import RunLog
from runner.training import callbacks, labels

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuiltModel:
    model: keras.Model  # what `fit` trains (wrapped in augmentation layers when placed there)
    objective_metric: str  # what the job returns to a sweeper and checkpoints watch by default
    metadata: dict  # how to read its outputs: task, threshold


def build(
    cfg: DictConfig,
    info: DataInfo,
    weights: Path | None,
    checkpoint_dir: Path | None,
    run_log: RunLog,
    *,
    steps_per_epoch: int,
    train: Split,
    validation: int,
) -> BuiltModel:
    """The model for `info`, compiled; `classes.json` beside its checkpoints (for predict on a
    `.keras` file); weights the model fixes from the data come from `train`; `validation`
    images are held out (none: training metrics are watched instead). Call inside the
    strategy's scope: the model, its optimizer and metrics live on every replica."""
    labels.check(cfg, info)
    model = models.build(cfg.model, info, weights)
    models.initialize(cfg.model, model, train)
    metadata = model_metadata(cfg, info)
    if checkpoint_dir is not None:
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        (checkpoint_dir / CLASSES_FILE).write_text(
            json.dumps({"class_names": list(info.class_names), **metadata})
        )
    _, metrics = heads.loss_and_metrics(info)
    validated = validation > 0
    objective_metric = cfg.objective.metric or heads.default_objective(info, validated=validated)
    run_log.set_tag("objective_metric", objective_metric)
    callbacks.check(cfg, objective_metric, metrics, validated=validated)
    if not validated:
        log.info(
            "no validation split (trainer.validation_split=0): all %d training images train; "
            "checkpoints and the objective watch the training %s",
            len(train),
            objective_metric,
        )
    run_log.log_text(summary_text(model), "model_summary.txt")
    if augment.in_model(cfg.augmentation):
        model = augment.wrap_model(model, cfg.augmentation, seed=cfg.trainer.seed)
    compile_for_training(
        model,
        cfg.optimizer,
        info,
        epochs=cfg.trainer.epochs,
        steps_per_epoch=steps_per_epoch,
        trainer=cfg.trainer,
        one_hot=labels.one_hot(cfg, info),
    )
    return BuiltModel(model, objective_metric, metadata)


def model_metadata(cfg: DictConfig, info: DataInfo) -> dict:
    """How to read the model's outputs: the task, and the threshold of a multi-label one."""
    return {"task": info.task, "threshold": OmegaConf.select(cfg, "data.threshold", default=0.5)}


def compile_for_training(
    model: keras.Model,
    optimizer_cfg: DictConfig,
    info: DataInfo,
    *,
    epochs: int,
    steps_per_epoch: int,
    trainer: DictConfig,
    one_hot: bool = False,
) -> None:
    """Compile for training, with fresh metric objects; the optimizer is built now, so a saved
    model holds all of its variables and loads back without warnings. The learning-rate
    schedule spans `epochs` of `steps_per_epoch` batches."""
    loss, metrics = heads.loss_and_metrics(
        info, label_smoothing=trainer.label_smoothing, one_hot=one_hot
    )
    jit = str(trainer.jit_compile).lower()
    model.compile(
        optimizer=optimizers.build(optimizer_cfg, epochs=epochs, steps_per_epoch=steps_per_epoch),
        loss=loss,
        metrics=metrics,
        jit_compile="auto" if jit == "auto" else jit == "true",
        steps_per_execution=trainer.steps_per_execution,
    )
    model.optimizer.build(model.trainable_variables)


def compile_to_evaluate(model: keras.Model, info: DataInfo) -> None:
    """Compile a model that is only evaluated and logged: plain SGD (no per-weight slots,
    never stepped), built so the logged model loads back without warnings."""
    loss, metrics = heads.loss_and_metrics(info)
    model.compile(optimizer="sgd", loss=loss, metrics=metrics)
    model.optimizer.build(model.trainable_variables)


def summary_text(model: keras.Model) -> str:
    lines: list[str] = []
    model.summary(print_fn=lambda line, **_: lines.append(line))
    return "\n".join(lines)
