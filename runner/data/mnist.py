"""MNIST from Keras' `mnist.npz` (arrays x_train, y_train, x_test, y_test), or as published: its
four gzip IDX files (`data=mnist_idx`, runner/data/idx.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from runner.config.registry import DATASETS
from runner.config.schema import DownloadedDataConfig
from runner.core.errors import DataError
from runner.data.base import RawArrays, official_test_split
from runner.data.download import fetch_all
from runner.data.idx import read_four_files

CLASS_NAMES = tuple(str(digit) for digit in range(10))


def read_npz(path: Path) -> RawArrays:
    keys = ("x_train", "y_train", "x_test", "y_test")
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [key for key in keys if key not in archive.files]
            if missing:
                raise DataError(
                    f"{path} is not an MNIST npz: arrays {missing} are missing "
                    f"(found {archive.files})."
                )
            arrays = {key: archive[key] for key in keys}
    except (OSError, ValueError) as error:
        raise DataError(f"{path} is not a readable .npz file ({error}).") from None
    return RawArrays(**arrays, class_names=CLASS_NAMES)


@DATASETS.register("mnist", DownloadedDataConfig)
@official_test_split
def load(cfg: DownloadedDataConfig, *, data_dir: Path, seed: int) -> RawArrays:
    files = fetch_all(cfg, data_dir)
    return read_npz(files["archive"])


@DATASETS.register("mnist_idx", DownloadedDataConfig)
@official_test_split
def load_idx(cfg: DownloadedDataConfig, *, data_dir: Path, seed: int) -> RawArrays:
    return read_four_files(cfg, data_dir, CLASS_NAMES, "MNIST")
