"""One side of `make bench pipeline`, in its own process (so its peak memory is its own).

    python bench/pipeline_side.py {runner,legacy} {memory,folder} {tutorial,none} FOLDER BATCHES

runner: the batches `fit` trains on, from runner.training.fit.image_batches (in-memory arrays,
or files streamed from disk and decoded per batch), with the `augmentation=` preset applied the
way training applies it. legacy: Keras' ImageDataGenerator on the same images (`flow` on the
same arrays, `flow_from_directory` on the same folder) with the tutorial's arguments.
Prints one JSON line: images per second over BATCHES batches of 32, after one warm-up batch.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SIZE, BATCH = (64, 64), 32
# The tutorials' ImageDataGenerator arguments; conf/augmentation/tutorial.yaml is the same.
TUTORIAL_AUGMENTATION = dict(
    rotation_range=30,
    width_shift_range=0.1,
    height_shift_range=0.1,
    shear_range=0.2,
    zoom_range=0.2,
    horizontal_flip=True,
    fill_mode="nearest",
)


def timed(batches, count: int) -> float:
    next(batches)  # warm-up: tracing, the first files opened
    started = time.perf_counter()
    for _ in range(count):
        next(batches)
    return count * BATCH / (time.perf_counter() - started)


def runner_batches(source: str, preset: str, folder: Path, count: int):
    from omegaconf import OmegaConf

    from runner.config.schema import AugmentationConfig
    from runner.data.base import ArraySplit, FileSplit
    from runner.data.folders import scan_class_folders
    from runner.data.images import decode_files
    from runner.training import fit

    augmentation = OmegaConf.structured(AugmentationConfig)
    if preset != "none":
        keys = OmegaConf.load(ROOT / "conf" / "augmentation" / f"{preset}.yaml")
        keys.pop("defaults")  # Hydra's schema reference, not a key
        augmentation = OmegaConf.merge(augmentation, keys)
    cfg = OmegaConf.create({"augmentation": augmentation, "trainer": {"seed": 0}})
    paths, labels, _, _ = scan_class_folders(folder)
    if source == "memory":
        images, kept, _ = decode_files(paths, size=SIZE, channels=3)
        split = ArraySplit(images, labels[kept])
    else:
        split = FileSplit(np.asarray([str(p) for p in paths]), labels, SIZE, 3)
    epochs = -(-(count + 1) * BATCH // len(split)) + 1
    dataset, _ = fit.image_batches(cfg, split, BATCH)(range(epochs))
    return dataset.as_numpy_iterator()


def legacy_batches(source: str, preset: str, folder: Path):
    import tensorflow as tf
    from PIL import Image

    from runner.data.folders import scan_class_folders

    generator = tf.keras.preprocessing.image.ImageDataGenerator(
        **(TUTORIAL_AUGMENTATION if preset != "none" else {})
    )
    if source == "folder":
        return generator.flow_from_directory(
            folder, target_size=SIZE, batch_size=BATCH, class_mode="sparse", seed=0
        )
    # The tutorial's loading: a Python loop with PIL into one NumPy array.
    paths, labels, _, _ = scan_class_folders(folder)
    images = np.stack([np.asarray(Image.open(p).convert("RGB").resize(SIZE)) for p in paths])
    return generator.flow(images, labels, batch_size=BATCH, seed=0)


def main() -> None:
    side, source, preset, folder, count = sys.argv[1:6]
    folder, count = Path(folder), int(count)
    if side == "runner":
        batches = runner_batches(source, preset, folder, count)
    else:
        batches = legacy_batches(source, preset, folder)
    print(json.dumps({"images_per_second": timed(batches, count)}))


if __name__ == "__main__":
    main()
