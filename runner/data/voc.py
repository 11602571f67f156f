"""Pascal VOC as multi-label classification over its 20 classes.

Reads a `VOCdevkit/VOC20XX` tree (`data.path`), or fetches the trainval tar into the cache and
extracts it there. Each image's target is the set of classes of its objects, as a multi-hot
vector; objects flagged `difficult` count or not as `data.difficult` says. Splits come from
`ImageSets/Main` (train -> train and validation, val -> test) or from seeded fractions of all
annotation files (`data.split=random`, the tutorial's 70/20/10).
"""

from __future__ import annotations

import tarfile
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from runner.config import DownloadedDataConfig, ImageDataConfig
from runner.data.base import DataInfo, LoadContext, Splits, image_shape, read_split
from runner.data.download import fetch_all, file_lock
from runner.data.folders import require_folder
from runner.data.images import Skipped
from runner.errors import DataError
from runner.registry import DATASETS

CLASS_NAMES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip


class VocSplit(Enum):
    imagesets = "imagesets"  # ImageSets/Main train.txt / val.txt
    random = "random"  # seeded fractions of all annotation files


class Difficult(Enum):
    include = "include"  # an object flagged difficult still makes its class present
    exclude = "exclude"  # ignore difficult objects (the class is present only via others)


@dataclass
class VocDataConfig(ImageDataConfig, DownloadedDataConfig):
    """Pascal VOC, multi-label over the 20 classes, from VOCdevkit/VOC20XX (`path`) or fetched
    like the other downloaded datasets (mirror, files, verify_checksum)."""

    year: str = "2012"
    split: VocSplit = VocSplit.imagesets
    # For split=random: fractions of the annotation files (the tutorial's 70/20/10).
    train_fraction: float = 0.7
    val_fraction: float = 0.2
    difficult: Difficult = Difficult.include
    threshold: float = 0.5  # a class is predicted present at this probability


def find_year_folder(path: Path) -> Path:
    """Accept VOCdevkit/VOC20XX itself, VOCdevkit, or a folder holding VOCdevkit."""
    for candidate in (path, path / "VOCdevkit"):
        if (candidate / "Annotations").is_dir():
            return candidate
        years = sorted(candidate.glob("VOC20*")) if candidate.is_dir() else []
        if years and (years[-1] / "Annotations").is_dir():
            return years[-1]
    raise DataError(
        f"{path} is not a Pascal VOC tree: expected VOCdevkit/VOC20XX/ with Annotations/, "
        "JPEGImages/ and ImageSets/Main/."
    )


def extract_tar(archive: Path, destination: Path) -> Path:
    """Extract once (a lock makes parallel jobs wait for it); `.extracted` marks it complete."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(destination.parent / f".{destination.name}.lock"):
        return _extract_tar(archive, destination)


def _extract_tar(archive: Path, destination: Path) -> Path:
    done = destination / ".extracted"
    if not done.exists():
        destination.mkdir(parents=True, exist_ok=True)
        try:
            with tarfile.open(archive) as tar:
                tar.extractall(destination, filter="data")  # refuses paths outside, links out
        except (tarfile.TarError, OSError) as error:
            raise DataError(f"Cannot extract {archive} ({error}).") from None
        done.touch()
    return destination


def read_annotation(path: Path, difficult: Difficult) -> np.ndarray:
    try:
        root = ElementTree.parse(path).getroot()
    except ElementTree.ParseError as error:
        raise DataError(f"{path} is not valid annotation XML ({error}).") from None
    target = np.zeros(len(CLASS_NAMES), dtype=np.float32)
    for obj in root.iter("object"):
        name = (obj.findtext("name") or "").strip()
        if name not in CLASS_NAMES:
            raise DataError(
                f"{path} names the class {name!r}, which is not one of the 20 VOC classes "
                f"{list(CLASS_NAMES)}. Fix or remove that annotation."
            )
        is_difficult = (obj.findtext("difficult") or "0").strip() == "1"
        if is_difficult and difficult is Difficult.exclude:
            continue
        target[CLASS_NAMES.index(name)] = 1.0
    return target


def read_ids(path: Path) -> list[str]:
    if not path.exists():
        raise DataError(f"{path} is missing: use data.split=random to split without ImageSets.")
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]


def voc_root(cfg: Any, ctx: LoadContext) -> Path:
    if cfg.path:
        return find_year_folder(require_folder(cfg.path, cfg.name))
    files = fetch_all(cfg, ctx.data_dir)
    extracted = ctx.data_dir / cfg.name / f"VOC{cfg.year}"
    for archive in files.values():
        extract_tar(archive, extracted)
    return find_year_folder(extracted)


@DATASETS.register("voc", VocDataConfig)
def load(cfg: Any, ctx: LoadContext) -> Splits:
    root = voc_root(cfg, ctx)
    difficult = Difficult(cfg.difficult)
    annotations = sorted((root / "Annotations").glob("*.xml"))
    if not annotations:
        raise DataError(f"{root / 'Annotations'} holds no .xml annotation.")
    targets = {path.stem: read_annotation(path, difficult) for path in annotations}
    ids = list(targets)
    skipped: list[Skipped] = []
    rng = np.random.default_rng(ctx.seed)
    if VocSplit(cfg.split) is VocSplit.imagesets:
        main = root / "ImageSets" / "Main"
        train_ids, test_ids = read_ids(main / "train.txt"), read_ids(main / "val.txt")
        listed = set(train_ids) | set(test_ids)
        skipped += [
            Skipped(str(root / "Annotations" / f"{i}.xml"), "in no ImageSets/Main list")
            for i in ids
            if i not in listed
        ]
        train_ids = [i for i in train_ids if i in targets]
        test_ids = [i for i in test_ids if i in targets]
        order = rng.permutation(len(train_ids))
        n_val = max(1, round(ctx.validation_split * len(train_ids)))
        groups = {
            "train": [train_ids[i] for i in order[n_val:]],
            "val": [train_ids[i] for i in order[:n_val]],
            "test": test_ids,
        }
    else:
        order = [ids[i] for i in rng.permutation(len(ids))]
        n_train = round(cfg.train_fraction * len(ids))
        n_val = round(cfg.val_fraction * len(ids))
        groups = {
            "train": order[:n_train],
            "val": order[n_train : n_train + n_val],
            "test": order[n_train + n_val :],
        }
    splits = {}
    in_memory = ctx.fits_in_memory(sum(len(split_ids) for split_ids in groups.values()))
    for split, split_ids in groups.items():
        if not split_ids:
            raise DataError(f"The VOC {split} split is empty: check ImageSets or the fractions.")
        paths = [root / "JPEGImages" / f"{i}.jpg" for i in split_ids]
        skipped += [Skipped(str(p), "image file missing") for p in paths if not p.exists()]
        present = [p for p in paths if p.exists()]
        labels = np.stack([targets[p.stem] for p in present])
        splits[split], bad = read_split(present, labels, ctx, in_memory=in_memory)
        skipped += bad
    info = DataInfo(cfg.name, image_shape(splits["train"]), CLASS_NAMES, task="multilabel")
    return Splits(splits["train"], splits["val"], splits["test"], info, skipped=skipped)
