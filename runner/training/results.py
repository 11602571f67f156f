"""Stage 7, log the results: learning curves, the objective a sweeper reads, the model."""

from __future__ import annotations

import keras
import numpy as np
from omegaconf import DictConfig

from runner.config.schema import Mode
from runner.data.base import Splits
from runner.reports import plots
from runner.tracking.run_log import RunLog


def log_learning_curves(run_log: RunLog, history: dict, cfg: DictConfig, data_name: str) -> None:
    figure = plots.learning_curves(history, f"{cfg.model.name} on {data_name}")
    run_log.log_figure(figure, "plots/learning_curves.png")
    plots.close(figure)


def log_objective(run_log: RunLog, history: dict, metric: str, mode: Mode) -> float:
    """Best value of the objective metric over the epochs, logged as best_<metric>."""
    values = np.asarray(history[metric], dtype=float)
    best = float(np.nanmax(values) if mode is Mode.max else np.nanmin(values))
    run_log.log_metrics({f"best_{metric}": best})
    return best


def log_model(
    run_log: RunLog, cfg: DictConfig, model: keras.Model, splits: Splits, metadata: dict
) -> None:
    """The evaluated model as MLflow models (`logger.log_model`, `logger.log_serving_model`),
    registered as a new version of `logger.register_model` when set."""
    if not cfg.logger.log_model:
        return
    run_log.log_model(
        model,
        splits.test.sample(8),
        list(splits.info.class_names),
        register_as=cfg.logger.register_model,
        metadata=metadata,
        serving=cfg.logger.log_serving_model,
    )
