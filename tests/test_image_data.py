"""Image-file sources: class folders, cats vs dogs, Pascal VOC (loaders called directly)."""

from __future__ import annotations

import dataclasses
import io
import math
import struct
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

from runner.core.errors import DataError
from runner.data import LoadContext, load
from runner.data.archives import Limits, extract_once
from runner.data.cats_vs_dogs import CatsVsDogsDataConfig
from runner.data.folders import FolderDataConfig
from runner.data.images import decode_files
from runner.data.voc import VocDataConfig
from tests import image_fixtures as fx


def context(tmp_path: Path, size=(32, 32), channels=3) -> LoadContext:
    return LoadContext(
        data_dir=tmp_path / "cache",
        seed=42,
        validation_split=0.2,
        image_size=size,
        channels=channels,
    )


def test_unusual_valid_images_are_kept_and_bad_files_skipped(tmp_path):
    counts = fx.write_class_tree(tmp_path / "animals")
    splits = load(
        FolderDataConfig(name="animals", path=str(tmp_path / "animals")), context(tmp_path)
    )
    assert splits.info.class_names == ("cats", "dogs", "panda")
    assert splits.info.task == "multiclass"
    total = sum(splits.sizes().values())
    assert total == counts["cats"] + counts["dogs"] + counts["panda"]  # every valid image kept
    skipped = {Path(item.path).name: item.reason for item in splits.skipped}
    assert set(skipped) == set(fx.BAD)
    assert skipped["empty.jpg"] == "empty file"
    assert skipped["notes.txt"].startswith("not an image")
    assert "header cannot be read (Truncated File Read)" in skipped["truncated.jpg"]
    # 25% stratified test split, then 20% of the rest for validation.
    assert splits.sizes()["test"] == math.ceil(0.25 * total)  # scikit-learn rounds up
    per_class = [counts["cats"], counts["dogs"], counts["panda"]]
    expected = 0.25 * np.asarray(per_class)
    assert np.abs(np.bincount(splits.test.y) - expected).max() <= 1  # stratified
    assert splits.train.x.shape[1:] == (32, 32, 3) and splits.train.x.dtype == np.uint8


def test_a_pixel_bomb_with_a_bad_checksum_is_skipped_before_decoding(tmp_path):
    """PIL refuses a PNG whose ancillary chunk has a bad CRC; TensorFlow would decode it: the
    size limit must not depend on PIL accepting the file."""
    from PIL import Image

    encoded = io.BytesIO()
    Image.new("1", (14000, 14000)).save(encoded, format="PNG", optimize=True)
    png = encoded.getvalue()
    after_ihdr = 8 + 4 + 4 + 13 + 4  # signature, then IHDR's length, type, data and CRC
    text = b"comment\x00hello"
    chunk = struct.pack(">I", len(text)) + b"tEXt" + text + b"\x00\x00\x00\x00"  # bad CRC
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png[:after_ihdr] + chunk + png[after_ihdr:])
    good = tmp_path / "good.png"
    fx.picture(0, seed=1).save(good)
    images, kept, skipped = decode_files([bomb, good], size=(32, 32), channels=3)
    assert list(kept) == [1] and images.shape == (1, 32, 32, 3)
    assert [s.path for s in skipped] == [str(bomb)]
    assert "header cannot be read" in skipped[0].reason


