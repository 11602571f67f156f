"""Training-time augmentation: the tutorials' `ImageDataGenerator` vocabulary, made fast.

Rotation, shifts, shear, zoom and flips are composed into one random affine matrix per image and
applied to the whole batch by one XLA-compiled bilinear resampling (runner/augmentation/
resample.py, the output of TensorFlow's `ImageProjectiveTransformV3`) inside the `tf.data`
pipeline (parallel, prefetched), instead of a chain of layers each resampling the image.
Brightness and contrast follow as cheap per-image arithmetic, and today's recipes after them:
the padded random crop and random erasing (regions.py), RandAugment and AugMix
(randaugment.py). MixUp and CutMix (mixing.py) blend labels too, so they run after this, in the
input pipeline. Only training batches pass through here; validation and test batches never do.

The matrices follow `ImageDataGenerator.apply_transform`: they map each output pixel back to the
input pixel it samples, composed as rotation @ shift @ shear @ zoom around the image center.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from types import SimpleNamespace
from typing import Any

import keras
import numpy as np

from runner.augmentation import portable, randaugment, regions
from runner.augmentation.portable import is_geometric
from runner.config.schema import AugmentationConfig, Placement
from runner.core.lazy import tf

log = logging.getLogger(__name__)


def is_active(cfg: Any) -> bool:
    """Whether training images are transformed (MixUp/CutMix, which also blend labels, are
    mixing.is_active)."""
    return bool(
        is_geometric(cfg)
        or cfg.brightness
        or cfg.contrast
        or cfg.random_crop
        or cfg.random_erasing
        or randaugment.is_active(cfg)
    )


# Datasets whose classes change or vanish when mirrored (a mirrored 2 or 7 is no digit).
MIRROR_SENSITIVE = ("digits", "mnist", "mnist_idx")


def warn_if_mirroring(cfg: Any, data_name: str) -> None:
    flips = [k for k in ("horizontal_flip", "vertical_flip") if cfg[k]]
    if flips and data_name in MIRROR_SENSITIVE:
        log.warning(
            "augmentation.%s mirrors the images of data=%s, whose classes are not mirror-"
            "symmetric (a mirrored digit is no digit): set augmentation.%s=false",
            flips[0],
            data_name,
            flips[0],
        )


def _uniform(seed: tf.Tensor, n: tf.Tensor, bound: float, index: int) -> tf.Tensor:
    if not bound:
        return tf.zeros([n])
    sub_seed = tf.random.experimental.stateless_fold_in(seed, index)
    return tf.random.stateless_uniform([n], sub_seed, -bound, bound)


def alternating_flips(images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """`alternate_flips`: -1 (mirror) or 1 per image, flipping from one epoch to the next. The
    image's own bit is its pixel sum's parity; seed[0] folds in the epoch (seed * 100,003 +
    epoch), so its parity alternates epoch by epoch."""
    pixel_sum = tf.reduce_sum(tf.cast(images, tf.int64), axis=[1, 2, 3])
    return tf.where(tf.math.floormod(pixel_sum + seed[0], 2) == 1, -1.0, 1.0)


def random_matrices(
    cfg: Any,
    seed: tf.Tensor,
    n: tf.Tensor,
    height: int,
    width: int,
    flip_x: tf.Tensor | None = None,
):
    """(n, 8) projective transforms mapping output to input coordinates, one per image, drawn
    from the batch's stateless seed (`flip_x`: the mirrors decided elsewhere)."""
    return portable.compose_matrices(
        theta=_uniform(seed, n, math.radians(cfg.rotation), 0),
        shear=_uniform(seed, n, math.radians(cfg.shear), 1),
        shift_x=_uniform(seed, n, cfg.width_shift * width, 2),
        shift_y=_uniform(seed, n, cfg.height_shift * height, 3),
        zoom_x=1.0 + _uniform(seed, n, cfg.zoom, 4),
        zoom_y=1.0 + _uniform(seed, n, cfg.zoom, 5),
        flip_x=_flip(seed, n, cfg.horizontal_flip, 6) if flip_x is None else flip_x,
        flip_y=_flip(seed, n, cfg.vertical_flip, 7),
        height=height,
        width=width,
    )


def _flip(seed: tf.Tensor, n: tf.Tensor, enabled: bool, index: int) -> tf.Tensor:
    if not enabled:
        return tf.ones([n])
    sub_seed = tf.random.experimental.stateless_fold_in(seed, index)
    coin = tf.random.stateless_uniform([n], sub_seed) < 0.5
    return tf.where(coin, -1.0, 1.0)


