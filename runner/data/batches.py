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


_decoders: ThreadPoolExecutor | None = None


def _pool(split: Split) -> ThreadPoolExecutor | None:
    """The threads that decode files, one pool for every stream of the process (made when a
    split of files first needs it)."""
    global _decoders
    if not isinstance(split, FileSplit):
        return None
    if _decoders is None:
        _decoders = ThreadPoolExecutor(DECODE_THREADS, thread_name_prefix="decode")
    return _decoders


def replicas_and_shard() -> tuple[int, tuple[int, int]]:
    """Under keras.distribution's data parallelism: the devices a batch is split over, and
    which part of each batch this process feeds (process i of n)."""
    distribution = keras.distribution.distribution()
    if distribution is None:
        return 1, (0, 1)
    import jax

    return int(distribution.device_mesh.devices.size), (jax.process_index(), jax.process_count())


def _own_part(rows: np.ndarray, part: int, parts: int) -> np.ndarray:
    """Process `part` of `parts` feeds the part-th of `parts` equal slices of a global batch
    (Keras joins them into one array over every process' devices)."""
    width = len(rows) // parts
    return rows[part * width : (part + 1) * width]


def in_order(
    split: Split,
    *,
    batch_size: int,
    transform: Callable[[np.ndarray, np.ndarray], tuple[Any, Any]] | None = None,
) -> Any:
    """The split's (images, labels) in order, in batches (validation, test, prediction).

    Split over several devices, the last batch is padded to a multiple of their number with
    copies of its first example, weighted 0 (metrics leave them out; `predict` callers keep
    the first len(split) rows); process i of n feeds the i-th of n equal parts of each batch."""
    replicas, (part, parts) = replicas_and_shard()

    class InOrder(keras.utils.PyDataset):
        def __init__(self) -> None:
            super().__init__()
            self.pool = _pool(split)

        def __len__(self) -> int:
            return -(-len(split) // batch_size)

        def __getitem__(self, index: int) -> tuple[Any, ...]:
            indices = np.arange(index * batch_size, min((index + 1) * batch_size, len(split)))
            padding = -len(indices) % replicas
            weights = np.concatenate([np.ones(len(indices)), np.zeros(padding)]).astype("float32")
            indices = np.concatenate([indices, np.full(padding, indices[0])])
            indices, weights = _own_part(indices, part, parts), _own_part(weights, part, parts)
            images, labels = _pixels(split, indices, self.pool), split.y[indices]
            if transform is not None:
                images, labels = transform(images, labels)
            return (images, labels, weights) if replicas > 1 else (images, labels)

    return InOrder()


def training_stream(
    split: Split,
    *,
    batch_size: int,
    seed: int,
    epochs: range,
    transform: Transform | None = None,
    shard: tuple[int, int] | None = None,
) -> tuple[Any, int]:
    """The training batches of every epoch in `epochs`, one stream (fit it with
    `steps_per_epoch`, so Keras keeps one iterator across epochs); returns it and the steps
    per epoch.

    Split over several devices (strategy=data_parallel) an epoch leaves out its last, smaller
    batch (a batch must divide evenly), and process i of n reads the i-th of n equal parts of
    each global batch (`shard`: (i, n), by default this process' under keras.distribution).
    Each part's augmentation draws from a seed of its own, so two parts never share a
    transform row for row; with one part the seed is what it always was.
    """
    count = len(split)
    replicas, (part, parts) = replicas_and_shard()
    if shard is not None:
        part, parts = shard
    steps = count // batch_size if replicas > 1 else -(-count // batch_size)
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
            batch = _own_part(batch, part, parts)
            images, labels = _pixels(split, batch, self.pool), split.y[batch]
            if transform is None:
                return images, labels
            batch_seed = np.array([seed * 100_003 + epoch, step * parts + part])
            return transform(images, labels, batch_seed)

    return Training(), steps
