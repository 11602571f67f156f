"""MixUp (Zhang et al., 2018) and CutMix (Yun et al., 2019): each training batch blended with
itself reversed, labels blended in the same proportion (timm's batch mode).

MixUp blends whole images by lam ~ Beta(alpha, alpha); CutMix pastes a box covering 1 - lam of
the image, and the labels take the box's exact share. With both on, each batch picks one, with
even odds. Labels come in one-hot (or 0/1 for binary and multi-label data) and leave soft:
training accuracy is then the agreement of the prediction's top class with the top class of
the blended label. Stateless per batch seed, like every training augmentation here.
"""

from __future__ import annotations

from typing import Any

from runner.augmentation.regions import box_masks
from runner.core.lazy import tf


def is_active(cfg: Any) -> bool:
    return bool(cfg.mixup or cfg.cutmix)


def _beta(seed: tf.Tensor, alpha: float) -> tf.Tensor:
    """One draw from Beta(alpha, alpha), as the ratio of two Gamma draws."""
    a = tf.random.stateless_gamma([], tf.random.experimental.stateless_fold_in(seed, 0), alpha)
    b = tf.random.stateless_gamma([], tf.random.experimental.stateless_fold_in(seed, 1), alpha)
    return a / (a + b)


def _mixup(images: tf.Tensor, labels: tf.Tensor, seed: tf.Tensor, alpha: float):
    lam = _beta(seed, alpha)
    return (
        lam * images + (1.0 - lam) * tf.reverse(images, [0]),
        lam * labels + (1.0 - lam) * tf.reverse(labels, [0]),
    )


def _cutmix(images: tf.Tensor, labels: tf.Tensor, seed: tf.Tensor, alpha: float):
    n = tf.shape(images)[0]
    height, width = images.shape[1], images.shape[2]
    cut = tf.sqrt(1.0 - _beta(seed, alpha))  # the box's side, as a fraction of the image's
    box_h = tf.fill([n], tf.round(cut * height))
    box_w = tf.fill([n], tf.round(cut * width))
    mask = box_masks(
        n, height, width, box_h, box_w, tf.random.experimental.stateless_fold_in(seed, 2)
    )
    mixed = images * (1.0 - mask) + tf.reverse(images, [0]) * mask
    share = tf.reduce_mean(mask, axis=[1, 2, 3])  # what the box covers, per image
    share = tf.reshape(share, [-1] + [1] * (len(labels.shape) - 1))
    return mixed, (1.0 - share) * labels + share * tf.reverse(labels, [0])


def mix(images: tf.Tensor, labels: tf.Tensor, seed: tf.Tensor, cfg: Any):
    """(images, labels) of a batch, blended; floats, 0-255 pixels."""
    seed = tf.random.experimental.stateless_fold_in(seed, 40)
    images, labels = tf.cast(images, tf.float32), tf.cast(labels, tf.float32)
    if cfg.mixup and cfg.cutmix:
        coin = tf.random.stateless_uniform([], tf.random.experimental.stateless_fold_in(seed, 3))
        return tf.cond(
            coin < 0.5,
            lambda: _mixup(images, labels, seed, float(cfg.mixup)),
            lambda: _cutmix(images, labels, seed, float(cfg.cutmix)),
        )
    if cfg.mixup:
        return _mixup(images, labels, seed, float(cfg.mixup))
    return _cutmix(images, labels, seed, float(cfg.cutmix))
