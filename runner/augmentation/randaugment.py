"""RandAugment (Cubuk et al., 2020) and AugMix (Hendrycks et al., 2020) over one bank of image
operations, applied to whole batches with a different operation per image.

The bank is torchvision's RandAugment set less `equalize` (a histogram per image and channel,
which has no cheap batched form): identity, autocontrast, brightness, color, contrast,
sharpness, posterize, solarize, rotate, shear x/y, translate x/y. Magnitudes use the paper's
0-10 scale (10: rotation 30 degrees, shear 0.3, translation 45% of the side, factors 1 +- 0.9,
posterize to 4 bits, solarize at threshold 0), with a random sign where the op has one.

Each round picks one op per image: the geometric ones become one affine matrix per image,
applied by a single XLA resampling (runner/augmentation/resample.py) for the whole batch; the
pixel ones are cheap arithmetic, computed for the batch and kept where chosen. Written in
`keras.ops`, so one version serves both input paths; what differs is a `Source` of random draws
and warps: TensorFlow's stateless draws and XLA resampling inside `tf.data` (transforms.py), or
Keras' seeded draws and `keras.ops.image.affine_transform` on any backend (portable.py). Either
way the draws depend on the batch's seed only, so a resumed run augments as an uninterrupted
one does.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

from runner.core.lazy import keras, tf

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


class Source(Protocol):
    """Random draws (each a function of the batch's seed and the draw's place) and the warp."""

    def fold(self, index: int) -> Source: ...
    def uniform(self, n: Any, low: float = 0.0, high: float = 1.0) -> Any: ...
    def integers(self, n: Any, low: int, high: int) -> Any: ...
    def gamma(self, shape: list, alpha: float) -> Any: ...
    def warp(self, x: Any, matrices: Any) -> Any: ...


class StatelessSource:
    """TensorFlow's stateless draws from a (2,) seed, folded per draw (the tf.data path)."""

    def __init__(self, seed: Any) -> None:
        self.seed = seed

    def fold(self, index: int) -> StatelessSource:
        return StatelessSource(tf.random.experimental.stateless_fold_in(self.seed, index))

    def uniform(self, n: Any, low: float = 0.0, high: float = 1.0) -> Any:
        return tf.random.stateless_uniform([n], self.seed, low, high)

    def integers(self, n: Any, low: int, high: int) -> Any:
        return tf.random.stateless_uniform([n], self.seed, low, high, dtype=tf.int32)

    def gamma(self, shape: list, alpha: float) -> Any:
        return tf.random.stateless_gamma(shape, self.seed, alpha)

    def warp(self, x: Any, matrices: Any) -> Any:
        from runner.augmentation import resample  # compiles a TensorFlow function at import

        return resample.project(x, matrices, "constant", 0.0)


class GeneratorSource:
    """Keras' draws from the batch's SeedGenerator, on any backend (portable.py): the draws
    come in a fixed order, so a batch seed gives the same draws every time."""

    def __init__(self, generator: Any) -> None:
        self.generator = generator

    def fold(self, index: int) -> GeneratorSource:
        return self

    def uniform(self, n: Any, low: float = 0.0, high: float = 1.0) -> Any:
        return keras.random.uniform([n], low, high, seed=self.generator)

    def integers(self, n: Any, low: int, high: int) -> Any:
        return keras.random.randint([n], low, high, dtype="int32", seed=self.generator)

    def gamma(self, shape: list, alpha: float) -> Any:
        return keras.random.gamma(shape, alpha, seed=self.generator)

    def warp(self, x: Any, matrices: Any) -> Any:
        return keras.ops.image.affine_transform(
            x, matrices, interpolation="bilinear", fill_mode="constant", fill_value=0.0
        )


def _gray(x: Any) -> Any:
    if x.shape[-1] == 1:
        return x
    weights = keras.ops.convert_to_tensor([0.299, 0.587, 0.114])
    return keras.ops.sum(x * weights, axis=-1, keepdims=True)


def _blend(degenerate: Any, x: Any, factor: Any) -> Any:
    return degenerate + factor[:, None, None, None] * (x - degenerate)


def _sharpen_base(x: Any) -> Any:
    """PIL's SMOOTH kernel, the 'degenerate' image sharpness blends away from."""
    o = keras.ops
    kernel = o.convert_to_tensor([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]) / 13.0
    kernel = o.tile(kernel[:, :, None, None], [1, 1, x.shape[-1], 1])
    return o.depthwise_conv(x, kernel, strides=1, padding="same")


