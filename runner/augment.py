"""Training-time augmentation: the tutorials' `ImageDataGenerator` vocabulary, made fast.

Rotation, shifts, shear, zoom and flips are composed into one random affine matrix per image and
applied to the whole batch by a single `ImageProjectiveTransformV3` call inside the `tf.data`
pipeline (parallel, prefetched), instead of a chain of layers each resampling the image.
Brightness and contrast follow as cheap per-image arithmetic. Only training batches pass through
here; validation and test batches never do.

The matrices follow `ImageDataGenerator.apply_transform`: they map each output pixel back to the
input pixel it samples, composed as rotation @ shift @ shear @ zoom around the image center.
"""

from __future__ import annotations

import math
from typing import Any

import tensorflow as tf

from runner.errors import RunnerError

FILL_MODES = ("nearest", "reflect", "wrap", "constant")


def is_active(cfg: Any) -> bool:
    geometric = (
        any((cfg.rotation, cfg.width_shift, cfg.height_shift, cfg.shear, cfg.zoom))
        or cfg.horizontal_flip
        or cfg.vertical_flip
    )
    return bool(geometric or cfg.brightness or cfg.contrast)


def validate(cfg: Any) -> None:
    if cfg.fill_mode not in FILL_MODES:
        raise RunnerError(
            f"augmentation.fill_mode should be one of {list(FILL_MODES)}. "
            f"Received: {cfg.fill_mode!r}"
        )
    for key in ("rotation", "width_shift", "height_shift", "shear", "zoom", "brightness",
                "contrast"):  # fmt: skip
        if cfg[key] < 0:
            raise RunnerError(f"augmentation.{key} should be >= 0. Received: {cfg[key]}")
    if cfg.zoom >= 1:
        raise RunnerError(f"augmentation.zoom should be below 1. Received: {cfg.zoom}")


def _uniform(seed: tf.Tensor, n: tf.Tensor, bound: float, index: int) -> tf.Tensor:
    if not bound:
        return tf.zeros([n])
    sub_seed = tf.random.experimental.stateless_fold_in(seed, index)
    return tf.random.stateless_uniform([n], sub_seed, -bound, bound)


def random_matrices(cfg: Any, seed: tf.Tensor, n: tf.Tensor, height: int, width: int):
    """(n, 8) projective transforms mapping output to input coordinates, one per image."""
    theta = _uniform(seed, n, math.radians(cfg.rotation), 0)
    shear = _uniform(seed, n, math.radians(cfg.shear), 1)
    shift_x = _uniform(seed, n, cfg.width_shift * width, 2)
    shift_y = _uniform(seed, n, cfg.height_shift * height, 3)
    zoom_x = 1.0 + _uniform(seed, n, cfg.zoom, 4)
    zoom_y = 1.0 + _uniform(seed, n, cfg.zoom, 5)
    flip_x = _flip(seed, n, cfg.horizontal_flip, 6)
    flip_y = _flip(seed, n, cfg.vertical_flip, 7)

    cos, sin = tf.cos(theta), tf.sin(theta)
    one, zero = tf.ones([n]), tf.zeros([n])

    def matrix(rows):
        return tf.reshape(tf.stack([tf.stack(row, axis=-1) for row in rows], axis=1), [-1, 3, 3])

    rotation = matrix([[cos, -sin, zero], [sin, cos, zero], [zero, zero, one]])
    shift = matrix([[one, zero, shift_x], [zero, one, shift_y], [zero, zero, one]])
    shear_m = matrix([[one, -tf.sin(shear), zero], [zero, tf.cos(shear), zero], [zero, zero, one]])
    zoom = matrix([[zoom_x, zero, zero], [zero, zoom_y, zero], [zero, zero, one]])
    # Flips are mirrorings around the center: a sign on x or y.
    flip = matrix([[flip_x, zero, zero], [zero, flip_y, zero], [zero, zero, one]])
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    to_center = tf.constant([[1.0, 0.0, cx], [0.0, 1.0, cy], [0.0, 0.0, 1.0]])
    from_center = tf.constant([[1.0, 0.0, -cx], [0.0, 1.0, -cy], [0.0, 0.0, 1.0]])
    full = to_center @ rotation @ shift @ shear_m @ zoom @ flip @ from_center
    flat = tf.reshape(full, [-1, 9])
    return flat[:, :8] / flat[:, 8:9]


def _flip(seed: tf.Tensor, n: tf.Tensor, enabled: bool, index: int) -> tf.Tensor:
    if not enabled:
        return tf.ones([n])
    sub_seed = tf.random.experimental.stateless_fold_in(seed, index)
    coin = tf.random.stateless_uniform([n], sub_seed) < 0.5
    return tf.where(coin, -1.0, 1.0)


def augment_batch(images: tf.Tensor, seed: tf.Tensor, cfg: Any) -> tf.Tensor:
    """Augment a uint8 (N, H, W, C) batch; returns uint8 of the same shape."""
    shape = tf.shape(images)
    n, height, width = shape[0], images.shape[1], images.shape[2]
    out = tf.cast(images, tf.float32)
    if any((cfg.rotation, cfg.width_shift, cfg.height_shift, cfg.shear, cfg.zoom,
            cfg.horizontal_flip, cfg.vertical_flip)):  # fmt: skip
        out = tf.raw_ops.ImageProjectiveTransformV3(
            images=out,
            transforms=random_matrices(cfg, seed, n, height, width),
            output_shape=tf.shape(out)[1:3],
            fill_value=float(cfg.fill_value),
            interpolation="BILINEAR",
            fill_mode=cfg.fill_mode.upper(),
        )
    if cfg.brightness:  # add up to +-brightness of the full range
        delta = _uniform(seed, n, cfg.brightness * 255.0, 8)
        out = out + delta[:, None, None, None]
    if cfg.contrast:  # scale around each image's mean by 1 +- contrast
        factor = 1.0 + _uniform(seed, n, cfg.contrast, 9)
        mean = tf.reduce_mean(out, axis=[1, 2, 3], keepdims=True)
        out = (out - mean) * factor[:, None, None, None] + mean
    return tf.cast(tf.round(tf.clip_by_value(out, 0.0, 255.0)), tf.uint8)


def apply(dataset: tf.data.Dataset, cfg: Any, seed: int) -> tf.data.Dataset:
    """Augment the images of a batched (images, labels) dataset, new randomness every epoch."""
    if not is_active(cfg):
        return dataset
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)

    def transform(batch, batch_seed):
        images, labels = batch
        return augment_batch(images, batch_seed, cfg), labels

    return (
        tf.data.Dataset.zip((dataset, seeds))
        .map(transform, num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )


def preview(
    images: Any, cfg: Any, *, seed: int, count: int = 6, variants: int = 5
) -> tuple[Any, Any]:
    """`count` originals and `variants` augmented versions of each, as uint8 arrays."""
    originals = images[:count]
    batch = tf.repeat(tf.constant(originals), variants, axis=0)
    augmented = augment_batch(batch, tf.constant([seed, 0], tf.int64), cfg).numpy()
    return originals, augmented.reshape(len(originals), variants, *originals.shape[1:])
