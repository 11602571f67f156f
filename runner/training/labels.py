"""What training compares predictions with: the data's labels as read, or one-hot rows when
label smoothing or MixUp/CutMix need class probabilities rather than class numbers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from omegaconf import DictConfig

from runner.augmentation import mixing
from runner.augmentation import transforms as augment
from runner.core import backend
from runner.core.errors import RunnerError
from runner.core.lazy import tf
from runner.data.base import DataInfo

# images, labels, per-batch seed -> images, labels (tf.Tensors, or arrays off TensorFlow)
Transform = Callable[[Any, Any, Any], tuple[Any, Any]]


def one_hot(cfg: DictConfig, info: DataInfo) -> bool:
    """Multi-class data trains on one-hot labels when they are smoothed or blended (binary and
    multi-label labels are 0/1 floats already)."""
    smoothed = cfg.trainer.label_smoothing > 0
    return info.task == "multiclass" and (smoothed or mixing.is_active(cfg.augmentation))


def check(cfg: DictConfig, info: DataInfo) -> None:
    if cfg.trainer.label_smoothing > 0 and info.task == "multilabel":
        raise RunnerError(
            f"trainer.label_smoothing={cfg.trainer.label_smoothing} is for one label per image; "
            f"data={info.name} is multi-label (each label a yes/no of its own). "
            "Set trainer.label_smoothing=0."
        )


def encoder(info: DataInfo) -> Callable[[Any], Any]:
    if not backend.is_tensorflow():
        rows = np.eye(info.num_classes, dtype=np.float32)
        return lambda labels: rows[np.asarray(labels, dtype=np.int64)]
    return lambda labels: tf.one_hot(tf.cast(labels, tf.int32), info.num_classes)


def training_transform(
    cfg: DictConfig, info: DataInfo, *, augmenting: bool = True
) -> Transform | None:
    """What each training batch goes through in the input pipeline: labels made one-hot,
    images augmented (unless the model wears the augmentation), batches mixed."""
    encode = encoder(info) if one_hot(cfg, info) else None
    transform_images = augmenting and (
        augment.is_active(cfg.augmentation) and not augment.in_model(cfg.augmentation)
    )
    mix = augmenting and mixing.is_active(cfg.augmentation)
    if not (encode or transform_images or mix):
        return None
    if not backend.is_tensorflow():
        return _portable_transform(cfg, encode, transform_images, mix)

    def transform(images: tf.Tensor, labels: tf.Tensor, seed: tf.Tensor):
        if encode is not None:
            labels = encode(labels)
        if transform_images:
            images = augment.augment_batch(images, seed, cfg.augmentation, as_uint8=not mix)
        if mix:
            images, labels = mixing.mix(images, labels, seed, cfg.augmentation)
        return images, labels

    return transform


def _portable_transform(
    cfg: DictConfig, encode: Callable[[Any], Any] | None, transform_images: bool, mix: bool
) -> Transform:
    """The same steps in `keras.ops` on NumPy batches (runner/augmentation/portable.py)."""
    from runner.augmentation import portable
    from runner.core.lazy import keras

    def transform(images: Any, labels: Any, seed: Any) -> tuple[Any, Any]:
        if encode is not None:
            labels = encode(labels)
        generator = portable.batch_generator(seed)
        if transform_images:
            images = portable.augment_batch(
                images,
                generator,
                cfg.augmentation,
                as_uint8=not mix,
                epoch_parity=int(np.asarray(seed).ravel()[0]) % 2,
            )
        if mix:
            images, labels = portable.mix(images, labels, generator, cfg.augmentation)
        return keras.ops.convert_to_numpy(images), keras.ops.convert_to_numpy(labels)

    return transform
