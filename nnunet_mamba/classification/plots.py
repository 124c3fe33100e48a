"""PNG figures of a classifier: ROC curves, confusion matrix, training progress."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .metrics import roc_curves  # noqa: E402


def _save(fig, path: Path) -> None:
    """Write next to the target, then rename (no half-written PNG)."""
    tmp = Path(f"{path}.partial.png")
    fig.savefig(tmp, dpi=100, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)


def plot_roc(y_true, probabilities, class_names: Sequence[str], path: Path, title: str = "") -> None:
    fig, ax = plt.subplots(figsize=(5, 5))
    for k, (fpr, tpr) in roc_curves(y_true, probabilities).items():
        from sklearn.metrics import auc as area
        ax.plot(fpr, tpr, lw=2, label=f"{class_names[k]} vs rest (AUC {area(fpr, tpr):.3f})")
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="chance")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1.01),
           title=title or "ROC")
    ax.legend(loc="lower right", fontsize=8)
    _save(fig, Path(path))


def plot_confusion(matrix, class_names: Sequence[str], path: Path, title: str = "") -> None:
    m = np.asarray(matrix)
    fig, ax = plt.subplots(figsize=(1.2 * len(class_names) + 3, 1.2 * len(class_names) + 2.5))
    ax.imshow(m, cmap="Blues")
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(j, i, str(m[i, j]), ha="center", va="center",
                    color="white" if m[i, j] > m.max() / 2 else "black", fontsize=12)
    ax.set(xticks=range(len(class_names)), yticks=range(len(class_names)), xticklabels=class_names,
           yticklabels=class_names, xlabel="predicted class", ylabel="true class", title=title or "confusion matrix")
    _save(fig, Path(path))


def plot_progress(history: dict, path: Path, title: str = "") -> None:
    """Losses (train, val) and validation metrics per epoch."""
    epochs = np.arange(len(history["train_losses"]))
    fig, (ax, bx) = plt.subplots(2, 1, figsize=(8, 7), sharex=True)
    ax.plot(epochs, history["train_losses"], "b-", label="train loss")
    ax.plot(epochs, history["val_losses"], "r-", label="val loss")
    ax.set(ylabel="cross-entropy", title=title or "training progress")
    ax.legend()
    for key, style in (("val_auc", "g-"), ("val_balanced_accuracy", "m-"), ("val_accuracy", "c--")):
        values = np.array([np.nan if v is None else v for v in history[key]], dtype=float)
        bx.plot(epochs, values, style, label=key.replace("_", " "))
    bx.set(xlabel="epoch", ylabel="validation metric", ylim=(0, 1.02))
    bx.legend(loc="lower right")
    _save(fig, Path(path))
