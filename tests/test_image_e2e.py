"""Image-file datasets through the real CLI, read back from MLflow."""

from __future__ import annotations

import json
import math

import mlflow
import numpy as np
import pytest

from tests import image_fixtures as fx
from tests.conftest import FAST
from tests.test_e2e import artifact_paths, only_run

COMMON = ["logger.experiment=tests", "trainer.batch_size=16"]


def load_json(run, path: str):
    return json.loads(mlflow.artifacts.load_text(f"{run.info.artifact_uri}/{path}"))


def test_animals_folder_trains_and_the_model_predicts_class_names(trained, tmp_path, capsys):
    """The seed-1 job of the `trained` sweep (tests/conftest.py): `data=animals` on a folder
    with bad, oddly named and oversized files among its images."""
    workspace, run, result, counts = trained.workspace, trained.job, trained.result, trained.counts
    assert f"skipped {counts['bad']} file(s)" in result.stdout
    client = workspace.client()
    assert run.info.status == "FINISHED"
    class_names = load_json(run, "class_names.json")
    assert class_names == ["cats", "dogs", "panda"]
    total = counts["cats"] + counts["dogs"] + counts["panda"]  # the odd name was read
    sizes = [int(run.data.params[f"data.size.{s}"]) for s in ("train", "val", "test")]
    assert sum(sizes) == total and sizes[2] == math.ceil(0.25 * total)  # scikit-learn rounds up
    assert run.data.params["data.input_shape"] == "(32, 32, 3)"  # the model's input size
    assert run.data.metrics["skipped_files"] == counts["bad"]
    skipped = {
        item["path"].rsplit("/", 1)[-1]: item["reason"]
        for item in load_json(run, "data/skipped_files.json")
    }
    assert sorted(skipped) == sorted([*fx.BAD, "bomb.png"])
    assert "20000x20000" in skipped["bomb.png"] and "data.max_pixels" in skipped["bomb.png"]
    assert "plots/confusion_matrix.png" in artifact_paths(client, run.info.run_id)

    # The logged model maps new images to the right class names.
    model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    images = np.stack(
        [np.asarray(fx.picture(label, seed=9000 + label).resize((32, 32))) for label in (0, 1, 2)]
    )
    predicted = np.asarray(model.predict(images)).argmax(axis=1)
    assert [class_names[i] for i in predicted] == ["cats", "dogs", "panda"]

    # The same through runner.predict, on image files (one of them not an image); in process:
    # the command itself is tested in test_predict.py.
    new = tmp_path / "new"
    new.mkdir()
    for label, name in enumerate(("a_cat", "b_dog", "c_panda")):
        fx.picture(label, seed=7000 + label, size=80).save(new / f"{name}.jpg")
    (new / "d_broken.jpg").write_bytes(b"nope")
    from runner.cli.predict import main as predict

    predict(
        [
            "--model",
            f"runs:/{run.info.run_id}/model",
            "--tracking-uri",
            workspace.tracking_uri,
            "--top",
            "1",
            "--out",
            str(tmp_path / "out"),
            str(new),
        ]
    )
    lines = {
        line.split(":")[0].rsplit("/", 1)[-1]: line.split(": ", 1)[1]
        for line in capsys.readouterr().out.splitlines()
        if line.startswith(str(new))
    }
    assert lines["a_cat.jpg"].startswith("cats ")
    assert lines["b_dog.jpg"].startswith("dogs ")
    assert lines["c_panda.jpg"].startswith("panda ")
    assert lines["d_broken.jpg"].startswith("skipped")
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == [
        "a_cat.png",
        "b_dog.png",
        "c_panda.png",
    ]


