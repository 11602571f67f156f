"""Transfer learning: keras.applications backbones, weights through the loopback mirror, the
feature-extraction and fine-tuning strategies, and zero-shot ImageNet prediction. No network:
weights files are written here by Keras itself (a network built with weights=None) in the legacy
HDF5 layout keras.applications publishes, under Keras' own file names."""

from __future__ import annotations

import importlib
import inspect
import json
from pathlib import Path

import h5py
import keras
import mlflow
import numpy as np
import pytest
from keras.src.legacy.saving.legacy_h5_format import save_weights_to_hdf5_group
from omegaconf import OmegaConf

from runner.core.errors import RunnerError
from runner.data.base import DataInfo
from runner.data.images import decode_files
from runner.models import backbones, pretrained
from runner.models.pretrained import PretrainedConfig
from tests import image_fixtures as fx
from tests.conftest import sha256

SMALL = "mobilenet_v2"  # the smallest listed backbone: 2.3 M parameters without its top


def model_cfg(**overrides):
    cfg = OmegaConf.merge(OmegaConf.structured(PretrainedConfig), {"name": "pretrained"})
    return OmegaConf.merge(cfg, overrides)


def write_weights(mirror_folder: Path, backbone: str, *, top: bool, seed: int = 3) -> Path:
    """Keras' network with fresh random weights, saved as the file keras.applications serves."""
    keras.utils.set_random_seed(seed)
    spec = backbones.spec_of(backbone)
    network = backbones.build_backbone(backbone, (spec.default_size, spec.default_size, 3), top=top)
    path = mirror_folder / (spec.top if top else spec.notop).path
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as stream:
        save_weights_to_hdf5_group(stream, network)
    return path


def backbone_weights(model: keras.Model) -> dict[str, list[np.ndarray]]:
    return {
        layer.name: [np.asarray(w) for w in layer.get_weights()]
        for layer in pretrained.find_backbone(model).layers
        if layer.weights
    }


def file_weights(backbone: str, path: Path, size: int) -> dict[str, list[np.ndarray]]:
    network = backbones.build_backbone(backbone, (size, size, 3))
    network.load_weights(str(path))
    return {layer.name: layer.get_weights() for layer in network.layers if layer.weights}


# ------------------------------------------------------------------------------------ the table


@pytest.mark.parametrize("name", sorted(backbones.BACKBONES))
def test_weights_files_are_the_ones_keras_publishes(name):
    """Our table states what Keras keeps inside each constructor: check it against Keras' source."""
    spec = backbones.spec_of(name)
    module = importlib.import_module(getattr(keras.applications, spec.constructor).__module__)
    source = inspect.getsource(module)
    published = [v for v in vars(module).values() if isinstance(v, str) and "://" in v]
    for weights in (spec.notop, spec.top):
        url = f"https://storage.googleapis.com/{weights.path}"
        assert any(url.startswith(prefix) for prefix in published), (url, published)
        if weights.md5:
            assert f'"{weights.md5}"' in source
        else:  # Keras names the MobileNets' files by alpha and size and publishes no hash
            assert name.startswith("mobilenet") and "file_hash" not in source
    assert importlib.import_module(f"keras.applications.{spec.module}").preprocess_input
    class_index = importlib.import_module("keras.src.applications.imagenet_utils")
    assert backbones.CLASS_INDEX.md5 in inspect.getsource(class_index)
    assert class_index.CLASS_INDEX_PATH.endswith(backbones.CLASS_INDEX.name)


@pytest.mark.parametrize("name", sorted(backbones.BACKBONES))
def test_preprocessing_layers_equal_the_backbones_preprocess_input(name):
    images = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 3)).astype("float32")
    expected = backbones.preprocess_input(name, images.copy())
    x = keras.ops.convert_to_tensor(images)
    for layer in backbones.preprocessing_layers(name):
        x = layer(x)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(x), expected, rtol=1e-6, atol=1e-4)


# ------------------------------------------------------------------------------ the builder


def test_every_backbone_builds_with_a_head_sized_from_a_folder(tmp_path):
    from runner.data import folders
    from runner.data.base import LoadContext

    fx.write_class_tree(tmp_path / "animals", per_class=4, unusual_in=None, bad_in=None)
    data_cfg = OmegaConf.create(
        {"name": "image_folder", "path": str(tmp_path / "animals"), "test_split": 0.25}
    )
    for name, spec in sorted(backbones.BACKBONES.items()):
        size = spec.min_size
        ctx = LoadContext(
            tmp_path, seed=0, validation_split=0.25, image_size=(size, size), channels=3
        )
        info = folders.load(data_cfg, ctx).info
        keras.backend.clear_session()
        model = pretrained.build(
            info, model_cfg(backbone=name, weights=None, input_size=[size, size])
        )
        assert model.output_shape == (None, 3), name
        assert model.get_layer("predictions").activation.__name__ == "softmax"
        assert not pretrained.find_backbone(model).trainable  # feature extraction by default
        assert model.count_params() > pretrained.find_backbone(model).count_params()


