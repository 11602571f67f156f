"""The Keras side of resuming: a callback that saves and restores the training state.

Placed after EarlyStopping and ModelCheckpoint (it records their bests once they have seen the
epoch) and before the MLflow logger (an epoch is on disk before it is in MLflow; an epoch in
the state but not yet in MLflow is sent on resume, so none is logged twice or lost).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

import keras
import numpy as np

from runner import optimizers
from runner.training.distribution import saving_alone
from runner.training.resume import (
    PREVIOUS_STATE_FILE,
    STATE_FILE,
    Progress,
    state_dir,
    write_json,
)


class EpochState(keras.callbacks.Callback):
    """Records each epoch in `progress` and saves it under `output_dir` (None: records only,
    for a process that trains beside process 0 and writes nothing)."""

    def __init__(
        self,
        output_dir: Path | None,
        progress: Progress,
        *,
        phase: int,
        phase_start: int,
        phase_end: int,
        early_stopping: keras.callbacks.EarlyStopping | None,
        checkpoint: keras.callbacks.ModelCheckpoint | None,
        plateau: keras.callbacks.ReduceLROnPlateau | None = None,
    ) -> None:
        super().__init__()
        self.folder = state_dir(output_dir) if output_dir is not None else None
        self.progress = progress
        self.phase, self.phase_start, self.phase_end = phase, phase_start, phase_end
        self.early_stopping, self.checkpoint, self.plateau = early_stopping, checkpoint, plateau
        # Restore on train begin only when the saved state is this phase's, mid-way.
        self.restoring = progress.weights is not None and progress.phase == phase

    def on_train_begin(self, logs: dict | None = None) -> None:
        if not self.restoring:
            return
        progress = self.progress
        self.model.load_weights(self.folder / progress.weights)  # weights and optimizer
        if self.early_stopping is not None and progress.early_stopping:
            for key, value in progress.early_stopping.items():
                setattr(self.early_stopping, key, value)
            if progress.best_weights:
                self.early_stopping.best_weights = load_arrays(self.folder / progress.best_weights)
        if self.checkpoint is not None and progress.checkpoint_best is not None:
            self.checkpoint.best = progress.checkpoint_best
        if self.plateau is not None:
            for key, value in progress.plateau.items():
                setattr(self.plateau, key, value)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        progress = self.progress
        logs = dict(logs or {})
        # The rate the next step uses, for the learning curves (Keras' logs may not hold it).
        logs.setdefault("learning_rate", optimizers.current_learning_rate(self.model.optimizer))
        for key, value in logs.items():
            progress.history.setdefault(key, []).append(float(value))
        progress.phase, progress.phase_start = self.phase, self.phase_start
        progress.epochs_done = epoch + 1
        progress.phase_complete = bool(self.model.stop_training) or epoch + 1 >= self.phase_end
        if self.folder is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        progress.weights = f"epoch-{epoch + 1:04d}.weights.h5"
        with saving_alone():
            save_atomically(self.folder / progress.weights, self.model.save_weights)
        stopper = self.early_stopping
        if stopper is not None:
            progress.early_stopping = {
                "wait": stopper.wait,
                "best": None if stopper.best is None else float(stopper.best),
                "best_epoch": stopper.best_epoch,
                "stopped_epoch": stopper.stopped_epoch,
            }
            if stopper.best_weights is not None and stopper.best_epoch == epoch:
                progress.best_weights = f"best-{epoch + 1:04d}.npz"
                save_atomically(
                    self.folder / progress.best_weights,
                    lambda path: np.savez(path, *stopper.best_weights),
                )
        if self.checkpoint is not None and self.checkpoint.best is not None:
            progress.checkpoint_best = float(self.checkpoint.best)
        if self.plateau is not None:  # (the learning rate itself is in the optimizer's weights)
            progress.plateau = {
                key: float(getattr(self.plateau, key))
                for key in ("wait", "best", "cooldown_counter")
            }
        # The state before this one stays, with its files: resuming falls back to it if one of
        # this epoch's files turns out damaged.
        keep = {progress.weights, progress.best_weights, STATE_FILE, PREVIOUS_STATE_FILE}
        latest = self.folder / STATE_FILE
        if latest.exists():
            before = json.loads(latest.read_text())
            write_json(self.folder / PREVIOUS_STATE_FILE, before)
            keep |= {before.get("weights"), before.get("best_weights")}
        write_json(latest, asdict(progress))
        for path in self.folder.glob("*"):
            if path.name.startswith(("epoch-", "best-")) and path.name not in keep:
                path.unlink(missing_ok=True)


def save_atomically(path: Path, save) -> None:
    """`save(temporary path)`, then rename: the name keeps the suffix Keras and NumPy expect."""
    temporary = path.with_name(f"tmp-{path.name}")
    save(str(temporary))
    os.replace(temporary, path)


def load_arrays(path: Path) -> list[np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return [data[f"arr_{index}"] for index in range(len(data.files))]


def restore_weights(model: keras.Model, output_dir: Path, progress: Progress) -> None:
    """Weights of a phase that completed before the kill, into its (compiled) fit model."""
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    model.load_weights(state_dir(output_dir) / progress.weights)
    if progress.best_weights and progress.early_stopping:
        model.set_weights(load_arrays(state_dir(output_dir) / progress.best_weights))
