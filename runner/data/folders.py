"""Any folder of class sub-folders (`data=image_folder data.path=...`), and the tutorial's
`animals` layout (cats/, dogs/, panda/) as a preset of it.

Class names are the sub-folder names, sorted. Files are decoded in one parallel `tf.data` pass
(see images.py); files that are not images or do not decode are skipped and reported. The test
split is a seeded, stratified `data.test_split`; validation is `trainer.validation_split` of the
rest.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from runner.config.registry import DATASETS
from runner.config.schema import ImageDataConfig
from runner.core.errors import DataError
from runner.data.base import (
    DataInfo,
    LoadContext,
    Splits,
    check_classes,
    hold_out_validation,
    image_shape,
    read_split,
    stratified_split,
    task_for,
)
from runner.data.images import Skipped, display, is_image_name


@dataclass
class FolderDataConfig(ImageDataConfig):
    """One sub-folder per class. Test is a seeded, stratified fraction; validation comes from
    the rest (trainer.validation_split)."""

    test_split: float = 0.25


def require_folder(path: str | None, what: str) -> Path:
    if not path:
        raise DataError(f"data={what} needs data.path: the folder that holds the images.")
    folder = Path(path).expanduser()
    if not folder.exists():
        raise DataError(f"data.path={folder} does not exist.")
    return folder


def scan_class_folders(root: Path) -> tuple[list[Path], np.ndarray, tuple[str, ...], list[Skipped]]:
    """Image files under each class folder (recursively), their labels, and the non-images."""
    if not root.is_dir():
        raise DataError(f"data.path={root} is not a folder of class sub-folders.")
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    class_names = tuple(display(d.name) for d in class_dirs)  # labels: logged, written as UTF-8
    check_classes(class_names, f"data.path={root}")
    paths: list[Path] = []
    labels: list[int] = []
    skipped: list[Skipped] = []
    for label, folder in enumerate(class_dirs):
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            if is_image_name(path):
                paths.append(path)
                labels.append(label)
            else:
                skipped.append(Skipped(display(path), "not an image file (extension)"))
    return paths, np.asarray(labels, dtype=np.int64), class_names, skipped


def require_every_class(labels: np.ndarray, class_names: tuple[str, ...], root: Path) -> None:
    counts = np.bincount(labels, minlength=len(class_names))
    empty = [name for name, count in zip(class_names, counts, strict=True) if count == 0]
    if empty:
        raise DataError(
            f"Class folder(s) {empty} under {root} hold no usable image: add images or remove "
            "the folder."
        )


@DATASETS.register("image_folder", FolderDataConfig, aliases=("animals",))
def load(cfg: Any, ctx: LoadContext) -> Splits:
    root = require_folder(cfg.path, cfg.name)
    paths, labels, class_names, skipped = scan_class_folders(root)
    every, undecodable = read_split(paths, labels, ctx, in_memory=ctx.fits_in_memory(len(paths)))
    require_every_class(every.y, class_names, root)
    rest, test = stratified_split(every, cfg.test_split, ctx.seed, "data.test_split")
    train, val = hold_out_validation(rest, ctx.validation_split, ctx.seed)
    info = DataInfo(cfg.name, image_shape(every), class_names, task_for(class_names))
    return Splits(train, val, test, info, skipped=skipped + undecodable)
