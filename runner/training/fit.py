"""Stage 4, fit: the phases the model declares (runner/models/phases.py), each one `fit` from
where a resumed run stopped, over batches whose order and augmentation depend on
(trainer.seed, epoch) only, so a resumed run sees what an uninterrupted one would."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
from omegaconf import DictConfig, OmegaConf

from runner.core.errors import RunnerError
from runner.data.base import ArraySplit, DataInfo, Split, Splits
from runner.data.streams import evaluation_batches, training_batches
from runner.models.phases import Phase
from runner.tracking.run_log import RunLog
from runner.training import callbacks, epoch_state, labels, resume
from runner.training.building import compile_for_training

log = logging.getLogger(__name__)
# epochs -> (stream, steps per epoch): a tf.data.Dataset, or a PyDataset off TensorFlow
Batches = Callable[[range], tuple[Any, int]]


@dataclass
class _Fit:
    """One phase, ready to `fit`: what trains, on which batches, over which epochs."""

    number: int
    fit_model: keras.Model
    batches: Batches
    validation: Any  # batches
    start: int
    end: int
    examples: int  # training examples per epoch (for images_per_second)


def fit(
    cfg: DictConfig,
    model: keras.Model,
    splits: Splits,
    *,
    phases: list[Phase],
    batch_size: int,
    output_dir: Path | None,
    progress: resume.Progress,
    run_callbacks: callbacks.RunCallbacks,
    run_log: RunLog,
) -> dict:
    """Train through every phase; returns the metric history of every epoch, those before a
    resumption included. The resume state is saved under `output_dir` (None: not saved)."""
    for number, phase in enumerate(phases, start=1):
        pruned = run_callbacks.trial is not None and run_callbacks.trial.pruned_after
        if pruned:
            break
        # A later phase starts where the one before stopped (early stopping may end it sooner).
        start = (
            0
            if number == 1
            else (progress.phase_start if progress.phase == number else progress.epochs_done)
        )
        lr = phase.lr if phase.lr is not None else cfg.optimizer.lr
        if phase.prepare is not None:
            note = phase.prepare(model)
            run_log.log_json(note.data, note.artifact)
            log.info("%s, lr %g, epochs %d-%d", note.message, lr, start + 1, start + phase.epochs)
        end = start + phase.epochs
        if phase.cached_features is not None:
            ready = _head_on_cached_features(
                cfg, model, splits, phase, number, start, end, batch_size
            )
        else:
            if number > 1 or phase.lr is not None:  # else: as the model stage compiled it
                optimizer = OmegaConf.merge(cfg.optimizer, {"lr": lr})
                compile_for_training(
                    model,
                    optimizer,
                    splits.info,
                    epochs=phase.epochs,
                    steps_per_epoch=steps_per_epoch(len(splits.train), batch_size),
                    trainer=cfg.trainer,
                    one_hot=labels.one_hot(cfg, splits.info),
                )
            ready = _Fit(
                number,
                model,
                image_batches(cfg, splits.train, splits.info, batch_size),
                validation_batches(cfg, splits.val, splits.info, batch_size),
                start,
                end,
                len(splits.train),
            )
        _run_phase(cfg, ready, progress, output_dir, run_callbacks, run_log)
    history = progress.history
    losses = history.get("loss", [])
    if losses and not np.isfinite(losses[-1]):
        raise RunnerError(
            f"Training diverged: the loss became {losses[-1]} in epoch {len(losses)}. "
            f"Lower optimizer.lr (now {cfg.optimizer.lr}) or check the data for bad values."
        )
    return history


def steps_per_epoch(examples: int, batch_size: int) -> int:
    return -(-examples // batch_size)


def image_batches(cfg: DictConfig, train: Split, info: DataInfo, batch_size: int) -> Batches:
    """Training batches over some epochs, shuffled and (outside the model) augmented per
    (trainer.seed, epoch)."""
    transform = labels.training_transform(cfg, info)
    return lambda epochs: training_batches(
        train, batch_size=batch_size, seed=cfg.trainer.seed, epochs=epochs, transform=transform
    )


def validation_batches(cfg: DictConfig, val: Split, info: DataInfo, batch_size: int) -> Any:
    """None when nothing is held out (trainer.validation_split=0): `fit` validates nothing."""
    if not len(val):
        return None
    transform = None
    if labels.one_hot(cfg, info):  # compared by the same (categorical) loss as training
        encode = labels.encoder(info)

        def transform(images: Any, y: Any) -> tuple[Any, Any]:
            return images, encode(y)

    return evaluation_batches(val, batch_size=batch_size, transform=transform)


def _run_phase(
    cfg: DictConfig,
    phase: _Fit,
    progress: resume.Progress,
    output_dir: Path | None,
    run_callbacks: callbacks.RunCallbacks,
    run_log: RunLog,
) -> None:
    """`fit` over the phase's epochs, from where a resumed run stopped."""
    if progress.weights and (
        progress.phase > phase.number
        or (progress.phase == phase.number and progress.phase_complete)
    ):
        if progress.phase == phase.number:  # ended before the kill: its last weights, then on
            epoch_state.restore_weights(phase.fit_model, output_dir, progress)
        return
    resumed = progress.weights is not None and progress.phase == phase.number
    first_epoch = progress.epochs_done if resumed else phase.start
    stopping = run_callbacks.early_stopping(cfg)
    state = epoch_state.EpochState(
        output_dir,
        progress,
        phase=phase.number,
        phase_start=phase.start,
        phase_end=phase.end,
        early_stopping=stopping,
        checkpoint=run_callbacks.checkpoint,
        plateau=run_callbacks.plateau,
    )
    # Order matters: the last weights before early stopping restores the best; the state after
    # the callbacks whose bests it records; MLflow after the state (see epoch_state.py).
    first = (run_callbacks.last, stopping, run_callbacks.checkpoint, run_callbacks.plateau)
    in_order = [callback for callback in first if callback is not None]
    ema = callbacks.EmaWeights.create() if cfg.optimizer.ema else None
    if ema is not None:  # the averaged weights for validation and checkpoints
        in_order = [ema.swap, ema.swap_in, *in_order]
    if cfg.optimizer.lookahead:  # first: the epoch's last batch ends on the average
        keys = cfg.optimizer
        in_order.insert(
            0, callbacks.Lookahead(keys.lookahead_steps, keys.lookahead_decay, phase.start)
        )
    in_order += [
        *run_callbacks.extra,
        *([ema.swap_out] if ema is not None else []),
        state,
        callbacks.MlflowEpochLogger(run_log, phase.examples),
        keras.callbacks.TerminateOnNaN(),
    ]
    if run_callbacks.trial is not None:  # after MLflow: a pruned epoch is logged too
        in_order.append(run_callbacks.trial)
    train, steps = phase.batches(range(first_epoch, phase.end))
    verbose = cfg.trainer.verbose
    phase.fit_model.fit(
        train,
        validation_data=phase.validation,
        initial_epoch=first_epoch,
        epochs=phase.end,
        steps_per_epoch=steps,
        shuffle=False,  # the stream shuffles each epoch itself
        callbacks=in_order,
        verbose=verbose if verbose is not None else (1 if sys.stdout.isatty() else 2),
    )


