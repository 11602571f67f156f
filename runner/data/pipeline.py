"""`tf.data` input pipelines over in-memory splits: shuffle (train only), batch, prefetch."""

from __future__ import annotations

import tensorflow as tf

from runner.data.base import ArraySplit


def to_dataset(
    split: ArraySplit, *, batch_size: int, shuffle: bool = False, seed: int = 0
) -> tf.data.Dataset:
    dataset = tf.data.Dataset.from_tensor_slices((split.x, split.y))
    if shuffle:
        # A full-size buffer is a true shuffle; the arrays are in memory anyway.
        dataset = dataset.shuffle(len(split), seed=seed, reshuffle_each_iteration=True)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)
