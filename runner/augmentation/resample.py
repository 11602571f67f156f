"""Bilinear resampling of a batch through one projective transform per image, compiled by XLA.

The same output as TensorFlow's `ImageProjectiveTransformV3` (BILINEAR, any fill mode), which
tests/test_augment.py checks, at about twice its speed on a CPU inside `tf.data` (make bench
pipeline): that kernel recomputes each pixel's source coordinates once per channel and has no
XLA kernel, while here XLA fuses the coordinates, the four gathers and the blend into one loop
per batch. Being XLA-compatible, it also runs inside a jit-compiled training step
(`augmentation.placement=model`).
"""

from __future__ import annotations

import tensorflow as tf


def _truncate(value: tf.Tensor) -> tf.Tensor:
    """C++'s static_cast<int> of a float (towards zero), as the kernel maps coordinates."""
    return tf.where(value < 0, tf.math.ceil(value), tf.floor(value))


def map_coordinate(coord: tf.Tensor, length: int, fill_mode: str) -> tf.Tensor:
    """Where an out-of-image source coordinate reads from (TensorFlow's `map_coordinate`)."""
    size = float(length)
    if fill_mode == "constant":
        return coord  # out-of-image taps read fill_value
    if fill_mode == "nearest" or length <= 1:
        return tf.clip_by_value(coord, 0.0, size - 1.0)
    if fill_mode == "reflect":
        double = 2.0 * size
        below = double * _truncate(-coord / double) + coord
        below = tf.where(below < -size, below + double, -below - 1.0)
        above = coord - double * _truncate(coord / double)
        above = tf.where(above >= size, double - above - 1.0, above)
    else:  # wrap
        below = coord + size * (_truncate(-coord / (size - 1.0)) + 1.0)
        above = coord - size * _truncate(coord / (size - 1.0))
    mapped = tf.where(coord < 0, below, tf.where(coord > size - 1.0, above, coord))
    return tf.clip_by_value(mapped, 0.0, size - 1.0)


@tf.function(jit_compile=True, reduce_retracing=True)
def project(
    images: tf.Tensor, transforms: tf.Tensor, fill_mode: str, fill_value: float
) -> tf.Tensor:
    """(N, H, W, C) images of any number type -> float32; transforms (N, 8) map output to input
    coordinates, as `ImageProjectiveTransformV3`'s do: [a0, a1, a2, b0, b1, b2, c0, c1]."""
    n = tf.shape(images)[0]
    height, width, channels = images.shape[1], images.shape[2], images.shape[3]
    rows, cols = tf.meshgrid(
        tf.range(height, dtype=tf.float32), tf.range(width, dtype=tf.float32), indexing="ij"
    )
    xs, ys = tf.reshape(cols, [1, -1]), tf.reshape(rows, [1, -1])
    a0, a1, a2, b0, b1, b2, c0, c1 = tf.unstack(transforms[:, :, None], axis=1)
    projection = c0 * xs + c1 * ys + 1.0
    source_x = map_coordinate((a0 * xs + a1 * ys + a2) / projection, width, fill_mode)
    source_y = map_coordinate((b0 * xs + b1 * ys + b2) / projection, height, fill_mode)
    x0, y0 = tf.floor(source_x), tf.floor(source_y)
    fx, fy = (source_x - x0)[..., None], (source_y - y0)[..., None]
    pixels = tf.reshape(tf.cast(images, tf.float32), [-1, channels])
    first = (tf.range(n) * height * width)[:, None]

    def tap(y: tf.Tensor, x: tf.Tensor) -> tf.Tensor:
        row = tf.cast(tf.clip_by_value(y, 0, height - 1), tf.int32)
        col = tf.cast(tf.clip_by_value(x, 0, width - 1), tf.int32)
        value = tf.gather(pixels, first + row * width + col)
        if fill_mode != "constant":
            # Mapped coordinates are inside the image: a tap beyond the last row or column
            # has weight 0, so the clipped read is exact.
            return value
        inside = (y >= 0) & (y <= height - 1) & (x >= 0) & (x <= width - 1)
        return tf.where(inside[..., None], value, fill_value)

    top = tap(y0, x0) * (1.0 - fx) + tap(y0, x0 + 1.0) * fx
    bottom = tap(y0 + 1.0, x0) * (1.0 - fx) + tap(y0 + 1.0, x0 + 1.0) * fx
    return tf.reshape(top * (1.0 - fy) + bottom * fy, [n, height, width, channels])
