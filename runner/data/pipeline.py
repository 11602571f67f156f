"""`tf.data` input pipelines: shuffle (train only), decode when streaming, batch, prefetch."""

from __future__ import annotations

import tensorflow as tf

from runner.data.base import FileSplit, Split
from runner.data.images import decode_image


def to_dataset(
    split: Split, *, batch_size: int, shuffle: bool = False, seed: int = 0
) -> tf.data.Dataset:
    if isinstance(split, FileSplit):
        # Streaming: only paths and labels are in memory; files are decoded in parallel.
        dataset = tf.data.Dataset.from_tensor_slices((split.paths.astype(str), split.y))
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
