"""RandAugment (Cubuk et al., 2020) and AugMix (Hendrycks et al., 2020) over one bank of image
operations, applied to whole batches with a different operation per image.

The bank is torchvision's RandAugment set less `equalize` (a histogram per image and channel,
which has no cheap batched form): identity, autocontrast, brightness, color, contrast,
sharpness, posterize, solarize, rotate, shear x/y, translate x/y. Magnitudes use the paper's
0-10 scale (10: rotation 30 degrees, shear 0.3, translation 45% of the side, factors 1 +- 0.9,
posterize to 4 bits, solarize at threshold 0), with a random sign where the op has one.

Each round picks one op per image: the geometric ones become one affine matrix per image,
applied by a single XLA resampling (runner/augmentation/resample.py) for the whole batch; the
pixel ones are cheap arithmetic, computed for the batch and kept where chosen. Stateless per
batch seed, so a resumed run augments as an uninterrupted one does.
"""

from __future__ import annotations

import math
from typing import Any

from runner.core.lazy import tf

OPS = (
    "identity",
    "autocontrast",
    "brightness",
    "color",
    "contrast",
    "sharpness",
    "posterize",
    "solarize",
    "rotate",
    "shear_x",
    "shear_y",
    "translate_x",
    "translate_y",
)
# AugMix leaves out what overlaps the corruptions it is tested on (brightness, color, contrast,
# sharpness), as its paper does.
AUGMIX_OPS = tuple(op for op in OPS if op not in ("brightness", "color", "contrast", "sharpness"))
MAX_MAGNITUDE = 10.0
AUGMIX_WIDTH = 3  # chains mixed per image
AUGMIX_MAX_DEPTH = 3  # ops per chain: 1 to 3


def _seed(seed: tf.Tensor, index: int) -> tf.Tensor:
    return tf.random.experimental.stateless_fold_in(seed, index)


def _gray(x: tf.Tensor) -> tf.Tensor:
    if x.shape[-1] == 1:
        return x
    weights = tf.constant([0.299, 0.587, 0.114])
    return tf.reduce_sum(x * weights, axis=-1, keepdims=True)


