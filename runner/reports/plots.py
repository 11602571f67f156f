"""Matplotlib figures a run logs: learning curves and the confusion matrix."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # files only: no display needed

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from sklearn.metrics import ConfusionMatrixDisplay  # noqa: E402


def learning_curves(history: Mapping[str, Sequence[float]], title: str) -> Figure:
    """Loss and every other metric, train vs validation, one panel each, by epoch; the
    learning rate last, when a schedule or ReduceLROnPlateau moved it."""
    names = [name for name in history if not name.startswith("val_") and name != "learning_rate"]
    names.sort(key=lambda name: name != "loss")  # loss first
    rates = history.get("learning_rate") or []
    if len(set(np.round(np.asarray(rates, dtype=float), 12))) > 1:
        names.append("learning_rate")
    figure, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 4), squeeze=False)
    for axis, name in zip(axes[0], names, strict=True):
        epochs = np.arange(1, len(history[name]) + 1)
        label = "after the epoch" if name == "learning_rate" else f"train {name}"
        axis.plot(epochs, history[name], marker="o", label=label)
        if f"val_{name}" in history:
            axis.plot(epochs, history[f"val_{name}"], marker="o", label=f"validation {name}")
        axis.set_xlabel("epoch")
        axis.set_ylabel(name)
        axis.set_title(name)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def confusion_matrix(
    y_true: np.ndarray, y_pred: np.ndarray, class_names: Sequence[str], title: str
) -> Figure:
    size = max(5.0, 0.6 * len(class_names) + 2)
    figure, axis = plt.subplots(figsize=(size, size))
    ConfusionMatrixDisplay.from_predictions(
        y_true,
        y_pred,
        labels=list(range(len(class_names))),
        display_labels=list(class_names),
        xticks_rotation=45,
        cmap="Blues",
        colorbar=False,
        ax=axis,
    )
    axis.set_title(title)
    figure.tight_layout()
    return figure


def close(figure: Figure) -> None:
    plt.close(figure)


def per_class_bars(values: Mapping[str, float], label: str, title: str) -> Figure:
    names = list(values)
    figure, axis = plt.subplots(figsize=(max(6.0, 0.45 * len(names) + 2), 4))
    axis.bar(names, [values[name] for name in names])
    axis.set_ylim(0, 1)
    axis.set_ylabel(label)
    axis.set_title(title)
    axis.tick_params(axis="x", rotation=60)
    axis.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    return figure


def augmentation_grid(originals: np.ndarray, augmented: np.ndarray, title: str) -> Figure:
    """One row per training image: the original, then its augmented variants."""
    rows, variants = augmented.shape[:2]
    figure, axes = plt.subplots(
        rows, variants + 1, figsize=(1.6 * (variants + 1), 1.6 * rows), squeeze=False
    )
    gray = originals.shape[-1] == 1
    for row in range(rows):
        pictures = [originals[row], *augmented[row]]
        for col, image in enumerate(pictures):
            axis = axes[row][col]
            axis.imshow(image[..., 0] if gray else image, cmap="gray" if gray else None)
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title("original" if col == 0 else f"#{col}", fontsize=8)
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    return figure


def prediction_grid(
    images: np.ndarray,
    true: Sequence[str],
    predicted: Sequence[str],
    scores: Sequence[float],
    title: str,
    columns: int = 6,
) -> Figure:
    """Test images with the predicted label and its probability; wrong ones in red."""
    rows = int(np.ceil(len(images) / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(1.9 * columns, 2.1 * rows), squeeze=False)
    gray = images.shape[-1] == 1
    for index, axis in enumerate(axes.flat):
        axis.set_xticks([])
        axis.set_yticks([])
        if index >= len(images):
            axis.axis("off")
            continue
        image = images[index]
        axis.imshow(image[..., 0] if gray else image, cmap="gray" if gray else None)
        ok = true[index] == predicted[index]
        axis.set_title(
            f"{predicted[index]} {scores[index]:.0%}\n(true: {true[index]})",
            fontsize=7,
            color="black" if ok else "red",
        )
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    return figure
