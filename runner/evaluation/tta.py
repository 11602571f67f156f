"""Test-time augmentation: predictions averaged over views of each image, as the CIFAR records
score their nets (airbench's TTA levels). Off by default; a mirrored digit is no digit, so it
only helps where classes are mirror-symmetric.

- `flip`: the image and its left-right mirror, half each.
- `flip_translate`: half on those two, a quarter each on the same pair shifted by one pixel
  up-left and down-right (reflect-padded), six predictions per image.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from runner.config.schema import TTA
from runner.core.lazy import tf

# A view of a batch: (images, labels) -> (images, labels), on tf.Tensors or NumPy arrays.
View = Callable[[Any, Any], tuple[Any, Any]]


def mirror(images: Any, labels: Any) -> tuple[Any, Any]:
    """A batch with each image mirrored left-right (NHWC)."""
    if isinstance(images, np.ndarray):
        return images[:, :, ::-1], labels
    return tf.reverse(images, [2]), labels


def shifted(offset: int) -> View:
    """The batch moved one pixel along both axes: `offset` 0 moves the content down-right,
    2 up-left; the uncovered row and column are the image's own, reflected."""

    def shift(images: Any, labels: Any) -> tuple[Any, Any]:
        height, width = images.shape[1], images.shape[2]
        window = (slice(None), slice(offset, offset + height), slice(offset, offset + width))
        if isinstance(images, np.ndarray):
            return np.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")[window], labels
        return tf.pad(images, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="REFLECT")[window], labels

    return shift


def mirrored(view: View) -> View:
    def both(images: Any, labels: Any) -> tuple[Any, Any]:
        return mirror(*view(images, labels))

    return both


def views(tta: TTA | str) -> list[tuple[float, View | None]]:
    """The weighted views a TTA mode averages; None is the image as it is."""
    mode = TTA(tta)
    if mode is TTA.none:
        return [(1.0, None)]
    pair: list[tuple[float, View | None]] = [(0.5, None), (0.5, mirror)]
    if mode is TTA.flip:
        return pair
    down_right, up_left = shifted(0), shifted(2)
    return [(weight / 2, view) for weight, view in pair] + [
        (0.125, down_right),
        (0.125, mirrored(down_right)),
        (0.125, up_left),
        (0.125, mirrored(up_left)),
    ]


def tta_mean(
    classify: Callable[[np.ndarray], np.ndarray], images: np.ndarray, tta: TTA | str
) -> np.ndarray:
    """The weighted mean of the probabilities for `images` (N, H, W, C) over the TTA views."""
    total = 0.0
    for weight, view in views(tta):
        shown = images if view is None else view(images, None)[0]
        total = total + weight * np.asarray(classify(np.ascontiguousarray(shown)))
    return np.asarray(total)
