"""Data sources: `data.name` -> the loader that reads it. Every loader returns `RawArrays`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from runner.data import cifar10, digits, fashion_mnist, mnist
from runner.data.base import DataInfo, RawArrays, Splits, to_splits
from runner.errors import RunnerError

Loader = Callable[..., RawArrays]

LOADERS: dict[str, Loader] = {
    "mnist": mnist.load,
    "fashion_mnist": fashion_mnist.load,
    "cifar10": cifar10.load,
    "digits": digits.load,
}

__all__ = ["DataInfo", "LOADERS", "Splits", "load"]


def load(data_cfg: Any, *, data_dir: Path, validation_split: float, seed: int) -> Splits:
    try:
        loader = LOADERS[data_cfg.name]
    except KeyError:
        raise RunnerError(
            f"data.name should be one of {sorted(LOADERS)}. Received: data.name={data_cfg.name!r}"
        ) from None
    raw = loader(data_cfg, data_dir=data_dir, seed=seed)
    return to_splits(raw, name=data_cfg.name, validation_split=validation_split, seed=seed)
