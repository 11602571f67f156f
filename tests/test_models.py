"""Architectures match the tutorials; input shape and classes come from the data."""

from __future__ import annotations

import numpy as np
import pytest

from runner import models
from runner.core.errors import RunnerError
from runner.data.base import DataInfo
from runner.models.cifar_cnn import CifarCNNConfig
from runner.models.convnet_small import ConvNetSmallConfig
from runner.models.lenet import LeNetConfig
from runner.models.mlp import MLPConfig
from runner.models.resnet import ResNetConfig
from runner.models.smallvggnet import SmallVGGNetConfig
from runner.models.vgg16 import VGG16Config

DIGITS = tuple("0123456789")


def conv(k: int, c_in: int, c_out: int) -> int:
    return k * k * c_in * c_out + c_out


def dense(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


def test_lenet_parameter_count_matches_spec():
    # CONV20 5x5 same, pool -> 14x14; CONV50 5x5 same, pool -> 7x7; FC500; softmax 10.
    expected = conv(5, 1, 20) + conv(5, 20, 50) + dense(7 * 7 * 50, 500) + dense(500, 10)
    model = models.build(LeNetConfig(name="lenet"), DataInfo("mnist", (28, 28, 1), DIGITS))
    assert model.count_params() == expected == 1_256_080


def test_cifar_cnn_parameter_count_matches_spec():
    # CONV32 3x3 valid -> 30x30, pool -> 15x15, Dense 1024, Dense 10.
    expected = conv(3, 3, 32) + dense(15 * 15 * 32, 1024) + dense(1024, 10)
    info = DataInfo("cifar10", (32, 32, 3), DIGITS)
    assert models.build(CifarCNNConfig(name="cifar_cnn"), info).count_params() == expected


def test_mlp_follows_the_data_shape():
    info = DataInfo("animals", (32, 32, 3), ("cats", "dogs", "panda"))
    model = models.build(MLPConfig(name="mlp"), info)
    expected = dense(3072, 1024) + dense(1024, 512) + dense(512, 3)
    assert model.count_params() == expected
    assert model.output_shape == (None, 3)


def test_binary_task_gets_one_sigmoid_output():
    info = DataInfo("cats_vs_dogs", (28, 28, 3), ("cat", "dog"), task="binary")
    model = models.build(LeNetConfig(name="lenet"), info)
    assert model.output_shape == (None, 1)
    assert model.layers[-1].activation.__name__ == "sigmoid"


def test_unknown_builder_and_impossible_shapes_are_clear():
    info = DataInfo("mnist", (28, 28, 1), DIGITS)
    with pytest.raises(RunnerError, match="model.name should be one of"):
        models.build(LeNetConfig(name="alexnet"), info)
    with pytest.raises(RunnerError, match="cannot be built for data=tiny"):
        models.build(CifarCNNConfig(name="cifar_cnn"), DataInfo("tiny", (2, 2, 1), DIGITS))


def test_cats_vs_dogs_convnet_parameter_count_matches_spec():
    info = DataInfo("cats_vs_dogs", (150, 150, 3), ("cat", "dog"), task="binary")
    model = models.build(ConvNetSmallConfig(name="convnet_small"), info)
    assert model.count_params() == 3_453_121
    assert model.output_shape == (None, 1)
    with_dropout = models.build(ConvNetSmallConfig(name="convnet_small", dropout=0.5), info)
    assert with_dropout.count_params() == 3_453_121
    assert any(layer.name == "flatten_dropout" for layer in with_dropout.layers)


def test_vgg16_parameter_count_matches_the_paper():
    info = DataInfo("imagenet", (224, 224, 3), tuple(str(i) for i in range(1000)))
    assert models.build(VGG16Config(name="vgg16"), info).count_params() == 138_357_544


def test_resnet20_matches_the_paper_and_refuses_a_depth_that_is_not_6n_plus_2():
    def conv_bn(c_in: int, c_out: int, k: int = 3) -> int:
        return k * k * c_in * c_out + 4 * c_out  # no bias; BN's gamma, beta, mean, variance

    def block(c_in: int, c_out: int) -> int:
        shortcut = conv_bn(c_in, c_out, k=1) if c_in != c_out else 0
        return conv_bn(c_in, c_out) + conv_bn(c_out, c_out) + shortcut

    widths = [16, 16, 16, 16, 32, 32, 32, 64, 64, 64]  # the stem, then three blocks per stage
    expected = conv_bn(3, 16) + sum(map(block, widths, widths[1:])) + dense(64, 10)
    info = DataInfo("cifar10", (32, 32, 3), DIGITS)
    model = models.build(ResNetConfig(name="resnet"), info)
    assert model.count_params() == expected == 274_042
    assert model.get_layer("pool").output.shape[1:] == (64,)
    assert model.get_layer("stage3_block3_out").output.shape[1:3] == (8, 8)  # two stride-2 stages
    with pytest.raises(RunnerError, match=r"model.depth should be 6n \+ 2"):
        ResNetConfig(name="resnet", depth=21).check("model")


def test_smallvggnet_and_simple_nn_build_for_the_animals_data():
    info = DataInfo("animals", (64, 64, 3), ("cats", "dogs", "panda"))
    model = models.build(SmallVGGNetConfig(name="smallvggnet"), info)
    convs = [
        layer
        for layer in model.layers
        if layer.name.endswith(tuple("123")) and "conv" in layer.name
    ]
    assert len(convs) == 6  # 1 + 2 + 3
    assert model.get_layer("flatten").output.shape[1:] == (8 * 8 * 128,)  # three 2x2 pools
    assert model.output_shape == (None, 3)
    simple = models.build(
        MLPConfig(name="simple_nn"), DataInfo("animals", (32, 32, 3), info.class_names)
    )
    assert simple.count_params() == dense(3072, 1024) + dense(1024, 512) + dense(512, 3)


def test_multilabel_head_is_independent_sigmoids():
    info = DataInfo("voc", (32, 32, 3), tuple(f"c{i}" for i in range(20)), task="multilabel")
    model = models.build(LeNetConfig(name="lenet"), info)
    assert model.output_shape == (None, 20)
    assert model.layers[-1].activation.__name__ == "sigmoid"


def test_multilabel_metrics_against_hand_computed_values():
    from runner.evaluation.test_split import multilabel_metrics

    y_true = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 0]])  # class 2 never present
    scores = np.array([[0.9, 0.2, 0.1], [0.3, 0.8, 0.2], [0.6, 0.15, 0.3], [0.2, 0.1, 0.05]])
    y_pred = (scores >= 0.5).astype(int)
    metrics, per_class_ap = multilabel_metrics(y_true, y_pred, scores)
    # Class 0 ranks both positives first: AP 1. Class 1: positive, negative, positive, negative
    # -> precision 1 at recall 0.5, 2/3 at recall 1 -> AP 0.5 * 1 + 0.5 * 2/3.
    assert per_class_ap == pytest.approx({0: 1.0, 1: 0.5 + 1 / 3})
    assert metrics["test_mAP"] == pytest.approx((1.0 + 0.5 + 1 / 3) / 2)
    # F1: class 0 is 1, class 1 is 2/3 (one of two found); the absent class 2 is left out of
    # the macro average as it is of mAP. Micro: 3 found of 4, no false positive -> 6/7.
    assert metrics["test_f1_macro"] == pytest.approx((1 + 2 / 3) / 2)
    assert metrics["test_f1_micro"] == pytest.approx(6 / 7)


