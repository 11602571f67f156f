"""The training augmentation in `keras.ops`, for Keras on JAX or torch: the same keys and
transforms as transforms.py (TensorFlow's `tf.data` path), run on the backend's arrays.

In the input pipeline each batch gets a `keras.random.SeedGenerator` seeded from (seed, epoch,
step), so a resumed run draws what an uninterrupted one drew; as the model's first layer
(`placement: model`) the layer's own generator runs inside the compiled train step, on the
accelerator. RandAugment and AugMix exist on TensorFlow only (a one-line error says so).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from runner.augmentation import randaugment
from runner.augmentation.randaugment import GeneratorSource
from runner.augmentation.regions import ERASE_AREA, ERASE_ASPECT
from runner.core.lazy import keras


def is_geometric(cfg: Any) -> bool:
    """Whether any transform that moves pixels (the affine matrix) is on."""
    return bool(
        any((cfg.rotation, cfg.width_shift, cfg.height_shift, cfg.shear, cfg.zoom))
        or cfg.horizontal_flip
        or cfg.vertical_flip
    )


def batch_generator(seed: np.ndarray) -> Any:
    """A fresh generator for the batch with seed (seed-and-epoch, step)."""
    folded = np.random.default_rng([int(s) for s in np.asarray(seed).ravel()]).integers(2**31)
    return keras.random.SeedGenerator(int(folded))


def _uniform(gen: Any, n: Any, bound: float) -> Any:
    if not bound:
        return keras.ops.zeros([n])
    return keras.random.uniform([n], -bound, bound, seed=gen)


def _flip(gen: Any, n: Any, enabled: bool) -> Any:
    if not enabled:
        return keras.ops.ones([n])
    return keras.ops.where(keras.random.uniform([n], seed=gen) < 0.5, -1.0, 1.0)


def alternating_flips(images: Any, epoch_parity: int) -> Any:
    """transforms.alternating_flips in keras.ops: -1 (mirror) or 1 per image, by the parity
    of its pixel sum plus the epoch's."""
    o = keras.ops
    pixel_sum = o.sum(o.cast(images, "int32"), axis=[1, 2, 3])
    return o.where((pixel_sum + epoch_parity) % 2 == 1, -1.0, 1.0)


def random_matrices(cfg: Any, gen: Any, n: Any, height: int, width: int, flip_x: Any = None) -> Any:
    """(n, 8) projective transforms mapping output to input coordinates, one per image
    (`flip_x`: the mirrors decided elsewhere)."""
    return compose_matrices(
        theta=_uniform(gen, n, math.radians(cfg.rotation)),
        shear=_uniform(gen, n, math.radians(cfg.shear)),
        shift_x=_uniform(gen, n, cfg.width_shift * width),
        shift_y=_uniform(gen, n, cfg.height_shift * height),
        zoom_x=1.0 + _uniform(gen, n, cfg.zoom),
        zoom_y=1.0 + _uniform(gen, n, cfg.zoom),
        flip_x=_flip(gen, n, cfg.horizontal_flip) if flip_x is None else flip_x,
        flip_y=_flip(gen, n, cfg.vertical_flip),
        height=height,
        width=width,
    )


def compose_matrices(
    *,
    theta: Any,
    shear: Any,
    shift_x: Any,
    shift_y: Any,
    zoom_x: Any,
    zoom_y: Any,
    flip_x: Any,
    flip_y: Any,
    height: int,
    width: int,
) -> Any:
    """The (n, 8) projective transforms (output to input coordinates) of per-image angles (in
    radians), shifts (pixels), zooms and flips (-1 or 1), about the image's center. Keras ops:
    TensorFlow's tf.data path (transforms.py, its own random draws) composes with it too."""
    o = keras.ops
    cos, sin = o.cos(theta), o.sin(theta)
    one, zero = o.ones_like(theta), o.zeros_like(theta)

    def matrix(rows: list[list[Any]]) -> Any:
        return o.reshape(o.stack([o.stack(row, axis=-1) for row in rows], axis=1), [-1, 3, 3])

    rotation = matrix([[cos, -sin, zero], [sin, cos, zero], [zero, zero, one]])
    shift = matrix([[one, zero, shift_x], [zero, one, shift_y], [zero, zero, one]])
    shear_m = matrix([[one, -o.sin(shear), zero], [zero, o.cos(shear), zero], [zero, zero, one]])
    zoom = matrix([[zoom_x, zero, zero], [zero, zoom_y, zero], [zero, zero, one]])
    # Flips are mirrorings around the center: a sign on x or y.
    flip = matrix([[flip_x, zero, zero], [zero, flip_y, zero], [zero, zero, one]])
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    to_center = o.convert_to_tensor([[1.0, 0.0, cx], [0.0, 1.0, cy], [0.0, 0.0, 1.0]])
    from_center = o.convert_to_tensor([[1.0, 0.0, -cx], [0.0, 1.0, -cy], [0.0, 0.0, 1.0]])
    full = to_center @ rotation @ shift @ shear_m @ zoom @ flip @ from_center
    flat = o.reshape(full, [-1, 9])
    return flat[:, :8] / flat[:, 8:9]


def box_masks(gen: Any, n: Any, height: int, width: int, box_h: Any, box_w: Any) -> Any:
    """(N, H, W, 1) float masks, 1 inside a box of (box_h, box_w) pixels per image."""
    o = keras.ops
    top = o.floor(keras.random.uniform([n], seed=gen) * (height - box_h + 1))
    left = o.floor(keras.random.uniform([n], seed=gen) * (width - box_w + 1))
    rows = o.arange(height, dtype="float32")[None, :, None]
    cols = o.arange(width, dtype="float32")[None, None, :]
    inside = o.logical_and(
        o.logical_and(rows >= top[:, None, None], rows < (top + box_h)[:, None, None]),
        o.logical_and(cols >= left[:, None, None], cols < (left + box_w)[:, None, None]),
    )
    return o.cast(inside, "float32")[..., None]