def test_head_follows_the_task_and_gray_small_inputs_are_adapted():
    for task, classes, units, activation in (
        ("binary", ("cat", "dog"), 1, "sigmoid"),
        ("multilabel", tuple("abcde"), 5, "sigmoid"),
    ):
        info = DataInfo("x", (28, 28, 1), classes, task)
        cfg = model_cfg(
            backbone=SMALL, weights=None, input_size=[32, 32], dense_units=8, dropout=0.5
        )
        model = pretrained.build(info, cfg)
        assert model.output_shape == (None, units)
        assert model.get_layer("predictions").activation.__name__ == activation
        assert model.get_layer("resize").output.shape[1:3] == (32, 32)
        assert model.get_layer("gray_to_rgb").output.shape[-1] == 3
        assert model.get_layer("head_dense").units == 8


def check(cfg) -> None:
    """The model's own checks, as runner/config/checks.py runs them."""
    OmegaConf.to_object(cfg).check("model")


def test_too_small_inputs_name_the_backbones_minimum():
    with pytest.raises(RunnerError, match=r"inception_v3 needs inputs of at least 75x75"):
        check(model_cfg(backbone="inception_v3", input_size=[64, 64]))
    with pytest.raises(RunnerError, match="turn off augmentation.featurewise_center"):
        pretrained.validate(model_cfg(), normalizing=True)
    with pytest.raises(RunnerError, match="model.weights should be imagenet, null or a weights"):
        check(model_cfg(weights="/nowhere/weights.h5"))
    check(model_cfg(backbone="inception_v3", input_size=[75, 75]))  # the minimum itself is fine
    assert pretrained.input_size(model_cfg(backbone="xception")) == (299, 299)
    assert pretrained.input_size(model_cfg(backbone="vgg19")) == (224, 224)


def test_a_local_weights_file_is_loaded_and_a_wrong_one_is_refused(tmp_path):
    path = write_weights(tmp_path, SMALL, top=False)
    info = DataInfo("x", (32, 32, 3), ("a", "b", "c"))
    model = pretrained.build(info, model_cfg(backbone=SMALL, input_size=[32, 32]), weights=path)
    loaded, expected = backbone_weights(model), file_weights(SMALL, path, 32)
    assert loaded.keys() == expected.keys()
    for name in expected:
        for a, b in zip(loaded[name], expected[name], strict=True):
            np.testing.assert_array_equal(a, b)
    wrong = write_weights(tmp_path / "other", "mobilenet", top=False)  # another network's
    with pytest.raises(RunnerError, match="Could not load model.weights for mobilenet_v2"):
        pretrained.build(info, model_cfg(backbone=SMALL, input_size=[32, 32]), weights=wrong)


# -------------------------------------------------------------------------- through the CLI


@pytest.fixture(scope="module")
def small_weights(mirror) -> Path:
    return write_weights(mirror.folder, SMALL, top=False)


def pretrained_args(mirror, weights: Path, folder: Path, *extra: str) -> list[str]:
    return [
        "data=image_folder",
        f"data.path={folder}",
        "model=pretrained",
        f"model.backbone={SMALL}",
        f"model.weights_mirror={mirror.url}",
        f"model.weights_hash={sha256(weights)}",
        "model.input_size=[32,32]",
        "optimizer=adam",
        "trainer.batch_size=16",
        "logger.experiment=tests",
        "logger.log_serving_model=false",
        *extra,
    ]


