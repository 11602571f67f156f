"""Tiny datasets written in the exact on-disk formats of the real downloads.

Images are not noise: each class is a bright square at its own position, so a model can learn
them in an epoch or two and tests can check that predictions make sense.
"""

from __future__ import annotations

import gzip
import io
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np


def class_images(
    labels: np.ndarray, size: int, channels: int = 1, num_classes: int = 10, seed: int = 0
) -> np.ndarray:
    """uint8 (N, size, size[, channels]): class k draws a bright block in cell k of a grid."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 60, size=(len(labels), size, size, channels), dtype=np.uint8)
    grid = int(np.ceil(np.sqrt(num_classes)))
    cell = size // grid
    for index, label in enumerate(labels):
        row, col = divmod(int(label), grid)
        images[index, row * cell : (row + 1) * cell, col * cell : (col + 1) * cell] = 230
    return images[..., 0] if channels == 1 else images


def balanced_labels(count: int, num_classes: int = 10, seed: int = 0) -> np.ndarray:
    labels = np.arange(count) % num_classes
    np.random.default_rng(seed).shuffle(labels)
    return labels.astype(np.uint8)


def write_mnist_npz(path: Path, n_train: int = 300, n_test: int = 100) -> Path:
    y_train, y_test = balanced_labels(n_train, seed=1), balanced_labels(n_test, seed=2)
    np.savez_compressed(
        path,
        x_train=class_images(y_train, 28, seed=1),
        y_train=y_train,
        x_test=class_images(y_test, 28, seed=2),
        y_test=y_test,
    )
    return path


def idx_bytes(array: np.ndarray) -> bytes:
    """IDX: big-endian magic (2049 labels / 2051 images), counts and dims, then uint8 data."""
    if array.ndim == 1:
        header = struct.pack(">II", 2049, len(array))
    else:
        header = struct.pack(">IIII", 2051, *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_fashion_mnist(folder: Path, n_train: int = 300, n_test: int = 100) -> dict[str, Path]:
    y_train, y_test = balanced_labels(n_train, seed=3), balanced_labels(n_test, seed=4)
    arrays = {
        "train-images-idx3-ubyte.gz": class_images(y_train, 28, seed=3),
        "train-labels-idx1-ubyte.gz": y_train,
        "t10k-images-idx3-ubyte.gz": class_images(y_test, 28, seed=4),
        "t10k-labels-idx1-ubyte.gz": y_test,
    }
    paths = {}
    for name, array in arrays.items():
        paths[name] = folder / name
        with gzip.open(paths[name], "wb") as stream:
            stream.write(idx_bytes(array))
    return paths


CIFAR_NAMES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]


def _cifar_batch(count: int, seed: int) -> dict:
    labels = balanced_labels(count, seed=seed)
    images = class_images(labels, 32, channels=3, seed=seed)
    # Rows of 3072 bytes: the R plane, then G, then B (channel-first), as in the real batches.
    data = images.transpose(0, 3, 1, 2).reshape(count, 3072)
    return {b"batch_label": b"fixture", b"labels": [int(x) for x in labels], b"data": data}


def write_cifar10(path: Path, per_batch: int = 60, n_test: int = 100, protocol: int = 2) -> Path:
    """`cifar-10-python.tar.gz`; protocol 2 like the real (Python 2) pickles."""
    members = {f"data_batch_{i}": _cifar_batch(per_batch, seed=10 + i) for i in range(1, 6)}
    members["test_batch"] = _cifar_batch(n_test, seed=20)
    members["batches.meta"] = {
        b"label_names": [name.encode() for name in CIFAR_NAMES],
        b"num_cases_per_batch": per_batch,
    }
    payloads = {name: pickle.dumps(content, protocol=protocol) for name, content in members.items()}
    return write_tar_gz(path, "cifar-10-batches-py", payloads)


def write_tar_gz(path: Path, folder: str, members: dict[str, bytes]) -> Path:
    """A gzip tar holding `members` (name -> bytes) in `folder/`, as the CIFAR archives do."""
    with tarfile.open(path, "w:gz") as archive:
        for name, payload in members.items():
            info = tarfile.TarInfo(f"{folder}/{name}")
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))
    return path


def write_cifar10_binary(path: Path, per_batch: int = 60, n_test: int = 100) -> Path:
    """`cifar-10-binary.tar.gz` holding the images and labels of `write_cifar10`'s archive:
    records of a label byte and the 3,072 bytes of the same channel-first row."""
    batches = {f"data_batch_{i}.bin": _cifar_batch(per_batch, seed=10 + i) for i in range(1, 6)}
    batches["test_batch.bin"] = _cifar_batch(n_test, seed=20)
    members = {
        name: np.column_stack([np.asarray(b[b"labels"], np.uint8), b[b"data"]]).tobytes()
        for name, b in batches.items()
    }
    members["batches.meta.txt"] = ("\n".join(CIFAR_NAMES) + "\n\n").encode()
    return write_tar_gz(path, "cifar-10-batches-bin", members)
