"""scikit-learn's bundled handwritten digits (1,797 real 8x8 scans), upscaled like MNIST.

Ships with scikit-learn, so a first run needs no download. Pixels 0-16 become 0-255 and the
images are resized to `image_size` squares; the test split is a seeded, stratified fraction.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from runner.config.registry import DATASETS
from runner.config.schema import DataConfig
from runner.data.base import ArraySplit, RawArrays, official_test_split, stratified_split

CLASS_NAMES = tuple(str(digit) for digit in range(10))


@dataclass
class DigitsDataConfig(DataConfig):
    """scikit-learn's bundled 8x8 digits, upscaled: works offline, trains in seconds."""

    image_size: int = 28
    test_fraction: float = 0.2


def upscale(images: np.ndarray, size: int) -> np.ndarray:
    """(N, 8, 8) values 0-16 -> (N, size, size) uint8 0-255, bilinear."""
    pixels = np.clip(images * (255.0 / 16.0), 0, 255).astype(np.uint8)
    return np.stack(
        [np.asarray(Image.fromarray(img).resize((size, size), Image.BILINEAR)) for img in pixels]
    )


@DATASETS.register("digits", DigitsDataConfig)
@official_test_split  # (a seeded, stratified one: scikit-learn ships none)
def load(cfg: DigitsDataConfig, *, data_dir: Path, seed: int) -> RawArrays:
    del data_dir  # bundled with scikit-learn
    from sklearn.datasets import load_digits  # here: scikit-learn takes a second to import

    digits = load_digits()
    images = upscale(digits.images, cfg.image_size)
    train, test = stratified_split(
        ArraySplit(images, digits.target.astype(np.int64)),
        cfg.test_fraction,
        seed,
        "data.test_fraction",
    )
    return RawArrays(train.x, train.y, test.x, test.y, class_names=CLASS_NAMES)
