"""Loading a model runs no code stored in it: crafted MLflow model folders and files, each
refused in one line (exit 2) by `runner.predict` and `runner.evaluate`, with nothing written by
the model; `--trust-model` is the one way in, and says so."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tests.conftest import one_line_error

CLASSES = ["cat", "dog"]


def tiny_model() -> keras.Model:
    return keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(2, "softmax")]
    )


class WritesAFile(tf.saved_model.experimental.TrackableResource):
    """A resource whose initializer (run by `tf.saved_model.load`) writes a file: the shape of
    an attack, where it could as well read keys or start a process."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)
        super().__init__()

    def _create_resource(self):
        return tf.raw_ops.VarHandleOp(dtype=tf.float32, shape=[], shared_name="writes_a_file")

    def _initialize(self):
        tf.io.write_file(self.marker, "code ran as the model loaded")
        tf.raw_ops.AssignVariableOp(resource=self.resource_handle, value=tf.constant(1.0))


def mlmodel(folder: Path, flavors: str) -> None:
    """An MLmodel file as MLflow writes one, with these flavors and the runner's metadata."""
    (folder / "MLmodel").write_text(
        "artifact_path: model\nflavors:\n"
        + textwrap.indent(flavors, "  ")
        + f"\nmetadata:\n  class_names: {json.dumps(CLASSES)}\n  task: multiclass\n"
    )


def exported_model_folder(folder: Path, marker: Path) -> Path:
    """An MLflow Keras model logged with `save_exported_model: true`: a SavedModel that acts."""
    model = tiny_model()
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.track(WritesAFile(marker))
    spec = tf.TensorSpec((None, 8, 8, 1), tf.float32)
    archive.add_endpoint("serve", model.call, input_signature=[spec])
    archive.write_out(str(folder / "data" / "model"))
    mlmodel(folder, "keras:\n  data: data\n  keras_version: 3.0.0\n  save_exported_model: true")
    return folder


def command(module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "one.png"
    Image.fromarray(np.full((8, 8), 200, np.uint8)).save(path)
    return path


def test_a_savedmodel_that_writes_a_file_is_refused_by_predict_and_evaluate(tmp_path, image):
    marker = tmp_path / "written_by_the_model"
    folder = exported_model_folder(tmp_path / "exported", marker)
    predicted = command("runner.predict", "--model", str(folder), str(image), cwd=tmp_path)
    one_line_error(predicted, "TensorFlow SavedModel", "--trust-model")
    evaluated = command(
        "runner.evaluate",
        "--model",
        str(folder),
        "data=digits",
        f"logger.tracking_uri=sqlite:///{tmp_path}/mlflow.db",
        cwd=tmp_path,
    )
    one_line_error(evaluated, "TensorFlow SavedModel", "--trust-model")
    assert not marker.exists()  # nothing in the model ran

    # Trusted, it loads (and its code runs: that is what the flag allows) and predicts.
    out = tmp_path / "out"
    trusted = command(
        "runner.predict",
        "--model",
        str(folder),
        str(image),
        "--trust-model",
        "--out",
        str(out),
        cwd=tmp_path,
    )
    assert trusted.returncode == 0, trusted.stderr[-2000:]
    assert marker.exists()
    rows = json.loads((out / "predictions.json").read_text())
    assert rows[0]["labels"][0] in CLASSES
    assert sum(rows[0]["probabilities"]) == pytest.approx(1, abs=1e-5)


def test_other_flavors_pickles_and_mismatched_class_files_are_one_line(tmp_path, image):
    pyfunc = tmp_path / "pyfunc"
    pyfunc.mkdir()
    (pyfunc / "python_model.pkl").write_bytes(pickle.dumps({"would": "unpickle"}))
    mlmodel(
        pyfunc,
        "python_function:\n  loader_module: mlflow.pyfunc.model\n  python_model: python_model.pkl",
    )
    one_line_error(
        command("runner.predict", "--model", str(pyfunc), str(image), cwd=tmp_path),
        "has no Keras model (its flavors: python_function)",
    )

    outside = tmp_path / "outside"
    outside.mkdir()
    mlmodel(outside, "keras:\n  data: ../../etc\n  keras_version: 3.0.0")
    one_line_error(
        command("runner.predict", "--model", str(outside), str(image), cwd=tmp_path),
        "points outside the model folder",
    )

    job = tmp_path / "job"
    job.mkdir()
    (job / "classes.json").write_text(json.dumps({"class_names": CLASSES}))
    (job / "pickle.keras").write_bytes(pickle.dumps([1, 2, 3]))
    one_line_error(
        command("runner.predict", "--model", str(job / "pickle.keras"), str(image), cwd=tmp_path),
        "is not a Keras .keras archive",
    )

    tiny_model().save(job / "best.keras")
    assert zipfile.is_zipfile(job / "best.keras")
    (job / "classes.json").write_text(json.dumps({"class_names": ["a", "b", "c"]}))
    one_line_error(
        command("runner.predict", "--model", str(job / "best.keras"), str(image), cwd=tmp_path),
        "The model has 2 outputs but its classes.json names 3 classes",
    )
    (job / "classes.json").write_text('{"class_names": ["a", ')
    one_line_error(
        command("runner.predict", "--model", str(job / "best.keras"), str(image), cwd=tmp_path),
        "cannot be read as JSON",
    )
