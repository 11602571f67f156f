"""Fashion-MNIST from its four gzip IDX files (runner/data/idx.py)."""

from __future__ import annotations

from pathlib import Path

from runner.config.registry import DATASETS
from runner.config.schema import DownloadedDataConfig
from runner.data.base import RawArrays, official_test_split
from runner.data.idx import read_four_files, read_idx

__all__ = ["CLASS_NAMES", "load", "read_idx"]

CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


@DATASETS.register("fashion_mnist", DownloadedDataConfig)
@official_test_split
def load(cfg: DownloadedDataConfig, *, data_dir: Path, seed: int) -> RawArrays:
    return read_four_files(cfg, data_dir, CLASS_NAMES, "Fashion-MNIST")
