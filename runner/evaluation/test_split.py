"""Evaluate the best model on the test split and log the reports a reader of the run wants.

The command `python -m runner.evaluate --model MODEL data=...` scores a trained model on other
labelled data the same way (runner/evaluation/scoring.py).

Single-label (multiclass, binary): test metrics, classification report, confusion matrix.
Multi-label: test metrics plus per-class average precision, mAP and F1 at a threshold, and a
per-class report (true/false positives and negatives per class) instead of a confusion matrix.
"""

from __future__ import annotations

import logging

import keras
import numpy as np
from sklearn.metrics import (
    average_precision_score,
    classification_report,
    f1_score,
    multilabel_confusion_matrix,
)

from runner.augmentation.transforms import MIRROR_SENSITIVE
from runner.config.schema import TTA
from runner.data.base import DataInfo, Splits, spread_indices
from runner.data.streams import evaluation_batches
from runner.evaluation.tta import views
from runner.reports import plots
from runner.tracking.run_log import RunLog

log = logging.getLogger(__name__)


def evaluate(
    model: keras.Model,
    splits: Splits,
    run_log: RunLog,
    *,
    batch_size: int,
    threshold: float,
    title: str,
    tta: TTA = TTA.none,
) -> dict[str, float]:
    """Score `model` on `splits.test`; log the metrics, reports and figures to `run_log`.
    With `tta` (flip, flip_translate), also `test_tta_<metric>`: the scores of the predictions
    averaged over the TTA views of each image (the reports stay those of the plain
    predictions)."""
    info = splits.info
    y_true = splits.test.y
    batches = evaluation_batches(splits.test, batch_size=batch_size)
    count = len(splits.test)  # batches split over devices may end padded
    probabilities = model.predict(batches, verbose=0)[:count]
    metrics = {
        f"test_{name}": value for name, value in scored(model, y_true, probabilities).items()
    }
    if TTA(tta) is not TTA.none:
        if info.name in MIRROR_SENSITIVE:
            log.warning(
                "evaluate.tta=%s averages each test image with its mirror, but the classes "
                "of data=%s are not mirror-symmetric: expect test_tta_* below test_*",
                TTA(tta).value,
                info.name,
            )
        averaged = sum(
            weight
            * (
                probabilities
                if view is None
                else model.predict(
                    evaluation_batches(splits.test, batch_size=batch_size, transform=view),
                    verbose=0,
                )[:count]
            )
            for weight, view in views(tta)
        )
        metrics.update(
            {f"test_tta_{name}": value for name, value in scored(model, y_true, averaged).items()}
        )
    y_pred = predicted_labels(probabilities, info, threshold)
    names = list(info.class_names)
    _log_classification_report(run_log, y_true, y_pred, names)
    if info.task == "multilabel":
        metrics.update(_multilabel_reports(run_log, y_true, y_pred, probabilities, names, title))
    else:
        figure = plots.confusion_matrix(y_true, y_pred, names, f"{title}: test confusion matrix")
        run_log.log_figure(figure, "plots/confusion_matrix.png")
        plots.close(figure)
        _log_prediction_grid(run_log, splits, y_pred, probabilities, names, title)
    run_log.log_metrics(metrics)
    return metrics


def scored(model: keras.Model, y_true: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    """What `model.evaluate` reports (its compiled loss, with any regularization, and metrics)
    from predictions already made: the test set is read and predicted once, not twice."""
    model.reset_metrics()
    loss = model.compute_loss(y=y_true, y_pred=probabilities, training=False)
    results = {
        name: float(value)
        for name, value in model.compute_metrics(None, y_true, probabilities, None).items()
    }
    model.reset_metrics()
    return {**results, "loss": float(loss)}


def _log_prediction_grid(
    run_log: RunLog,
    splits: Splits,
    y_pred: np.ndarray,
    probabilities: np.ndarray,
    names: list[str],
    title: str,
    count: int = 18,
) -> None:
    """Test images with predicted vs true label, as the tutorials show them."""
    count = min(count, len(splits.test))
    if probabilities.shape[1] == 1:  # binary: probability of the predicted class
        scores = np.where(y_pred == 1, probabilities[:, 0], 1 - probabilities[:, 0])
    else:
        scores = probabilities.max(axis=1)
    shown = spread_indices(splits.test.y, count)  # every class, even in a class-ordered split
    figure = plots.prediction_grid(
        splits.test.images(shown),
        [names[i] for i in splits.test.y[shown]],
        [names[i] for i in y_pred[shown]],
        scores[shown],
        f"{title}: test predictions",
    )
    run_log.log_figure(figure, "plots/test_predictions.png")
    plots.close(figure)


def predicted_labels(probabilities: np.ndarray, info: DataInfo, threshold: float) -> np.ndarray:
    if info.task == "multilabel":
        return (probabilities >= threshold).astype(np.int64)
    if info.task == "binary":
        return (probabilities[:, 0] >= threshold).astype(np.int64)
    return probabilities.argmax(axis=1)


def _log_classification_report(
    run_log: RunLog, y_true: np.ndarray, y_pred: np.ndarray, names: list[str]
) -> None:
    options = dict(labels=list(range(len(names))), target_names=names, zero_division=0)
    run_log.log_text(
        classification_report(y_true, y_pred, digits=4, **options),
        "reports/classification_report.txt",
    )
    run_log.log_json(
        classification_report(y_true, y_pred, output_dict=True, **options),
        "reports/classification_report.json",
    )


def multilabel_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, scores: np.ndarray
) -> tuple[dict[str, float], dict[int, float]]:
    """mAP and F1 (micro, macro) of multi-hot labels, and the AP of each class.

    A class with no positive example in the split has no AP (it is undefined) and is left out
    of mAP and of macro F1 alike, so both average over the same classes.
    """
    present = [c for c in range(y_true.shape[1]) if y_true[:, c].any()]
    per_class_ap = {c: float(average_precision_score(y_true[:, c], scores[:, c])) for c in present}
    metrics = {
        "test_mAP": float(np.mean(list(per_class_ap.values()))) if per_class_ap else 0.0,
        "test_f1_micro": float(f1_score(y_true, y_pred, average="micro", zero_division=0)),
        "test_f1_macro": float(
            f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)
        )
        if present
        else 0.0,
    }
    return metrics, per_class_ap


def _multilabel_reports(
    run_log: RunLog,
    y_true: np.ndarray,
    y_pred: np.ndarray,
    scores: np.ndarray,
    names: list[str],
    title: str,
) -> dict[str, float]:
    metrics, ap_by_index = multilabel_metrics(y_true, y_pred, scores)
    per_class_ap = {names[c]: ap for c, ap in ap_by_index.items()}
    matrices = multilabel_confusion_matrix(y_true, y_pred)
    per_class = {
        name: {
            "true_negatives": int(m[0, 0]),
            "false_positives": int(m[0, 1]),
            "false_negatives": int(m[1, 0]),
            "true_positives": int(m[1, 1]),
            "support": int(y_true[:, index].sum()),
            "average_precision": per_class_ap.get(name),
        }
        for index, (name, m) in enumerate(zip(names, matrices, strict=True))
    }
    run_log.log_json(per_class, "reports/per_class.json")
    figure = plots.per_class_bars(per_class_ap, "average precision", f"{title}: test AP per class")
    run_log.log_figure(figure, "plots/per_class_ap.png")
    plots.close(figure)
    return metrics