def test_decoding_converts_every_form_to_the_requested_channels(tmp_path):
    paths = []
    for name, write in fx.UNUSUAL.items():
        write(fx.picture(0, seed=1), tmp_path / name)
        paths.append(tmp_path / name)
    images, kept, skipped = decode_files(paths, size=(20, 24), channels=1)
    assert skipped == [] and len(kept) == len(paths)
    assert images.shape == (len(paths), 20, 24, 1)
    rgb, _, _ = decode_files(paths, size=(20, 24), channels=3)
    red = rgb[[i for i, p in enumerate(paths) if p.name not in ("gray.png", "deep16.png")]]
    assert (red[..., 0].mean(axis=(1, 2)) > red[..., 2].mean(axis=(1, 2))).all()  # still red
    # A 16-bit image is scaled to 8 bits (not clipped, not wrapped): the same picture as its
    # 8-bit grayscale source, and a GIF reads like the PNG it was made from.
    by_name = {p.name: i for i, p in enumerate(paths)}
    deep, gray = images[by_name["deep16.png"]].astype(int), images[by_name["gray.png"]].astype(int)
    assert np.abs(deep - gray).max() <= 1
    png, gif = images[by_name["upper2.PNG"]].astype(int), images[by_name["still.gif"]].astype(int)
    assert np.abs(png - gif).mean() < 12  # (GIF: 256-color palette)


def test_two_classes_make_a_binary_task(tmp_path):
    fx.write_class_tree(
        tmp_path / "pets", classes=("cat", "dog"), per_class=10, unusual_in=None, bad_in=None
    )
    splits = load(
        FolderDataConfig(name="image_folder", path=str(tmp_path / "pets")), context(tmp_path)
    )
    assert splits.info.task == "binary"


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ("one_class", "needs at least two"),
        ("empty_class", "hold no usable image"),
        ("missing", "does not exist"),
    ],
)
def test_unusable_folders_fail_with_a_clear_error(tmp_path, layout, message):
    root = tmp_path / "images"
    if layout == "one_class":
        fx.write_class_tree(root, classes=("only",), per_class=4, unusual_in=None, bad_in=None)
    elif layout == "empty_class":
        fx.write_class_tree(root, classes=("a", "b"), per_class=4, unusual_in=None, bad_in=None)
        (root / "c").mkdir()
        (root / "c" / "broken.jpg").write_bytes(b"")
    with pytest.raises(DataError, match=message):
        load(FolderDataConfig(name="image_folder", path=str(root)), context(tmp_path))


def cats_vs_dogs(path: Path, **sizes) -> CatsVsDogsDataConfig:
    sizes = {"train_per_class": 8, "val_per_class": 4, "test_per_class": 4, **sizes}
    return CatsVsDogsDataConfig(name="cats_vs_dogs", path=str(path), **sizes)


def test_kaggle_zip_is_split_in_file_number_order_and_bad_files_replaced(tmp_path):
    train = fx.write_kaggle_train(tmp_path / "kaggle", per_class=20, bad_numbers=(3,))
    archive = fx.zip_folder(train, tmp_path / "train.zip")
    splits = load(cats_vs_dogs(archive), context(tmp_path))
    assert splits.sizes() == {"train": 16, "val": 8, "test": 8}
    assert splits.info.class_names == ("cat", "dog") and splits.info.task == "binary"
    skipped = sorted(Path(item.path).name for item in splits.skipped)
    assert skipped == ["Thumbs.db", "cat.3.jpg"]
    # Extracted into the cache, once.
    assert (tmp_path / "cache" / "cats_vs_dogs" / "train" / ".extracted").exists()


