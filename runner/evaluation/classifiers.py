"""A trained model as predicting needs it: a function on uint8 images, their shape, its class
names and how to read its scores. Used by `runner.predict` and `runner.evaluate` alike, so a
model is loaded one way (Keras safe mode) whatever the command.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from runner.core.errors import RunnerError
from runner.evaluation.model_files import load_keras_file, load_mlflow_model
from runner.tracking.store import default_tracking_uri, sqlite_file

CLASSES_FILE = "classes.json"  # beside a checkpoint: class names, task, threshold


@dataclass
class Classifier:
    """What predicting needs: a function on uint8 images, their shape, and how to read scores."""

    classify: Any
    class_names: list[str]
    input_shape: tuple[int, int, int]
    task: str = "multiclass"
    threshold: float = 0.5
    model: Any = None  # the Keras model behind `classify`, when there is one (not ImageNet's)


def label_probabilities(probabilities: np.ndarray, class_names: list[str]) -> np.ndarray:
    """Per-class probabilities; a binary model's single sigmoid becomes two columns."""
    if probabilities.shape[1] == 1 and len(class_names) == 2:
        return np.concatenate([1 - probabilities, probabilities], axis=1)
    return probabilities


def answers(scores: np.ndarray, classifier: Classifier, top: int) -> list[tuple[str, float]]:
    """(label, probability) to report: the top `top`, or every label over the threshold."""
    names = classifier.class_names
    if classifier.task == "multilabel":
        chosen = [i for i in np.argsort(scores)[::-1] if scores[i] >= classifier.threshold]
    else:
        chosen = list(np.argsort(scores)[::-1][:top])
    return [(names[i], float(scores[i])) for i in chosen]


def logged_classifier(uri: str, tracking_uri: str | None, *, trust: bool = False) -> Classifier:
    """A model the runner logged to MLflow (any model URI), or a `.keras` file it saved.
    Nothing in the model runs as it loads unless `trust` (see runner/evaluation/model_files.py)."""
    if uri.endswith(".keras") or Path(uri).is_file():
        return keras_file_classifier(Path(uri), trust=trust)
    folder = Path(uri) if Path(uri).is_dir() else downloaded_model(uri, tracking_uri)
    return _classifier(*load_mlflow_model(folder, uri, trust=trust))


def downloaded_model(uri: str, tracking_uri: str | None) -> Path:
    """The local folder of a model URI (runs:/, models:/, ...) of the tracking store."""
    import mlflow
    from mlflow.exceptions import MlflowException

    store = tracking_uri or default_tracking_uri()
    database = sqlite_file(store)
    if database is not None and not database.exists():
        raise RunnerError(
            f"No MLflow store at {store}: run from the project folder, or pass --tracking-uri "
            "(or set MLFLOW_TRACKING_URI / RUNNER_ROOT)."
        )
    mlflow.set_tracking_uri(store)
    try:
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
    except (MlflowException, OSError) as error:
        raise RunnerError(
            f"Cannot load the model {uri} from {store}: {str(error).splitlines()[0][:200]}. "
            "`python -m runner.runs --all` and the MLflow UI list runs; models are "
            "runs:/<run id>/model or models:/<name>@<alias>."
        ) from None


def keras_file_classifier(path: Path, *, trust: bool = False) -> Classifier:
    if not path.is_file():  # before Keras: a mistyped path is told at once
        raise RunnerError(f"No model file {path}.")
    info_path = path.parent / CLASSES_FILE
    if not info_path.exists():
        raise RunnerError(
            f"{path} has no {CLASSES_FILE} beside it (the class names): use a checkpoint from a "
            "runner job folder, or the run's MLflow model (runs:/<run id>/model)."
        )
    return _classifier(load_keras_file(path, trust=trust), read_classes(info_path))


def _classifier(model: Any, metadata: dict[str, Any]) -> Classifier:
    names = metadata.get("class_names")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise RunnerError(f"The model's {CLASSES_FILE} has no list of class names: {names!r:.200}")
    outputs = model.output_shape[-1]
    if outputs != len(names) and not (outputs == 1 and len(names) == 2):
        raise RunnerError(
            f"The model has {outputs} outputs but its {CLASSES_FILE} names {len(names)} classes: "
            "the two come from different runs."
        )
    return Classifier(
        classify=lambda images: model.predict(images, verbose=0),
        class_names=names,
        input_shape=tuple(model.input_shape[1:]),
        task=str(metadata.get("task", "multiclass")),
        threshold=float(metadata.get("threshold", 0.5)),
        model=model,
    )


def read_classes(path: Path) -> dict[str, Any]:
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RunnerError(f"{path} cannot be read as JSON ({error}).") from None
    if not isinstance(info, dict):
        raise RunnerError(f"{path} should hold a JSON object with class_names.")
    return info


def imagenet_classifier(
    name: str, *, mirror: str | None, data_dir: Path, verify: bool
) -> Classifier:
    """keras.applications' network with its 1000-class head, weights fetched into the cache."""
    from runner.models import backbones

    spec = backbones.spec_of(name)
    where = dict(mirror=mirror, data_dir=data_dir, verify=verify)
    model = backbones.build_backbone(name, None, top=True)
    weights = backbones.fetch_file(spec.top.spec(), **where)
    backbones.load_weights(model, weights, f"the ImageNet weights of {name}")
    index = json.loads(backbones.fetch_file(backbones.CLASS_INDEX, **where).read_text())

    def classify(images: np.ndarray) -> np.ndarray:
        inputs = backbones.preprocess_input(name, images.astype("float32"))
        return model.predict(inputs, verbose=0)

    size = spec.default_size
    names = [index[str(i)][1] for i in range(len(index))]
    return Classifier(classify, names, (size, size, 3))