def augment_batch(images: tf.Tensor, seed: tf.Tensor, cfg: Any, as_uint8: bool = True) -> tf.Tensor:
    """Augment a (N, H, W, C) batch of 0-255 pixels; returns uint8 (or float32) of that shape."""
    shape = tf.shape(images)
    n, height, width = shape[0], images.shape[1], images.shape[2]
    if is_geometric(cfg):
        from runner.augmentation import resample  # compiles a TensorFlow function at import

        flips = alternating_flips(images, seed) if cfg.alternate_flips else None
        matrices = random_matrices(cfg, seed, n, height, width, flips)
        out = resample.project(images, matrices, str(cfg.fill_mode), float(cfg.fill_value))
    else:
        out = tf.cast(images, tf.float32)
    if cfg.random_crop:
        out = regions.random_crop(out, seed, int(cfg.random_crop), cfg.fill_mode == "reflect")
    if cfg.randaugment:
        magnitude = float(cfg.randaugment_magnitude)
        source = randaugment.StatelessSource(seed)
        out = randaugment.randaugment(out, source, int(cfg.randaugment), magnitude)
    if cfg.augmix:
        out = randaugment.augmix(out, randaugment.StatelessSource(seed), float(cfg.augmix_severity))
    if cfg.brightness:  # add up to +-brightness of the full range
        delta = _uniform(seed, n, cfg.brightness * 255.0, 8)
        out = out + delta[:, None, None, None]
    if cfg.contrast:  # scale around each image's mean by 1 +- contrast
        factor = 1.0 + _uniform(seed, n, cfg.contrast, 9)
        mean = tf.reduce_mean(out, axis=[1, 2, 3], keepdims=True)
        out = (out - mean) * factor[:, None, None, None] + mean
    if cfg.random_erasing:
        out = regions.random_erasing(out, seed, float(cfg.random_erasing))
    out = tf.clip_by_value(out, 0.0, 255.0)
    return tf.cast(tf.round(out), tf.uint8) if as_uint8 else out


def in_model(cfg: Any) -> bool:
    return is_active(cfg) and Placement(cfg.placement) is Placement.model


RANDOM_KEYS = (
    "rotation",
    "width_shift",
    "height_shift",
    "shear",
    "zoom",
    "horizontal_flip",
    "vertical_flip",
    "fill_mode",
    "fill_value",
    "brightness",
    "contrast",
    "random_crop",
    "randaugment",
    "randaugment_magnitude",
    "augmix",
    "augmix_severity",
    "random_erasing",
)


@keras.saving.register_keras_serializable(package="runner")
class RandomAugmentation(keras.layers.Layer):
    """The same transforms as a layer, active only in training: `placement: model`.

    It runs where the model runs (the GPU when there is one). Only the training model wears
    it: checkpoints hold it, the evaluated and logged model is the one inside, without it.
    """

    def __init__(self, settings: dict, seed: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = dict(settings)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images: Any, training: bool | None = None) -> Any:
        if not training:
            return images
        # Defaults first: a checkpoint saved before a key existed still loads and trains on.
        settings = SimpleNamespace(**{**dataclasses.asdict(AugmentationConfig()), **self.settings})
        if keras.backend.backend() != "tensorflow":  # keras.ops, inside the train step
            return portable.augment_batch(images, self.seed_generator, settings, as_uint8=False)
        seed = tf.cast(self.seed_generator.next(), tf.int64)
        return augment_batch(images, seed, settings, as_uint8=False)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "settings": self.settings, "seed": self.seed}


def wrap_model(model: keras.Model, cfg: Any, seed: int) -> keras.Model:
    """The model to train with `placement: model`: augmentation in front, the model behind."""
    settings = {key: cfg[key] for key in RANDOM_KEYS}
    layer = RandomAugmentation(settings, seed=seed, name="augmentation")
    inputs = keras.Input(shape=model.input_shape[1:], name="image")
    return keras.Model(inputs, model(layer(inputs)), name=f"{model.name}_augmented")


def unwrap_model(model: keras.Model) -> keras.Model:
    """The trained model without its augmentation layer (the last layer of the wrapper)."""
    return model.layers[-1] if model.name.endswith("_augmented") else model


def preview(
    images: Any, cfg: Any, *, seed: int, count: int = 6, variants: int = 5
) -> tuple[Any, Any]:
    """`count` originals and `variants` augmented versions of each, as uint8 arrays."""
    originals = images[:count]
    if keras.backend.backend() != "tensorflow":
        batch = np.repeat(originals, variants, axis=0)
        generator = portable.batch_generator(np.array([seed, 0]))
        augmented = keras.ops.convert_to_numpy(portable.augment_batch(batch, generator, cfg))
        return originals, augmented.reshape(len(originals), variants, *originals.shape[1:])
    batch = tf.repeat(tf.constant(originals), variants, axis=0)
    augmented = augment_batch(batch, tf.constant([seed, 0], tf.int64), cfg).numpy()
    return originals, augmented.reshape(len(originals), variants, *originals.shape[1:])