def test_feature_extraction_and_fine_tuning_end_to_end(workspace, mirror, small_weights, tmp_path):
    """Both transfer modes in one sweep: feature extraction keeps the backbone bit for bit and
    its model predicts raw images; fine-tuning changes exactly the layers it unfroze. Swept
    under the key's old name, `model.strategy`, which still works with a one-line note."""
    fx.write_class_tree(tmp_path / "animals", per_class=12, unusual_in=None, bad_in=None)
    result = workspace.run(
        "-m",
        *pretrained_args(
            mirror,
            small_weights,
            tmp_path / "animals",
            "model.strategy=feature_extraction,fine_tune",
            "trainer.epochs=2",
            "model.fine_tune.epochs=2",
            "model.fine_tune.unfreeze_layers=12",
            "model.fine_tune.lr=0.01",
            "callbacks.early_stopping.enabled=false",
            "trainer.evaluate=last",  # evaluate and log the last weights
        ),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "note: model.strategy is now model.transfer" in result.stderr
    assert "computed once" in result.stdout + result.stderr  # cached features
    # Downloaded once, by the first job; the second found it in the cache.
    assert mirror.requests.count(f"/{backbones.spec_of(SMALL).notop.path}") == 1
    assert (workspace.data_dir / "keras-applications" / small_weights.name).is_file()
    client = workspace.client()
    runs = client.search_runs([client.get_experiment_by_name("tests").experiment_id])
    jobs = {
        r.data.params.get("model.transfer"): r for r in runs if r.data.tags.get("sweep") != "parent"
    }
    assert set(jobs) == {"feature_extraction", "fine_tune"}
    assert all(run.info.status == "FINISHED" for run in jobs.values())
    before = file_weights(SMALL, small_weights, 32)

    # Feature extraction: the head alone trains; the backbone stays the file's, bit for bit.
    run = jobs["feature_extraction"]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")] == [0, 1]
    model = mlflow.keras.load_model(f"runs:/{run.info.run_id}/model")
    for name, weights in backbone_weights(model).items():
        for a, b in zip(weights, before[name], strict=True):
            np.testing.assert_array_equal(a, b)
    # The saved model takes raw uint8 images: reloaded in safe mode it predicts the same.
    checkpoint = Path(run.data.tags["output_dir"]) / "checkpoints" / "last.keras"
    reloaded = keras.saving.load_model(checkpoint, safe_mode=True)
    images = np.stack([np.asarray(fx.picture(k % 3, seed=k, size=32)) for k in range(6)])
    np.testing.assert_allclose(
        reloaded.predict(images, verbose=0), model.predict(images, verbose=0), rtol=1e-5
    )
    pyfunc = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    np.testing.assert_allclose(
        np.asarray(pyfunc.predict(images)), model.predict(images, verbose=0), rtol=1e-5
    )

    # Fine-tuning: phase two continues the epoch count of the same run, and changes exactly
    # the unfrozen layers (batch normalization stays frozen).
    run = jobs["fine_tune"]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [0, 1, 2, 3]
    unfrozen = set(
        json.loads(
            mlflow.artifacts.load_text(f"{run.info.artifact_uri}/model/fine_tuned_layers.json")
        )
    )
    assert unfrozen and not any("_BN" in name or "bn" in name.split("_")[-1] for name in unfrozen)
    model = mlflow.keras.load_model(f"runs:/{run.info.run_id}/model")
    changed = {
        name
        for name, weights in backbone_weights(model).items()
        if any(not np.array_equal(a, b) for a, b in zip(weights, before[name], strict=True))
    }
    assert changed == unfrozen


def test_no_network_and_no_cached_weights_names_the_file_the_url_and_the_folder(tmp_path):
    """What `python -m runner model=pretrained` prints as its one line (exit 2), before any
    MLflow run: runner/training/job.py asks for the weights file first."""
    from runner.models import weights_file

    cfg = model_cfg(backbone="vgg16", weights_mirror="http://127.0.0.1:9")
    with pytest.raises(RunnerError) as error:
        weights_file(cfg, tmp_path / "cache")
    name = "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
    message = str(error.value)
    assert name in message
    assert f"http://127.0.0.1:9/tensorflow/keras-applications/vgg16/{name}" in message
    assert str(tmp_path / "cache" / "keras-applications") in message
    assert "model.weights_mirror" in message and "RUNNER_WEIGHTS_MIRROR" in message


def test_zero_shot_prediction_prints_imagenet_top5(mirror, tmp_path, capsys):
    """`runner.predict --pretrained` in process (the command's own exits are tested through it
    in test_predict.py): weights and class index through the mirror into the cache."""
    write_weights(mirror.folder, SMALL, top=True, seed=5)
    synsets = {str(i): [f"n{i:08d}", f"label_{i}"] for i in range(1000)}
    index = mirror.folder / backbones.CLASS_INDEX.name
    index.parent.mkdir(parents=True, exist_ok=True)
    index.write_text(json.dumps(synsets))
    photo = tmp_path / "photo.jpg"
    fx.picture(1, seed=7, size=300).save(photo)
    from runner.cli.predict import main as predict

    predict(
        [
            "--pretrained",
            SMALL,
            str(photo),
            "--weights-mirror",
            mirror.url,
            "--no-verify",
            "--data-dir",
            str(tmp_path / "cache"),
            "--out",
            str(tmp_path / "out"),
        ]
    )
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith(str(photo)))
    cached = tmp_path / "cache" / "keras-applications"
    for mirrored in (backbones.spec_of(SMALL).top.path, backbones.CLASS_INDEX.name):
        assert (cached / Path(mirrored).name).is_file()
    ranked = [item.rsplit(" ", 1) for item in line.split(": ", 1)[1].split(", ")]
    assert len(ranked) == 5
    # The same pixels through Keras' own network, preprocess_input and class index order.
    network = backbones.build_backbone(SMALL, None, top=True)
    network.load_weights(str(mirror.folder / backbones.spec_of(SMALL).top.path))
    pixels, _, _ = decode_files([photo], size=(224, 224), channels=3)
    scores = network.predict(backbones.preprocess_input(SMALL, pixels.astype("float32")), verbose=0)
    expected = [(f"label_{i}", f"{scores[0, i]:.1%}") for i in np.argsort(scores[0])[::-1][:5]]
    assert [tuple(item) for item in ranked] == expected
    assert (tmp_path / "out" / "photo.png").is_file()