def test_cats_vs_dogs_zip_binary_end_to_end(workspace, tmp_path):
    train = fx.write_kaggle_train(tmp_path / "kaggle", per_class=20, bad_numbers=(3, 5))
    archive = fx.zip_folder(train, tmp_path / "train.zip")
    result = workspace.run(
        "data=cats_vs_dogs",
        f"data.path={archive}",
        "data.train_per_class=8",
        "data.val_per_class=4",
        "data.test_per_class=4",
        "data.image_size=[48,48]",
        "model=convnet_small",
        "optimizer=rmsprop",
        "trainer.epochs=1",
        *COMMON,
        "data.max_memory_mb=0.01",  # too small for the images: they stream from disk
        # Augmentation inside the model while training; normalization statistics fitted by
        # streaming over the training files.
        "augmentation=light",
        "augmentation.placement=model",
        "augmentation.rotation=10",
        "augmentation.featurewise_center=true",
        "augmentation.featurewise_std_normalization=true",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run = only_run(workspace.client())
    params = run.data.params
    assert (params["data.size.train"], params["data.size.val"], params["data.size.test"]) == (
        "16",
        "8",
        "8",
    )
    assert run.data.tags["task"] == "binary"
    assert run.data.metrics["skipped_files"] == 3  # cat.3, cat.5, Thumbs.db
    assert load_json(run, "class_names.json") == ["cat", "dog"]
    report = load_json(run, "reports/classification_report.json")
    assert report["cat"]["support"] == 4 and report["dog"]["support"] == 4
    assert run.data.params["augmentation.placement"] == "model"
    assert run.data.params["augmentation.rotation"] == "10.0"
    assert run.data.tags["augmentation"] == "light"
    assert "plots/augmentation_preview.png" in artifact_paths(workspace.client(), run.info.run_id)
    # The logged model leaves the augmentation out and keeps its fitted normalization.
    model = mlflow.keras.load_model(f"runs:/{run.info.run_id}/model")
    assert model.output_shape == (None, 1)
    names = [layer.name for layer in model.layers]
    assert "augmentation" not in names and "featurewise" in names
    assert np.asarray(model.predict(np.zeros((2, 48, 48, 3), np.uint8))).shape == (2, 1)


def test_voc_multilabel_end_to_end(workspace, tmp_path):
    fx.write_voc(tmp_path / "voc")
    result = workspace.run(
        "data=voc",
        f"data.path={tmp_path / 'voc' / 'VOCdevkit'}",
        "model=lenet",
        "data.image_size=[32,32]",
        "trainer.epochs=2",
        "optimizer=adam",
        *COMMON,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    client = workspace.client()
    run = only_run(client)
    assert run.data.tags["task"] == "multilabel"
    metrics = run.data.metrics
    assert metrics["skipped_files"] == 0  # (an image in no ImageSets list is not a bad file)
    assert len(client.get_metric_history(run.info.run_id, "val_pr_auc")) == 2
    # Multi-label: accuracy is named for what it is, and the objective is the ranking metric.
    assert "test_binary_accuracy" in metrics and "test_accuracy" not in metrics
    assert run.data.tags["objective_metric"] == "val_pr_auc"
    history = [m.value for m in client.get_metric_history(run.info.run_id, "val_pr_auc")]
    assert metrics["best_val_pr_auc"] == max(history)
    artifacts = artifact_paths(client, run.info.run_id)
    assert {"reports/per_class.json", "plots/per_class_ap.png"} <= artifacts
    assert "plots/confusion_matrix.png" not in artifacts
    per_class = load_json(run, "reports/per_class.json")
    assert set(per_class) == set(load_json(run, "class_names.json"))
    # The run's metrics agree with its per-class report: mAP over the classes present in the
    # test split, micro F1 from the summed counts.
    present = [c for c in per_class.values() if c["support"] > 0]
    assert metrics["test_mAP"] == pytest.approx(np.mean([c["average_precision"] for c in present]))
    tp, fp, fn = (
        sum(c[key] for c in per_class.values())
        for key in ("true_positives", "false_positives", "false_negatives")
    )
    assert metrics["test_f1_micro"] == pytest.approx(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    assert per_class["person"]["support"] == 2  # val.txt: 2008_000010, 2008_000012
    # The default retention (keep=best): one checkpoint, the best.
    (folder,) = (workspace.root / "outputs" / "runs").glob("*/checkpoints")
    assert sorted(p.name for p in folder.glob("*.keras")) == ["best.keras"]
    images = np.random.default_rng(0).integers(0, 255, (2, 32, 32, 1), dtype=np.uint8)
    predictions = np.asarray(
        mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model").predict(images)
    )
    assert predictions.shape == (2, 20)
    keras_model = mlflow.keras.load_model(f"runs:/{run.info.run_id}/model")
    np.testing.assert_allclose(predictions, keras_model.predict(images, verbose=0), rtol=1e-5)


def test_names_that_are_not_utf8_are_written_escaped_everywhere(workspace, tmp_path):
    """A class folder, a skipped file and an image to predict whose names are not UTF-8 (bytes
    0xE9, 0xFF: another system's encoding): read, then logged, printed and written escaped."""
    import csv
    import subprocess
    import sys

    folder = tmp_path / "pets"
    fx.write_class_tree(folder, ("caf\udce9", "dogs"), per_class=10, unusual_in=None, bad_in=None)
    (folder / "dogs" / "notes \udcff.txt").write_text("not an image")
    job = workspace.root / "outputs" / "job"
    result = workspace.run(
        "data=image_folder", f"data.path={folder}", "model=mlp", *FAST, f"hydra.run.dir={job}"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Logging error" not in result.stderr and "Traceback" not in result.stderr
    run = only_run(workspace.client())
    assert run.info.status == "FINISHED"
    assert load_json(run, "class_names.json") == ["caf\\xe9", "dogs"]
    [skipped] = load_json(run, "data/skipped_files.json")
    assert skipped["path"].endswith("dogs/notes \\xff.txt")
    assert "notes \\xff.txt" in (job / "runner.log").read_text(encoding="utf-8")

    new = tmp_path / "new"
    new.mkdir()
    fx.picture(0, seed=5).save(new / "\udcff photo.jpg")
    out = tmp_path / "out"
    predicted = subprocess.run(
        [sys.executable, "-m", "runner.predict", "--model", str(job / "checkpoints" / "best.keras")]
        + [str(new), "--out", str(out)],
        cwd=workspace.root,
        env=workspace.env(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    with (out / "predictions.csv").open(encoding="utf-8", newline="") as stream:
        [row] = list(csv.DictReader(stream))
    assert row["path"].endswith("\\xff photo.jpg") and row["image"] == "\\xff photo.png"
    assert (out / row["image"]).is_file()
    assert row["labels"].split(";")[0] in ("caf\\xe9", "dogs")
