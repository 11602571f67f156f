"""The model `mlflow models serve` runs: a run's Keras model taking raw images or encoded files.

Logged by the runner as an MLflow "model from code" (this file is stored with the model as
text, never pickled) next to the Keras model it loads in safe mode. Self-contained on purpose:
serving needs Keras, TensorFlow, NumPy and pandas, not the runner.

Requests (POST /invocations):
  {"inputs": [[[[r, g, b], ...]]]}                        uint8 pixels, N x H x W x C
  {"dataframe_split": {"columns": ["image"], "data": [["<base64 of a JPEG/PNG/...>"], ...]}}
Answers: per image, the probability of every class and the top `label` (multi-label: `labels`,
every class at or over the threshold), as `runner.predict` reports them.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel


class ImageClassifier(PythonModel):
    # The input is a pixel array or a table of encoded files: MLflow's type-hint validation
    # (which wants one input type) is left out, as MLflow itself does for its ChatModel.
    _skip_type_hint_validation = True

    def load_context(self, context: Any) -> None:
        import keras

        self.model = keras.saving.load_model(
            context.artifacts["keras_model"], safe_mode=True, compile=False
        )
        with open(context.artifacts["classes"]) as stream:
            info = json.load(stream)
        self.class_names = list(info["class_names"])
        self.task = info.get("task", "multiclass")
        self.threshold = float(info.get("threshold", 0.5))

    # `model_input` unannotated on purpose: MLflow infers a signature from that annotation, and
    # warns on every log that `Any` (a pixel array or a table) is not one it can use.
    def predict(self, context: Any, model_input, params: dict | None = None) -> pd.DataFrame:
        images = self._images(model_input)
        scores = np.asarray(self.model.predict(images, verbose=0))
        if scores.shape[1] == 1 and len(self.class_names) == 2:  # one sigmoid: two columns
            scores = np.concatenate([1 - scores, scores], axis=1)
        answer = pd.DataFrame(scores, columns=self.class_names)
        if self.task == "multilabel":
            answer["labels"] = [
                [n for n, s in zip(self.class_names, row, strict=True) if s >= self.threshold]
                for row in scores
            ]
        else:
            answer["label"] = [self.class_names[i] for i in scores.argmax(axis=1)]
        return answer

    def _images(self, model_input: Any) -> np.ndarray:
        if isinstance(model_input, pd.DataFrame):
            column = "image" if "image" in model_input else model_input.columns[0]
            return np.stack([self._decode(value) for value in model_input[column]])
        return np.asarray(model_input, dtype=np.uint8)

    def _decode(self, encoded: str | bytes) -> np.ndarray:
        """Like the runner's own reading of image files: any format, RGB first, bilinear."""
        import tensorflow as tf

        height, width, channels = self.model.input_shape[1:]
        data = base64.b64decode(encoded)
        image = tf.io.decode_image(data, channels=3, expand_animations=False, dtype=tf.uint8)
        image = tf.image.resize(image, (height, width))
        if channels == 1:
            image = tf.image.rgb_to_grayscale(image)
        return tf.cast(tf.round(tf.clip_by_value(image, 0.0, 255.0)), tf.uint8).numpy()


mlflow.models.set_model(ImageClassifier())
