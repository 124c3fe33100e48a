"""Per-case classes of a classification dataset (nnU-Net raw format + a ``classification`` record).

``dataset.json`` carries ``"classification": {"classes": {"0": name, ...}, "cases": {case: class}, "file":
"classes.csv"}``. ``cases`` is preferred (every copy of dataset.json carries it: preprocessed and results
folders, checkpoints); without it the CSV ``file`` (columns ``case,class``) is read from the dataset's
nnU-Net preprocessed or raw folder.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Optional, Sequence

import numpy as np


def classification_record(dataset_json: dict) -> dict:
    record = dataset_json.get("classification")
    if not isinstance(record, dict) or not isinstance(record.get("classes"), dict) or not record["classes"]:
        raise ValueError(f"dataset.json of {dataset_json.get('name', 'this dataset')!r} has no 'classification' "
                         "record with a 'classes' map ({\"0\": name, ...}); convert the dataset with "
                         "'nnunet-mamba convert medmnist' or add the record (README: Classification)")
    return record


def class_names(dataset_json: dict) -> list[str]:
    """Class names in index order; the indices must be 0..K-1."""
    classes = classification_record(dataset_json)["classes"]
    try:
        indexed = {int(k): str(v) for k, v in classes.items()}
    except ValueError:
        raise ValueError(f"dataset.json classification.classes keys must be integers, got {sorted(classes)}") from None
    if sorted(indexed) != list(range(len(indexed))) or len(indexed) < 2:
        raise ValueError(f"dataset.json classification.classes must number the classes 0..K-1 (K >= 2), got "
                         f"{sorted(indexed)}")
    return [indexed[i] for i in range(len(indexed))]


def read_class_csv(path: Path) -> dict[str, int]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"case", "class"} <= set(reader.fieldnames):
            raise ValueError(f"{path}: needs the columns 'case' and 'class', has {reader.fieldnames}")
        out = {}
        for line, row in enumerate(reader, start=2):
            try:
                out[row["case"]] = int(row["class"])
            except (TypeError, ValueError):
                raise ValueError(f"{path}, line {line}: class {row['class']!r} is not an integer") from None
        return out


def case_classes(dataset_json: dict, dataset_name: Optional[str] = None) -> dict[str, int]:
    """case -> class index, checked against the class map."""
    record = classification_record(dataset_json)
    n = len(class_names(dataset_json))
    if isinstance(record.get("cases"), dict):
        classes, where = {str(k): int(v) for k, v in record["cases"].items()}, "dataset.json classification.cases"
    else:
        name = record.get("file", "classes.csv")
        roots = [os.environ.get(v) for v in ("nnUNet_preprocessed", "nnUNet_raw")]
        candidates = [Path(r) / dataset_name / name for r in roots if r and dataset_name]
        found = [c for c in candidates if c.is_file()]
        if not found:
            raise FileNotFoundError(f"dataset.json has no classification.cases and {name} was not found in "
                                    f"{', '.join(map(str, candidates)) or '$nnUNet_preprocessed / $nnUNet_raw'}")
        classes, where = read_class_csv(found[0]), str(found[0])
    bad = sorted(c for c, k in classes.items() if not 0 <= k < n)
    if bad:
        raise ValueError(f"{where}: case {bad[0]!r} has class {classes[bad[0]]}, outside 0..{n - 1} "
                         f"({len(bad)} such case(s))")
    return classes


def classes_of(cases: Sequence[str], classes: dict[str, int]) -> np.ndarray:
    """The class of each case, with one error listing cases that have none."""
    missing = [c for c in cases if c not in classes]
    if missing:
        raise ValueError(f"{len(missing)} case(s) have no class (first: {missing[0]!r}); every training case needs "
                         "one in dataset.json classification.cases or classes.csv")
    return np.array([classes[c] for c in cases], dtype=np.int64)


def balanced_sampling_probabilities(labels: Sequence[int]) -> np.ndarray:
    """Per-case sampling probabilities that draw every present class equally often (each case of class k gets
    1 / (K_present * n_k))."""
    labels = np.asarray(labels)
    if labels.size == 0:
        raise ValueError("no cases to sample from")
    values, counts = np.unique(labels, return_counts=True)
    per_class = {v: 1.0 / (len(values) * c) for v, c in zip(values.tolist(), counts.tolist())}
    return np.array([per_class[v] for v in labels.tolist()], dtype=np.float64)


def class_prior(labels: Sequence[int], num_classes: int) -> np.ndarray:
    """Class frequencies of the training cases (every class at least one count, so no class gets probability 0)."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes).astype(np.float64)
    counts = np.maximum(counts, 1.0)
    return counts / counts.sum()


def prior_corrected_logits(logits: np.ndarray, prior: Optional[Sequence[float]]) -> np.ndarray:
    """Logits of a network trained on class-balanced batches, moved to the training cases' class frequencies.

    Balanced sampling trains the network for a uniform class prior; Bayes' rule with the true prior ``prior``
    gives p(c | x) proportional to p_balanced(c | x) * prior[c], i.e. ``logits + log(prior)``. Ranking within one
    class (and so the binary AUC) is unchanged; the argmax decision becomes the one for the data's prior.
    """
    if prior is None:
        return logits
    prior = np.asarray(prior, dtype=np.float64)
    if prior.shape != (logits.shape[-1],) or (prior <= 0).any():
        raise ValueError(f"class prior {prior.tolist()} does not fit {logits.shape[-1]} classes")
    return logits + np.log(prior).astype(logits.dtype)
