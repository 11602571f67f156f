"""The trained model as MLflow models: the Keras model (`model`, loaded back in safe mode) and
the serving model (`serving`, for `mlflow models serve`, taking image files too)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow


def log_serving_model(
    model: Any, class_names: list[str], metadata: Mapping[str, Any] | None = None
) -> Any:
    """The same model for `mlflow models serve`, also taking encoded image files (base64):
    runner/tracking/serving_model.py, logged as an MLflow model from code (no pickle)."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        keras_file, classes = Path(folder) / "model.keras", Path(folder) / "classes.json"
        model.save(keras_file)
        classes.write_text(json.dumps({"class_names": list(class_names), **(metadata or {})}))
        return _log_serving(keras_file, classes)


def backend_requirements() -> list[str]:
    """Keras and the backend that trained, at the versions that ran (a `.keras` file loads on
    any backend: another one can be named at serving time)."""
    import importlib.metadata

    import keras

    name = keras.backend.backend()
    packages = {"jax": ("jax", "jaxlib")}.get(name, (name,))
    return [
        *(f"{package}=={importlib.metadata.version(package)}" for package in packages),
        f"keras=={keras.__version__}",
    ]


def _log_serving(keras_file: Path, classes: Path) -> Any:
    from runner.tracking import serving_model

    return mlflow.pyfunc.log_model(
        name="serving",
        python_model=serving_model.__file__,
        artifacts={"keras_model": str(keras_file), "classes": str(classes)},
        pip_requirements=[
            *backend_requirements(),
            "pandas",
            "numpy",
            "pillow",
        ],
    )


def log_keras_model(
    model: Any, sample: Any, class_names: list[str], metadata: Mapping[str, Any] | None = None
) -> Any:
    """Log the model as an MLflow Keras model with an input signature and its class names."""
    import keras
    import numpy as np
    from mlflow.models import infer_signature

    # The output's shape and dtype, symbolically: no prediction (no tracing) for the signature.
    sample = np.asarray(sample)
    output = model.compute_output_spec(keras.KerasTensor(sample.shape, dtype=str(sample.dtype)))
    signature = infer_signature(sample, np.zeros(output.shape, dtype=output.dtype))
    return mlflow.keras.log_model(
        model,
        name="model",
        signature=signature,
        # Pinned here instead of inferred: inference re-loads the model in a subprocess.
        pip_requirements=backend_requirements(),
        metadata={"class_names": class_names, **(metadata or {})},
    )
