"""The parts every model shares: the input (raw uint8 pixels) and the classifier head.

The task kind decides the head, the loss and the metrics, in this one module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from runner.core.lazy import keras

if TYPE_CHECKING:
    from runner.data.base import DataInfo


def image_input(info: DataInfo) -> tuple[keras.KerasTensor, keras.KerasTensor]:
    """Model input taking raw 0-255 pixels, and the same scaled to [0, 1].

    Scaling inside the model means the saved model predicts on images exactly as they are read;
    so does any normalization fitted on the training data (`info.preprocessing`).
    """
    inputs = keras.Input(shape=info.input_shape, name="image")
    x = keras.layers.Rescaling(1.0 / 255, name="rescale")(inputs)
    for layer, _ in info.preprocessing:
        x = layer(x)
    return inputs, x


def classifier_head(x: keras.KerasTensor, info: DataInfo) -> keras.KerasTensor:
    if info.task == "binary":
        units, activation = 1, "sigmoid"
    else:
        units = info.num_classes
        activation = "sigmoid" if info.task == "multilabel" else "softmax"
    # float32 whatever the mixed-precision policy: probabilities and the loss need its range.
    return keras.layers.Dense(units, activation=activation, name="predictions", dtype="float32")(x)


def loss_and_metrics(
    info: DataInfo, *, label_smoothing: float = 0.0, one_hot: bool = False
) -> tuple[str | keras.losses.Loss, list]:
    """The loss and metrics for the task; with one-hot labels (smoothed or mixed), categorical
    cross-entropy with `label_smoothing`, and `accuracy` compares top classes."""
    if info.task == "multiclass":
        if one_hot:
            loss = keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing)
            return loss, ["accuracy"]
        return "sparse_categorical_crossentropy", ["accuracy"]
    if info.task == "binary":
        if label_smoothing:
            return keras.losses.BinaryCrossentropy(label_smoothing=label_smoothing), ["accuracy"]
        return "binary_crossentropy", ["accuracy"]
    # Multi-label: accuracy per (image, label) is mostly absent labels predicted absent, so it is
    # named for what it is; the ranking metric (PR-AUC, averaged over labels) is the objective.
    return "binary_crossentropy", [
        keras.metrics.BinaryAccuracy(name="binary_accuracy"),
        keras.metrics.AUC(curve="PR", multi_label=True, name="pr_auc"),
    ]


def default_objective(info: DataInfo, *, validated: bool = True) -> str:
    """The validation metric; the same metric on the training data when nothing is held out."""
    metric = "pr_auc" if info.task == "multilabel" else "accuracy"
    return f"val_{metric}" if validated else metric