def _head_on_cached_features(
    cfg: DictConfig,
    model: keras.Model,
    splits: Splits,
    phase: Phase,
    number: int,
    start: int,
    end: int,
    batch_size: int,
) -> _Fit:
    """The head, trained on the model's features of every training and validation image,
    computed once."""
    extractor, head = phase.cached_features(model)
    started = time.perf_counter()
    features = {
        name: ArraySplit(
            extractor.predict(evaluation_batches(split, batch_size=batch_size), verbose=0)[
                : len(split)
            ],
            split.y,
        )
        for name, split in (("train", splits.train), ("val", splits.val))
        if len(split)
    }
    log.info(
        "feature extraction: backbone features of %d training and %d validation images "
        "computed once in %.1f s (model.cache_features); each epoch trains the head only",
        len(splits.train),
        len(splits.val),
        time.perf_counter() - started,
    )
    optimizer = (
        cfg.optimizer if phase.lr is None else OmegaConf.merge(cfg.optimizer, {"lr": phase.lr})
    )
    compile_for_training(
        head,
        optimizer,
        splits.info,
        epochs=phase.epochs,
        steps_per_epoch=steps_per_epoch(len(features["train"]), batch_size),
        trainer=cfg.trainer,
        one_hot=labels.one_hot(cfg, splits.info),
    )
    # Features are no images: only the labels' encoding applies.
    transform = labels.training_transform(cfg, splits.info, augmenting=False)

    def batches(epochs: range) -> tuple[Any, int]:
        return training_batches(
            features["train"],
            batch_size=batch_size,
            seed=cfg.trainer.seed,
            epochs=epochs,
            transform=transform,
        )

    validation = validation_batches(cfg, features.get("val", splits.val), splits.info, batch_size)
    return _Fit(number, head, batches, validation, start, end, len(features["train"]))
