"""Files a classifier writes: per-case predictions (CSV) and summaries (JSON), each written atomically."""
from __future__ import annotations

import csv
import json
import os
from typing import Optional, Sequence

import numpy as np


def write_json(path: str, obj) -> None:
    tmp = f"{path}.partial"
    try:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    os.replace(tmp, path)


def write_predictions_csv(path: str, cases: Sequence[str], probabilities: np.ndarray, names: Sequence[str],
                          true_classes: Optional[Sequence[int]] = None) -> None:
    """``case[,true_class],p_<name>...,predicted_class,predicted_index`` (predicted = argmax), one row per case."""
    tmp = f"{path}.partial"
    try:
        _write_rows(tmp, cases, probabilities, names, true_classes)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    os.replace(tmp, path)


def _write_rows(tmp: str, cases, probabilities, names, true_classes) -> None:
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["case", *(["true_class"] if true_classes is not None else []), *[f"p_{n}" for n in names],
                    "predicted_class", "predicted_index"])
        for i, (case, p) in enumerate(zip(cases, probabilities)):
            k = int(np.argmax(p))
            w.writerow([case, *([int(true_classes[i])] if true_classes is not None else []),
                        *[f"{v:.6f}" for v in p], names[k], k])
