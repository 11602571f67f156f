"""Stage 5, choose the weights to evaluate: `trainer.evaluate` names them (the best epoch's
checkpoint, or the last epoch's), loaded back in safe mode, which proves the file is usable."""

from __future__ import annotations

import logging
from pathlib import Path

import keras
import numpy as np
from omegaconf import DictConfig

from runner.augmentation import transforms as augment
from runner.config.schema import Evaluate
from runner.models.checkpoints import load_checkpoint
from runner.tracking.run_log import RunLog
from runner.training import callbacks

log = logging.getLogger(__name__)


def choose(
    cfg: DictConfig,
    model: keras.Model,
    checkpoint_dir: Path,
    history: dict,
    monitor: str,
    run_log: RunLog,
) -> keras.Model:
    """The model to evaluate, without its augmentation layers, and which epoch its weights are
    from: logged as the metric `evaluated_epoch` and the tag `evaluated_weights`. The model in
    memory when the file is missing or not usable."""
    which = Evaluate(cfg.trainer.evaluate)
    epochs = len(history.get("loss", []))
    if which is Evaluate.best:
        path = checkpoint_dir / "best.keras"
        values = np.asarray(history.get(monitor, [np.nan]), dtype=float)
        epoch, value = epochs, ""
        if np.isfinite(values).any():
            pick = np.nanargmin if callbacks.mode_of(monitor) == "min" else np.nanargmax
            epoch = int(pick(values)) + 1
            value = f" = {values[epoch - 1]:.4g}"
        described = f"best: {path.name}, epoch {epoch} of {epochs} by {monitor}{value}"
    else:
        path, epoch = checkpoint_dir / "last.keras", epochs
        described = f"last: {path.name}, epoch {epoch} of {epochs}"
    loaded, problem = load_checkpoint(path) if path.exists() else (None, "it was not written")
    if problem:
        log.warning("%s is not usable (%s): evaluating the model in memory instead", path, problem)
        run_log.set_tag("checkpoint", f"{path.name} not used: {problem}")
        described = f"the model in memory after epoch {epochs} ({path.name}: {problem})"
        epoch = epochs
    run_log.set_tag("evaluated_weights", described)
    run_log.log_metrics({"evaluated_epoch": epoch})
    log.info("evaluating %s", described)
    # Without its optimizer (loaded uncompiled): it trains no further (and with cached features
    # the head's optimizer, not the saved model's, did the training).
    return augment.unwrap_model(model if problem else loaded)
