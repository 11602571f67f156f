"""Test-time augmentation: predictions averaged over each image and its left-right mirror, the
cheapest TTA of the CIFAR records (airbench's "flip" TTA). Off by default; a mirrored digit is
no digit, so it only helps where classes are mirror-symmetric."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from runner.core.lazy import tf


def mirror(images: Any, labels: Any) -> tuple[Any, Any]:
    """A batch with each image mirrored left-right (NHWC): tf.Tensors or NumPy arrays."""
    if isinstance(images, np.ndarray):
        return images[:, :, ::-1], labels
    return tf.reverse(images, [2]), labels


def flip_mean(classify: Callable[[np.ndarray], np.ndarray], images: np.ndarray) -> np.ndarray:
    """Mean of the probabilities for `images` (N, H, W, C) and for their mirrors."""
    return (np.asarray(classify(images)) + np.asarray(classify(images[:, :, ::-1]))) / 2.0
