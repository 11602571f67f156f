"""Cats vs dogs as the tutorial splits it: first N of each class train, next validation, then test.

Accepts Kaggle's `train/` folder (`cat.0.jpg` ... `dog.12499.jpg`: the class is in the file
name), Kaggle's zip of it, or Microsoft's `PetImages/Cat/N.jpg`, `PetImages/Dog/N.jpg`. Files
are ordered by their number N. Bad files (the real data has corrupt and non-JPEG ones) are
skipped and reported, and the next files of that class take their place.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from runner.config.registry import DATASETS
from runner.config.schema import ExtractedDataConfig, ImageDataConfig
from runner.core.errors import DataError
from runner.data.archives import Limits, extract_once
from runner.data.base import (
    DataInfo,
    LoadContext,
    Split,
    Splits,
    concat,
    image_shape,
    read_split,
    task_for,
)
from runner.data.folders import require_folder
from runner.data.images import Skipped, display, is_image_name

CLASS_NAMES = ("cat", "dog")
KAGGLE_NAME = re.compile(r"^(cat|dog)\.(\d+)\.[A-Za-z]+$", re.IGNORECASE)


@dataclass
class CatsVsDogsDataConfig(ImageDataConfig, ExtractedDataConfig):
    """Kaggle's train/ (cat.N.jpg, dog.N.jpg), its zip, or Microsoft's PetImages/Cat|Dog/N.jpg.
    Ordered by N: the first `train_per_class` of each class train, the next ones validation,
    then test."""

    train_per_class: int = 1000
    val_per_class: int = 500
    test_per_class: int = 500


def numbered_files(root: Path) -> tuple[dict[str, list[Path]], list[Skipped]]:
    """Per class, its files ordered by number; plus the files that match no layout."""
    by_class: dict[str, list[tuple[int, Path]]] = {name: [] for name in CLASS_NAMES}
    skipped: list[Skipped] = []
    pet_images = next((p for p in (root / "PetImages", root) if (p / "Cat").is_dir()), None)
    if pet_images is not None:  # Microsoft: PetImages/Cat/N.jpg
        for name, folder in (("cat", pet_images / "Cat"), ("dog", pet_images / "Dog")):
            for path in sorted(p for p in folder.iterdir() if p.is_file()):
                if is_image_name(path) and path.stem.isdigit():
                    by_class[name].append((int(path.stem), path))
                else:
                    skipped.append(Skipped(display(path), "not a numbered image file"))
    else:  # Kaggle: train/cat.N.jpg
        folder = root / "train" if (root / "train").is_dir() else root
        for path in sorted(p for p in folder.iterdir() if p.is_file()):
            match = KAGGLE_NAME.match(path.name)
            if match and is_image_name(path):
                by_class[match.group(1).lower()].append((int(match.group(2)), path))
            else:
                skipped.append(Skipped(display(path), "name is not cat.N.<ext> or dog.N.<ext>"))
    for name, files in by_class.items():
        if not files:
            raise DataError(
                f"No {name} images under {root}: expected Kaggle's train/{name}.N.jpg or "
                f"Microsoft's PetImages/{name.capitalize()}/N.jpg."
            )
    return {name: [p for _, p in sorted(files)] for name, files in by_class.items()}, skipped


def first_good(
    files: list[Path], label: int, needed: int, ctx: LoadContext, in_memory: bool
) -> tuple[Split, list[Skipped]]:
    """The first `needed` files of a class that decode (bad ones are replaced by the next)."""
    parts, skipped, start = [], [], 0
    while sum(len(part) for part in parts) < needed and start < len(files):
        chunk = files[start : start + needed - sum(len(part) for part in parts)]
        labels = np.full(len(chunk), label, dtype=np.int64)
        part, bad = read_split(chunk, labels, ctx, in_memory=in_memory)
        parts.append(part)
        skipped += bad
        start += len(chunk)
    return concat(parts), skipped


@DATASETS.register("cats_vs_dogs", CatsVsDogsDataConfig)
def load(cfg: Any, ctx: LoadContext) -> Splits:
    root = require_folder(cfg.path, cfg.name)
    if root.is_file():
        root = extract_once([root], ctx.data_dir / "cats_vs_dogs" / root.stem, Limits.of(cfg))
    by_class, skipped = numbered_files(root)
    sizes = (cfg.train_per_class, cfg.val_per_class, cfg.test_per_class)
    in_memory = ctx.fits_in_memory(len(CLASS_NAMES) * sum(sizes))
    parts: dict[str, list[Split]] = {"train": [], "val": [], "test": []}
    for label, name in enumerate(CLASS_NAMES):
        every, bad = first_good(by_class[name], label, sum(sizes), ctx, in_memory)
        skipped += bad
        if len(every) < sum(sizes):
            raise DataError(
                f"Only {len(every)} usable {name} images under {root}; the split needs "
                f"{sum(sizes)} (data.train_per_class + val_per_class + test_per_class)."
            )
        bounds = np.cumsum((0, *sizes))
        for split, start, end in zip(parts, bounds[:-1], bounds[1:], strict=True):
            parts[split].append(every.take(np.arange(start, end)))
    splits = {split: concat(pieces) for split, pieces in parts.items()}
    info = DataInfo(cfg.name, image_shape(splits["train"]), CLASS_NAMES, task_for(CLASS_NAMES))
    return Splits(splits["train"], splits["val"], splits["test"], info, skipped=skipped)
