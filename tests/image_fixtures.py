"""Small real image trees: class folders, Kaggle cats-vs-dogs, a miniature Pascal VOC.

Each class has its own dominant color, so a small model tells them apart in a few epochs.
Valid images come in unusual forms too (grayscale, RGBA, palette, CMYK JPEG, BMP, upper-case
extensions), which must be kept; bad files (corrupt, truncated, empty, not an image) must be
skipped.
"""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

COLORS = {0: (220, 40, 40), 1: (40, 200, 40), 2: (40, 60, 220)}


def picture(label: int, seed: int, size: int = 40) -> Image.Image:
    rng = np.random.default_rng(seed)
    base = np.array(COLORS[label % 3], dtype=np.int16)
    noise = rng.integers(-30, 30, size=(size, size, 3))
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8), "RGB")


def jpeg_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


# name -> how to write a valid image in an unusual form
UNUSUAL = {
    "gray.png": lambda img, p: img.convert("L").save(p),
    "alpha.png": lambda img, p: img.convert("RGBA").save(p),
    "palette.png": lambda img, p: img.convert("P").save(p),
    "cmyk.jpg": lambda img, p: img.convert("CMYK").save(p, "JPEG"),
    "bitmap.bmp": lambda img, p: img.save(p, "BMP"),
    "upper.JPG": lambda img, p: img.save(p, "JPEG"),
    "upper2.PNG": lambda img, p: img.save(p, "PNG"),
    "still.gif": lambda img, p: img.save(p, "GIF"),
    "deep16.png": lambda img, p: Image.fromarray(
        np.asarray(img.convert("L")).astype(np.uint16) * 257  # 16-bit grayscale, same picture
    ).save(p),
}
BAD = {
    "corrupt.jpg": lambda: (
        b"\xff\xd8\xff\xe0" + bytes(np.random.default_rng(5).integers(0, 255, 500, dtype=np.uint8))
    ),
    "truncated.jpg": lambda: jpeg_bytes(picture(0, 99))[:300],
    "empty.jpg": lambda: b"",
    "fake.png": lambda: b"this is not a png at all",
    "notes.txt": lambda: b"a note left in the folder",
}


def write_class_tree(
    root: Path,
    classes: tuple[str, ...] = ("cats", "dogs", "panda"),
    per_class: int = 24,
    unusual_in: str | None = "cats",
    bad_in: str | None = "dogs",
) -> dict[str, int]:
    """Returns counts: valid images per class, and the number of bad files."""
    counts = {}
    for label, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True)
        for index in range(per_class):
            picture(label, seed=label * 1000 + index).save(folder / f"{name}_{index:03d}.jpg")
        counts[name] = per_class
        if name == unusual_in:
            for offset, (file_name, write) in enumerate(UNUSUAL.items()):
                write(picture(label, seed=label * 1000 + 500 + offset), folder / file_name)
            counts[name] += len(UNUSUAL)
        if name == bad_in:
            for file_name, content in BAD.items():
                (folder / file_name).write_bytes(content())
    counts["bad"] = len(BAD) if bad_in else 0
    return counts


def write_kaggle_train(
    root: Path, per_class: int = 20, bad_numbers: tuple[int, ...] = (3,)
) -> Path:
    """`train/cat.N.jpg`, `train/dog.N.jpg`; the listed numbers are corrupt for cats."""
    folder = root / "train"
    folder.mkdir(parents=True)
    for label, name in enumerate(("cat", "dog")):
        for number in range(per_class):
            path = folder / f"{name}.{number}.jpg"
            if name == "cat" and number in bad_numbers:
                path.write_bytes(b"not a jpeg")
            else:
                picture(label, seed=label * 100 + number).save(path)
    (folder / "Thumbs.db").write_bytes(b"\x00" * 10)
    return folder


def zip_folder(folder: Path, archive: Path) -> Path:
    with zipfile.ZipFile(archive, "w") as zipped:
        for path in sorted(folder.rglob("*")):
            zipped.write(path, path.relative_to(folder.parent))
    return archive


def write_pet_images(root: Path, per_class: int = 12) -> Path:
    for label, name in enumerate(("Cat", "Dog")):
        folder = root / "PetImages" / name
        folder.mkdir(parents=True)
        for number in range(per_class):
            picture(label, seed=label * 10 + number).save(folder / f"{number}.jpg")
        (folder / "Thumbs.db").write_bytes(b"\x00")
    return root


VOC_OBJECTS = {
    # image id -> [(class, difficult)]
    "2008_000001": [("cat", 0), ("person", 0)],
    "2008_000002": [("dog", 0), ("dog", 1)],
    "2008_000003": [("car", 0), ("bus", 0), ("person", 1)],
    "2008_000004": [("aeroplane", 0)],
    "2008_000005": [("cat", 0)],
    "2008_000006": [("person", 0), ("bicycle", 0)],
    "2008_000007": [("dog", 0), ("sofa", 1)],
    "2008_000008": [("bird", 0)],
    "2008_000009": [("chair", 1)],  # difficult objects only
    "2008_000010": [("tvmonitor", 0), ("person", 0)],
    "2008_000011": [("boat", 0)],
    "2008_000012": [("horse", 0), ("person", 0)],
    "2008_000013": [("cat", 0)],  # not in any ImageSets list
}
VOC_TRAIN = [f"2008_{i:06d}" for i in range(1, 9)]
VOC_VAL = [f"2008_{i:06d}" for i in range(9, 13)]


def annotation_xml(image_id: str, objects: list[tuple[str, int]]) -> str:
    parts = [
        "<annotation>",
        "<folder>VOC2012</folder>",
        f"<filename>{image_id}.jpg</filename>",
        "<size><width>40</width><height>40</height><depth>3</depth></size>",
    ]
    for name, difficult in objects:
        parts += [
            "<object>",
            f"<name>{name}</name>",
            "<pose>Unspecified</pose>",
            "<truncated>0</truncated>",
            f"<difficult>{difficult}</difficult>",
            "<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>30</xmax><ymax>30</ymax></bndbox>",
            "</object>",
        ]
    return "\n".join([*parts, "</annotation>"])


def write_voc(root: Path, objects: dict = VOC_OBJECTS, year: str = "2012") -> Path:
    """VOCdevkit/VOC<year> with Annotations, JPEGImages and ImageSets/Main."""
    year = root / "VOCdevkit" / f"VOC{year}"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (year / sub).mkdir(parents=True)
    for index, (image_id, objs) in enumerate(objects.items()):
        (year / "Annotations" / f"{image_id}.xml").write_text(annotation_xml(image_id, objs))
        picture(index, seed=index).save(year / "JPEGImages" / f"{image_id}.jpg")
    main = year / "ImageSets" / "Main"
    (main / "train.txt").write_text("\n".join(VOC_TRAIN) + "\n")
    (main / "val.txt").write_text("\n".join(VOC_VAL) + "\n")
    (main / "trainval.txt").write_text("\n".join(VOC_TRAIN + VOC_VAL) + "\n")
    return year


def tar_folder(folder: Path, archive: Path) -> Path:
    with tarfile.open(archive, "w") as tar:
        tar.add(folder, arcname=folder.name)
    return archive
