"""Augmentations that move or blank a region of each image: the CIFAR random crop (pad, then
crop back at a random offset) and random erasing (Zhong et al., 2017).

Stateless: each takes a per-batch seed, so a batch is augmented the same way in a run resumed
at its epoch. Pixels stay 0-255 floats, (N, H, W, C).
"""

from __future__ import annotations

import math

from runner.core.lazy import tf

# Random erasing's rectangle: 2% to 1/3 of the image, aspect ratio 0.3 to 3.3 (the paper's).
ERASE_AREA = (0.02, 1.0 / 3.0)
ERASE_ASPECT = (0.3, 1.0 / 0.3)


def _sub_seed(seed: tf.Tensor, index: int) -> tf.Tensor:
    return tf.random.experimental.stateless_fold_in(seed, index)


def random_crop(images: tf.Tensor, seed: tf.Tensor, padding: int, reflect: bool) -> tf.Tensor:
    """Pad each side by `padding` pixels (zeros, or the mirrored edge), then crop the original
    size at an offset uniform in [0, 2 * padding] per image and axis."""
    n = tf.shape(images)[0]
    height, width = images.shape[1], images.shape[2]
    mode = "REFLECT" if reflect and padding < min(height, width) else "CONSTANT"
    padded = tf.pad(images, [[0, 0], [padding, padding], [padding, padding], [0, 0]], mode=mode)
    offsets = tf.random.stateless_uniform(
        [n, 2], _sub_seed(seed, 20), 0, 2 * padding + 1, dtype=tf.int32
    )
    rows = offsets[:, :1] + tf.range(height)[None, :]
    cols = offsets[:, 1:] + tf.range(width)[None, :]
    cropped = tf.gather(padded, rows, axis=1, batch_dims=1)
    return tf.gather(cropped, cols, axis=2, batch_dims=1)


def box_masks(
    n: tf.Tensor, height: int, width: int, box_h: tf.Tensor, box_w: tf.Tensor, seed: tf.Tensor
) -> tf.Tensor:
    """(N, H, W, 1) float masks, 1 inside a box of (box_h, box_w) pixels per image at a
    uniformly random position that keeps it inside the image."""
    top = tf.floor(tf.random.stateless_uniform([n], _sub_seed(seed, 0)) * (height - box_h + 1))
    left = tf.floor(tf.random.stateless_uniform([n], _sub_seed(seed, 1)) * (width - box_w + 1))
    rows = tf.range(height, dtype=tf.float32)[None, :, None]
    cols = tf.range(width, dtype=tf.float32)[None, None, :]
    inside = (
        (rows >= top[:, None, None])
        & (rows < (top + box_h)[:, None, None])
        & (cols >= left[:, None, None])
        & (cols < (left + box_w)[:, None, None])
    )
    return tf.cast(inside, tf.float32)[..., None]


def random_erasing(images: tf.Tensor, seed: tf.Tensor, probability: float) -> tf.Tensor:
    """With `probability` per image, replace a random rectangle by uniform noise."""
    n = tf.shape(images)[0]
    height, width = images.shape[1], images.shape[2]
    area = tf.random.stateless_uniform([n], _sub_seed(seed, 30), *ERASE_AREA) * height * width
    log_aspect = tf.random.stateless_uniform(
        [n], _sub_seed(seed, 31), *(math.log(x) for x in ERASE_ASPECT)
    )
    aspect = tf.exp(log_aspect)
    box_h = tf.clip_by_value(tf.round(tf.sqrt(area * aspect)), 1.0, float(height))
    box_w = tf.clip_by_value(tf.round(tf.sqrt(area / aspect)), 1.0, float(width))
    mask = box_masks(n, height, width, box_h, box_w, _sub_seed(seed, 32))
    chosen = tf.random.stateless_uniform([n], _sub_seed(seed, 33)) < probability
    mask = mask * tf.cast(chosen, tf.float32)[:, None, None, None]
    noise = tf.random.stateless_uniform(tf.shape(images), _sub_seed(seed, 34), 0.0, 255.0)
    return images * (1.0 - mask) + noise * mask
