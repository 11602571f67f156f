"""Input normalization fitted on the training split and built into the model.

ImageDataGenerator's featurewise centering / std normalization, samplewise normalization and
ZCA whitening, as Keras' own layers placed right after the model's rescaling: fitted once on
the training images (never on validation or test), saved with the model, and applied the same
way to every split and to every prediction later. Built-in layers only, so the saved model
still loads in Keras' safe mode.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from keras import layers

from runner.core.errors import RunnerError
from runner.data.base import Split, image_shape

# A ZCA matrix has (H*W*C)^2 entries: 4096 dimensions (e.g. 32x32x3 has 3072) is 64 MB.
MAX_ZCA_DIMENSIONS = 4096
# Images per batch while the statistics are gathered (streamed: memory stays at one batch).
STATS_BATCH = 256


def is_active(cfg: Any) -> bool:
    return bool(
        cfg.featurewise_center
        or cfg.featurewise_std_normalization
        or cfg.samplewise_normalization
        or cfg.zca_whitening
    )


def fit(cfg: Any, train: Split) -> list[tuple[layers.Layer, list[np.ndarray] | None]]:
    """Layers (with the weights to set once built) to apply to [0, 1]-scaled images, in order,
    fitted on every image of `train`, streamed in batches (a dataset larger than memory
    streams from disk): one pass for the per-channel statistics, one more for ZCA."""
    if cfg.zca_whitening:
        _check_zca_size(image_shape(train))  # before any pass over the data
    fitted: list[tuple[layers.Layer, list[np.ndarray] | None]] = []
    mean = variance = None
    if cfg.featurewise_center or cfg.featurewise_std_normalization:
        mean, variance = _channel_moments(train)
        if not cfg.featurewise_center:
            mean = np.zeros_like(mean)
        if not cfg.featurewise_std_normalization:
            variance = np.ones_like(variance)
        norm = layers.Normalization(
            axis=-1, mean=mean.tolist(), variance=variance.tolist(), name="featurewise"
        )
        fitted.append((norm, None))
    if cfg.samplewise_normalization:
        # Each image minus its own mean, over its own std (all pixels and channels).
        sample = layers.LayerNormalization(
            axis=[1, 2, 3], center=False, scale=False, epsilon=1e-6, name="samplewise"
        )
        fitted.append((sample, None))
    if cfg.zca_whitening:

        def before_zca(x: np.ndarray) -> np.ndarray:  # what the layers above do, in NumPy
            if mean is not None:
                x = (x - mean) / np.sqrt(np.maximum(variance, 1e-12))
            if cfg.samplewise_normalization:
                flat = x.reshape(len(x), -1)
                flat = (flat - flat.mean(1, keepdims=True)) / np.sqrt(
                    flat.var(1, keepdims=True) + 1e-6
                )
                x = flat.reshape(x.shape)
            return x

        fitted += _zca(train, before_zca, cfg.zca_epsilon)
    return fitted


def _scaled_batches(train: Split) -> Iterator[np.ndarray]:
    """The training images in batches, as float64 in [0, 1]."""
    from runner.data.streams import numpy_batches

    for images, _ in numpy_batches(train, batch_size=STATS_BATCH):
        yield images.astype(np.float64) / 255.0


def _channel_moments(train: Split) -> tuple[np.ndarray, np.ndarray]:
    total = squares = None
    count = 0
    for x in _scaled_batches(train):
        pixels = x.reshape(-1, x.shape[-1])
        total = pixels.sum(0) if total is None else total + pixels.sum(0)
        squares = (pixels**2).sum(0) if squares is None else squares + (pixels**2).sum(0)
        count += len(pixels)
    mean = total / count
    return mean, np.maximum(squares / count - mean**2, 0.0)


def _check_zca_size(shape: tuple[int, ...]) -> None:
    dims = int(np.prod(shape))
    if dims > MAX_ZCA_DIMENSIONS:
        raise RunnerError(
            f"augmentation.zca_whitening needs a {dims}x{dims} matrix for {shape} images; it is "
            f"meant for small images (at most {MAX_ZCA_DIMENSIONS} values, e.g. 32x32x3). "
            "Lower data.image_size or turn zca_whitening off."
        )


def _zca(
    train: Split, transform: Callable[[np.ndarray], np.ndarray], epsilon: float
) -> list[tuple[layers.Layer, list[np.ndarray] | None]]:
    shape = image_shape(train)
    dims = int(np.prod(shape))
    total, products, count = np.zeros(dims), np.zeros((dims, dims)), 0
    for x in _scaled_batches(train):
        flat = transform(x).reshape(len(x), dims)
        total += flat.sum(0)
        products += flat.T @ flat
        count += len(flat)
    mean = total / count
    covariance = products / count - np.outer(mean, mean)
    u, s, _ = np.linalg.svd(covariance)
    whitening = (u * (1.0 / np.sqrt(s + epsilon))) @ u.T
    kernel = whitening.astype(np.float32)
    bias = (-mean @ whitening).astype(np.float32)
    return [
        (layers.Flatten(name="zca_flatten"), None),
        (layers.Dense(dims, trainable=False, name="zca"), [kernel, bias]),
        (layers.Reshape(shape, name="zca_reshape"), None),
    ]