def random_crop(images: Any, gen: Any, padding: int, reflect: bool) -> Any:
    """Pad each side by `padding` (zeros or the mirrored edge), crop back at a random offset."""
    o = keras.ops
    n, height, width = o.shape(images)[0], images.shape[1], images.shape[2]
    mode = "reflect" if reflect and padding < min(height, width) else "constant"
    pad = [[0, 0], [padding, padding], [padding, padding], [0, 0]]
    padded = o.pad(images, pad, mode=mode)
    offsets = keras.random.randint([n, 2], 0, 2 * padding + 1, seed=gen)
    rows = offsets[:, :1] + o.arange(height)[None, :]  # (N, H)
    cols = offsets[:, 1:] + o.arange(width)[None, :]  # (N, W)
    cropped = o.take_along_axis(padded, rows[:, :, None, None], axis=1)
    return o.take_along_axis(cropped, cols[:, None, :, None], axis=2)


def random_erasing(images: Any, gen: Any, probability: float) -> Any:
    o = keras.ops
    n, height, width = o.shape(images)[0], images.shape[1], images.shape[2]
    area = keras.random.uniform([n], *ERASE_AREA, seed=gen) * height * width
    low, high = (math.log(x) for x in ERASE_ASPECT)
    aspect = o.exp(keras.random.uniform([n], low, high, seed=gen))
    box_h = o.clip(o.round(o.sqrt(area * aspect)), 1.0, float(height))
    box_w = o.clip(o.round(o.sqrt(area / aspect)), 1.0, float(width))
    mask = box_masks(gen, n, height, width, box_h, box_w)
    chosen = keras.random.uniform([n], seed=gen) < probability
    mask = mask * o.cast(chosen, "float32")[:, None, None, None]
    noise = keras.random.uniform(o.shape(images), 0.0, 255.0, seed=gen)
    return images * (1.0 - mask) + noise * mask


def augment_batch(
    images: Any, gen: Any, cfg: Any, as_uint8: bool = True, epoch_parity: int = 0
) -> Any:
    """Augment a (N, H, W, C) batch of 0-255 pixels (transforms.augment_batch's keys);
    `epoch_parity` (the batch seed's first number, mod 2) decides `alternate_flips`."""
    o = keras.ops
    out = o.cast(images, "float32")
    n, height, width = o.shape(out)[0], out.shape[1], out.shape[2]
    if is_geometric(cfg):
        flips = alternating_flips(images, epoch_parity) if cfg.alternate_flips else None
        matrices = random_matrices(cfg, gen, n, height, width, flips)
        out = o.image.affine_transform(
            out,
            matrices,
            interpolation="bilinear",
            fill_mode=str(cfg.fill_mode),
            fill_value=float(cfg.fill_value),
        )
    if cfg.random_crop:
        out = random_crop(out, gen, int(cfg.random_crop), cfg.fill_mode == "reflect")
    if cfg.randaugment:
        magnitude = float(cfg.randaugment_magnitude)
        out = randaugment.randaugment(out, GeneratorSource(gen), int(cfg.randaugment), magnitude)
    if cfg.augmix:
        out = randaugment.augmix(out, GeneratorSource(gen), float(cfg.augmix_severity))
    if cfg.brightness:
        out = out + _uniform(gen, n, cfg.brightness * 255.0)[:, None, None, None]
    if cfg.contrast:
        factor = 1.0 + _uniform(gen, n, cfg.contrast)
        mean = o.mean(out, axis=[1, 2, 3], keepdims=True)
        out = (out - mean) * factor[:, None, None, None] + mean
    if cfg.random_erasing:
        out = random_erasing(out, gen, float(cfg.random_erasing))
    out = o.clip(out, 0.0, 255.0)
    return o.cast(o.round(out), "uint8") if as_uint8 else out


def _beta(gen: Any, alpha: float) -> Any:
    a = keras.random.gamma([], alpha, seed=gen)
    b = keras.random.gamma([], alpha, seed=gen)
    return a / (a + b)


def mix(images: Any, labels: Any, gen: Any, cfg: Any) -> tuple[Any, Any]:
    """MixUp / CutMix of a batch with itself reversed (mixing.py), eagerly: the pipeline's."""
    o = keras.ops
    images, labels = o.cast(images, "float32"), o.cast(labels, "float32")
    use_mixup = bool(cfg.mixup)
    if cfg.mixup and cfg.cutmix:
        use_mixup = bool(keras.random.uniform([], seed=gen) < 0.5)
    reversed_images, reversed_labels = o.flip(images, 0), o.flip(labels, 0)
    if use_mixup:
        lam = _beta(gen, float(cfg.mixup))
        return (
            lam * images + (1.0 - lam) * reversed_images,
            lam * labels + (1.0 - lam) * reversed_labels,
        )
    n, height, width = o.shape(images)[0], images.shape[1], images.shape[2]
    cut = o.sqrt(1.0 - _beta(gen, float(cfg.cutmix)))
    box_h = o.full([n], o.round(cut * height))
    box_w = o.full([n], o.round(cut * width))
    mask = box_masks(gen, n, height, width, box_h, box_w)
    mixed = images * (1.0 - mask) + reversed_images * mask
    share = o.reshape(o.mean(mask, axis=[1, 2, 3]), [-1] + [1] * (len(labels.shape) - 1))
    return mixed, (1.0 - share) * labels + share * reversed_labels
