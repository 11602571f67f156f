"""Decoding image files in parallel with `tf.data`, skipping the ones that are not images.

One pass over the files reads, decodes (JPEG, PNG, BMP, GIF; grayscale, RGBA, palette, CMYK and
16-bit forms included), converts to the wanted channels and resizes, in parallel, and keeps the
result in memory. Files TensorFlow cannot decode (corrupt, truncated, empty, not images) are
dropped by `ignore_errors` and reported by name, so a bad file never reaches training.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
DEFAULT_MAX_PIXELS = 89_478_485  # PIL's Image.MAX_IMAGE_PIXELS


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str


def display(path: Any) -> str:
    """A path (or name) as text that can always be printed, logged and written as UTF-8: bytes
    that are not UTF-8 (a name from another system's encoding) are shown escaped, `caf\\xe9`."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def too_large(path: Path, max_pixels: int) -> str | None:
    """Why a file's declared size is refused, read from its header only (PIL, lazily)."""
    from PIL import Image

    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # our limit, not PIL's
    try:
        with Image.open(path) as image:  # reads the header only
            width, height = image.size
    except Exception as error:
        # Fail closed: TensorFlow decodes some files PIL refuses (a PNG with one bad checksum
        # in an ancillary chunk), and its decoder would then see the size we could not check.
        reason = " ".join(str(error).split())[:120] or type(error).__name__
        return f"its header cannot be read ({reason}): corrupt, truncated or not an image"
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    if width * height > max_pixels:
        return (
            f"declares {width}x{height} pixels ({width * height:,}), over "
            f"data.max_pixels={max_pixels:,}: skipped before decoding"
        )
    return None


def is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def decode_image(path: Any, size: tuple[int, int], channels: int) -> Any:
    """One file (a string tensor) to uint8 (H, W, C): any format and color form, resized."""
    import tensorflow as tf

    # Decoding to RGB first works for every form (CMYK JPEGs cannot decode to 1 channel).
    image = tf.io.decode_image(
        tf.io.read_file(path), channels=3, expand_animations=False, dtype=tf.uint8
    )
    image = tf.image.resize(image, size)  # bilinear, as image_dataset_from_directory
    if channels == 1:
        image = tf.image.rgb_to_grayscale(image)
    return tf.cast(tf.round(tf.clip_by_value(image, 0.0, 255.0)), tf.uint8)


def decode_files(
    paths: list[Path],
    *,
    size: tuple[int, int],
    channels: int,
    keep_pixels: bool = True,
    batch_size: int = 256,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> tuple[np.ndarray | None, np.ndarray, list[Skipped]]:
    """Decode `paths` to uint8 (N, H, W, C); returns (images, indices of kept paths, skipped).

    With keep_pixels=False the files are only checked (images is None): for data that will
    stream from disk because it does not fit in memory. Paths go to TensorFlow as bytes, so any
    name the file system allows is read; a file declaring more than `max_pixels` pixels in its
    header is skipped before it is decoded (a small file can declare a gigabyte of pixels).
    """
    skipped: list[Skipped] = []
    candidates = []
    for index, path in enumerate(paths):
        problem = "empty file" if os.path.getsize(path) == 0 else too_large(path, max_pixels)
        if problem:
            skipped.append(Skipped(display(path), problem))
        else:
            candidates.append(index)
    if not _on_tensorflow():
        return _decode_with_pillow(paths, candidates, skipped, size, channels, keep_pixels)
    import tensorflow as tf  # deferred: only image datasets need it here

    def load(index: tf.Tensor, path: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        image = decode_image(path, size, channels)
        # Checking only: keep one pixel, so the decode still runs (and fails on a bad file)
        # instead of being optimized away, and drop the rest.
        return index, image if keep_pixels else image[0, 0]

    names = np.asarray([os.fsencode(paths[i]) for i in candidates], dtype=object)
    dataset = (
        tf.data.Dataset.from_tensor_slices(
            (np.asarray(candidates, dtype=np.int64), tf.constant(names, dtype=tf.string))
        )
        .map(load, num_parallel_calls=tf.data.AUTOTUNE)
        .ignore_errors()
        .batch(batch_size)
    )
    kept, images = [], []
    for index_batch, image_batch in dataset.as_numpy_iterator():
        kept.append(index_batch)
        images.append(image_batch)
    kept_indices = np.concatenate(kept) if kept else np.zeros(0, dtype=np.int64)
    decoded = set(kept_indices.tolist())
    skipped += [
        Skipped(display(paths[i]), "cannot be decoded (corrupt, truncated or not an image)")
        for i in candidates
        if i not in decoded
    ]
    array = np.concatenate(images) if images else np.zeros((0, *size, channels), dtype=np.uint8)
    return array, kept_indices, skipped


def _on_tensorflow() -> bool:
    from runner.core import backend

    return backend.is_tensorflow()


def decode_pillow(path: Any, size: tuple[int, int], channels: int) -> np.ndarray:
    """One file as uint8 (H, W, C) through Pillow, the decoder off TensorFlow: RGB first (as
    `tf.io.decode_image(channels=3)`), resized bilinearly, then gray if channels == 1."""
    from PIL import Image

    with Image.open(os.fsdecode(path)) as image:
        image.seek(0)  # a GIF: its first frame
        rgb = image.convert("RGB").resize((size[1], size[0]), Image.Resampling.BILINEAR)
        if channels == 1:
            return np.asarray(rgb.convert("L"), dtype=np.uint8)[:, :, None]
        return np.asarray(rgb, dtype=np.uint8)


def _decode_with_pillow(
    paths: list[Path],
    candidates: list[int],
    skipped: list[Skipped],
    size: tuple[int, int],
    channels: int,
    keep_pixels: bool,
) -> tuple[np.ndarray | None, np.ndarray, list[Skipped]]:
    """decode_files without TensorFlow: Pillow in parallel threads (it releases the GIL while
    decoding)."""
    from concurrent.futures import ThreadPoolExecutor

    def load(index: int) -> np.ndarray | None:
        try:
            image = decode_pillow(paths[index], size, channels)
            return image if keep_pixels else image[:1, :1]  # checked; the pixels not kept
        except Exception:  # Pillow's errors for a bad file are many: any of them skips it
            return None

    with ThreadPoolExecutor(8) as pool:
        decoded = list(pool.map(load, candidates))
    kept = [i for i, image in zip(candidates, decoded, strict=True) if image is not None]
    skipped += [
        Skipped(display(paths[i]), "cannot be decoded (corrupt, truncated or not an image)")
        for i, image in zip(candidates, decoded, strict=True)
        if image is None
    ]
    images = [image for image in decoded if image is not None]
    if not keep_pixels:
        array = None
    else:
        empty = np.zeros((0, *size, channels), dtype=np.uint8)
        array = np.stack(images) if images else empty
    return array, np.asarray(kept, dtype=np.int64), skipped
