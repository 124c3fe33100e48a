"""AdrenalMNIST3D report: our validation metrics next to the published MedMNIST v2 baselines.

Reads ``seed<S>/<Dataset>/<Trainer>__<Plans>__<config>/fold_0/validation/{summary.json,predictions.csv}`` under
--results (``runs/`` of the folder unpacked from benchmarks/gpu_classification.sh, whose seed folders are
``seed_<S>``; also the one-seed layout
``<Trainer>__<Plans>__<config>/fold_0/...`` of an nnU-Net dataset results folder) and writes report.md, auc.png
and roc_val.png into --out. AUC intervals are percentile bootstraps (2000 resamples of the validation cases).

    python benchmarks/classification_report.py --results /tmp/cls_res \
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
from sklearn.metrics import roc_auc_score, roc_curve  # noqa: E402

# MedMNIST v2 (Yang et al., Scientific Data 10:41, 2023), AdrenalMNIST3D, official TEST split (298 cases):
# (method, test AUC, test ACC) as read in the project page's source, MedMNIST/medmnist.github.io v2.html at
# commit 6f5bc1a518a647459062dc4338f3edc0cff68b89 ("Benchmarking Performance on MedMNIST3D", the page served as
# https://medmnist.com/v2; that stored version says "Updated on Aug, 2021" and "10,214 3D images", i.e. the
# table of the 2021 preprint, before the paper's final version with 9,998 3D images).
SOURCE = ("github.com/MedMNIST/medmnist.github.io/blob/6f5bc1a518a647459062dc4338f3edc0cff68b89/v2.html "
          "(served as https://medmnist.com/v2; version of Aug 2021)")
PUBLISHED = [
    ("ResNet-18 + 2.5D", 0.707, 0.770),
    ("ResNet-18 + 3D", 0.819, 0.730),
    ("ResNet-18 + ACS", 0.824, 0.719),
    ("ResNet-50 + 2.5D", 0.735, 0.761),
    ("ResNet-50 + 3D", 0.809, 0.732),
    ("ResNet-50 + ACS", 0.821, 0.767),
    ("auto-sklearn", 0.828, 0.802),
    ("AutoKeras", 0.802, 0.705),
]
# A later value of one row: habib-analyst/MedMNIST_v2_Reproducibility_Benchmark configs/benchmark-references.json
# (commit 0ce17a5289aab8e2821c3137e951685f6307073d) quotes https://medmnist.com/v2, retrieved 2026-09-21, for
# ResNet-50 + 3D on AdrenalMNIST3D as AUC 0.828, ACC 0.745 (differs from the 2021 page: the table was revised).
LATER = [("ResNet-50 + 3D (medmnist.com/v2, 2026 copy)", 0.828, 0.745,
          "habib-analyst/MedMNIST_v2_Reproducibility_Benchmark configs/benchmark-references.json @ 0ce17a5")]


def bootstrap_auc(y: np.ndarray, p: np.ndarray, n: int = 2000, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n):
        idx = rng.integers(0, len(y), len(y))
        if len(np.unique(y[idx])) == 2:
            values.append(roc_auc_score(y[idx], p[idx]))
    return float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))


def summary_files(results: Path) -> list[tuple[str, Path]]:
    """(seed label, summary.json): ``seed<S>/<Dataset>/<Trainer>/fold_0`` (several seeds) or ``<Trainer>/fold_0``."""
    found = [(f.parts[-6], f) for f in sorted(results.glob("seed*/*/*/fold_0/validation/summary.json"))]
    return found or [("", f) for f in sorted(results.glob("*/fold_0/validation/summary.json"))]


def load_runs(results: Path) -> list[dict]:
    runs = []
    for seed, summary_file in summary_files(results):
        s = json.loads(summary_file.read_text())
        with open(summary_file.with_name("predictions.csv"), newline="") as f:
            rows = list(csv.DictReader(f))
        positive = f"p_{s['classes'][1]}"
        y = np.array([int(r["true_class"]) for r in rows])
        p = np.array([float(r[positive]) for r in rows])
        h = s.get("history", {})
        best = s["selection"]["best_epoch"]
        weights = s.get("weights") or {"checkpoint": "final epoch", "epoch": s["epochs_trained"] - 1}
        runs.append({"trainer": s["trainer"], "seed": seed, "y": y, "p": p, "weights": weights,
                     "final": s.get("final_epoch"), "mirroring": s.get("test_time_mirroring"),
                     "epochs": s["epochs_trained"], "cases": s["num_cases"],
                     "auc": s["auc"], "acc": s["accuracy"], "bacc": s["balanced_accuracy"],
                     "ci": bootstrap_auc(y, p), "cm": s["confusion_matrix"], "best_epoch": best,
                     "best_auc": h.get("val_auc", [None])[best] if best is not None and h else None,
                     "patch": s.get("patch_size")})
    if not runs:
        raise SystemExit(f"{results}: no */fold_0/validation/summary.json")
    return runs


def _label(r: dict) -> str:
    return f"{r['trainer']} {r['seed']}".strip()


def write_chart(runs: list[dict], path: Path, title: str) -> None:
    names = [_label(r) for r in runs] + [m for m, a, _ in PUBLISHED]
    values = [r["auc"] for r in runs] + [a for _, a, _ in PUBLISHED]
    colours = ["tab:blue"] * len(runs) + ["tab:gray"] * len(PUBLISHED)
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(names) + 1.5))
    ax.barh(range(len(names)), values, color=colours)
    for i, r in enumerate(runs):
        ax.errorbar(r["auc"], i, xerr=[[r["auc"] - r["ci"][0]], [r["ci"][1] - r["auc"]]], color="k", capsize=4)
    for i, v in enumerate(values):
        ax.text(v + 0.005, i, f"{v:.3f}", va="center")
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set(xlim=(0.5, 1.0), xlabel="AUC (blue: ours on val, 98 cases, 95% bootstrap CI; grey: published, test, "
           "2021 table)", title=title)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def write_roc(runs: list[dict], path: Path, title: str) -> None:
    """Every run's val ROC curve, one colour per trainer."""
    trainers = sorted({r["trainer"] for r in runs})
    colours = dict(zip(trainers, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    fig, ax = plt.subplots(figsize=(6, 6))
    for r in runs:
        fpr, tpr, _ = roc_curve(r["y"], r["p"])
        ax.plot(fpr, tpr, color=colours[r["trainer"]], alpha=0.8, label=f"{_label(r)} (AUC {r['auc']:.3f})")
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title, aspect="equal")
    ax.legend(fontsize=7, loc="lower right")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def _best(r: dict) -> str:
    return "n/a" if r["best_auc"] is None else f"{r['best_auc']:.3f} (epoch {r['best_epoch']})"


def volume_auc(npz: Path) -> float:
    """Val AUC of the simplest shape feature: the gland volume (number of nonzero voxels)."""
    z = np.load(npz)
    x, y = z["val_images"], np.asarray(z["val_labels"]).ravel()
    return float(roc_auc_score(y, (x.reshape(len(x), -1) > 0).sum(1)))


def seed_summary(runs: list[dict]) -> list[str]:
    """Per trainer: mean and sample SD of the val AUC over seeds (and of the final-epoch AUC where recorded)."""
    lines = []
    for trainer in sorted({r["trainer"] for r in runs}):
        mine = [r for r in runs if r["trainer"] == trainer]
        aucs = np.array([r["auc"] for r in mine])
        sd = f" ± {aucs.std(ddof=1):.3f} (SD)" if len(aucs) > 1 else ""
        each = ", ".join(f"{r['auc']:.3f}" for r in mine)
        line = f"- {trainer}: val AUC {aucs.mean():.3f}{sd} over {len(mine)} seed(s) [{each}]"
        finals = [r["final"]["auc"] for r in mine if r.get("final") and r["final"].get("auc") is not None]
        if finals:
            line += f"; final-epoch weights {np.mean(finals):.3f} [{', '.join(f'{v:.3f}' for v in finals)}]"
        lines.append(line + ".")
    return lines


def write_report(runs: list[dict], out: Path, title: str, volume: float | None = None) -> None:
    best_published = max(a for _, a, _ in PUBLISHED)
    lines = [f"# AdrenalMNIST3D classification: {title}", "",
             "Ours: nnU-Net plans + preprocessing, fold 0 = official train (1188) / val (98) split; trained on train. "
             "The weights column says which weights were evaluated: the final epoch, or `checkpoint_best.pth`, the "
             "epoch with the best val AUC (model selection on val; such a number is optimistic for "
             "unseen data). The official test split (298) is withheld from this project, so our numbers are "
             "**validation** numbers and the published ones are **test** numbers: they are not the same cases.", "",
             "| model | seed | split | weights | AUC (95% CI) | ACC | balanced ACC | confusion [[TN, FP], [FN, TP]] | "
             "final-epoch AUC | test-time mirroring |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        w = r["weights"]
        final = r["final"]["auc"] if r.get("final") else (r["auc"] if w["checkpoint"] == "final epoch" else None)
        lines.append(f"| {r['trainer']} | {r['seed'] or '-'} | val ({r['cases']}) | {w['checkpoint']}, epoch "
                     f"{w['epoch']} | {r['auc']:.3f} ({r['ci'][0]:.3f}-{r['ci'][1]:.3f}) | {r['acc']:.3f} | "
                     f"{r['bacc']:.3f} | {r['cm']} | {'n/a' if final is None else f'{final:.3f}'} | "
                     f"{r['mirroring'] or 'no'} |")
    for m, a, c in PUBLISHED:
        lines.append(f"| {m} (MedMNIST v2) | | test (298) | | {a:.3f} | {c:.3f} | | | | |")
    for m, a, c, _ in LATER:
        lines.append(f"| {m} | | test (298) | | {a:.3f} | {c:.3f} | | | | |")
    lines += ["", f"Published values (all eight rows): {SOURCE}. "
              f"Later copy of one row: {LATER[0][3]}. The final paper's table (Scientific Data 2023) could not be "
              "read from a source available here; its values may differ from the 2021 table (as the ResNet-50 + 3D "
              "row does).", ""]
    lines += seed_summary(runs)
    for r in runs:
        verdict = "above" if r["auc"] > best_published else "not above"
        lines.append(f"- {_label(r)}: val AUC {r['auc']:.3f} is {verdict} the best published test AUC of the 2021 "
                     f"table ({best_published:.3f}, auto-sklearn); 95% CI {r['ci'][0]:.3f}-{r['ci'][1]:.3f}.")
    if volume is not None:
        lines.append(f"- Reference on the same val cases: the gland volume alone (nonzero voxel count as the score) "
                     f"gives AUC {volume:.3f}.")
    lines += ["", "![AUC](auc.png)", "", "![ROC](roc_val.png)", ""]
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
    write_roc(runs, args.out / "roc_val.png", f"AdrenalMNIST3D val ROC: {args.title}")
    write_report(runs, args.out, args.title, volume_auc(args.npz) if args.npz else None)
    print((args.out / "report.md").read_text())


if __name__ == "__main__":
    main()
