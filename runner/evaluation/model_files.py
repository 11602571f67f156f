"""Loading a model someone else saved, without running code stored in it.

A `.keras` file loads in Keras safe mode: its architecture is data, and a layer that would
carry code (Lambda, pickled functions) is refused. An MLflow model folder is read from its
`MLmodel` file first, and only its Keras flavor's `.keras` file is loaded: a TensorFlow
SavedModel (MLflow's `save_exported_model: true`) runs the graph functions inside it as it
loads (resource initializers can write files, read secrets), so it is refused unless the user
says they trust the model (`--trust-model`), which also turns Keras safe mode off.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

from runner.core.errors import RunnerError

TRUST_HELP = (
    "load a model that can run code as it loads: a TensorFlow SavedModel (an MLflow model "
    "logged with save_exported_model) or a .keras file with Lambda layers (Keras safe mode "
    "off). Only for models from someone you trust"
)
TRUST_HINT = "pass --trust-model only if you trust whoever saved it"


def load_keras_file(path: Path, *, trust: bool = False) -> Any:
    """A `.keras` archive, in safe mode unless trusted."""
    if not zipfile.is_zipfile(path):
        raise RunnerError(
            f"{path} is not a Keras .keras archive (a zip file): the runner loads models saved "
            "with model.save('....keras') only, never pickles."
        )
    import keras

    try:
        return keras.saving.load_model(path, safe_mode=not trust, compile=False)
    except Exception as error:
        first = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
        hint = f"; {TRUST_HINT}" if "safe_mode" in str(error) else ""
        raise RunnerError(f"Cannot load {path}: {first}{hint}") from None


def mlflow_model_file(folder: Path, uri: str) -> tuple[Path, bool, dict[str, Any]]:
    """The model file inside a downloaded MLflow model folder, whether it is a SavedModel, and
    the model's metadata. Only the Keras flavor is loaded: any other (pyfunc's cloudpickle, ...)
    would unpickle."""
    from mlflow.models import Model

    mlmodel = folder / "MLmodel"
    if not mlmodel.is_file():
        raise RunnerError(f"{uri} is not an MLflow model (no MLmodel file in it).")
    try:
        described = Model.load(str(mlmodel))
        flavors, metadata = described.flavors or {}, described.metadata or {}
    except Exception as error:
        first = " ".join(str(error).split())[:200]
        raise RunnerError(f"{uri}: its MLmodel file cannot be read ({first}).") from None
    keras_flavor = flavors.get("keras")
    if not isinstance(keras_flavor, dict):
        raise RunnerError(
            f"{uri} has no Keras model (its flavors: {', '.join(flavors) or 'none'}): the runner "
            "loads Keras models only, as `mlflow.keras.log_model` (and the runner) log them."
        )
    data = (folder / str(keras_flavor.get("data", "data"))).resolve()
    if not data.is_relative_to(folder.resolve()):
        raise RunnerError(f"{uri}: its Keras flavor points outside the model folder ({data}).")
    if data.is_dir():
        data = data / "model"  # where mlflow.keras.log_model writes it
    if "class_names" not in metadata:
        raise RunnerError(f"The model {uri} was not logged by the runner (no class names).")
    if keras_flavor.get("save_exported_model"):
        return data, True, metadata
    return data.with_name(data.name + ".keras"), False, metadata


def load_mlflow_model(folder: Path, uri: str, *, trust: bool = False) -> tuple[Any, dict]:
    """The Keras model of a downloaded MLflow model folder, and its metadata."""
    path, exported, metadata = mlflow_model_file(folder, uri)
    if not exported:
        if not path.is_file():
            raise RunnerError(f"{uri}: its Keras flavor names {path.name}, which is not there.")
        return load_keras_file(path, trust=trust), metadata
    if not trust:
        raise RunnerError(
            f"{uri} is a TensorFlow SavedModel (MLflow save_exported_model), whose graph runs "
            f"as it loads: the runner loads .keras models in safe mode only; {TRUST_HINT}."
        )
    return saved_model_as_keras(path, uri), metadata


def saved_model_as_keras(path: Path, uri: str) -> Any:
    """A trusted SavedModel's `serve` endpoint (as `model.export` writes it) as a Keras model."""
    import keras

    try:
        layer = keras.layers.TFSMLayer(str(path), call_endpoint="serve")
    except Exception as error:
        raise RunnerError(f"Cannot load the SavedModel of {uri}: {error}".splitlines()[0]) from None
    signature = getattr(layer.call_endpoint_fn, "input_signature", None) or ()
    if len(signature) != 1 or len(signature[0].shape) != 4:
        raise RunnerError(f"{uri}: its SavedModel's serve endpoint does not take one image batch.")
    inputs = keras.Input(tuple(signature[0].shape[1:]))
    return keras.Model(inputs, layer(inputs), name="saved_model")