def zip_bomb(path: Path, megabytes: int) -> Path:
    """A real deflated zip whose one member is `megabytes` of zeros (~1000x smaller packed)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zipped:
        with zipped.open("train/cat.0.jpg", "w", force_zip64=True) as member:
            for _ in range(megabytes):
                member.write(bytes(1024 * 1024))
    return path


def tar_gz_bomb(path: Path, megabytes: int) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        member = tarfile.TarInfo("VOCdevkit/VOC2012/JPEGImages/a.jpg")
        member.size = megabytes * 1024 * 1024
        tar.addfile(member, io.BytesIO(bytes(member.size)))
    return path


def test_archive_bombs_and_oversized_archives_stop_before_writing_and_leave_nothing(tmp_path):
    cache = tmp_path / "cache" / "cats_vs_dogs"
    bomb = zip_bomb(tmp_path / "bomb.zip", 64)
    assert bomb.stat().st_size < 1024 * 1024
    with pytest.raises(DataError, match=r"bomb.zip declares 64 MB from 0.1 MB .*over data.max_"):
        load(cats_vs_dogs(bomb), context(tmp_path))
    # An honest archive over the configured total is refused too.
    train = fx.write_kaggle_train(tmp_path / "kaggle", per_class=10)
    archive = fx.zip_folder(train, tmp_path / "train.zip")
    small = dataclasses.replace(cats_vs_dogs(archive), max_extract_mb=0.01)
    with pytest.raises(DataError, match=r"would extract more than data.max_extract_mb=0.01 MB"):
        load(small, context(tmp_path))
    assert sorted(p.name for p in cache.iterdir() if not p.name.endswith(".lock")) == []
    # A tar.gz (VOC's path) is checked member by member as it streams.
    limits = Limits(max_bytes=10_000 * 1024 * 1024, max_ratio=100)
    voc = tmp_path / "cache" / "voc" / "VOC2012"
    with pytest.raises(DataError, match="over data.max_extract_ratio=100"):
        extract_once([tar_gz_bomb(tmp_path / "bomb.tar.gz", 64)], voc, limits)
    assert not voc.exists() and not list(voc.parent.glob(".VOC2012.partial"))


def test_extraction_caches_follow_the_archive_not_its_name(tmp_path):
    """A/train.zip then B/train.zip: B's run trains on B's images; a broken tar is no cache."""
    first = fx.write_kaggle_train(tmp_path / "a", per_class=20, bad_numbers=(3,))
    second = fx.write_kaggle_train(tmp_path / "b", per_class=20, bad_numbers=(5,))
    (tmp_path / "A").mkdir(), (tmp_path / "B").mkdir()
    a = fx.zip_folder(first, tmp_path / "A" / "train.zip")
    b = fx.zip_folder(second, tmp_path / "B" / "train.zip")
    bad = lambda splits: [Path(i.path).name for i in splits.skipped if "cat." in i.path]  # noqa: E731
    assert bad(load(cats_vs_dogs(a), context(tmp_path))) == ["cat.3.jpg"]
    assert bad(load(cats_vs_dogs(b), context(tmp_path))) == ["cat.5.jpg"]
    assert bad(load(cats_vs_dogs(a), context(tmp_path))) == ["cat.3.jpg"]

    limits = Limits(max_bytes=100 * 1024 * 1024, max_ratio=100)
    voc = tmp_path / "cache" / "voc" / "VOC2012"
    broken = tmp_path / "broken.tar"
    broken.write_bytes(
        fx.tar_folder(fx.write_voc(tmp_path / "v1"), tmp_path / "t.tar").read_bytes()[:3000]
    )
    with pytest.raises(DataError, match="Cannot extract"):
        extract_once([broken], voc, limits)
    good = fx.tar_folder(fx.write_voc(tmp_path / "v2"), tmp_path / "good.tar")
    extract_once([good], voc, limits)
    assert list(voc.rglob("Annotations/*.xml"))


def test_kaggle_folder_needs_enough_images(tmp_path):
    fx.write_kaggle_train(tmp_path / "kaggle", per_class=10)
    with pytest.raises(DataError, match=r"Only 9 usable cat images .* needs 16"):
        load(cats_vs_dogs(tmp_path / "kaggle"), context(tmp_path))


def test_microsoft_petimages_layout(tmp_path):
    fx.write_pet_images(tmp_path / "ms", per_class=12)
    splits = load(
        cats_vs_dogs(tmp_path / "ms", train_per_class=6, val_per_class=3, test_per_class=3),
        context(tmp_path),
    )
    assert splits.sizes() == {"train": 12, "val": 6, "test": 6}
    assert np.bincount(splits.test.y).tolist() == [3, 3]


def voc(path: Path | None, **options) -> VocDataConfig:
    return VocDataConfig(
        name="voc", path=str(path) if path else None, mirror="http://unused", **options
    )


def test_voc_imagesets_multilabel_targets(tmp_path):
    fx.write_voc(tmp_path / "voc")
    splits = load(voc(tmp_path / "voc"), context(tmp_path))
    info = splits.info
    assert info.task == "multilabel" and len(info.class_names) == 20
    assert splits.sizes()["test"] == len(fx.VOC_VAL)
    assert splits.sizes()["train"] + splits.sizes()["val"] == len(fx.VOC_TRAIN)
    # 2008_000013 is in no ImageSets/Main list: another VOC task's image, left out quietly.
    assert splits.skipped == []
    targets = np.concatenate([splits.train.y, splits.val.y])
    assert targets.shape == (8, 20)
    # 2008_000003: car, bus and a difficult person -> three positives with difficult included.
    assert sorted(targets.sum(axis=1).astype(int).tolist()) == [1, 1, 1, 1, 2, 2, 2, 3]


def test_voc_year_picks_the_folder_among_several(tmp_path):
    import dataclasses

    fx.write_voc(tmp_path / "voc", year="2009")
    fx.write_voc(tmp_path / "voc", year="2012")
    files = lambda splits: {Path(p).parent.parent.name for p in splits.train.paths}  # noqa: E731
    # Streamed from disk (no memory budget): the paths tell which folder was read.
    ctx = dataclasses.replace(context(tmp_path), max_memory_mb=0)
    assert files(load(voc(tmp_path / "voc", year="2009"), ctx)) == {"VOC2009"}
    assert files(load(voc(tmp_path / "voc", year="2012"), ctx)) == {"VOC2012"}
    with pytest.raises(DataError, match=r"holds VOC2009, VOC2012 but no VOC2007: set data.year"):
        load(voc(tmp_path / "voc", year="2007"), ctx)


def test_voc_difficult_objects_can_be_excluded(tmp_path):
    fx.write_voc(tmp_path / "voc")
    included = load(voc(tmp_path / "voc", split="random"), context(tmp_path))
    excluded = load(voc(tmp_path / "voc", split="random", difficult="exclude"), context(tmp_path))
    count = lambda s: sum(split.y.sum() for split in (s.train, s.val, s.test))  # noqa: E731
    assert count(included) - count(excluded) == 3  # dog (also non-difficult), person, sofa, chair
    assert sum(excluded.sizes().values()) == len(fx.VOC_OBJECTS)  # random split uses every file
    assert excluded.sizes()["train"] == round(0.7 * len(fx.VOC_OBJECTS))


def test_voc_unknown_class_is_a_clear_error(tmp_path):
    fx.write_voc(tmp_path / "voc", objects={**fx.VOC_OBJECTS, "2008_000001": [("unicorn", 0)]})
    with pytest.raises(DataError, match=r"2008_000001.xml names the class 'unicorn'"):
        load(voc(tmp_path / "voc"), context(tmp_path))


def test_voc_tar_is_downloaded_checked_and_extracted(tmp_path, mirror):
    year = fx.write_voc(tmp_path / "src")
    archive = fx.tar_folder(year.parent, mirror.folder / "VOCtrainval_fixture.tar")
    import hashlib

    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    from runner.data.voc import VocFileSpec

    cfg = VocDataConfig(
        name="voc",
        path=None,
        mirror=mirror.url,
        files={"trainval": VocFileSpec(name="VOCtrainval_fixture.tar", md5=md5)},
    )
    splits = load(cfg, context(tmp_path))
    assert splits.sizes()["test"] == len(fx.VOC_VAL)
    assert (
        tmp_path / "cache" / "voc" / "VOC2012" / "VOCdevkit" / "VOC2012" / "Annotations"
    ).is_dir()


def test_voc_fetches_the_official_tar_of_its_year(tmp_path, mirror):
    """data.files left empty: the official file name of data.year, from data.mirror."""
    from runner.data.voc import TRAINVAL_TARS, download_config

    year = fx.write_voc(tmp_path / "src", year="2009")
    official, md5 = TRAINVAL_TARS["2009"]
    fx.tar_folder(year.parent, mirror.folder / official)
    cfg = VocDataConfig(name="voc", year="2009", mirror=mirror.url, verify_checksum=False)
    splits = load(cfg, context(tmp_path))  # (the fixture tar is not the official file)
    assert splits.sizes()["test"] == len(fx.VOC_VAL)
    assert (tmp_path / "cache" / "voc" / official).is_file()
    # The official host's folder of that year and the published md5 when nothing is set.
    resolved = download_config(VocDataConfig(name="voc", year="2009"))
    assert resolved.mirror == "http://host.robots.ox.ac.uk/pascal/VOC/voc2009"
    assert dict(resolved.files.trainval) == {
        "name": official,
        "sha256": None,
        "md5": md5,
        "content_sha256": None,
    }


def test_the_voc_tar_is_named_by_plain_overrides_and_the_old_plus_spelling_still_works():
    from runner.config.migrate import migrate_override
    from runner.data.voc import download_config
    from tests.conftest import compose_config

    overrides = ["data.files.trainval.name=mine.tar", "data.files.trainval.md5=abc"]
    resolved = download_config(compose_config(["data=voc", *overrides]).data)
    assert dict(resolved.files.trainval) == {
        "name": "mine.tar",
        "sha256": None,
        "md5": "abc",
        "content_sha256": None,
    }
    old, note = migrate_override("+data.files={trainval:{name:mine.tar,md5:abc}}")
    assert note is None
    resolved = download_config(compose_config(["data=voc", old]).data)
    assert dict(resolved.files.trainval) == {
        "name": "mine.tar",
        "sha256": None,
        "md5": "abc",
        "content_sha256": None,
    }


def test_data_larger_than_the_memory_limit_streams_from_disk(tmp_path):
    from runner.data.base import ArraySplit, FileSplit
    from runner.data.pipeline import to_dataset

    fx.write_class_tree(tmp_path / "animals", per_class=12)
    cfg = FolderDataConfig(name="animals", path=str(tmp_path / "animals"))
    in_memory = load(cfg, context(tmp_path))
    streaming = load(
        cfg,
        dataclasses.replace(context(tmp_path), max_memory_mb=0.01),  # ~10 KB: too small
    )
    assert isinstance(in_memory.train, ArraySplit) and isinstance(streaming.train, FileSplit)
    assert streaming.sizes() == in_memory.sizes()
    assert [s.path for s in streaming.skipped] == [s.path for s in in_memory.skipped]
    # The same images come out of both pipelines, decoded from disk each time when streaming.
    for name in ("val", "test"):
        from_disk = np.concatenate(
            [x for x, _ in to_dataset(getattr(streaming, name), batch_size=8).as_numpy_iterator()]
        )
        np.testing.assert_array_equal(from_disk, getattr(in_memory, name).x)
    assert streaming.train.sample(3).shape == (3, 32, 32, 3)


def test_a_voc_annotation_that_expands_entities_a_billion_times_is_refused(tmp_path):
    """The XML parser caps entity expansion ("billion laughs"): the annotation is a one-line
    data error, not gigabytes of memory."""
    from runner.data.voc import Difficult, read_annotation

    entities = ['<!ENTITY lol0 "lol">'] + [
        f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10)
    ]
    bomb = tmp_path / "bomb.xml"
    bomb.write_text(
        f"<?xml version='1.0'?><!DOCTYPE annotation [{''.join(entities)}]>"
        "<annotation><object><name>&lol9;</name></object></annotation>"
    )
    with pytest.raises(DataError, match=r"bomb.xml is not valid annotation XML \(.*amplification"):
        read_annotation(bomb, Difficult.include)
