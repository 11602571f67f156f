"""Data sources: `data=<name>` -> the loader its module registers (runner/config/registry.py), which
reads the dataset into train/validation/test splits.

Each module here declares a dataset's schema beside its loader: `load(cfg, ctx) -> Splits`.
Datasets published with a test split (MNIST, Fashion-MNIST, CIFAR-10) read arrays and share
`base.official_test_split`; image-file sources (folders, cats vs dogs, VOC) split themselves.
"""

from __future__ import annotations

import pickle
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from runner.config.registry import DATASETS
from runner.config.schema import ColorMode
from runner.core.errors import DataError, RunnerError
from runner.data.base import DataInfo, LoadContext, Splits
from runner.data.images import DEFAULT_MAX_PIXELS

__all__ = ["DataInfo", "LoadContext", "Splits", "load", "load_context"]


def load_context(cfg: Any, model_input_size: Callable[[], tuple[int, int]]) -> LoadContext:
    """Image size and color: the data config's if set, else what the model is meant for
    (`model_input_size()`, asked only then: the data layer knows no model)."""
    size = OmegaConf.select(cfg, "data.image_size", default=None) or model_input_size()
    if isinstance(size, int):  # digits: the side of a square
        size = [size, size]
    color = OmegaConf.select(cfg, "data.color_mode", default=None) or cfg.model.color_mode
    if len(size) != 2 or min(size) < 1:
        raise RunnerError(f"data.image_size should be [height, width]. Received: {list(size)}")
    return LoadContext(
        data_dir=Path(cfg.paths.data_dir).expanduser(),
        seed=cfg.data.split_seed,
        validation_split=cfg.trainer.validation_split,
        image_size=(int(size[0]), int(size[1])),
        channels=1 if ColorMode(color) is ColorMode.grayscale else 3,
        max_memory_mb=OmegaConf.select(cfg, "data.max_memory_mb", default=4096),
        max_pixels=OmegaConf.select(cfg, "data.max_pixels", default=DEFAULT_MAX_PIXELS),
    )


def load(data_cfg: Any, ctx: LoadContext) -> Splits:
    loader = DATASETS[data_cfg.name].build
    try:
        return loader(data_cfg, ctx)
    except DataError:
        raise
    except (
        OSError,
        ValueError,
        EOFError,
        KeyError,
        zipfile.BadZipFile,
        tarfile.TarError,
        pickle.UnpicklingError,
    ) as error:
        files = [
            ctx.data_dir / data_cfg.name / Path(spec.name).name
            for spec in (OmegaConf.select(data_cfg, "files") or {}).values()
        ]
        if not files:
            raise
        which = (
            f"The cached file {files[0]} is"
            if len(files) == 1
            else ("One of the cached files " + ", ".join(map(str, files)) + " is")
        )
        # The library's own words (and advice) go to the job's log with the traceback.
        raise DataError(
            f"{which} unreadable (damaged or incomplete): delete it to download it again, "
            "or set data.verify_checksum=true to have it checked."
        ) from error
