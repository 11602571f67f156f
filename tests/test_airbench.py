"""airbench94's recipe pieces: the whitening stem fixed from the training patches, identity-
initialized convs, SGD with faster normalization shifts, and Lookahead weight averaging. No
TensorFlow here: `make test-jax` runs this module in the TensorFlow-free virtualenv too."""

from __future__ import annotations

import numpy as np
import pytest

from runner.data.base import ArraySplit, DataInfo
from tests.conftest import compose_config


def optimizer_cfg(name: str = "sgd", **keys):
    return compose_config([f"optimizer={name}", *(f"optimizer.{k}={v}" for k, v in keys.items())])


def test_airbench_whitening_stem_decorrelates_the_training_patches_and_stays_fixed():
    """The stem's first 12 filters give each 2x2 patch of the training images centred, with unit
    variance and no correlation between filters; the other 12 are their negatives; the stem
    kernel is not trained (its bias is), the group convs start as identities on their first
    channels."""
    import keras

    from runner import models

    rng = np.random.default_rng(0)
    # Correlated channels, as in photos: grey plus a little colour.
    grey = rng.random((300, 32, 32, 1)) * 200
    images = np.clip(grey + rng.random((300, 32, 32, 3)) * 55, 0, 255).astype("uint8")
    cfg = compose_config(
        ["model=airbench", "model.whitening_images=200", "model.whitening_epsilon=1e-9"]
    ).model
    model = models.build(cfg, DataInfo("x", (32, 32, 3), tuple("abcdefghij")))
    models.initialize(cfg, model, ArraySplit(images, rng.integers(0, 10, 300)))
    stem = model.get_layer("stem_conv")
    assert [w.name for w in stem.trainable_weights] == ["bias"] and stem.filters == 24
    seen = keras.Model(model.input, stem.output).predict(images[:200].astype("float32"), verbose=0)
    flat = seen.reshape(-1, 24).astype(np.float64)
    np.testing.assert_allclose(flat.mean(0), 0, atol=1e-3)
    np.testing.assert_allclose(flat[:, :12].std(0), 1, atol=0.01)
    np.testing.assert_allclose(np.corrcoef(flat[:, :12], rowvar=False), np.eye(12), atol=0.01)
    np.testing.assert_allclose(flat[:, 12:], -flat[:, :12], atol=1e-4)
    kernel = np.asarray(model.get_layer("group2_conv1").kernel)  # (3, 3, 64, 256)
    np.testing.assert_array_equal(kernel[1, 1, :, :64], np.eye(64))
    assert not kernel[..., :64].sum() - 64 and kernel[..., 64:].std() > 0


@pytest.mark.parametrize("train_bias", [True, False])
def test_airbench_whitening_stem_bias_learns_as_a_shift_unless_fixed(train_bias):
    """One SGD step: the whitening stem's kernel stays as `initialize` set it; its bias moves
    64x as far under norm_bias_lr_scale=64 as at the plain rate (it is a shift, as BatchNorm's
    beta), or not at all with train_whitening_bias=false."""
    import keras

    from runner import models, optimizers

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (8, 32, 32, 3)).astype("uint8")
    labels = np.eye(10, dtype="float32")[rng.integers(0, 10, 8)]

    def step(scale: float) -> tuple[np.ndarray, np.ndarray]:
        keras.utils.set_random_seed(0)
        cfg = compose_config(
            [
                "model=airbench",
                "model.widths=[8,8,8]",
                "model.whitening_images=8",
                f"model.train_whitening_bias={train_bias}",
                "optimizer=sgd",
                "optimizer.lr=0.01",
                f"optimizer.norm_bias_lr_scale={scale}",
            ]
        )
        model = models.build(cfg.model, DataInfo("x", (32, 32, 3), tuple("abcdefghij")))
        models.initialize(cfg.model, model, ArraySplit(images, labels.argmax(1)))
        stem = model.get_layer("stem_conv")
        stem.bias.assign(np.zeros(24, "float32"))  # small steps stay exact in float32 from 0
        before = [np.asarray(w).copy() for w in (stem.kernel, stem.bias)]
        model.compile(
            optimizer=optimizers.build(cfg.optimizer, epochs=1, steps_per_epoch=1),
            loss="categorical_crossentropy",
        )
        model.train_on_batch(images.astype("float32"), labels)
        np.testing.assert_array_equal(np.asarray(stem.kernel), before[0])
        return np.asarray(stem.bias) - before[1]

    plain, scaled = step(1.0), step(64.0)
    if train_bias:
        assert np.abs(plain).max() > 0
        np.testing.assert_allclose(scaled, 64 * plain, rtol=1e-4)
    else:
        assert not plain.any() and not scaled.any()


def test_airbench_learned_stem_is_trained_and_takes_its_width():
    from runner import models

    cfg = compose_config(["model=airbench", "model.stem=learned", "model.stem_width=8"]).model
    model = models.build(cfg, DataInfo("x", (32, 32, 3), tuple("abcdefghij")))
    models.initialize(cfg, model, ArraySplit(np.zeros((2, 32, 32, 3), "uint8"), np.zeros(2)))
    stem = model.get_layer("stem_conv")
    assert stem.trainable and stem.filters == 8


