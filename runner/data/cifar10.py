"""CIFAR-10 read straight from one of its two official archives, nothing extracted:

- `cifar-10-python.tar.gz` (`data=cifar10`): the batches are pickled dicts. They are unpickled
  with an allow-list of the few NumPy constructors a batch needs, so a tampered archive cannot
  run code.
- `cifar-10-binary.tar.gz` (`data=cifar10_bin`, "the binary version, suitable for C programs"):
  fixed-length records, a label byte then 3,072 pixel bytes; no pickle at all.

Both hold the same images and labels in the same order.
"""

from __future__ import annotations

import pickle
import tarfile
from pathlib import Path
from typing import IO

import numpy as np

from runner.config.registry import DATASETS
from runner.config.schema import DownloadedDataConfig
from runner.core.errors import DataError
from runner.data.base import RawArrays, official_test_split
from runner.data.download import fetch_all

FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{index}" for index in range(1, 6))
BINARY_FOLDER = "cifar-10-batches-bin"
PIXELS = 3 * 32 * 32
RECORD_BYTES = 1 + PIXELS  # the label, then the red, green and blue planes, row by row
ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    # Protocol-2 pickles written by Python 3 spell byte strings as _codecs.encode(text, "latin1").
    ("_codecs", "encode"),
}


class _BatchUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):  # noqa: ANN201 - pickle's signature
        if (module, name) in ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a CIFAR batch")


def _open_member(archive: tarfile.TarFile, name: str, path: Path, version: str) -> IO[bytes]:
    try:
        stream = archive.extractfile(name)
    except KeyError:
        raise DataError(f"{path} has no {name}: is it the CIFAR-10 {version} archive?") from None
    if stream is None:
        raise DataError(f"{path}: {name} is not a regular file.")
    return stream


def _read_member(archive: tarfile.TarFile, member: str, path: Path) -> dict:
    stream = _open_member(archive, f"{FOLDER}/{member}", path, "python")
    try:
        # Python 2 pickles: bytes keys, as the dataset's own loading code reads them.
        return _BatchUnpickler(stream, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError) as error:
        raise DataError(f"{path}: cannot read {FOLDER}/{member} ({error}).") from None


def _batch_arrays(batch: dict, member: str, path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except KeyError as error:
        raise DataError(f"{path}: {member} lacks the key {error}.") from None
    if data.ndim != 2 or data.shape[1] != PIXELS or len(data) != len(labels):
        raise DataError(
            f"{path}: {member} holds data {data.shape} and {len(labels)} labels, "
            "expected (N, 3072) and N."
        )
    return _channels_last(data), labels


def _channels_last(rows: np.ndarray) -> np.ndarray:
    # Rows are channel-first planes (R, G, B); models want channels last.
    return rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


def _splits(
    train: list[tuple[np.ndarray, np.ndarray]],
    test: tuple[np.ndarray, np.ndarray],
    names: tuple[str, ...],
) -> RawArrays:
    return RawArrays(
        x_train=np.concatenate([x for x, _ in train]),
        y_train=np.concatenate([y for _, y in train]),
        x_test=test[0],
        y_test=test[1],
        class_names=names,
    )


def _open_archive(path: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(path, "r:*")
    except (tarfile.TarError, OSError) as error:
        raise DataError(f"{path} is not a readable tar archive ({error}).") from None


def read_archive(path: Path) -> RawArrays:
    with _open_archive(path) as archive:
        train = [_batch_arrays(_read_member(archive, m, path), m, path) for m in TRAIN_BATCHES]
        x_test, y_test = _batch_arrays(_read_member(archive, "test_batch", path), "test", path)
        meta = _read_member(archive, "batches.meta", path)
    names = tuple(
        name.decode() if isinstance(name, bytes) else str(name)
        for name in meta.get(b"label_names", [])
    )
    if not names:
        raise DataError(f"{path}: batches.meta has no label_names.")
    return _splits(train, (x_test, y_test), names)


def _read_records(
    archive: tarfile.TarFile, member: str, path: Path, classes: int
) -> tuple[np.ndarray, np.ndarray]:
    name = f"{BINARY_FOLDER}/{member}"
    raw = _open_member(archive, name, path, "binary").read()
    if not raw or len(raw) % RECORD_BYTES:
        raise DataError(
            f"{path}: {name} holds {len(raw)} bytes, not a whole number of "
            f"{RECORD_BYTES}-byte records (a label byte, then 3,072 pixel bytes)."
        )
    records = np.frombuffer(raw, dtype=np.uint8).reshape(-1, RECORD_BYTES)
    labels = records[:, 0].astype(np.int64)
    if (highest := labels.max()) >= classes:
        raise DataError(
            f"{path}: {name} has label {highest}, but batches.meta.txt names {classes} classes."
        )
    return _channels_last(records[:, 1:]), labels


def read_binary_archive(path: Path) -> RawArrays:
    with _open_archive(path) as archive:
        meta = _open_member(archive, f"{BINARY_FOLDER}/batches.meta.txt", path, "binary")
        names = tuple(line.strip() for line in meta.read().decode().splitlines() if line.strip())
        if not names:
            raise DataError(f"{path}: {BINARY_FOLDER}/batches.meta.txt names no class.")
        train = [
            _read_records(archive, f"{member}.bin", path, len(names)) for member in TRAIN_BATCHES
        ]
        x_test, y_test = _read_records(archive, "test_batch.bin", path, len(names))
    return _splits(train, (x_test, y_test), names)


@DATASETS.register("cifar10", DownloadedDataConfig)
@official_test_split
def load(cfg: DownloadedDataConfig, *, data_dir: Path, seed: int) -> RawArrays:
    files = fetch_all(cfg, data_dir)
    return read_archive(files["archive"])


@DATASETS.register("cifar10_bin", DownloadedDataConfig)
@official_test_split
def load_binary(cfg: DownloadedDataConfig, *, data_dir: Path, seed: int) -> RawArrays:
    files = fetch_all(cfg, data_dir)
    return read_binary_archive(files["archive"])
