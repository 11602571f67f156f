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


def _log_serving(keras_file: Path, classes: Path) -> Any:
    import keras
    import tensorflow as tf

    from runner.tracking import serving_model

    return mlflow.pyfunc.log_model(
        name="serving",
        python_model=serving_model.__file__,
        artifacts={"keras_model": str(keras_file), "classes": str(classes)},
        pip_requirements=[
            f"tensorflow=={tf.__version__}",
            f"keras=={keras.__version__}",
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
    import tensorflow as tf
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
        pip_requirements=[f"tensorflow=={tf.__version__}", f"keras=={keras.__version__}"],
        metadata={"class_names": class_names, **(metadata or {})},
    )
