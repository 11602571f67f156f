"""The model `mlflow models serve` runs: a run's Keras model taking raw images or encoded files.

Logged by the runner as an MLflow "model from code" (this file is stored with the model as
text, never pickled) next to the Keras model it loads in safe mode. Self-contained on purpose:
serving needs Keras, TensorFlow, NumPy and pandas, not the runner.

Requests (POST /invocations):
  {"inputs": [[[[r, g, b], ...]]]}                        uint8 pixels, N x H x W x C
  {"dataframe_split": {"columns": ["image"], "data": [["<base64 of a JPEG/PNG/...>"], ...]}}
Answers: per image, the probability of every class and the top `label` (multi-label: `labels`,
every class at or over the threshold), as `runner.predict` reports them.

Bounded: at most MAX_IMAGES images a request; pixels must be finite numbers in 0..255 of the
model's shape; an encoded file must declare at most MAX_PIXELS pixels in its header (read
before decoding: a 50 KB PNG can declare 16000x16000). A bad request is answered 400 with one
line saying what is wrong; no error answer carries a stack trace.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import logging
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INTERNAL_ERROR
from mlflow.pyfunc import PythonModel

MAX_IMAGES = 256  # a request
MAX_PIXELS = 89_478_485  # an encoded image's declared width x height (PIL's own limit)
log = logging.getLogger(__name__)


def bad_request(message: str) -> MlflowException:
    """Answered 400 with this one line (MLflow's scoring server adds no stack to it)."""
    return MlflowException.invalid_parameter_value(message)


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
        try:
            return self._predict(model_input)
        except MlflowException:
            raise
        except Exception as error:  # ours to fix, not the client's: logged here, not sent
            log.exception("prediction failed")
            raise MlflowException(
                f"the model could not classify this request ({type(error).__name__})",
                error_code=INTERNAL_ERROR,
            ) from None

    def _predict(self, model_input: Any) -> pd.DataFrame:
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
            if len(model_input) > MAX_IMAGES:
                raise bad_request(f"{len(model_input)} images: at most {MAX_IMAGES} a request")
            column = "image" if "image" in model_input else model_input.columns[0]
            return np.stack(
                [self._decode(value, row) for row, value in enumerate(model_input[column])]
            )
        return self._pixels(model_input)

    def _pixels(self, model_input: Any) -> np.ndarray:
        """N x H x W x C numbers in 0..255, checked before any cast (NaN would become 0)."""
        shape = tuple(self.model.input_shape[1:])
        try:
            pixels = np.asarray(model_input, dtype=np.float64)
        except (TypeError, ValueError):
            raise bad_request(
                f"inputs should be an N x {' x '.join(map(str, shape))} array of numbers"
            ) from None
        if pixels.ndim == 3 and shape[-1] == 1:
            pixels = pixels[..., None]  # grayscale images given as N x H x W
        if pixels.ndim != 4 or pixels.shape[1:] != shape:
            raise bad_request(
                f"inputs has shape {pixels.shape}; the model takes N x "
                f"{' x '.join(map(str, shape))} (uint8 pixels)"
            )
        if len(pixels) > MAX_IMAGES:
            raise bad_request(f"{len(pixels)} images: at most {MAX_IMAGES} a request")
        if not np.isfinite(pixels).all() or pixels.min() < 0 or pixels.max() > 255:
            raise bad_request("inputs should hold pixel values from 0 to 255 (no NaN, no inf)")
        return np.rint(pixels).astype(np.uint8)

    def _decode(self, encoded: str | bytes, row: int) -> np.ndarray:
        """Like the runner's own reading of image files: any format, RGB first, bilinear."""
        from PIL import Image

        height, width, channels = self.model.input_shape[1:]
        try:
            data = base64.b64decode(encoded, validate=True)
        except (binascii.Error, TypeError, ValueError):
            raise bad_request(f"image {row} is not base64 text") from None
        limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # ours, not PIL's
        try:
            with Image.open(io.BytesIO(data)) as header:  # the header only, nothing decoded
                columns, lines = header.size
        except Exception:
            raise bad_request(f"image {row} is not an image file that can be read") from None
        finally:
            Image.MAX_IMAGE_PIXELS = limit
        if columns * lines > MAX_PIXELS:
            raise bad_request(
                f"image {row} declares {columns}x{lines} pixels, over the limit of {MAX_PIXELS:,}"
            )
        try:
            import tensorflow as tf
        except ImportError:  # a server without TensorFlow decodes as the runner does then
            return _decode_pillow(data, row, (height, width), channels)
        try:
            image = tf.io.decode_image(data, channels=3, expand_animations=False, dtype=tf.uint8)
        except tf.errors.InvalidArgumentError:
            raise bad_request(f"image {row} cannot be decoded (corrupt or truncated)") from None
        image = tf.image.resize(image, (height, width))
        if channels == 1:
            image = tf.image.rgb_to_grayscale(image)
        return tf.cast(tf.round(tf.clip_by_value(image, 0.0, 255.0)), tf.uint8).numpy()


def _decode_pillow(data: bytes, row: int, size: tuple[int, int], channels: int) -> np.ndarray:
    """runner/data/images.py's decode_pillow (this file stands alone: MLflow loads it)."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.seek(0)
            rgb = image.convert("RGB").resize((size[1], size[0]), Image.Resampling.BILINEAR)
            if channels == 1:
                return np.asarray(rgb.convert("L"), dtype=np.uint8)[:, :, None]
            return np.asarray(rgb, dtype=np.uint8)
    except Exception:
        raise bad_request(f"image {row} cannot be decoded (corrupt or truncated)") from None


mlflow.models.set_model(ImageClassifier())
