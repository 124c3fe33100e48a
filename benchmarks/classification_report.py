"""AdrenalMNIST3D report: our validation metrics next to the published MedMNIST v2 baselines.

Reads ``<Trainer>__<Plans>__<config>/fold_0/validation/{summary.json,predictions.csv}`` under --results (nnU-Net's
results folder of the dataset, e.g. unpacked from benchmarks/gpu_classification.sh) and writes report.md and
auc.png into --out. AUC intervals are percentile bootstraps (2000 resamples of the validation cases).

    python benchmarks/classification_report.py --results /tmp/res/Dataset970_AdrenalMNIST3D \
        --out benchmarks/results/adrenalmnist3d --title "GPU run (H100)" --npz .../adrenalmnist3d.npz
"""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

# MedMNIST v2 (Yang et al., Scientific Data 10:41, 2023), AdrenalMNIST3D, official TEST split (298 cases).
# Only values that could be checked against a source are filled in; None = not verified here.
SOURCE = "https://medmnist.com/v2 (benchmark table of MedMNIST v2, Yang et al. 2023, Scientific Data 10:41)"
VERIFIED_VIA = ("habib-analyst/MedMNIST_v2_Reproducibility_Benchmark configs/benchmark-references.json "
                "(cites https://medmnist.com/v2, retrieved 2026-09-21) and a second public repository's "
                "PAPER_3D_R50_3D table; both give the same pair")
PUBLISHED = [  # (method, test AUC, test ACC)
    ("ResNet-18 + 2.5D", None, None),
    ("ResNet-18 + 3D", None, None),
    ("ResNet-18 + ACS", None, None),
    ("ResNet-50 + 2.5D", None, None),
    ("ResNet-50 + 3D", 0.828, 0.745),
    ("ResNet-50 + ACS", None, None),
    ("auto-sklearn", None, None),
    ("AutoKeras", None, None),
]


def bootstrap_auc(y: np.ndarray, p: np.ndarray, n: int = 2000, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n):
        idx = rng.integers(0, len(y), len(y))
        if len(np.unique(y[idx])) == 2:
            values.append(roc_auc_score(y[idx], p[idx]))
    return float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))


def load_runs(results: Path) -> list[dict]:
    runs = []
    for summary_file in sorted(results.glob("*/fold_0/validation/summary.json")):
        s = json.loads(summary_file.read_text())
        with open(summary_file.with_name("predictions.csv"), newline="") as f:
            rows = list(csv.DictReader(f))
        positive = f"p_{s['classes'][1]}"
        y = np.array([int(r["true_class"]) for r in rows])
        p = np.array([float(r[positive]) for r in rows])
        h = s.get("history", {})
        best = s["selection"]["best_epoch"]
        runs.append({"trainer": s["trainer"], "epochs": s["epochs_trained"], "cases": s["num_cases"],
                     "auc": s["auc"], "acc": s["accuracy"], "bacc": s["balanced_accuracy"],
                     "ci": bootstrap_auc(y, p), "cm": s["confusion_matrix"], "best_epoch": best,
                     "best_auc": h.get("val_auc", [None])[best] if best is not None and h else None,
                     "patch": s.get("patch_size")})
    if not runs:
        raise SystemExit(f"{results}: no */fold_0/validation/summary.json")
    return runs


def write_chart(runs: list[dict], path: Path, title: str) -> None:
    names = [r["trainer"] for r in runs] + [m for m, a, _ in PUBLISHED if a is not None]
    values = [r["auc"] for r in runs] + [a for _, a, _ in PUBLISHED if a is not None]
    colours = ["tab:blue"] * len(runs) + ["tab:gray"] * (len(names) - len(runs))
    fig, ax = plt.subplots(figsize=(7, 0.6 * len(names) + 1.5))
    ax.barh(range(len(names)), values, color=colours)
    for i, r in enumerate(runs):
        ax.errorbar(r["auc"], i, xerr=[[r["auc"] - r["ci"][0]], [r["ci"][1] - r["auc"]]], color="k", capsize=4)
    for i, v in enumerate(values):
        ax.text(v + 0.005, i, f"{v:.3f}", va="center")
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set(xlim=(0.5, 1.0), xlabel="AUC (blue: ours on val, 98 cases, 95% bootstrap CI; grey: published, test)",
           title=title)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def _best(r: dict) -> str:
    return "n/a" if r["best_auc"] is None else f"{r['best_auc']:.3f} (epoch {r['best_epoch']})"


