"""Side-by-side validation Dice of trainers on one nnU-Net fold: a markdown table and a bar chart (PNG).

Reads each trainer's ``fold_X/validation/summary.json`` (nnU-Net's own evaluation), given as
``NAME=PATH`` pairs, e.g. as copied to benchmarks/results/hippocampus_fold0_5epochs/:

    python benchmarks/hippocampus_accuracy.py --out results/hippocampus_fold0_5epochs/dice \
        nnUNetTrainer=results/.../nnUNetTrainer_5epochs.summary.json MambaTrainer=... NoMambaTrainer=...
"""
from __future__ import annotations

import argparse
import json

LABELS = {"1": "anterior", "2": "posterior"}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+", help="NAME=summary.json")
    ap.add_argument("--out", required=True, help="path prefix for .md and .png")
    ap.add_argument("--title", default="MSD Hippocampus, fold 0 (42 validation cases)")
    a = ap.parse_args()
    rows = {}
    for item in a.runs:
        name, path = item.split("=", 1)
        s = json.load(open(path))
        rows[name] = {lab: s["mean"][lab]["Dice"] for lab in LABELS} | {"mean": s["foreground_mean"]["Dice"],
                                                                         "n": len(s["metric_per_case"])}
    lines = [f"# {a.title}", "", "| trainer | " + " | ".join(f"Dice {v}" for v in LABELS.values())
             + " | mean Dice | cases |", "|---|" + "---|" * (len(LABELS) + 2)]
    for name, r in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{r[lab]:.4f}" for lab in LABELS) + f" | {r['mean']:.4f} | {r['n']} |")
    open(a.out + ".md", "w").write("\n".join(lines) + "\n")
    print("\n".join(lines))

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=120)
    width = 0.8 / len(rows)
    keys = list(LABELS) + ["mean"]
    for i, (name, r) in enumerate(rows.items()):
        xs = [k + i * width for k in range(len(keys))]
        bars = ax.bar(xs, [r[k] for k in keys], width, label=name)
        ax.bar_label(bars, fmt="%.3f", fontsize=7, rotation=90, padding=2)
    ax.set_xticks([k + width * (len(rows) - 1) / 2 for k in range(len(keys))],
                  [LABELS.get(k, "mean") for k in keys])
    lo = min(min(r[k] for k in keys) for r in rows.values())
    ax.set_ylim(max(0.0, lo - 0.05), 1.0)
    ax.set_ylabel("validation Dice")
    ax.set_title(a.title, fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(a.out + ".png")


if __name__ == "__main__":
    main()
