"""The batches a job reads, on whichever backend Keras runs: `tf.data` pipelines on TensorFlow
(pipeline.py), NumPy `PyDataset`s elsewhere (batches.py). Both give the same guarantees."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from runner.core import backend
from runner.data import batches, pipeline
from runner.data.base import Split


def evaluation_batches(
    split: Split,
    *,
    batch_size: int,
    transform: Callable[[Any, Any], tuple[Any, Any]] | None = None,
) -> Any:
    """The split in order, in batches of (images, labels), each through `transform`."""
    if not backend.is_tensorflow():
        return batches.in_order(split, batch_size=batch_size, transform=transform)
    dataset = pipeline.to_dataset(split, batch_size=batch_size)
    return dataset if transform is None else dataset.map(transform)


def training_batches(
    split: Split,
    *,
    batch_size: int,
    seed: int,
    epochs: range,
    transform: Callable[[Any, Any, Any], tuple[Any, Any]] | None = None,
) -> tuple[Any, int]:
    """The training stream over `epochs` and its steps per epoch (pipeline.training_batches)."""
    if not backend.is_tensorflow():
        return batches.training_stream(
            split,
            batch_size=batch_size,
            seed=seed,
            epochs=epochs,
            transform=transform,
        )
    return pipeline.training_batches(
        split, batch_size=batch_size, seed=seed, epochs=epochs, transform=transform
    )


def numpy_batches(split: Split, *, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The split in order as NumPy (images, labels) batches, for statistics over the data."""
    stream = evaluation_batches(split, batch_size=batch_size)
    if backend.is_tensorflow():
        yield from stream.as_numpy_iterator()
    else:
        for index in range(len(stream)):
            images, labels = stream[index][:2]
            yield images, labels