def volume_auc(npz: Path) -> float:
    """Val AUC of the simplest shape feature: the gland volume (number of nonzero voxels)."""
    z = np.load(npz)
    x, y = z["val_images"], np.asarray(z["val_labels"]).ravel()
    return float(roc_auc_score(y, (x.reshape(len(x), -1) > 0).sum(1)))


def write_report(runs: list[dict], out: Path, title: str, volume: float | None = None) -> None:
    best_published = max((a for _, a, _ in PUBLISHED if a is not None), default=None)
    lines = [f"# AdrenalMNIST3D classification: {title}", "",
             "Ours: nnU-Net plans + preprocessing, fold 0 = official train (1188) / val (98) split; trained on train, "
             "final-epoch weights evaluated on val. The official test split (298) is withheld from this project, so "
             "our numbers are **validation** numbers and the published ones are **test** numbers: they are not the "
             "same cases.", "",
             "| model | split | epochs | AUC (95% CI) | ACC | balanced ACC | confusion [[TN, FP], [FN, TP]] | "
             "best-epoch val AUC (selected on val, optimistic) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in runs:
        lines.append(f"| {r['trainer']} | val ({r['cases']}) | {r['epochs']} | {r['auc']:.3f} "
                     f"({r['ci'][0]:.3f}-{r['ci'][1]:.3f}) | {r['acc']:.3f} | {r['bacc']:.3f} | {r['cm']} | "
                     f"{_best(r)} |")
    for m, a, c in PUBLISHED:
        if a is None:
            lines.append(f"| {m} (MedMNIST v2) | test (298) | | not verified here | not verified here | | | |")
        else:
            lines.append(f"| {m} (MedMNIST v2) | test (298) | | {a:.3f} | {c:.3f} | | | |")
    lines += ["", f"Published values: {SOURCE}; checked via {VERIFIED_VIA}. The other baselines of that table "
              "(ResNet-18/50 with 2.5D/3D/ACS, auto-sklearn, AutoKeras) could not be read from a source available "
              "here, so they are left empty rather than quoted from memory.", ""]
    if best_published is not None:
        for r in runs:
            verdict = "above" if r["auc"] > best_published else "not above"
            lines.append(f"- {r['trainer']}: val AUC {r['auc']:.3f} is {verdict} the best *verified* published test "
                         f"AUC ({best_published:.3f}); its 95% CI is {r['ci'][0]:.3f}-{r['ci'][1]:.3f}.")
    if volume is not None:
        lines.append(f"- Reference on the same val cases: the gland volume alone (nonzero voxel count as the score) "
                     f"gives AUC {volume:.3f}.")
    lines += ["", "![AUC](auc.png)", ""]
    (out / "report.md").write_text("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", required=True, type=Path, help="nnU-Net results folder of the dataset")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "adrenalmnist3d")
    ap.add_argument("--title", default="validation results")
    ap.add_argument("--npz", type=Path, default=None, help="adrenalmnist3d.npz: adds the volume-only reference AUC")
    args = ap.parse_args()
    runs = load_runs(args.results)
    args.out.mkdir(parents=True, exist_ok=True)
    write_chart(runs, args.out / "auc.png", f"AdrenalMNIST3D: {args.title}")
    write_report(runs, args.out, args.title, volume_auc(args.npz) if args.npz else None)
    print((args.out / "report.md").read_text())


if __name__ == "__main__":
    main()