def _blend(degenerate: tf.Tensor, x: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
    return degenerate + factor[:, None, None, None] * (x - degenerate)


def _sharpen_base(x: tf.Tensor) -> tf.Tensor:
    """PIL's SMOOTH kernel, the 'degenerate' image sharpness blends away from."""
    kernel = tf.constant([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]) / 13.0
    channels = x.shape[-1]
    kernel = tf.tile(kernel[:, :, None, None], [1, 1, channels, 1])
    return tf.nn.depthwise_conv2d(x, kernel, [1, 1, 1, 1], "SAME")


def _pixel_ops(x: tf.Tensor, level: tf.Tensor, sign: tf.Tensor) -> dict[str, tf.Tensor]:
    """Every pixel op of the bank on the whole batch; level in [0, 1] per image."""
    factor = 1.0 + 0.9 * level * sign
    low = tf.reduce_min(x, axis=[1, 2], keepdims=True)
    high = tf.reduce_max(x, axis=[1, 2], keepdims=True)
    stretched = (x - low) * 255.0 / tf.maximum(high - low, 1.0)
    autocontrast = tf.where(high > low, stretched, x)
    gray = _gray(x)
    mean = tf.reduce_mean(gray, axis=[1, 2, 3], keepdims=True)
    step = tf.pow(2.0, tf.round(4.0 * level))[:, None, None, None]  # keep 8 - 4 * level bits
    threshold = (256.0 - 256.0 * level)[:, None, None, None]
    return {
        "identity": x,
        "autocontrast": autocontrast,
        "brightness": x * factor[:, None, None, None],
        "color": _blend(gray, x, factor),
        "contrast": _blend(mean, x, factor),
        "sharpness": _blend(_sharpen_base(x), x, factor),
        "posterize": tf.floor(x / step) * step,
        "solarize": tf.where(x >= threshold, 255.0 - x, x),
    }


def _matrices(op: tf.Tensor, level: tf.Tensor, sign: tf.Tensor, height: int, width: int):
    """(N, 8) output-to-input transforms: the chosen geometric op, identity for the others."""

    def amount(name: str, scale: float) -> tf.Tensor:
        return tf.where(op == OPS.index(name), level * sign * scale, 0.0)

    theta = amount("rotate", math.radians(30.0))
    shear_x, shear_y = amount("shear_x", 0.3), amount("shear_y", 0.3)
    shift_x, shift_y = amount("translate_x", 0.45 * width), amount("translate_y", 0.45 * height)
    cos, sin = tf.cos(theta), tf.sin(theta)
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    # rotation @ shear, around the center, then the shift (one op is non-zero per image).
    a0, a1 = cos - sin * shear_y, cos * shear_x - sin
    b0, b1 = sin + cos * shear_y, sin * shear_x + cos
    a2 = cx - a0 * cx - a1 * cy + shift_x
    b2 = cy - b0 * cx - b1 * cy + shift_y
    zero = tf.zeros_like(theta)
    return tf.stack([a0, a1, a2, b0, b1, b2, zero, zero], axis=1)


def apply_ops(x: tf.Tensor, op: tf.Tensor, level: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Op `OPS[op[i]]` at `level[i]` (0-1) on image i; x float 0-255, (N, H, W, C)."""
    n = tf.shape(x)[0]
    height, width = x.shape[1], x.shape[2]
    sign = tf.where(tf.random.stateless_uniform([n], seed) < 0.5, -1.0, 1.0)
    from runner.augmentation import resample  # compiles a TensorFlow function at import

    out = resample.project(x, _matrices(op, level, sign, height, width), "constant", 0.0)
    for name, result in _pixel_ops(x, level, sign).items():
        out = tf.where((op == OPS.index(name))[:, None, None, None], result, out)
    return tf.clip_by_value(out, 0.0, 255.0)


def _choose(seed: tf.Tensor, n: tf.Tensor, ops: tuple[str, ...]) -> tf.Tensor:
    allowed = tf.constant([OPS.index(op) for op in ops])
    pick = tf.random.stateless_uniform([n], seed, 0, len(ops), dtype=tf.int32)
    return tf.gather(allowed, pick)


def randaugment(x: tf.Tensor, seed: tf.Tensor, layers: int, magnitude: float) -> tf.Tensor:
    """`layers` rounds, each a random op per image at `magnitude` (0-10)."""
    n = tf.shape(x)[0]
    level = tf.fill([n], magnitude / MAX_MAGNITUDE)
    for round_ in range(layers):
        op = _choose(_seed(seed, 2 * round_), n, OPS)
        x = apply_ops(x, op, level, _seed(seed, 2 * round_ + 1))
    return x


def augmix(x: tf.Tensor, seed: tf.Tensor, severity: float) -> tf.Tensor:
    """Mean of AUGMIX_WIDTH chains of 1-3 random ops (Dirichlet weights), blended with the
    image by m ~ Beta(1, 1) (uniform); op levels uniform in [0, severity / 10]."""
    n = tf.shape(x)[0]
    gammas = tf.random.stateless_gamma([AUGMIX_WIDTH, n], _seed(seed, 0), 1.0)
    weights = gammas / tf.reduce_sum(gammas, axis=0, keepdims=True)
    mixed = tf.zeros_like(x)
    for chain in range(AUGMIX_WIDTH):
        base = _seed(seed, 100 + chain)
        depth = tf.random.stateless_uniform(
            [n], _seed(base, 0), 1, AUGMIX_MAX_DEPTH + 1, dtype=tf.int32
        )
        out = x
        for step in range(AUGMIX_MAX_DEPTH):
            op = _choose(_seed(base, 10 + step), n, AUGMIX_OPS)
            level = tf.random.stateless_uniform(
                [n], _seed(base, 20 + step), 0.0, severity / MAX_MAGNITUDE
            )
            stepped = apply_ops(out, op, level, _seed(base, 30 + step))
            out = tf.where((step < depth)[:, None, None, None], stepped, out)
        mixed += weights[chain][:, None, None, None] * out
    m = tf.random.stateless_uniform([n], _seed(seed, 1))[:, None, None, None]
    return (1.0 - m) * x + m * mixed


def is_active(cfg: Any) -> bool:
    return bool(cfg.randaugment or cfg.augmix)
