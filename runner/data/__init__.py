"""Data sources: `data=<name>` -> the loader its module registers (runner/registry.py), which
reads the dataset into train/validation/test splits.

Each module here declares a dataset's schema beside its loader: `load(cfg, ctx) -> Splits`.
Datasets published with a test split (MNIST, Fashion-MNIST, CIFAR-10) read arrays and share
`base.official_test_split`; image-file sources (folders, cats vs dogs, VOC) split themselves.
"""

from __future__ import annotations

import pickle
import tarfile
import zipfile
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from runner.data.base import DataInfo, LoadContext, Splits
from runner.errors import DataError
from runner.registry import DATASETS

__all__ = ["DataInfo", "LoadContext", "Splits", "load"]


def load(data_cfg: Any, ctx: LoadContext) -> Splits:
    loader = DATASETS[data_cfg.name].build
    try:
        return loader(data_cfg, ctx)
    except DataError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, tarfile.TarError,
            pickle.UnpicklingError) as error:  # fmt: skip
        files = [ctx.data_dir / data_cfg.name / Path(spec.name).name
                 for spec in (OmegaConf.select(data_cfg, "files") or {}).values()]  # fmt: skip
        if not files:
            raise
        which = f"The cached file {files[0]} is" if len(files) == 1 else (
            "One of the cached files " + ", ".join(map(str, files)) + " is"
        )  # fmt: skip
        # The library's own words (and advice) go to the job's log with the traceback.
        raise DataError(
            f"{which} unreadable (damaged or incomplete): delete it to download it again, "
            "or set data.verify_checksum=true to have it checked."
        ) from error
