"""Input normalization fitted on the training split and built into the model.

ImageDataGenerator's featurewise centering / std normalization, samplewise normalization and
ZCA whitening, as Keras' own layers placed right after the model's rescaling: fitted once on
the training images (never on validation or test), saved with the model, and applied the same
way to every split and to every prediction later. Built-in layers only, so the saved model
still loads in Keras' safe mode.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import layers

from runner.errors import RunnerError

# Statistics come from up to this many training images (all of them for smaller splits).
FIT_SAMPLE = 50_000
# A ZCA matrix has (H*W*C)^2 entries: 4096 dimensions (e.g. 32x32x3 has 3072) is 64 MB.
MAX_ZCA_DIMENSIONS = 4096


def is_active(cfg: Any) -> bool:
    return bool(
        cfg.featurewise_center
        or cfg.featurewise_std_normalization
        or cfg.samplewise_normalization
        or cfg.zca_whitening
    )


def fit(cfg: Any, train_images: np.ndarray) -> list[tuple[layers.Layer, list[np.ndarray] | None]]:
    """Layers (with the weights to set once built) to apply to [0, 1]-scaled images, in order."""
    x = train_images.astype(np.float32) / 255.0
    fitted: list[tuple[layers.Layer, list[np.ndarray] | None]] = []
    if cfg.featurewise_center or cfg.featurewise_std_normalization:
        channels = x.shape[-1]
        mean = x.mean(axis=(0, 1, 2)) if cfg.featurewise_center else np.zeros(channels)
        variance = x.var(axis=(0, 1, 2)) if cfg.featurewise_std_normalization else np.ones(channels)
        norm = layers.Normalization(
            axis=-1, mean=mean.tolist(), variance=variance.tolist(), name="featurewise"
        )
        fitted.append((norm, None))
        x = (x - mean) / np.sqrt(np.maximum(variance, 1e-12))
    if cfg.samplewise_normalization:
        # Each image minus its own mean, over its own std (all pixels and channels).
        sample = layers.LayerNormalization(
            axis=[1, 2, 3], center=False, scale=False, epsilon=1e-6, name="samplewise"
        )
        fitted.append((sample, None))
        flat = x.reshape(len(x), -1)
        x = (
            (flat - flat.mean(1, keepdims=True)) / np.sqrt(flat.var(1, keepdims=True) + 1e-6)
        ).reshape(x.shape)
    if cfg.zca_whitening:
        fitted += _zca(x, cfg.zca_epsilon)
    return fitted


def _zca(x: np.ndarray, epsilon: float) -> list[tuple[layers.Layer, list[np.ndarray] | None]]:
    shape = x.shape[1:]
    dims = int(np.prod(shape))
    if dims > MAX_ZCA_DIMENSIONS:
        raise RunnerError(
            f"augmentation.zca_whitening needs a {dims}x{dims} matrix for {shape} images; it is "
            f"meant for small images (at most {MAX_ZCA_DIMENSIONS} values, e.g. 32x32x3). "
            "Lower data.image_size or turn zca_whitening off."
        )
    flat = x.reshape(len(x), dims).astype(np.float64)
    mean = flat.mean(axis=0)
    covariance = np.cov(flat - mean, rowvar=False, bias=True)
    u, s, _ = np.linalg.svd(covariance)
    whitening = (u * (1.0 / np.sqrt(s + epsilon))) @ u.T
    kernel = whitening.astype(np.float32)
    bias = (-mean @ whitening).astype(np.float32)
    return [
        (layers.Flatten(name="zca_flatten"), None),
        (layers.Dense(dims, trainable=False, name="zca"), [kernel, bias]),
        (layers.Reshape(shape, name="zca_reshape"), None),
    ]


def apply(x: keras.KerasTensor, fitted: list) -> keras.KerasTensor:
    for layer, _ in fitted:
        x = layer(x)
    return x