def test_multilabel_heads_name_accuracy_for_what_it_is_and_rank_by_pr_auc():
    from runner.models.heads import default_objective, loss_and_metrics

    info = DataInfo("voc", (32, 32, 3), tuple("abc"), "multilabel")
    loss, metrics = loss_and_metrics(info)
    assert [m.name for m in metrics] == ["binary_accuracy", "pr_auc"]
    assert default_objective(info) == "val_pr_auc"
    assert default_objective(DataInfo("x", (8, 8, 1), ("a", "b", "c"))) == "val_accuracy"
    assert default_objective(info, validated=False) == "pr_auc"


def test_inverse_time_schedule_is_the_tutorials_sgd_decay():
    """`schedule=inverse_time`: lr / (1 + decay_rate * step), decay_rate defaulting to
    lr / epochs (the tutorials' `SGD(decay=lr/epochs)`), stepping per batch."""
    from omegaconf import OmegaConf

    from runner import optimizers
    from runner.optimizers.schedules import learning_rate
    from runner.optimizers.sgd import SGDConfig

    cfg = OmegaConf.merge(
        OmegaConf.structured(SGDConfig), {"name": "sgd", "lr": 0.01, "schedule": "inverse_time"}
    )
    schedule = learning_rate(cfg, epochs=75, steps_per_epoch=10)
    for step in (0, 1, 100, 5000):
        expected = 0.01 / (1 + (0.01 / 75) * step)
        assert float(schedule(step)) == pytest.approx(expected, rel=1e-6)
    fixed = OmegaConf.merge(cfg, {"decay_rate": 0.5})
    assert float(learning_rate(fixed, epochs=75, steps_per_epoch=10)(4)) == pytest.approx(0.01 / 3)
    optimizer = optimizers.build(cfg, epochs=75, steps_per_epoch=10)
    # The optimizer reports the rate of its next step: what runs log as `learning_rate`.
    assert optimizers.current_learning_rate(optimizer) == pytest.approx(0.01)