def _pixel_ops(x: Any, level: Any, sign: Any) -> dict[str, Any]:
    """Every pixel op of the bank on the whole batch; level in [0, 1] per image."""
    o = keras.ops
    factor = 1.0 + 0.9 * level * sign
    low = o.min(x, axis=[1, 2], keepdims=True)
    high = o.max(x, axis=[1, 2], keepdims=True)
    stretched = (x - low) * 255.0 / o.maximum(high - low, 1.0)
    autocontrast = o.where(high > low, stretched, x)
    gray = _gray(x)
    mean = o.mean(gray, axis=[1, 2, 3], keepdims=True)
    step = o.power(2.0, o.round(4.0 * level))[:, None, None, None]  # keep 8 - 4 * level bits
    threshold = (256.0 - 256.0 * level)[:, None, None, None]
    return {
        "identity": x,
        "autocontrast": autocontrast,
        "brightness": x * factor[:, None, None, None],
        "color": _blend(gray, x, factor),
        "contrast": _blend(mean, x, factor),
        "sharpness": _blend(_sharpen_base(x), x, factor),
        "posterize": o.floor(x / step) * step,
        "solarize": o.where(x >= threshold, 255.0 - x, x),
    }


def _matrices(op: Any, level: Any, sign: Any, height: int, width: int) -> Any:
    """(N, 8) output-to-input transforms: the chosen geometric op, identity for the others."""
    o = keras.ops

    def amount(name: str, scale: float) -> Any:
        return o.where(op == OPS.index(name), level * sign * scale, 0.0)

    theta = amount("rotate", math.radians(30.0))
    shear_x, shear_y = amount("shear_x", 0.3), amount("shear_y", 0.3)
    shift_x, shift_y = amount("translate_x", 0.45 * width), amount("translate_y", 0.45 * height)
    cos, sin = o.cos(theta), o.sin(theta)
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    # rotation @ shear, around the center, then the shift (one op is non-zero per image).
    a0, a1 = cos - sin * shear_y, cos * shear_x - sin
    b0, b1 = sin + cos * shear_y, sin * shear_x + cos
    a2 = cx - a0 * cx - a1 * cy + shift_x
    b2 = cy - b0 * cx - b1 * cy + shift_y
    zero = o.zeros_like(theta)
    return o.stack([a0, a1, a2, b0, b1, b2, zero, zero], axis=1)


def apply_ops(x: Any, op: Any, level: Any, source: Source) -> Any:
    """Op `OPS[op[i]]` at `level[i]` (0-1) on image i; x float 0-255, (N, H, W, C)."""
    o = keras.ops
    n, height, width = o.shape(x)[0], x.shape[1], x.shape[2]
    sign = o.where(source.uniform(n) < 0.5, -1.0, 1.0)
    out = source.warp(x, _matrices(op, level, sign, height, width))
    for name, result in _pixel_ops(x, level, sign).items():
        out = o.where((op == OPS.index(name))[:, None, None, None], result, out)
    return o.clip(out, 0.0, 255.0)


def _choose(source: Source, n: Any, ops: tuple[str, ...]) -> Any:
    allowed = keras.ops.convert_to_tensor([OPS.index(op) for op in ops], dtype="int32")
    return keras.ops.take(allowed, source.integers(n, 0, len(ops)))


def randaugment(x: Any, source: Source, layers: int, magnitude: float) -> Any:
    """`layers` rounds, each a random op per image at `magnitude` (0-10)."""
    n = keras.ops.shape(x)[0]
    level = keras.ops.full([n], magnitude / MAX_MAGNITUDE)
    for round_ in range(layers):
        op = _choose(source.fold(2 * round_), n, OPS)
        x = apply_ops(x, op, level, source.fold(2 * round_ + 1))
    return x


def augmix(x: Any, source: Source, severity: float) -> Any:
    """Mean of AUGMIX_WIDTH chains of 1-3 random ops (Dirichlet weights), blended with the
    image by m ~ Beta(1, 1) (uniform); op levels uniform in [0, severity / 10]."""
    o = keras.ops
    n = o.shape(x)[0]
    gammas = source.fold(0).gamma([AUGMIX_WIDTH, n], 1.0)
    weights = gammas / o.sum(gammas, axis=0, keepdims=True)
    mixed = o.zeros_like(x)
    for chain in range(AUGMIX_WIDTH):
        base = source.fold(100 + chain)
        depth = base.fold(0).integers(n, 1, AUGMIX_MAX_DEPTH + 1)
        out = x
        for step in range(AUGMIX_MAX_DEPTH):
            op = _choose(base.fold(10 + step), n, AUGMIX_OPS)
            level = base.fold(20 + step).uniform(n, 0.0, severity / MAX_MAGNITUDE)
            stepped = apply_ops(out, op, level, base.fold(30 + step))
            out = o.where((step < depth)[:, None, None, None], stepped, out)
        mixed += weights[chain][:, None, None, None] * out
    m = source.fold(1).uniform(n)[:, None, None, None]
    return (1.0 - m) * x + m * mixed


def is_active(cfg: Any) -> bool:
    return bool(cfg.randaugment or cfg.augmix)
