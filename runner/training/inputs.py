"""Stage 2, the data: the splits loaded and described to MLflow, the augmentation previewed,
the normalization fitted on the training split."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from runner import data as data_sources
from runner import models
from runner.augmentation import normalize
from runner.augmentation import transforms as augment
from runner.data.base import Splits, digest
from runner.reports import plots
from runner.tracking.run_log import RunLog

log = logging.getLogger(__name__)


def load(cfg: DictConfig, run_log: RunLog) -> Splits:
    """The splits, their `info` including any normalization layers the model will hold."""
    context = data_sources.load_context(cfg, lambda: models.input_size(cfg.model))
    splits = data_sources.load(cfg.data, context)
    log_data(run_log, splits, cfg.data)
    if augment.is_active(cfg.augmentation):
        augment.warn_if_mirroring(cfg.augmentation, splits.info.name)
        log_augmentation_preview(run_log, cfg, splits)
    return with_normalization(cfg, splits)


def with_normalization(cfg: DictConfig, splits: Splits) -> Splits:
    """The splits, with the normalization layers fitted on the training split (never
    validation or test) when the augmentation config asks for them."""
    if not normalize.is_active(cfg.augmentation):
        return splits
    layers = tuple(normalize.fit(cfg.augmentation, splits.train))
    return replace(splits, info=replace(splits.info, preprocessing=layers))


def data_source(data_cfg: DictConfig) -> str:
    """Where the data came from: a folder, the first file's URL on the mirror, or a library."""
    path = OmegaConf.select(data_cfg, "path", default=None)
    complete = data_sources.DATASETS[data_cfg.name].hook("download_config")
    if complete and not path:  # a dataset that derives its files (VOC: from data.year)
        data_cfg = complete(data_cfg)
    files = OmegaConf.select(data_cfg, "files", default=None)
    if path:
        return str(Path(path).expanduser())
    if files:
        first = next(iter(files.values()))
        return f"{data_cfg.mirror.rstrip('/')}/{first.name}"
    return f"sklearn.datasets.load_{data_cfg.name}" if data_cfg.name == "digits" else data_cfg.name


def log_data(run_log: RunLog, splits: Splits, data_cfg: DictConfig) -> None:
    info = splits.info
    digests = {name: digest(getattr(splits, name)) for name in ("train", "val", "test")}
    run_log.log_dataset(info.class_names, info.input_shape, info.task, splits.sizes(), digests)
    run_log.log_inputs(info.name, data_source(data_cfg), digests, splits.sizes())
    run_log.log_skipped(splits.skipped)
    if splits.skipped:
        log.warning(
            "skipped %d file(s) that are not usable images (listed in the run's "
            "data/skipped_files.json), e.g. %s: %s",
            len(splits.skipped),
            splits.skipped[0].path,
            splits.skipped[0].reason,
        )
    log.info(
        "data=%s: %s, %d classes; train %d, validation %d, test %d",
        info.name,
        info.input_shape,
        info.num_classes,
        *splits.sizes().values(),
    )


def log_augmentation_preview(run_log: RunLog, cfg: DictConfig, splits: Splits) -> None:
    figure = plots.augmentation_grid(
        *augment.preview(splits.train.sample(6), cfg.augmentation, seed=cfg.trainer.seed),
        title=f"augmentation={cfg.augmentation.name} on {splits.info.name} (training images)",
    )
    run_log.log_figure(figure, "plots/augmentation_preview.png")
    plots.close(figure)
