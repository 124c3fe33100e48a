"""Classification metrics (scikit-learn): accuracy, balanced accuracy, AUC, confusion matrix, ROC curves."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from sklearn.metrics import balanced_accuracy_score, confusion_matrix, roc_auc_score, roc_curve


def _check(y_true, probabilities, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim != 2 or p.shape != (len(y), num_classes):
        raise ValueError(f"probabilities have shape {p.shape}; expected ({len(y)}, {num_classes})")
    if len(y) == 0:
        raise ValueError("no cases to evaluate")
    if y.min() < 0 or y.max() >= num_classes:
        raise ValueError(f"true classes must lie in 0..{num_classes - 1}")
    return y, p


def auc(y_true, probabilities) -> float:
    """ROC AUC: binary on the positive class' probability; one-vs-rest macro average for > 2 classes.
    NaN when a class is absent from ``y_true`` (undefined)."""
    y, p = _check(y_true, probabilities, np.asarray(probabilities).shape[1])
    if len(np.unique(y)) < p.shape[1]:
        return math.nan
    if p.shape[1] == 2:
        return float(roc_auc_score(y, p[:, 1]))
    return float(roc_auc_score(y, p / p.sum(1, keepdims=True), multi_class="ovr", average="macro"))


def roc_curves(y_true, probabilities) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """class -> (false positive rates, true positive rates), one-vs-rest; binary: class 1 only."""
    y, p = np.asarray(y_true), np.asarray(probabilities)
    classes = [1] if p.shape[1] == 2 else range(p.shape[1])
    out = {}
    for k in classes:
        positive = y == k
        if positive.any() and (~positive).any():
            fpr, tpr, _ = roc_curve(positive, p[:, k])
            out[k] = (fpr, tpr)
    return out


def classification_metrics(y_true, probabilities, class_names: Sequence[str]) -> dict:
    """Summary of a set of predictions (predicted class = argmax of the probabilities)."""
    y, p = _check(y_true, probabilities, len(class_names))
    pred = p.argmax(1)
    cm = confusion_matrix(y, pred, labels=list(range(len(class_names))))
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.diag(cm) / cm.sum(1)
        precision = np.diag(cm) / cm.sum(0)
    value = auc(y, p)
    return {
        "num_cases": int(len(y)),
        "classes": list(class_names),
        "class_counts": [int(v) for v in np.bincount(y, minlength=len(class_names))],
        "accuracy": float((pred == y).mean()),
        "balanced_accuracy": float(balanced_accuracy_score(y, pred)),
        "auc": None if math.isnan(value) else value,
        "auc_kind": "binary (class 1 vs 0)" if len(class_names) == 2 else "one-vs-rest macro average",
        "confusion_matrix": cm.tolist(),
        "confusion_matrix_axes": "rows: true class, columns: predicted class",
        "recall_per_class": [None if np.isnan(v) else float(v) for v in recall],
        "precision_per_class": [None if np.isnan(v) else float(v) for v in precision],
    }
