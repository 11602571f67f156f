"""CIFAR-10 from `cifar-10-python.tar.gz`, read straight from the archive.

The batches are pickled dicts (the dataset's own format). They are unpickled with an allow-list
of the few NumPy constructors a batch needs, so a tampered archive cannot run code.
"""

from __future__ import annotations

import pickle
import tarfile
from pathlib import Path

import numpy as np

from runner.config.registry import DATASETS
from runner.config.schema import DownloadedDataConfig
from runner.core.errors import DataError
from runner.data.base import RawArrays, official_test_split
from runner.data.download import fetch_all

FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{index}" for index in range(1, 6))
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


def _read_member(archive: tarfile.TarFile, member: str, path: Path) -> dict:
    try:
        stream = archive.extractfile(f"{FOLDER}/{member}")
    except KeyError:
        raise DataError(
            f"{path} has no {FOLDER}/{member}: is it the CIFAR-10 python archive?"
        ) from None
    if stream is None:
        raise DataError(f"{path}: {FOLDER}/{member} is not a regular file.")
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
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
        raise DataError(
            f"{path}: {member} holds data {data.shape} and {len(labels)} labels, "
            "expected (N, 3072) and N."
        )
    # Rows are channel-first planes (R, G, B); models want channels last.
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def read_archive(path: Path) -> RawArrays:
    try:
        archive = tarfile.open(path, "r:*")
    except (tarfile.TarError, OSError) as error:
        raise DataError(f"{path} is not a readable tar archive ({error}).") from None
    with archive:
        train = [_batch_arrays(_read_member(archive, m, path), m, path) for m in TRAIN_BATCHES]
        x_test, y_test = _batch_arrays(_read_member(archive, "test_batch", path), "test", path)
        meta = _read_member(archive, "batches.meta", path)
    names = tuple(
        name.decode() if isinstance(name, bytes) else str(name)
        for name in meta.get(b"label_names", [])
    )
    if not names:
        raise DataError(f"{path}: batches.meta has no label_names.")
    return RawArrays(
        x_train=np.concatenate([x for x, _ in train]),
        y_train=np.concatenate([y for _, y in train]),
        x_test=x_test,
        y_test=y_test,
        class_names=names,
    )


@DATASETS.register("cifar10", DownloadedDataConfig)
@official_test_split
def load(cfg: DownloadedDataConfig, *, data_dir: Path, seed: int) -> RawArrays:
    files = fetch_all(cfg, data_dir)
    return read_archive(files["archive"])
