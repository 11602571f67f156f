"""Pascal VOC as multi-label classification over its 20 classes.

Reads a `VOCdevkit/VOC20XX` tree (`data.path`), or fetches the trainval tar into the cache and
extracts it there. Each image's target is the set of classes of its objects, as a multi-hot
vector; objects flagged `difficult` count or not as `data.difficult` says. Splits come from
`ImageSets/Main` (train -> train and validation, val -> test) or from seeded fractions of all
annotation files (`data.split=random`, the tutorial's 70/20/10).
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from runner.config.registry import DATASETS
from runner.config.schema import (
    DownloadedDataConfig,
    ExtractedDataConfig,
    FileSpec,
    ImageDataConfig,
)
from runner.core.errors import DataError
from runner.data.archives import Limits, extract_once
from runner.data.base import DataInfo, LoadContext, Splits, image_shape, read_split
from runner.data.download import fetch_all
from runner.data.folders import require_folder
from runner.data.images import Skipped, display

log = logging.getLogger(__name__)

CLASS_NAMES = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)


class VocSplit(Enum):
    imagesets = "imagesets"  # ImageSets/Main train.txt / val.txt
    random = "random"  # seeded fractions of all annotation files


class Difficult(Enum):
    include = "include"  # an object flagged difficult still makes its class present
    exclude = "exclude"  # ignore difficult objects (the class is present only via others)


@dataclass
class VocFileSpec(FileSpec):
    name: str | None = None  # null: the official trainval tar of data.year (and its md5)


@dataclass
class VocDataConfig(ImageDataConfig, DownloadedDataConfig, ExtractedDataConfig):
    """Pascal VOC, multi-label over the 20 classes, from VOCdevkit/VOC20XX (`path`) or fetched
    like the other downloaded datasets (mirror, files, verify_checksum)."""

    # Which VOC20XX: the folder read under `path`, and the tar fetched when `files` is empty
    # (the official trainval tar of that year, from `mirror` or the official host).
    year: str = "2012"
    files: dict[str, VocFileSpec] = field(default_factory=lambda: {"trainval": VocFileSpec()})
    mirror: str | None = None  # null: http://host.robots.ox.ac.uk/pascal/VOC/voc<year>
    split: VocSplit = VocSplit.imagesets
    # For split=random: fractions of the annotation files (the tutorial's 70/20/10).
    train_fraction: float = 0.7
    val_fraction: float = 0.2
    difficult: Difficult = Difficult.include
    threshold: float = 0.5  # a class is predicted present at this probability


# The official trainval tar of each year (file name, md5: VOC publishes no sha256).
TRAINVAL_TARS = {
    "2007": ("VOCtrainval_06-Nov-2007.tar", "c52e279531787c972589f7e41ab4ae64"),
    "2008": ("VOCtrainval_14-Jul-2008.tar", "2629fa636546599198acfcfbfcf1904a"),
    "2009": ("VOCtrainval_11-May-2009.tar", "59065e4b188729180974ef6572f6a212"),
    "2010": ("VOCtrainval_03-May-2010.tar", "da459979d0c395079b5c75ee67908abb"),
    "2011": ("VOCtrainval_25-May-2011.tar", "6c3384ef61512963050cb5d687e5bf1e"),
    "2012": ("VOCtrainval_11-May-2012.tar", "6cd6e144f989b92b3379bac3b3de84fd"),
}
OFFICIAL_HOST = "http://host.robots.ox.ac.uk/pascal/VOC/voc{year}"


def find_year_folder(path: Path, year: str) -> Path:
    """Accept VOCdevkit/VOC20XX itself, VOCdevkit, or a folder holding VOCdevkit; where
    several years sit side by side, `data.year` picks one."""
    for candidate in (path, path / "VOCdevkit"):
        if (candidate / "Annotations").is_dir():
            return candidate
        years = (
            sorted(d for d in candidate.glob("VOC20*") if (d / "Annotations").is_dir())
            if (candidate.is_dir())
            else []
        )
        wanted = candidate / f"VOC{year}"
        if wanted in years:
            return wanted
        if len(years) == 1:
            log.warning(
                "data.year=%s, but %s holds only %s: reading it", year, candidate, years[0].name
            )
            return years[0]
        if years:
            raise DataError(
                f"{candidate} holds {', '.join(d.name for d in years)} but no VOC{year}: set "
                f"data.year to one of {[d.name[3:] for d in years]}."
            )
    raise DataError(
        f"{path} is not a Pascal VOC tree: expected VOCdevkit/VOC20XX/ with Annotations/, "
        "JPEGImages/ and ImageSets/Main/."
    )


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


def download_config(cfg: Any) -> Any:
    """`cfg` with the tar to fetch: its own `files` and `mirror` when set, else the official
    trainval tar of `data.year` from the official host."""
    year = str(cfg.year)
    files = {
        role: VocFileSpec(name=spec.name, sha256=spec.sha256, md5=spec.md5)
        for role, spec in cfg.files.items()
        if spec.name
    }
    if not files and year not in TRAINVAL_TARS:
        raise DataError(
            f"data.year={year} has no known trainval tar (known: {sorted(TRAINVAL_TARS)}): set "
            "data.path to your VOCdevkit, or data.files.trainval.{name,md5} and data.mirror."
        )
    if not files:
        name, md5 = TRAINVAL_TARS[year]
        trainval = cfg.files.get("trainval")
        files = {"trainval": VocFileSpec(name=name, md5=(trainval and trainval.md5) or md5)}
    mirror = cfg.mirror or OFFICIAL_HOST.format(year=year)
    fetched = OmegaConf.merge(cfg, {"mirror": mirror})
    fetched.files = files  # these only: the roles left unnamed are not fetched
    return fetched


def voc_root(cfg: Any, ctx: LoadContext) -> Path:
    if cfg.path:
        return find_year_folder(require_folder(cfg.path, cfg.name), str(cfg.year))
    files = fetch_all(download_config(cfg), ctx.data_dir)
    extracted = ctx.data_dir / cfg.name / f"VOC{cfg.year}"
    extract_once(list(files.values()), extracted, Limits.of(cfg))
    return find_year_folder(extracted, str(cfg.year))


@DATASETS.register("voc", VocDataConfig)
def load(cfg: Any, ctx: LoadContext) -> Splits:
    root = voc_root(cfg, ctx)
    difficult = Difficult(cfg.difficult)
    annotations = {path.stem: path for path in sorted((root / "Annotations").glob("*.xml"))}
    if not annotations:
        raise DataError(f"{root / 'Annotations'} holds no .xml annotation.")
    skipped: list[Skipped] = []
    rng = np.random.default_rng(ctx.seed)
    if VocSplit(cfg.split) is VocSplit.imagesets:
        main = root / "ImageSets" / "Main"
        train_ids, test_ids = read_ids(main / "train.txt"), read_ids(main / "val.txt")
        listed = set(train_ids) | set(test_ids)
        # Annotations of the other VOC tasks (segmentation, layout, action) are not part of the
        # classification split: left out as the official lists say, not unusable files.
        unlisted = len(set(annotations) - listed)
        if unlisted:
            log.info(
                "VOC%s: %d annotation(s) are in no ImageSets/Main list (other VOC tasks); "
                "left out, as data.split=imagesets says",
                cfg.year,
                unlisted,
            )
        skipped += [
            Skipped(display(root / "Annotations" / f"{i}.xml"), "in ImageSets/Main, no annotation")
            for i in sorted(listed - set(annotations))
        ]
        targets = {
            i: read_annotation(annotations[i], difficult)
            for i in sorted(listed)
            if i in annotations
        }
        train_ids = [i for i in train_ids if i in targets]
        test_ids = [i for i in test_ids if i in targets]
        order = rng.permutation(len(train_ids))
        # At least one image once any is asked for; none with trainer.validation_split=0.
        n_val = max(1, round(ctx.validation_split * len(train_ids))) if ctx.validation_split else 0
        groups = {
            "train": [train_ids[i] for i in order[n_val:]],
            "val": [train_ids[i] for i in order[:n_val]],
            "test": test_ids,
        }
    else:
        targets = {i: read_annotation(path, difficult) for i, path in annotations.items()}
        ids = list(targets)
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
        skipped += [Skipped(display(p), "image file missing") for p in paths if not p.exists()]
        present = [p for p in paths if p.exists()]
        labels = np.stack([targets[p.stem] for p in present])
        splits[split], bad = read_split(present, labels, ctx, in_memory=in_memory)
        skipped += bad
    info = DataInfo(cfg.name, image_shape(splits["train"]), CLASS_NAMES, task="multilabel")
    return Splits(splits["train"], splits["val"], splits["test"], info, skipped=skipped)
