"""What every data source hands to the rest of the runner: splits plus `DataInfo`.

Nothing downstream re-reads the data config: the model is built from `info` (input shape, class
names, task kind) and the training loop only sees the splits.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from runner.core.errors import DataError
from runner.data.images import DEFAULT_MAX_PIXELS, Skipped, decode_files

Task = Literal["multiclass", "binary", "multilabel"]


@dataclass(frozen=True)
class DataInfo:
    name: str
    input_shape: tuple[int, int, int]
    class_names: tuple[str, ...]
    task: Task = "multiclass"
    # Normalization layers fitted on the training split (runner/augmentation/normalize.py),
    # with the fixed weights to load once built; models apply them right after rescaling.
    preprocessing: tuple = field(default=(), compare=False, repr=False)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def spread_indices(y: np.ndarray, count: int) -> np.ndarray:
    """Indices of `count` examples for a figure, taken from each class in turn (its first
    example, then each class's second, ...), so a split ordered by class (cats vs dogs) still
    shows every class. Multi-label targets: evenly spaced over the split."""
    count = min(count, len(y))
    if y.ndim != 1:
        return np.unique(np.linspace(0, len(y) - 1, count).round().astype(np.int64))
    rank = np.zeros(len(y), dtype=np.int64)  # position of each example within its class
    for label in np.unique(y):
        members = np.flatnonzero(y == label)
        rank[members] = np.arange(len(members))
    return np.lexsort((y, rank))[:count]


@dataclass
class ArraySplit:
    """Images as uint8 NHWC and their labels, held in memory."""

    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.x)

    def take(self, indices: np.ndarray) -> ArraySplit:
        return ArraySplit(self.x[indices], self.y[indices])

    def images(self, indices: np.ndarray) -> np.ndarray:
        return self.x[indices]

    def sample(self, count: int) -> np.ndarray:
        """`count` images across the classes (see `spread_indices`), as uint8 NHWC."""
        return self.images(spread_indices(self.y, count))


@dataclass
class FileSplit:
    """Image files left on disk and decoded each time they are read: data larger than memory.

    Every file was decoded once when the data was loaded, so none fails during training.
    """

    paths: np.ndarray  # of str
    y: np.ndarray
    image_size: tuple[int, int]
    channels: int

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (*self.image_size, self.channels)

    def take(self, indices: np.ndarray) -> FileSplit:
        return FileSplit(self.paths[indices], self.y[indices], self.image_size, self.channels)

    def images(self, indices: np.ndarray) -> np.ndarray:
        images, _, _ = decode_files(
            [Path(p) for p in self.paths[indices]], size=self.image_size, channels=self.channels
        )
        return images

    def sample(self, count: int) -> np.ndarray:
        return self.images(spread_indices(self.y, count))


Split = ArraySplit | FileSplit


def digest(split: Split) -> str:
    """A short fingerprint of a split's examples and labels: equal splits, equal digests."""
    import hashlib

    hasher = hashlib.sha256()
    if isinstance(split, ArraySplit):
        hasher.update(np.ascontiguousarray(split.x).data)
    else:
        hasher.update("\n".join(map(str, split.paths)).encode("utf-8", "surrogateescape"))
    hasher.update(np.ascontiguousarray(split.y).data)
    return hasher.hexdigest()[:16]


def image_shape(split: Split) -> tuple[int, ...]:
    return tuple(split.x.shape[1:]) if isinstance(split, ArraySplit) else split.shape


def concat(parts: list[Split]) -> Split:
    if all(isinstance(part, ArraySplit) for part in parts):
        return ArraySplit(
            np.concatenate([p.x for p in parts]), np.concatenate([p.y for p in parts])
        )
    first = parts[0]
    return FileSplit(
        np.concatenate([p.paths for p in parts]),
        np.concatenate([p.y for p in parts]),
        first.image_size,
        first.channels,
    )


@dataclass(frozen=True)
class LoadContext:
    """What a loader needs besides its own config section."""

    data_dir: Path
    seed: int
    validation_split: float
    image_size: tuple[int, int]  # for sources decoded from image files
    channels: int
    # Decoded images larger than this stay on disk and stream (FileSplit).
    max_memory_mb: float = 4096
    max_pixels: int = DEFAULT_MAX_PIXELS  # files declaring more are skipped unread

    def fits_in_memory(self, count: int) -> bool:
        size = count * self.image_size[0] * self.image_size[1] * self.channels
        return size <= self.max_memory_mb * 2**20


@dataclass
class Splits:
    train: Split
    val: Split
    test: Split
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


def read_split(
    paths: list[Path], labels: np.ndarray, ctx: LoadContext, *, in_memory: bool
) -> tuple[Split, list[Skipped]]:
    """Decode image files into memory, or check them and leave them to stream from disk."""
    images, kept, skipped = decode_files(
        paths,
        size=ctx.image_size,
        channels=ctx.channels,
        keep_pixels=in_memory,
        max_pixels=ctx.max_pixels,
    )
    if in_memory:
        return ArraySplit(images, labels[kept]), skipped
    kept_paths = np.asarray([str(paths[i]) for i in kept], dtype=object)
    return FileSplit(kept_paths, labels[kept], ctx.image_size, ctx.channels), skipped


def stratified_split(split: Split, fraction: float, seed: int, what: str) -> tuple[Split, Split]:
    """Split off a seeded, stratified `fraction`; returns (rest, fraction)."""
    y = split.y
    if not 0.0 < fraction < 1.0:
        raise DataError(f"{what} should be between 0 and 1 (exclusive). Received: {fraction}")
    counts = np.bincount(y)
    # Stratifying needs two examples of each class; a tiny dataset falls back to a plain shuffle.
    stratify = y if counts[counts > 0].min() >= 2 else None
    # Imported here: scikit-learn takes a second to import, and configs load without it.
    from sklearn.model_selection import train_test_split

    try:
        rest, part = train_test_split(
            np.arange(len(y)), test_size=fraction, random_state=seed, stratify=stratify
        )
    except ValueError as error:
        raise DataError(
            f"Cannot take {what}={fraction} of {len(y)} examples with {len(counts)} classes: "
            f"{error}. Use a larger fraction or more data."
        ) from None
    return split.take(rest), split.take(part)


def as_nhwc(images: np.ndarray) -> np.ndarray:
    """Give grayscale (N, H, W) images their channel axis."""
    return images[..., np.newaxis] if images.ndim == 3 else images


def hold_out_validation(split: Split, fraction: float, seed: int) -> tuple[Split, Split]:
    """(train, validation): a stratified `trainer.validation_split` of `split`; with 0, all
    of it trains and the validation split is empty."""
    if fraction == 0:
        return split, split.take(np.arange(0))
    return stratified_split(split, fraction, seed, "trainer.validation_split")


def to_splits(raw: RawArrays, *, name: str, validation_split: float, seed: int) -> Splits:
    """Official test split stays the test split; validation is a stratified part of train."""
    x_train, x_test = as_nhwc(raw.x_train), as_nhwc(raw.x_test)
    train, val = hold_out_validation(
        ArraySplit(x_train, raw.y_train.astype(np.int64)), validation_split, seed
    )
    test = ArraySplit(x_test, raw.y_test.astype(np.int64))
    info = DataInfo(
        name=name,
        input_shape=tuple(x_train.shape[1:]),
        class_names=raw.class_names,
        task=task_for(raw.class_names),
    )
    return Splits(train=train, val=val, test=test, info=info)


def official_test_split(
    read: Callable[..., RawArrays],
) -> Callable[[Any, LoadContext], Splits]:
    """A loader from `read(cfg, data_dir=, seed=) -> RawArrays`: datasets published with their
    own test split (MNIST, CIFAR-10, ...) keep it; validation is split off the training part."""

    @functools.wraps(read)
    def load(cfg: Any, ctx: LoadContext) -> Splits:
        raw = read(cfg, data_dir=ctx.data_dir, seed=ctx.seed)
        return to_splits(raw, name=cfg.name, validation_split=ctx.validation_split, seed=ctx.seed)

    return load
