"""What every data source hands to the rest of the runner: splits plus `DataInfo`.

Nothing downstream re-reads the data config: the model is built from `info` (input shape, class
names, task kind) and the training loop only sees the splits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from sklearn.model_selection import train_test_split

from runner.data.images import Skipped
from runner.errors import DataError

Task = Literal["multiclass", "binary", "multilabel"]


@dataclass(frozen=True)
class DataInfo:
    name: str
    input_shape: tuple[int, int, int]
    class_names: tuple[str, ...]
    task: Task = "multiclass"
    # Normalization layers fitted on the training split (runner/normalize.py), with the fixed
    # weights to load once built; models apply them right after rescaling.
    preprocessing: tuple = field(default=(), compare=False, repr=False)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


@dataclass
class ArraySplit:
    """Images as uint8 NHWC and integer labels, held in memory."""

    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.x)


@dataclass(frozen=True)
class LoadContext:
    """What a loader needs besides its own config section."""

    data_dir: Path
    seed: int
    validation_split: float
    image_size: tuple[int, int]  # for sources decoded from image files
    channels: int


@dataclass
class Splits:
    train: ArraySplit
    val: ArraySplit
    test: ArraySplit
    info: DataInfo
    skipped: list[Skipped] = field(default_factory=list)  # files left out, with the reason

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


@dataclass
class RawArrays:
    """What an in-memory source reads: the official train/test split and the class names."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]


def task_for(class_names: tuple[str, ...], multilabel: bool = False) -> Task:
    """Two classes are one sigmoid output; more are softmax (or sigmoids when multi-label)."""
    if multilabel:
        return "multilabel"
    return "binary" if len(class_names) == 2 else "multiclass"


def check_classes(class_names: tuple[str, ...], where: str) -> None:
    if len(class_names) < 2:
        raise DataError(
            f"{where} has {len(class_names)} class(es) {list(class_names)}: a classifier needs "
            "at least two (one sub-folder per class)."
        )


def stratified_split(
    x: np.ndarray, y: np.ndarray, fraction: float, seed: int, what: str
) -> tuple[ArraySplit, ArraySplit]:
    """Split off a seeded, stratified `fraction` of (x, y); returns (rest, fraction)."""
    if not 0.0 < fraction < 1.0:
        raise DataError(f"{what} should be between 0 and 1 (exclusive). Received: {fraction}")
    counts = np.bincount(y)
    # Stratifying needs two examples of each class; a tiny dataset falls back to a plain shuffle.
    stratify = y if counts[counts > 0].min() >= 2 else None
    try:
        x_rest, x_part, y_rest, y_part = train_test_split(
            x, y, test_size=fraction, random_state=seed, stratify=stratify
        )
    except ValueError as error:
        raise DataError(
            f"Cannot take {what}={fraction} of {len(x)} examples with {len(counts)} classes: "
            f"{error}. Use a larger fraction or more data."
        ) from None
    return ArraySplit(x_rest, y_rest), ArraySplit(x_part, y_part)


def as_nhwc(images: np.ndarray) -> np.ndarray:
    """Give grayscale (N, H, W) images their channel axis."""
    return images[..., np.newaxis] if images.ndim == 3 else images


def to_splits(raw: RawArrays, *, name: str, validation_split: float, seed: int) -> Splits:
    """Official test split stays the test split; validation is a stratified part of train."""
    x_train, x_test = as_nhwc(raw.x_train), as_nhwc(raw.x_test)
    train, val = stratified_split(
        x_train, raw.y_train.astype(np.int64), validation_split, seed, "trainer.validation_split"
    )
    test = ArraySplit(x_test, raw.y_test.astype(np.int64))
    info = DataInfo(
        name=name,
        input_shape=tuple(x_train.shape[1:]),
        class_names=raw.class_names,
        task=task_for(raw.class_names),
    )
    return Splits(train=train, val=val, test=test, info=info)
