"""`tf.data` input pipelines: shuffle (train only), decode when streaming, batch, prefetch."""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np

from runner.core.lazy import tf
from runner.data.base import FileSplit, Split
from runner.data.images import decode_image


def to_dataset(
    split: Split, *, batch_size: int, shuffle: bool = False, seed: int = 0
) -> tf.data.Dataset:
    if isinstance(split, FileSplit):
        # Streaming: only paths and labels are in memory; files are decoded in parallel.
        paths = [os.fsencode(path) for path in split.paths]  # bytes: any file name works
        dataset = tf.data.Dataset.from_tensor_slices((paths, split.y))
    else:
        dataset = tf.data.Dataset.from_tensor_slices((split.x, split.y))
    if shuffle:
        # A full-size buffer is a true shuffle: it holds the arrays, or only the paths.
        dataset = dataset.shuffle(len(split), seed=seed, reshuffle_each_iteration=True)
    if isinstance(split, FileSplit):
        size, channels = split.image_size, split.channels
        dataset = dataset.map(
            lambda path, label: (decode_image(path, size, channels), label),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def training_batches(
    split: Split,
    *,
    batch_size: int,
    seed: int,
    epochs: range,
    transform: Callable[[tf.Tensor, tf.Tensor, tf.Tensor], tuple[tf.Tensor, tf.Tensor]]
    | None = None,
) -> tuple[tf.data.Dataset, int]:
    """The training batches of every epoch in `epochs`, one stream; returns it and the steps
    per epoch (fit with `steps_per_epoch`, so Keras keeps one iterator across epochs).

    Each epoch's order is a permutation drawn from (seed, epoch) alone, and `transform` (the
    augmentation: images, labels, seed -> images, labels) gets a per-batch seed made of (seed,
    epoch, step): a run resumed at epoch k sees exactly the batches an uninterrupted run sees
    from epoch k on.
    """
    count = len(split)
    steps = -(-count // batch_size)  # the last batch may be smaller
    orders = np.stack([np.random.default_rng([seed, epoch]).permutation(count) for epoch in epochs])
    labels = tf.constant(split.y)
    if isinstance(split, FileSplit):
        paths, size, channels = (
            tf.constant(split.paths.astype(str)),
            split.image_size,
            split.channels,
        )

        def batches_of(order: tf.Tensor) -> tf.data.Dataset:
            return (
                tf.data.Dataset.from_tensor_slices(order)
                .map(
                    lambda i: (decode_image(tf.gather(paths, i), size, channels), labels[i]),
                    num_parallel_calls=tf.data.AUTOTUNE,
                )
                .batch(batch_size)
            )
    else:
        images = tf.constant(split.x)

        def batches_of(order: tf.Tensor) -> tf.data.Dataset:
            return (
                tf.data.Dataset.from_tensor_slices(order)
                .batch(batch_size)
                .map(lambda index: (tf.gather(images, index), tf.gather(labels, index)))
            )

    def epoch_batches(epoch: tf.Tensor, order: tf.Tensor) -> tf.data.Dataset:
        batches = batches_of(order)
        if transform is None:
            return batches
        return batches.enumerate().map(
            lambda step, batch: transform(
                batch[0], batch[1], tf.stack([seed * 100_003 + epoch, step])
            ),
            num_parallel_calls=tf.data.AUTOTUNE,
        )

    epoch_ids = np.asarray(list(epochs), dtype=np.int64)
    dataset = tf.data.Dataset.from_tensor_slices((epoch_ids, orders)).flat_map(epoch_batches)
    return dataset.prefetch(tf.data.AUTOTUNE), steps
