"""Data sources: `data.name` -> the loader that reads it into train/validation/test splits.

Sources read as arrays with an official test split (MNIST, Fashion-MNIST, CIFAR-10, digits)
share `to_splits`; image-file sources (folders, cats vs dogs, VOC) build their splits themselves.
"""

from __future__ import annotations

import pickle
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from runner.data import cats_vs_dogs, cifar10, digits, fashion_mnist, folders, mnist, voc
from runner.data.base import DataInfo, LoadContext, RawArrays, Splits, to_splits
from runner.errors import DataError, RunnerError

Loader = Callable[[Any, LoadContext], Splits]


def _arrays(read: Callable[..., RawArrays]) -> Loader:
    def load(cfg: Any, ctx: LoadContext) -> Splits:
        raw = read(cfg, data_dir=ctx.data_dir, seed=ctx.seed)
        return to_splits(raw, name=cfg.name, validation_split=ctx.validation_split, seed=ctx.seed)

    return load


LOADERS: dict[str, Loader] = {
    "mnist": _arrays(mnist.load),
    "fashion_mnist": _arrays(fashion_mnist.load),
    "cifar10": _arrays(cifar10.load),
    "digits": _arrays(digits.load),
    "image_folder": folders.load,
    "animals": folders.load,
    "cats_vs_dogs": cats_vs_dogs.load,
    "voc": voc.load,
}

__all__ = ["DataInfo", "LOADERS", "LoadContext", "Splits", "load"]


def load(data_cfg: Any, ctx: LoadContext) -> Splits:
    try:
        loader = LOADERS[data_cfg.name]
    except KeyError:
        raise RunnerError(
            f"data.name should be one of {sorted(LOADERS)}. Received: data.name={data_cfg.name!r}"
        ) from None
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