@pytest.mark.parametrize("task", ["multiclass", "binary", "multilabel"])
def test_one_pass_scores_equal_what_keras_evaluate_reports(task):
    """The test split is predicted once; the loss (with its regularization) and the compiled
    metrics computed from those predictions are what `model.evaluate` would report."""
    import keras
    import tensorflow as tf

    from runner.evaluation.test_split import scored
    from runner.models import heads

    rng = np.random.default_rng(0)
    classes = ("cat", "dog") if task == "binary" else tuple("abcde")
    info = DataInfo("x", (6, 6, 1), classes, task)
    x = rng.random((103, 6, 6, 1)).astype("float32")  # batches of 32 and a short last one
    y = {
        "multiclass": rng.integers(0, 5, 103),
        "binary": rng.integers(0, 2, 103),
        "multilabel": (rng.random((103, 5)) > 0.7).astype("float32"),
    }[task]
    model = keras.Sequential(
        [
            keras.Input(info.input_shape),
            keras.layers.Flatten(),
            keras.layers.Dense(8, activation="relu", kernel_regularizer=keras.regularizers.L2(0.1)),
            keras.layers.Dense(
                1 if task == "binary" else 5,
                activation="softmax" if task == "multiclass" else "sigmoid",
            ),
        ]
    )
    loss, metrics = heads.loss_and_metrics(info)
    model.compile(optimizer="sgd", loss=loss, metrics=metrics)
    test = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    expected = model.evaluate(test, return_dict=True, verbose=0)
    predictions = model.predict(test, verbose=0)
    model.evaluate(test.take(1), verbose=0)  # what an earlier evaluation left is not counted
    got = scored(model, y, predictions)
    assert set(got) == set(expected) and len(got) >= 2
    for name, value in expected.items():
        assert got[name] == pytest.approx(float(value), rel=1e-5), name


def test_the_trainer_settings_reach_keras_compile_and_training_runs_with_them():
    """trainer.steps_per_execution and trainer.jit_compile, as runs compile with them (several
    steps per call into TensorFlow is refused with strategy=mirrored: test_errors.py)."""
    from runner.training.building import compile_for_training
    from tests.conftest import compose_config

    cfg = compose_config(
        [
            "experiment=digits_lenet",
            "trainer.steps_per_execution=3",
            "trainer.jit_compile=false",
            "model=mlp",
        ]
    )
    info = DataInfo("digits", (4, 4, 1), DIGITS)
    model = models.build(cfg.model, info)
    compile_for_training(
        model, cfg.optimizer, info, epochs=1, steps_per_epoch=10, trainer=cfg.trainer
    )
    assert model.steps_per_execution == 3 and model.jit_compile is False
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (40, 4, 4, 1)).astype("uint8"), np.arange(40) % 10
    before = [w.copy() for w in model.get_weights()]
    history = model.fit(x, y, batch_size=4, epochs=1, verbose=0)  # ten steps, calls of three
    assert np.isfinite(history.history["loss"][0])
    assert model.optimizer.iterations.numpy() == 10
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))
