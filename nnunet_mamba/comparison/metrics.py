"""Paired observations from nnU-Net's validation summaries.

Segmentation (``fold_X/validation/summary.json`` with ``metric_per_case``): one observation per validation case,
the case's Dice averaged over the foreground labels (labels empty in both reference and prediction skipped, as
nnU-Net's NaN); the key is (seed, case), so arms pair on the same cases. Restoration (our restoration trainers'
summary: ``metric_per_case`` with the ``restored`` and ``degraded`` images' PSNR and SSIM): one observation per
validation case, keyed the same way. Classification (our classifier trainers' summary: ``auc``, ``accuracy``,
``balanced_accuracy``): one observation per run; the key is (seed, fold).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

CLASSIFICATION_METRICS = ("auc", "balanced_accuracy", "accuracy")
RESTORATION_METRICS = ("PSNR", "SSIM")
# per kind of summary: the metrics reported, the first one also per run
METRICS = {"segmentation": ("Dice",), "restoration": RESTORATION_METRICS, "classification": CLASSIFICATION_METRICS}


def read_summary(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not a readable nnU-Net validation summary ({e})") from None


def _number(v) -> float:
    """A summary's value, NaN where it could not be computed (None)."""
    return math.nan if v is None else float(v)


def kind_of(summary: dict) -> str:
    if "metric_per_case" in summary:
        cases = summary["metric_per_case"]
        return "restoration" if cases and "restored" in cases[0] else "segmentation"
    if "auc" in summary and "accuracy" in summary:
        return "classification"
    raise ValueError("neither an nnU-Net segmentation summary (metric_per_case) nor a classification or "
                     "restoration one")


def _case_id(entry: dict) -> str:
    name = Path(entry.get("reference_file") or entry["prediction_file"]).name
    for ending in (".nii.gz", ".nii", ".nrrd", ".mha", ".png", ".tif", ".npz"):
        if name.endswith(ending):
            return name[: -len(ending)]
    return name


def segmentation_observations(summary: dict, seed: int) -> dict:
    """{(seed, case): {"Dice": mean over labels, "Dice_<label>": ...}}."""
    out = {}
    for entry in summary["metric_per_case"]:
        per_label = {lab: m.get("Dice", math.nan) for lab, m in entry["metrics"].items()}
        values = [v for v in per_label.values() if v is not None and not math.isnan(v)]
        row = {"Dice": float(np.mean(values)) if values else math.nan}
        row.update({f"Dice_{lab}": _number(v) for lab, v in per_label.items()})
        out[(seed, _case_id(entry))] = row
    return out


def classification_observations(summary: dict, seed: int, fold: str) -> dict:
    """{(seed, fold): {metric: value}} for AUC, balanced accuracy and accuracy."""
    return {(seed, fold): {k: _number(summary.get(k)) for k in CLASSIFICATION_METRICS}}


def restoration_observations(summary: dict, seed: int) -> dict:
    """{(seed, case): {"PSNR": restored, "SSIM": restored, "PSNR_input": degraded, "SSIM_input": degraded}}."""
    return {(seed, e["case"]): {**{m: _number(e["restored"][m]) for m in RESTORATION_METRICS},
                                **{f"{m}_input": _number(e["degraded"][m]) for m in RESTORATION_METRICS}}
            for e in summary["metric_per_case"]}


def observations_of(summary: dict, kind: str, seed: int, fold: str) -> dict:
    """The paired observations of one run's summary (see the module docstring)."""
    if kind == "segmentation":
        return segmentation_observations(summary, seed)
    if kind == "restoration":
        return restoration_observations(summary, seed)
    return classification_observations(summary, seed, fold)
