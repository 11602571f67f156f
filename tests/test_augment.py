"""Augmentation changes training batches only, is seeded, and shows up as a preview."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from runner.augmentation import transforms as augment
from runner.config.checks import check_group
from runner.core.errors import RunnerError
from runner.data.base import ArraySplit, DataInfo, Splits
from runner.training import fit
from tests.conftest import compose_config as compose_cfg
from tests.conftest import mirrored_mask
from tests.test_config import options


def random_splits(n: int = 64) -> Splits:
    rng = np.random.default_rng(0)

    def split():
        return ArraySplit(rng.integers(0, 255, (n, 32, 32, 3), dtype=np.uint8), np.arange(n) % 3)

    return Splits(split(), split(), split(), DataInfo("x", (32, 32, 3), ("a", "b", "c")))


def input_pipelines(cfg, splits: Splits, epochs: range = range(1)):
    """The batches `fit` trains and validates on (runner/training/fit.py), for `epochs`."""
    train, _ = fit.image_batches(cfg, splits.train, splits.info, cfg.trainer.batch_size)(epochs)
    return train, fit.validation_batches(cfg, splits.val, splits.info, cfg.trainer.batch_size)


def batches(dataset) -> list[np.ndarray]:
    return [images for images, _ in dataset.as_numpy_iterator()]


@pytest.mark.parametrize("option", [o for o in options("augmentation") if o != "none"])
def test_each_augmentation_transforms_training_batches_only(option):
    cfg = compose_cfg([f"augmentation={option}", "trainer.batch_size=16"])
    splits = random_splits()
    train, validation = input_pipelines(cfg, splits)
    # Validation batches are the split itself, in order, bit for bit.
    np.testing.assert_array_equal(np.concatenate(batches(validation)), splits.val.x)
    plain, _ = input_pipelines(compose_cfg(["augmentation=none", "trainer.batch_size=16"]), splits)
    augmented, unaugmented = np.concatenate(batches(train)), np.concatenate(batches(plain))
    assert augmented.shape == unaugmented.shape and augmented.dtype == np.uint8
    changed = (augmented != unaugmented).reshape(len(augmented), -1).any(axis=1)
    assert changed.mean() > 0.5, f"{option} left most training images unchanged"


def test_fixed_seed_gives_identical_batches_and_epochs_differ():
    cfg = compose_cfg(["augmentation=tutorial", "trainer.batch_size=16"])
    splits = random_splits()
    first, _ = input_pipelines(cfg, splits, epochs=range(2))
    again, _ = input_pipelines(cfg, splits, epochs=range(2))
    both = np.concatenate(batches(first))
    np.testing.assert_array_equal(both, np.concatenate(batches(again)))
    epoch_one, epoch_two = both[: len(splits.train)], both[len(splits.train) :]
    assert not np.array_equal(epoch_one, epoch_two)  # new order and draws per epoch
    # Epoch two alone (a run resumed there) is the same as epoch two of the whole stream.
    alone, _ = input_pipelines(cfg, splits, epochs=range(1, 2))
    np.testing.assert_array_equal(np.concatenate(batches(alone)), epoch_two)


@pytest.mark.parametrize("fill_mode", ["nearest", "reflect", "wrap", "constant"])
def test_the_compiled_resampling_gives_tensorflows_projective_transform(fill_mode):
    """runner/augmentation/resample.py against the kernel it replaces, on strong transforms that
    send many pixels outside the image, on an odd-sized (not square) batch."""
    from runner.augmentation.resample import project

    cfg = compose_cfg(
        [
            "augmentation=none",
            "augmentation.rotation=90",
            "augmentation.width_shift=0.6",
            "augmentation.height_shift=0.6",
            "augmentation.shear=30",
            "augmentation.zoom=0.6",
            "augmentation.horizontal_flip=true",
            f"augmentation.fill_mode={fill_mode}",
            "augmentation.fill_value=17",
        ]
    ).augmentation
    images = tf.constant(np.random.default_rng(0).integers(0, 256, (12, 37, 53, 3)), tf.float32)
    matrices = augment.random_matrices(cfg, tf.constant([3, 4], tf.int64), 12, 37, 53)
    expected = tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=matrices,
        output_shape=[37, 53],
        fill_value=17.0,
        interpolation="BILINEAR",
        fill_mode=fill_mode.upper(),
    ).numpy()
    result = project(tf.cast(images, tf.uint8), matrices, fill_mode, 17.0).numpy()
    assert result.shape == expected.shape and result.dtype == np.float32
    np.testing.assert_allclose(result, expected, atol=0.01)
    assert (expected == 17.0).mean() > 0.05 or fill_mode != "constant"  # the fill was exercised


def test_flip_alone_mirrors_exactly():
    cfg = compose_cfg(["augmentation=none", "augmentation.horizontal_flip=true"])
    images = random_splits().train.x[:16]
    out = augment.augment_batch(
        tf.constant(images), tf.constant([3, 4], tf.int64), cfg.augmentation
    )
    for original, result in zip(images, out.numpy(), strict=True):
        assert np.array_equal(result, original) or np.array_equal(result, original[:, ::-1])


def test_alternate_flips_mirror_each_image_in_every_other_epoch_on_both_paths():
    """alternate_flips: an image is mirrored in epoch e exactly when it is not in e + 1,
    wherever it sits in the batch (it is decided by the image, not its slot); about half of
    the images each epoch; tf.data (TensorFlow) and keras.ops (JAX, torch) paths agree."""
    from runner.augmentation import portable

    cfg = compose_cfg(
        [
            "augmentation=none",
            "augmentation.horizontal_flip=true",
            "augmentation.alternate_flips=true",
        ]
    ).augmentation
    images = random_splits(200).train.x
    by_epoch = []
    for epoch in (4, 5, 6):
        seed = tf.constant([42 * 100_003 + epoch, 7], tf.int64)
        out = augment.augment_batch(tf.constant(images), seed, cfg).numpy()
        by_epoch.append(mirrored_mask(images, out))
        generator = portable.batch_generator(seed.numpy())
        ported = portable.augment_batch(images, generator, cfg, epoch_parity=int(seed[0]) % 2)
        np.testing.assert_array_equal(np.asarray(ported), out)
    assert (by_epoch[0] != by_epoch[1]).all() and (by_epoch[0] == by_epoch[2]).all()
    assert 0.35 < by_epoch[0].mean() < 0.65
    order = np.random.default_rng(1).permutation(len(images))
    shuffled = augment.augment_batch(
        tf.constant(images[order]), tf.constant([42 * 100_003 + 4, 9], tf.int64), cfg
    ).numpy()
    np.testing.assert_array_equal(mirrored_mask(images[order], shuffled), by_epoch[0][order])
    for overrides, says in (
        (["augmentation.horizontal_flip=false"], "set augmentation.horizontal_flip=true"),
        (["augmentation.placement=model"], "set augmentation.placement=pipeline"),
    ):
        wrong = compose_cfg(
            [
                "augmentation=none",
                "augmentation.horizontal_flip=true",
                "augmentation.alternate_flips=true",
                *overrides,
            ]
        )
        with pytest.raises(RunnerError, match=says):
            check_group(wrong, "augmentation")


def augmented(overrides: list[str], images: np.ndarray, seed=(3, 4)) -> np.ndarray:
    cfg = compose_cfg(["augmentation=none", *overrides]).augmentation
    return augment.augment_batch(tf.constant(images), tf.constant(seed, tf.int64), cfg).numpy()


def test_vertical_flip_alone_flips_upside_down_exactly():
    images = random_splits().train.x[:16]
    out = augmented(["augmentation.vertical_flip=true"], images)
    flipped = [not np.array_equal(o, i) for o, i in zip(out, images, strict=True)]
    assert any(flipped) and not all(flipped)  # a coin per image
    for original, result in zip(images, out, strict=True):
        assert np.array_equal(result, original) or np.array_equal(result, original[::-1])


def test_brightness_shifts_every_pixel_of_an_image_by_one_amount():
    images = np.full((16, 8, 8, 3), 128, np.uint8)
    out = augmented(["augmentation.brightness=0.2"], images).astype(int)
    shifts = out[:, 0, 0, 0] - 128
    assert (out == (128 + shifts)[:, None, None, None]).all()  # uniform within each image
    assert np.abs(shifts).max() <= round(0.2 * 255) and len(set(shifts.tolist())) > 8


def test_contrast_scales_around_each_images_mean():
    rng = np.random.default_rng(5)
    images = rng.integers(96, 160, (16, 8, 8, 1), dtype=np.uint8)
    out = augmented(["augmentation.contrast=0.5"], images).astype(float)
    original = images.astype(float)
    np.testing.assert_allclose(out.mean(axis=(1, 2, 3)), original.mean(axis=(1, 2, 3)), atol=0.6)
    factors = out.std(axis=(1, 2, 3)) / original.std(axis=(1, 2, 3))
    assert ((factors > 0.48) & (factors < 1.52)).all() and np.ptp(factors) > 0.3


def test_fill_modes_decide_only_what_a_shift_uncovers():
    """Same seed, same shifts: the pixels a shift uncovers (where fill_value 0 and 255 differ)
    are filled differently by each mode; every other pixel is the same in all of them."""
    images = random_splits().train.x[:16]
    shift = ["augmentation.width_shift=0.3", "augmentation.height_shift=0.3"]

    def run(mode: str, value: int = 0) -> np.ndarray:
        overrides = [*shift, f"augmentation.fill_mode={mode}", f"augmentation.fill_value={value}"]
        return augmented(overrides, images).astype(int)

    uncovered = run("constant", 0) != run("constant", 255)
    assert 0.05 < uncovered.mean() < 0.6
    assert (run("constant", 255)[uncovered] >= run("constant", 0)[uncovered]).all()
    results = {mode: run(mode) for mode in ("nearest", "reflect", "wrap", "constant")}
    for mode, out in results.items():
        np.testing.assert_array_equal(out[~uncovered], results["constant"][~uncovered], mode)
    filled = [results[mode][uncovered] for mode in results]
    for i, first in enumerate(filled):
        for second in filled[i + 1 :]:
            assert (first != second).mean() > 0.3  # each mode fills its own way


def test_fields_are_overridable_and_checked():
    cfg = compose_cfg(["augmentation=tutorial", "augmentation.rotation=15"])
    assert cfg.augmentation.rotation == 15 and cfg.augmentation.zoom == 0.2
    with pytest.raises(RunnerError, match="fill_mode should be one of"):
        check_group(compose_cfg(["augmentation.fill_mode=mirror"]), "augmentation")
    with pytest.raises(RunnerError, match="zoom should be below 1"):
        check_group(compose_cfg(["augmentation.zoom=1.5"]), "augmentation")


def test_preview_command_writes_a_grid(workspace):
    result = subprocess.run(
        [sys.executable, "-m", "runner.preview", "data=digits", "augmentation=tutorial"],
        cwd=workspace.root,
        env=workspace.env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    [grid] = workspace.root.glob("outputs/runs/*/augmentation_tutorial.png")
    assert grid.read_bytes()[:4] == b"\x89PNG"
    assert str(grid) in result.stdout


def fitted_model(overrides: list[str], train_x: np.ndarray, tmp_path):
    """A LeNet with normalization fitted on `train_x`, saved and loaded back in safe mode."""
    import dataclasses

    from runner.augmentation import normalize

    cfg = compose_cfg(overrides)
    info = DataInfo("x", train_x.shape[1:], ("a", "b"))
    train = ArraySplit(train_x, np.zeros(len(train_x), np.int64))
    info = dataclasses.replace(info, preprocessing=tuple(normalize.fit(cfg.augmentation, train)))
    return build_and_reload(info, tmp_path)


def build_and_reload(info: DataInfo, tmp_path):
    """A LeNet for `info`, saved and loaded back in safe mode."""
    import keras

    from runner import models
    from runner.models.lenet import LeNetConfig

    model = models.build(LeNetConfig(name="lenet"), info)
    path = tmp_path / "model.keras"
    model.save(path)
    return keras.saving.load_model(path, safe_mode=True)


def normalized(model, x: np.ndarray, last: str) -> np.ndarray:
    import keras

    probe = keras.Model(model.input, model.get_layer(last).output)
    return np.asarray(probe.predict(x, verbose=0))


def test_featurewise_statistics_come_from_the_training_split_only(tmp_path):
    """Through the code a run uses (runner/training/inputs.py): dark training images, bright
    validation and test images; the model's statistics are the training images' alone."""
    from runner.training.inputs import with_normalization

    rng = np.random.default_rng(1)
    labels = np.zeros(200, np.int64)
    train = rng.integers(20, 80, (200, 8, 8, 3), dtype=np.uint8)  # dark
    other = rng.integers(180, 250, (200, 8, 8, 3), dtype=np.uint8)  # bright validation/test
    splits = Splits(
        ArraySplit(train, labels),
        ArraySplit(other, labels),
        ArraySplit(other, labels),
        DataInfo("x", (8, 8, 3), ("a", "b")),
    )
    cfg = compose_cfg(
        ["augmentation.featurewise_center=true", "augmentation.featurewise_std_normalization=true"]
    )
    info = with_normalization(cfg, splits).info
    model = build_and_reload(info, tmp_path)
    out_train = normalized(model, train, "featurewise")
    np.testing.assert_allclose(out_train.mean(axis=(0, 1, 2)), 0.0, atol=1e-3)
    np.testing.assert_allclose(out_train.std(axis=(0, 1, 2)), 1.0, atol=1e-2)
    # Other splits get the training statistics, so they stay far from zero mean.
    assert normalized(model, other, "featurewise").mean() > 5


def test_statistics_stream_from_disk_for_a_file_split(tmp_path):
    """A dataset streamed from disk (FileSplit) is fitted batch by batch, to the same values."""
    from PIL import Image

    from runner.augmentation import normalize
    from runner.data.base import FileSplit

    rng = np.random.default_rng(4)
    images = rng.integers(0, 255, (300, 8, 8, 3), dtype=np.uint8)  # more than one batch
    paths = []
    for index, image in enumerate(images):
        paths.append(str(tmp_path / f"{index}.png"))
        Image.fromarray(image).save(paths[-1])
    labels = np.zeros(len(images), np.int64)
    streamed = FileSplit(np.asarray(paths, dtype=object), labels, (8, 8), 3)
    cfg = compose_cfg(
        ["augmentation.featurewise_center=true", "augmentation.featurewise_std_normalization=true"]
    ).augmentation
    [(layer, _)] = normalize.fit(cfg, streamed)
    scaled = images.astype(np.float64) / 255
    mean, variance = np.asarray(layer.input_mean), np.asarray(layer.input_variance)
    np.testing.assert_allclose(mean, scaled.mean(axis=(0, 1, 2)), rtol=1e-5)
    np.testing.assert_allclose(variance, scaled.var(axis=(0, 1, 2)), rtol=1e-4)


def test_samplewise_normalization_standardizes_each_image(tmp_path):
    train = np.random.default_rng(2).integers(0, 255, (20, 8, 8, 1), dtype=np.uint8)
    model = fitted_model(["augmentation.samplewise_normalization=true"], train, tmp_path)
    out = normalized(model, train, "samplewise").reshape(20, -1)
    np.testing.assert_allclose(out.mean(axis=1), 0.0, atol=1e-4)
    np.testing.assert_allclose(out.std(axis=1), 1.0, atol=1e-3)


def test_zca_whitening_gives_identity_covariance_on_its_fitting_data(tmp_path):
    rng = np.random.default_rng(3)
    base = rng.normal(size=(3000, 8, 8, 1))
    correlated = base + 0.8 * np.roll(base, 1, axis=2)  # neighbouring pixels correlate
    train = np.clip(128 + 30 * correlated, 0, 255).astype(np.uint8)
    model = fitted_model(
        ["augmentation.zca_whitening=true", "augmentation.zca_epsilon=1e-6"], train, tmp_path
    )
    white = normalized(model, train, "zca").reshape(len(train), -1).astype(np.float64)
    covariance = np.cov(white, rowvar=False, bias=True)
    np.testing.assert_allclose(covariance, np.eye(64), atol=0.02)


def test_zca_refuses_large_images():
    from runner.augmentation import normalize

    cfg = compose_cfg(["augmentation.zca_whitening=true"]).augmentation
    with pytest.raises(RunnerError, match="meant for small images"):
        normalize.fit(cfg, ArraySplit(np.zeros((4, 64, 64, 3), np.uint8), np.zeros(4, np.int64)))


def test_placement_model_augments_inside_the_model_while_training():
    """(Through the CLI, with statistics streamed from disk: tests/test_image_e2e.py, the
    cats-vs-dogs run.)"""
    import keras

    cfg = compose_cfg(["augmentation=tutorial", "augmentation.placement=model"]).augmentation
    inner = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Identity()], name="inner")
    wrapped = augment.wrap_model(inner, cfg, seed=1)
    images = random_splits().train.x[:8].astype("float32")
    np.testing.assert_array_equal(np.asarray(wrapped(images, training=False)), images)
    assert not np.array_equal(np.asarray(wrapped(images, training=True)), images)
    assert augment.unwrap_model(wrapped) is inner
    # The input pipeline leaves the batches alone: the model does the work.
    splits = random_splits()
    train, _ = input_pipelines(
        compose_cfg(
            ["augmentation=tutorial", "augmentation.placement=model", "trainer.batch_size=16"]
        ),
        splits,
    )
    plain, _ = input_pipelines(compose_cfg(["augmentation=none", "trainer.batch_size=16"]), splits)
    np.testing.assert_array_equal(np.concatenate(batches(train)), np.concatenate(batches(plain)))
