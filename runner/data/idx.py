"""The IDX format MNIST was first published in (Fashion-MNIST kept it): four gzip files, the
training and test images and labels, read into arrays with the official test split."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

from runner.config.schema import DownloadedDataConfig
from runner.core.errors import DataError
from runner.data.base import RawArrays
from runner.data.download import fetch_all

IDX_LABELS_MAGIC = 2049  # then one big-endian count, then uint8 labels (offset 8)
IDX_IMAGES_MAGIC = 2051  # then count, rows, cols, then uint8 pixels (offset 16)


def read_idx(path: Path) -> np.ndarray:
    """Read a gzip IDX file of labels (N,) or images (N, rows, cols), all uint8."""
    try:
        with gzip.open(path, "rb") as stream:
            data = stream.read()
    except (OSError, EOFError) as error:
        raise DataError(f"{path} is not a readable gzip file ({error}).") from None
    if len(data) < 8:
        raise DataError(f"{path} is too short to be an IDX file ({len(data)} bytes).")
    magic, count = struct.unpack(">II", data[:8])
    if magic == IDX_LABELS_MAGIC:
        shape, offset = (count,), 8
    elif magic == IDX_IMAGES_MAGIC:
        rows, cols = struct.unpack(">II", data[8:16])
        shape, offset = (count, rows, cols), 16
    else:
        raise DataError(
            f"{path} is not an IDX file: magic number {magic}, expected "
            f"{IDX_IMAGES_MAGIC} (images) or {IDX_LABELS_MAGIC} (labels)."
        )
    expected = int(np.prod(shape))
    if len(data) - offset != expected:
        raise DataError(
            f"{path} is truncated or padded: header says {shape} ({expected} bytes of data), "
            f"file has {len(data) - offset}."
        )
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(shape)


def read_four_files(
    cfg: DownloadedDataConfig, data_dir: Path, class_names: tuple[str, ...], title: str
) -> RawArrays:
    """The files of roles train_images, train_labels, test_images and test_labels, fetched
    into the cache and read; `title` names the dataset in errors."""
    files = fetch_all(cfg, data_dir)
    raw = RawArrays(
        x_train=read_idx(files["train_images"]),
        y_train=read_idx(files["train_labels"]),
        x_test=read_idx(files["test_images"]),
        y_test=read_idx(files["test_labels"]),
        class_names=class_names,
    )
    for split in ("train", "test"):
        images, labels = getattr(raw, f"x_{split}"), getattr(raw, f"y_{split}")
        if len(images) != len(labels):
            raise DataError(
                f"{title} {split} files disagree: {len(images)} images, {len(labels)} labels."
            )
    return raw
