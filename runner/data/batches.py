"""Backend-neutral input batches: `keras.utils.PyDataset`s of NumPy arrays, for Keras on JAX
or torch (TensorFlow keeps its `tf.data` pipelines, pipeline.py).

The guarantees are those of the `tf.data` path: streamed splits keep only paths in memory and
decode each batch's files in parallel threads; the training stream's order is a permutation
drawn from (seed, epoch) alone and its augmentation gets a seed made of (seed, epoch, step), so
a run resumed at epoch k sees exactly the batches an uninterrupted run sees from epoch k on.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from runner.core.lazy import keras
from runner.data.base import FileSplit, Split

# images, labels, seed (2 ints: (seed, epoch) folded, step) -> images, labels
Transform = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[Any, Any]]
DECODE_THREADS = 8


def _pixels(split: Split, indices: np.ndarray, pool: ThreadPoolExecutor | None) -> np.ndarray:
    if not isinstance(split, FileSplit):
        return split.x[indices]
    from runner.data.images import decode_pillow

    size, channels = split.image_size, split.channels
    paths = split.paths[indices]
    if pool is None:
        return np.stack([decode_pillow(path, size, channels) for path in paths])
    return np.stack(list(pool.map(lambda path: decode_pillow(path, size, channels), paths)))


def _pool(split: Split) -> ThreadPoolExecutor | None:
    return ThreadPoolExecutor(DECODE_THREADS) if isinstance(split, FileSplit) else None


def in_order(
    split: Split,
    *,
    batch_size: int,
    transform: Callable[[np.ndarray, np.ndarray], tuple[Any, Any]] | None = None,
) -> Any:
    """The split's (images, labels) in order, in batches (validation, test, prediction)."""

    class InOrder(keras.utils.PyDataset):
        def __init__(self) -> None:
            super().__init__()
            self.pool = _pool(split)

        def __len__(self) -> int:
            return -(-len(split) // batch_size)

        def __getitem__(self, index: int) -> tuple[Any, Any]:
            indices = np.arange(index * batch_size, min((index + 1) * batch_size, len(split)))
            images, labels = _pixels(split, indices, self.pool), split.y[indices]
            return transform(images, labels) if transform is not None else (images, labels)

    return InOrder()


def training_stream(
    split: Split,
    *,
    batch_size: int,
    seed: int,
    epochs: range,
    transform: Transform | None = None,
    shard: tuple[int, int] = (0, 1),
    drop_remainder: bool = False,
) -> tuple[Any, int]:
    """The training batches of every epoch in `epochs`, one stream (fit it with
    `steps_per_epoch`, so Keras keeps one iterator across epochs); returns it and the steps
    per epoch.

    `shard=(i, n)`: process i of n reads the i-th of n equal parts of each (global) batch,
    for multi-process data parallelism; `drop_remainder` leaves out an epoch's last, smaller
    batch (a batch split over devices must divide evenly).
    """
    count = len(split)
    steps = count // batch_size if drop_remainder else -(-count // batch_size)
    part, parts = shard
    first = epochs.start

    class Training(keras.utils.PyDataset):
        def __init__(self) -> None:
            super().__init__()
            self.pool = _pool(split)
            self.orders: dict[int, np.ndarray] = {}

        def __len__(self) -> int:
            return steps * len(epochs)

        def order(self, epoch: int) -> np.ndarray:
            if epoch not in self.orders:  # the same permutation as the tf.data path
                self.orders = {epoch: np.random.default_rng([seed, epoch]).permutation(count)}
            return self.orders[epoch]

        def __getitem__(self, index: int) -> tuple[Any, Any]:
            epoch, step = first + index // steps, index % steps
            batch = self.order(epoch)[step * batch_size : (step + 1) * batch_size]
            if parts > 1:
                width = len(batch) // parts
                batch = batch[part * width : (part + 1) * width]
            images, labels = _pixels(split, batch, self.pool), split.y[batch]
            if transform is None:
                return images, labels
            return transform(images, labels, np.array([seed * 100_003 + epoch, step]))

    return Training(), steps