def test_norm_bias_lr_scale_speeds_up_only_the_normalization_shifts_and_saves(tmp_path):
    """One SGD step: BatchNorm's beta moves 64x as far as with plain SGD, the kernel as far;
    the weight decay stays unscaled; the optimizer round-trips through its config."""
    import keras

    from runner import optimizers

    def step(scale: float) -> tuple[np.ndarray, np.ndarray]:
        keras.utils.set_random_seed(0)
        model = keras.Sequential(
            [keras.Input((3,)), keras.layers.Dense(2), keras.layers.BatchNormalization()]
        )
        cfg = optimizer_cfg("sgd", lr=0.01, norm_bias_lr_scale=scale)
        model.compile(
            optimizer=optimizers.build(cfg.optimizer, epochs=1, steps_per_epoch=1), loss="mse"
        )
        kernel, beta = model.layers[0].kernel, model.layers[1].beta
        before = np.asarray(kernel).copy(), np.asarray(beta).copy()
        x = np.arange(12, dtype="float32").reshape(4, 3)
        model.train_on_batch(x, np.ones((4, 2), "float32"))
        return np.asarray(kernel) - before[0], np.asarray(beta) - before[1]

    plain_kernel, plain_beta = step(1.0)
    scaled_kernel, scaled_beta = step(64.0)
    np.testing.assert_allclose(scaled_kernel, plain_kernel, rtol=1e-5)
    np.testing.assert_allclose(scaled_beta, 64 * plain_beta, rtol=1e-4)
    assert np.abs(plain_beta).min() > 0

    cfg = optimizer_cfg("sgd", lr=0.1, weight_decay=0.5, norm_bias_lr_scale=64)
    optimizer = optimizers.build(cfg.optimizer, epochs=1, steps_per_epoch=1)
    beta = keras.Variable(np.ones(3, "float32"), name="beta")
    optimizer.apply_gradients([(keras.ops.zeros(3), beta)])
    assert np.asarray(beta) == pytest.approx(np.full(3, 0.95))  # 1 - 0.1 * 0.5, unscaled
    again = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert again.norm_bias_lr_scale == 64 and type(again) is type(optimizer)


def test_lookahead_averages_the_weights_on_its_schedule_and_at_each_epochs_last_step():
    """A weight whose gradient is always 1 under plain SGD (lr 0.1) against the same steps
    replayed in NumPy: every 2 steps the average takes in 1 - d of the weight, d = 0.8 (t/T)^3,
    and the weight is set to the average; the epoch's last step (odd) averages as well, so its
    progress since the last even step is not thrown away."""
    import keras

    from runner.training.callbacks import Lookahead

    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False)])
    model.layers[0].kernel.assign([[5.0]])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=lambda y, p: keras.ops.mean(p))
    epochs, steps = 2, 5
    x = np.ones((steps, 1), "float32")
    model.fit(
        x,
        x,
        batch_size=1,
        epochs=epochs,
        shuffle=False,
        verbose=0,
        callbacks=[Lookahead(every=2, final_decay=0.8, first_epoch=0)],
    )
    weight = 5.0
    for epoch in range(epochs):
        average = weight
        for batch in range(steps):
            weight -= 0.1  # d loss / d w = mean(x) = 1
            step = epoch * steps + batch + 1
            if step % 2 == 0 or batch == steps - 1:
                decay = 0.8 * (step / (epochs * steps)) ** 3
                average = decay * average + (1 - decay) * weight
                weight = average
    assert float(np.asarray(model.layers[0].kernel)[0, 0]) == pytest.approx(weight, abs=1e-5)
    assert weight != pytest.approx(5.0 - 0.1 * epochs * steps)


def test_lookahead_resumed_at_an_epoch_boundary_ends_as_an_uninterrupted_run():
    """A run of 3 epochs stopped after the first, then fitted on from epoch 1 with a new callback
    (as a resumed run), ends on the same weights: the model equals the average at each epoch's
    end, and the schedule counts steps from the phase's first epoch."""
    import keras

    from runner.training.callbacks import Lookahead

    class StopAfterFirst(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            self.model.stop_training = epoch == 0

    def trained(starts: list[int]) -> float:
        model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False)])
        model.layers[0].kernel.assign([[5.0]])
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss=lambda y, p: keras.ops.mean(p * p))
        x = np.ones((4, 1), "float32")
        for start in starts:
            stop = [StopAfterFirst()] if len(starts) > 1 and start == 0 else []
            model.fit(
                x,
                x,
                batch_size=1,
                initial_epoch=start,
                epochs=3,
                shuffle=False,
                verbose=0,
                callbacks=[Lookahead(every=3, final_decay=0.9, first_epoch=0), *stop],
            )
        return float(np.asarray(model.layers[0].kernel)[0, 0])

    assert trained([0, 1]) == pytest.approx(trained([0]), abs=1e-6)
    assert trained([0, 1]) != pytest.approx(trained([0, 0]), abs=1e-3)  # epochs do count
