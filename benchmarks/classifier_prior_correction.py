"""Decisions of saved classifier predictions before and after the class-prior correction (a benchmark).

Reads ``predictions.csv`` files written by the classifier trainers before they corrected for class-balanced
sampling, moves their probabilities to the training cases' class frequencies (the MedMNIST npz's train labels),
exactly as the trainers now do (``prior_corrected_logits``), and reports accuracy, balanced accuracy and AUC.

    python benchmarks/classifier_prior_correction.py --npz ../shared/data/medmnist/adrenalmnist3d.npz \\
        --out benchmarks/results/adrenalmnist3d_shape_bs32/prior_correction \\
        benchmarks/results/adrenalmnist3d_shape_bs32/seed0/*/predictions.csv
"""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

from nnunet_mamba.classification.labels import class_prior, prior_corrected_logits
from nnunet_mamba.classification.metrics import classification_metrics


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("predictions", nargs="+", type=Path)
    ap.add_argument("--npz", required=True, type=Path, help="the MedMNIST file (train labels give the prior)")
    ap.add_argument("--out", required=True, type=Path, help="path prefix for .json and .md")
    a = ap.parse_args()
    train = np.load(a.npz)["train_labels"].reshape(-1)
    rows, out = [], {}
    for path in a.predictions:
        table = list(csv.DictReader(open(path)))
        names = [k[2:] for k in table[0] if k.startswith("p_")]
        y = np.array([int(r["true_class"]) for r in table])
        p = np.array([[float(r[f"p_{n}"]) for n in names] for r in table])
        prior = class_prior(train, len(names))
        corrected = np.exp(prior_corrected_logits(np.log(np.clip(p, 1e-12, 1)), prior))
        corrected /= corrected.sum(1, keepdims=True)
        before, after = classification_metrics(y, p, names), classification_metrics(y, corrected, names)
        name = path.parent.name
        out[name] = {"file": str(path), "prior": prior.tolist(), "before": before, "after": after}
        rows.append(f"| {name} | {before['accuracy']:.3f} | {after['accuracy']:.3f} "
                    f"| {before['balanced_accuracy']:.3f} | {after['balanced_accuracy']:.3f} | {before['auc']:.3f} "
                    f"| {after['auc']:.3f} |")
    majority = max(np.bincount(y)) / len(y)
    md = ["# Class-prior correction of saved predictions", "",
          f"Training prior {np.round(class_prior(train, len(names)), 3).tolist()} from {a.npz.name}; "
          f"{len(y)} validation cases; always predicting the majority class scores accuracy {majority:.3f}.", "",
          "| trainer | accuracy before | after | balanced accuracy before | after | AUC before | after |",
          "|---|---|---|---|---|---|---|", *rows]
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.with_suffix(".json").write_text(json.dumps(out, indent=2) + "\n")
    a.out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
