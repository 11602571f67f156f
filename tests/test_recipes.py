"""Today's recipes: schedules, optimizers and their shared keys, label smoothing, the new
augmentations (deterministic per batch seed), test-time augmentation and the new models."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from omegaconf import OmegaConf

from runner.config.checks import check_group
from runner.core.errors import RunnerError
from runner.data.base import ArraySplit, DataInfo, Splits
from tests.conftest import compose_config
from tests.test_augment import batches, input_pipelines, random_splits
from tests.test_config import options


def optimizer_cfg(name: str = "sgd", **keys):
    return compose_config([f"optimizer={name}", *(f"optimizer.{k}={v}" for k, v in keys.items())])


def rates(cfg, epochs: int, steps_per_epoch: int, at: list[int]) -> list[float]:
    from runner.optimizers.schedules import learning_rate

    schedule = learning_rate(cfg.optimizer, epochs=epochs, steps_per_epoch=steps_per_epoch)
    return [float(schedule(step)) for step in at]


def test_cosine_warms_up_linearly_then_decays_to_its_floor():
    cfg = optimizer_cfg(lr=0.1, schedule="cosine", warmup_epochs=1, min_lr=0.001)
    # 4 epochs of 10 steps: warmup over steps 0-10, then a half cosine over 30 steps.
    got = rates(cfg, 4, 10, [0, 5, 10, 25, 40])
    middle = 0.001 + (0.1 - 0.001) * 0.5 * (1 + math.cos(math.pi * 15 / 30))
    assert got == pytest.approx([0.0, 0.05, 0.1, middle, 0.001], rel=1e-4, abs=1e-7)
    no_warmup = rates(optimizer_cfg(lr=0.1, schedule="cosine"), 4, 10, [0, 20, 40])
    assert no_warmup == pytest.approx([0.1, 0.05, 0.0], abs=1e-6)


def test_onecycle_rises_from_a_25th_to_the_peak_then_anneals():
    cfg = optimizer_cfg(lr=0.4, schedule="onecycle", min_lr=0.0)
    # 10 epochs of 10 steps, the peak after 30% of them.
    start, before_peak, peak, end = rates(cfg, 10, 10, [0, 15, 30, 100])
    assert start == pytest.approx(0.4 / 25)
    assert start < before_peak < peak == pytest.approx(0.4)
    assert end == pytest.approx(0.0, abs=1e-7)


def test_onecycle_with_a_linear_anneal_is_airbenchs_triangle():
    """div_factor 5, anneal_strategy=linear: 0.2 of the peak at the start, straight up to the
    peak at 23% of the steps, straight down to min_lr (0.07 of the peak) at the end."""
    cfg = optimizer_cfg(
        lr=1.0,
        schedule="onecycle",
        warmup_epochs=2.3,
        min_lr=0.07,
        div_factor=5,
        anneal_strategy="linear",
    )
    got = rates(cfg, 10, 100, [0, 115, 230, 615, 1000])
    assert got == pytest.approx([0.2, 0.6, 1.0, 0.535, 0.07], rel=1e-4)
    with pytest.raises(RunnerError, match=r"optimizer.div_factor should be >= 1"):
        check_group(optimizer_cfg(div_factor=0.5), "optimizer")


def test_step_and_piecewise_change_the_rate_at_their_milestones():
    step = optimizer_cfg(lr=0.1, schedule="step", milestones="[2,3]", gamma=0.5)
    assert rates(step, 4, 10, [0, 19, 20, 30, 39]) == pytest.approx([0.1, 0.1, 0.05, 0.025, 0.025])
    piecewise = optimizer_cfg(lr=0.1, schedule="piecewise", milestones="[1]", rates="[0.003]")
    assert rates(piecewise, 4, 10, [0, 10, 39]) == pytest.approx([0.1, 0.003, 0.003])


def test_a_onecycle_optimizer_saves_and_loads_back_in_safe_mode(tmp_path):
    """The one schedule of the runner's own is registered with Keras: a checkpoint of a model
    compiled with it loads back (compiled, safe mode) and keeps stepping on the same curve."""
    import keras

    from runner import optimizers

    cfg = optimizer_cfg("adamw", lr=0.01, schedule="onecycle", anneal_strategy="linear")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(
        optimizer=optimizers.build(cfg.optimizer, epochs=2, steps_per_epoch=5), loss="mse"
    )
    model.fit(np.ones((20, 3)), np.ones((20, 2)), batch_size=4, epochs=1, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    assert int(loaded.optimizer.iterations) == 5
    assert optimizers.current_learning_rate(loaded.optimizer) == pytest.approx(
        optimizers.current_learning_rate(model.optimizer)
    )


@pytest.mark.parametrize("name", options("optimizer"))
def test_every_optimizer_takes_the_shared_keys_and_trains(name):
    import keras

    from runner import optimizers

    cfg = optimizer_cfg(name, clipnorm=1.0, ema=True, gradient_accumulation_steps=2)
    check_group(cfg, "optimizer")
    optimizer = optimizers.build(cfg.optimizer, epochs=1, steps_per_epoch=4)
    assert optimizer.clipnorm == 1.0 and optimizer.use_ema
    assert optimizer.gradient_accumulation_steps == 2
    model = keras.Sequential(
        [keras.Input((4, 4, 1)), keras.layers.Flatten(), keras.layers.Dense(3)]
    )
    model.compile(optimizer=optimizer, loss="mse")
    before = [w.copy() for w in model.get_weights()]
    rng = np.random.default_rng(0)
    model.fit(rng.random((16, 4, 4, 1)), rng.random((16, 3)), batch_size=4, verbose=0)
    assert any(not np.allclose(a, b) for a, b in zip(before, model.get_weights(), strict=True))


def test_decoupled_weight_decay_shrinks_weights_with_no_gradient():
    import keras

    from runner import optimizers

    cfg = optimizer_cfg("sgd", lr=0.1, weight_decay=0.5)
    optimizer = optimizers.build(cfg.optimizer, epochs=1, steps_per_epoch=1)
    weight = keras.Variable(np.ones(3, "float32"))
    optimizer.apply_gradients([(keras.ops.zeros(3), weight)])
    # w -= lr * decay * w: 1 - 0.1 * 0.5
    assert np.asarray(weight) == pytest.approx(np.full(3, 0.95))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["optimizer.warmup_epochs=1"], "needs optimizer.schedule=cosine or onecycle"),
        (["optimizer.schedule=cosine", "optimizer.min_lr=1"], "should be below optimizer.lr"),
        (["optimizer.schedule=step"], "needs optimizer.milestones"),
        (["optimizer.schedule=step", "optimizer.milestones=[5,2]"], "ascending"),
        (["optimizer.schedule=step", "optimizer.milestones=[2]", "optimizer.gamma=1.5"], "gamma"),
        (
            ["optimizer.schedule=piecewise", "optimizer.milestones=[2,4]", "optimizer.rates=[1]"],
            "one rate per milestone",
        ),
        (["optimizer.weight_decay=-0.1"], "optimizer.weight_decay should be >= 0"),
        (["optimizer.ema_momentum=1"], "optimizer.ema_momentum should be in [0, 1)"),
        (["optimizer=sgd", "optimizer.momentum=1"], "optimizer.momentum should be in [0, 1)"),
        (["optimizer.clipnorm=0"], "optimizer.clipnorm should be a positive number"),
        (["optimizer.gradient_accumulation_steps=0"], "gradient_accumulation_steps"),
        (
            ["optimizer=schedule_free_adamw", "optimizer.schedule=cosine"],
            "cannot drive optimizer=schedule_free_adamw",
        ),
        (["trainer.label_smoothing=1"], "trainer.label_smoothing should be in [0, 1)"),
        (["augmentation.randaugment=2", "augmentation.augmix=true"], "choose one"),
        (["augmentation.random_erasing=1.5"], "augmentation.random_erasing should be in [0, 1]"),
        (["augmentation.randaugment_magnitude=11"], "randaugment_magnitude should be in [0, 10]"),
        (["augmentation.mixup=-1"], "augmentation.mixup should be >= 0"),
        (["optimizer.lookahead_decay=1"], "optimizer.lookahead_decay should be in [0, 1)"),
        (["optimizer.lookahead_steps=0"], "optimizer.lookahead_steps should be >= 1"),
        (["optimizer=sgd", "optimizer.norm_bias_lr_scale=0"], "norm_bias_lr_scale should be"),
    ],
)
def test_bad_recipe_values_are_one_line_before_any_work(overrides, message):
    from runner.config.checks import check_config

    with pytest.raises(RunnerError, match=re.escape(message)):
        check_config(compose_config(overrides))


def test_schedule_free_adamw_takes_its_warmup_in_steps():
    from runner import optimizers

    cfg = optimizer_cfg("schedule_free_adamw", warmup_epochs=2)
    check_group(cfg, "optimizer")
    optimizer = optimizers.build(cfg.optimizer, epochs=5, steps_per_epoch=7)
    assert optimizer.warmup_steps == 14


NEW_AUGMENTATIONS = [
    "augmentation.random_crop=4",
    "augmentation.random_erasing=1.0",
    "augmentation.randaugment=2",
    "augmentation.augmix=true",
]


@pytest.mark.parametrize("key", NEW_AUGMENTATIONS)
def test_each_new_augmentation_changes_training_batches_only_and_replays_per_epoch(key):
    cfg = compose_config([key, "trainer.batch_size=16"])
    splits = random_splits()
    train, validation = input_pipelines(cfg, splits, epochs=range(2))
    np.testing.assert_array_equal(np.concatenate(batches(validation)), splits.val.x)
    plain, _ = input_pipelines(compose_config(["trainer.batch_size=16"]), splits, range(2))
    augmented, unaugmented = np.concatenate(batches(train)), np.concatenate(batches(plain))
    assert augmented.shape == unaugmented.shape and augmented.dtype == np.uint8
    changed = (augmented != unaugmented).reshape(len(augmented), -1).any(axis=1)
    assert changed.mean() > 0.5, f"{key} left most training images unchanged"
    # A run resumed at epoch 2 sees exactly the second epoch of the whole stream.
    alone, _ = input_pipelines(cfg, splits, epochs=range(1, 2))
    np.testing.assert_array_equal(np.concatenate(batches(alone)), augmented[len(splits.train) :])


def test_random_crop_shifts_whole_images_within_the_padding():
    import tensorflow as tf

    from runner.augmentation.regions import random_crop

    image = np.zeros((1, 8, 8, 1), "float32")
    image[0, 3, 3, 0] = 255.0  # one bright pixel
    batch = np.repeat(image, 50, axis=0)
    out = random_crop(tf.constant(batch), tf.constant([1, 2], tf.int64), 2, False).numpy()
    assert out.shape == batch.shape
    rows, cols = np.nonzero(out[..., 0].reshape(50, -1) == 255.0)
    assert len(rows) == 50  # every pixel moved whole, none lost (the shift stays within 2)
    offsets = {divmod(c, 8) for c in cols}
    assert len(offsets) > 5 and all(1 <= r <= 5 and 1 <= c <= 5 for r, c in offsets)


@pytest.mark.parametrize("key", ["augmentation.mixup=0.4", "augmentation.cutmix=1.0"])
def test_mixing_blends_images_and_one_hot_labels_in_the_same_share(key):
    cfg = compose_config([key, "trainer.batch_size=16"])
    x = np.stack([np.full((8, 8, 1), 10.0 * k, "uint8") for k in range(16)])
    split = ArraySplit(x, np.arange(16) % 4)
    info = DataInfo("x", (8, 8, 1), tuple("abcd"))
    splits = Splits(split, split, split, info)
    train, validation = input_pipelines(cfg, splits)
    images, labels = next(iter(train.as_numpy_iterator()))
    assert labels.shape == (16, 4)  # one-hot, so they can be blended
    np.testing.assert_allclose(labels.sum(axis=1), 1.0, atol=1e-6)
    assert (labels.max(axis=1) < 1).any()  # some labels are soft
    # Each image's mean pixel is its label's blend of the two source images' values.
    order = np.argmax(labels, axis=1)
    assert images.dtype == np.float32 and len(order) == 16
    _, val_labels = next(iter(validation.as_numpy_iterator()))
    assert val_labels.shape == (16, 4) and set(np.unique(val_labels)) == {0.0, 1.0}


def test_mixup_image_blend_matches_its_label_blend():
    import tensorflow as tf

    from runner.augmentation import mixing

    cfg = OmegaConf.create({"mixup": 0.4, "cutmix": 0.0})
    values = np.arange(8, dtype="float32") * 30
    images = np.broadcast_to(values[:, None, None, None], (8, 4, 4, 1)).copy()
    labels = np.eye(8, dtype="float32")
    mixed, soft = mixing.mix(tf.constant(images), tf.constant(labels), tf.constant([3, 4]), cfg)
    mixed, soft = mixed.numpy(), soft.numpy()
    lam = soft[0, 0]
    assert 0 < lam < 1 and soft[0, 7] == pytest.approx(1 - lam)  # blended with the reversed batch
    assert mixed[0].mean() == pytest.approx(lam * values[0] + (1 - lam) * values[7], rel=1e-5)


def test_label_smoothing_is_refused_for_multi_label_data():
    from runner.training import labels

    cfg = compose_config(["trainer.label_smoothing=0.1"])
    with pytest.raises(RunnerError, match="multi-label"):
        labels.check(cfg, DataInfo("voc", (8, 8, 3), tuple("abc"), "multilabel"))
    labels.check(cfg, DataInfo("digits", (8, 8, 1), tuple("abc")))  # multi-class: fine


def test_label_smoothing_trains_towards_smoothed_targets():
    from runner.models import heads

    info = DataInfo("x", (4, 4, 1), tuple("abcd"))
    loss, _ = heads.loss_and_metrics(info, label_smoothing=0.2, one_hot=True)
    target = np.eye(4, dtype="float32")[[0]]
    # The loss is lowest at the smoothed target (0.85 / 0.05s), not at the one-hot one.
    smoothed = np.array([[0.85, 0.05, 0.05, 0.05]], "float32")
    assert float(loss(target, smoothed)) < float(loss(target, np.array([[0.97, 0.01, 0.01, 0.01]])))


def test_ema_validates_and_checkpoints_the_averaged_weights_and_resumes_from_the_raw():
    import keras

    from runner.training.callbacks import EmaWeights

    rng = np.random.default_rng(0)
    x, y = rng.random((32, 3)).astype("float32"), rng.random((32, 1)).astype("float32")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.1, use_ema=True, ema_momentum=0.5), loss="mse")
    seen: dict[str, list] = {"checkpoint": [], "state": []}

    class Record(keras.callbacks.Callback):
        def __init__(self, key):
            super().__init__()
            self.key = key

        def on_epoch_end(self, epoch, logs=None):
            seen[self.key].append(([w.copy() for w in self.model.get_weights()], logs["val_loss"]))

    ema = EmaWeights.create()
    callbacks = [ema.swap, ema.swap_in, Record("checkpoint"), ema.swap_out, Record("state")]
    model.fit(x, y, validation_data=(x, y), epochs=2, batch_size=8, callbacks=callbacks, verbose=0)
    for (averaged, val_loss), (raw, _) in zip(seen["checkpoint"], seen["state"], strict=True):
        assert not np.allclose(averaged[0], raw[0])
        probe = keras.models.clone_model(model)
        probe.set_weights(averaged)
        probe.compile(loss="mse")
        # Validation scored the weights the checkpoint holds: the average.
        assert probe.evaluate(x, y, verbose=0) == pytest.approx(val_loss, rel=1e-5)


def test_flip_tta_averages_each_image_with_its_mirror():
    from runner.evaluation.tta import tta_mean

    images = np.arange(2 * 2 * 3, dtype="float32").reshape(2, 2, 3, 1)

    def left_column(batch):
        return batch[:, :, 0, 0]

    got = tta_mean(left_column, images, "flip")
    np.testing.assert_allclose(got, (images[:, :, 0, 0] + images[:, :, 2, 0]) / 2)


def test_translate_tta_shifts_by_a_pixel_with_reflected_edges_on_arrays_and_tensors():
    """flip_translate: six views weighing 1/4 (the image, its mirror) and 1/8 (each shifted a
    pixel down-right or up-left, and their mirrors); NumPy (JAX path) and tf.data agree."""
    import tensorflow as tf

    from runner.evaluation.tta import shifted, tta_mean, views

    x = np.arange(2 * 4 * 5 * 3, dtype="float32").reshape(2, 4, 5, 3)
    down_right, _ = shifted(0)(x, None)
    assert down_right.shape == x.shape
    np.testing.assert_array_equal(down_right[:, 1:, 1:], x[:, :-1, :-1])
    np.testing.assert_array_equal(down_right[:, 0, 1:], x[:, 1, :-1])  # row -1 reflects row 1
    up_left, _ = shifted(2)(x, None)
    np.testing.assert_array_equal(up_left[:, :-1, :-1], x[:, 1:, 1:])
    np.testing.assert_array_equal(up_left[:, -1, :-1], x[:, -2, 1:])
    weighted = views("flip_translate")
    assert [w for w, _ in weighted] == [0.25, 0.25, 0.125, 0.125, 0.125, 0.125]
    for _, view in weighted[1:]:
        np.testing.assert_array_equal(view(tf.constant(x), None)[0].numpy(), view(x, None)[0])

    def top_left_pixel(batch):
        return batch[:, 0, 0, :]

    expected = (
        0.25 * (x[:, 0, 0] + x[:, 0, -1])
        + 0.125 * (x[:, 1, 1] + x[:, 1, -2])  # down-right: (0, 0) shows (1, 1), reflected
        + 0.125 * (x[:, 1, 1] + x[:, 1, -2])  # up-left: (0, 0) shows (1, 1)
    )
    np.testing.assert_allclose(tta_mean(top_left_pixel, x, "flip_translate"), expected)


@pytest.mark.parametrize(
    ("name", "shape", "params"),
    [
        ("bn_cnn", (28, 28, 1), 289_066),
        ("resnet18", (32, 32, 3), 11_183_562),
        ("airbench", (32, 32, 3), 1_973_944),
    ],
)
def test_the_new_models_have_the_parameter_counts_the_readme_states(name, shape, params):
    from runner import models

    cfg = compose_config([f"model={name}"])
    model = models.build(cfg.model, DataInfo("x", shape, tuple("abcdefghij")))
    assert model.count_params() == params and model.output_shape == (None, 10)


def test_a_onecycle_recipe_run_logs_its_lr_curve_and_tta_scores(workspace, tmp_path):
    """Through the CLI: one-cycle AdamW with EMA, label smoothing, MixUp/CutMix, RandAugment,
    erasing and the padded crop trains digits; `lr` rises then falls in MLflow, the test split
    is also scored with flip TTA, and the model predicts with --tta flip_translate."""
    from PIL import Image

    result = workspace.run(
        "data=digits",
        "model=bn_cnn",
        "model.filters=[8,16]",
        "trainer.epochs=3",
        "optimizer=adamw",
        "optimizer.schedule=onecycle",
        "optimizer.lr=0.01",
        "optimizer.warmup_epochs=1",
        "optimizer.ema=true",
        "trainer.label_smoothing=0.1",
        "augmentation.mixup=0.2",
        "augmentation.cutmix=1.0",
        "augmentation.randaugment=1",
        "augmentation.random_erasing=0.25",
        "augmentation.random_crop=2",
        "evaluate.tta=flip",
        "callbacks.early_stopping.enabled=false",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    client = workspace.client()
    (run,) = client.search_runs(["1"])
    assert run.info.status == "FINISHED"
    curve = [
        m.value
        for m in sorted(client.get_metric_history(run.info.run_id, "lr"), key=lambda m: m.step)
    ]
    # After epoch 1 the peak (the warmup's end), then the anneal down.
    assert (
        len(curve) == 3
        and curve[0] == pytest.approx(0.01, rel=1e-3)
        and curve[0] > curve[1] > curve[2]
    )
    metrics = run.data.metrics
    for name in ("test_accuracy", "test_tta_accuracy", "test_tta_loss"):
        assert 0 <= metrics[name] <= (1 if "accuracy" in name else 100), name
    assert "averages each test image with its mirror" in result.stdout  # digits: a warning
    assert run.data.params["trainer.label_smoothing"] == "0.1"

    image = tmp_path / "digit.png"
    Image.fromarray(np.full((28, 28), 128, np.uint8)).save(image)
    out = tmp_path / "predictions"
    predicted = workspace.module(
        "runner.predict",
        "--model",
        f"runs:/{run.info.run_id}/model",
        "--tracking-uri",
        workspace.tracking_uri,
        "--tta",
        "flip_translate",
        "--out",
        str(out),
        str(image),
    )
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    import json

    (row,) = json.loads((out / "predictions.json").read_text())
    assert len(row["labels"]) == 3 and 0 < row["probabilities"][0] <= 1


@pytest.mark.parametrize("name", ["mnist_tuned", "fashion_mnist_tuned", "cifar10_tuned"])
def test_each_tuned_preset_passes_the_checks_and_its_sweep_tunes_keys_it_has(name):
    from runner.config.checks import check_config

    cfg = compose_config([f"experiment={name}"])
    check_config(cfg)
    assert cfg.augmentation.name == name and "tuned recipe" in cfg.notes
    swept = compose_config([f"hparams_search={name}"])
    assert swept.model.name == cfg.model.name and swept.optimizer.lr == cfg.optimizer.lr
    for key in swept.hydra.sweeper.params:
        assert OmegaConf.select(cfg, key, default="missing") != "missing", key


def test_a_tuned_sweep_runs_through_optuna_on_digits(workspace):
    """The sweep behind a tuned preset, shrunk to two one-epoch trials on the offline digits:
    two finished child runs under one parent, each with its sampled values."""
    result = workspace.run(
        "hparams_search=mnist_tuned",
        "data=digits",
        "model.filters=[8]",
        "trainer.epochs=1",
        "hydra.sweeper.n_trials=2",
        "logger.log_model=false",
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    runs = workspace.client().search_runs(["1"])
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 2 and all(r.info.status == "FINISHED" for r in children)
    rates = {r.data.params["optimizer.lr"] for r in children}
    assert len(rates) == 2 and all(0.0005 <= float(v) <= 0.02 for v in rates)


def test_validation_split_0_trains_on_every_training_image(workspace):
    """trainer.validation_split=0 (what the CIFAR records do): a callback that watches val_*
    is refused in one line; without one, the run trains on all of train, reports no val_*
    metric, and checkpoints and the objective watch the training accuracy."""
    from tests.conftest import FAST, one_line_error

    job = ["experiment=digits_lenet", "trainer.validation_split=0", *FAST]
    refused = workspace.run(*job)
    one_line_error(
        refused,
        "trainer.validation_split=0 holds out no validation data",
        "callbacks.early_stopping.monitor='val_loss'",
    )
    result = workspace.run(*job, "callbacks.early_stopping.enabled=false", "trainer.epochs=2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "no validation split (trainer.validation_split=0)" in result.stdout + result.stderr
    client = workspace.client()
    (run,) = [r for r in client.search_runs(["1"]) if r.info.status == "FINISHED"]
    params, metrics = run.data.params, run.data.metrics
    assert params["data.size.val"] == "0"
    # scikit-learn's digits are 1,797 images: what the test split leaves all trains.
    assert int(params["data.size.train"]) + int(params["data.size.test"]) == 1797
    assert not [name for name in metrics if name.startswith("val_")]
    assert run.data.tags["objective_metric"] == "accuracy"
    assert 0 <= metrics["best_accuracy"] <= 1 and "test_accuracy" in metrics
    assert run.data.tags["evaluated_weights"].startswith("best: best.keras")
    assert "by accuracy" in run.data.tags["evaluated_weights"]
