"""The comparison's table (markdown + JSON) and plot from the finished runs."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Optional

import numpy as np

from .stats import describe, paired_difference


def _fmt(v: Optional[float], digits: int = 4) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def _p(v: Optional[float]) -> str:
    return "-" if v is None else ("<0.0001" if v < 1e-4 else f"{v:.4f}")


def build_report(observations: dict, run_means: dict, metric: str, baseline: str, title: str) -> dict:
    """``observations``: {arm: {key: {metric: value}}} (paired by key); ``run_means``: {arm: [mean of one run]}.
    Differences are each arm minus ``baseline`` over the keys both have."""
    base = observations.get(baseline, {})
    rows = []
    for arm, obs in observations.items():
        values = [o[metric] for o in obs.values()]
        row = {"arm": arm, "runs": len(run_means.get(arm, [])), "observations": describe(values),
               "over_runs": describe(run_means.get(arm, []))}
        extra = sorted({k for o in obs.values() for k in o if k != metric and k.startswith(metric + "_")})
        row["per_part"] = {k: describe([o[k] for o in obs.values()])["mean"] for k in extra}
        if arm != baseline:
            keys = sorted(set(obs) & set(base), key=str)
            row["vs_baseline"] = paired_difference([obs[k][metric] for k in keys], [base[k][metric] for k in keys])
        rows.append(row)
    return {"title": title, "metric": metric, "baseline": baseline, "rows": rows}


def markdown(report: dict, provenance: dict) -> str:
    m, b = report["metric"], report["baseline"]
    parts = sorted({k for r in report["rows"] for k in r["per_part"]})
    head = (f"| trainer | runs | mean {m} | sd over runs | " + "".join(f"{p} | " for p in parts)
            + f"difference vs {b} [95 % CI] | paired t p | Wilcoxon p | pairs |")
    lines = [f"# {report['title']}", "",
             ", ".join(f"{k}: {v}" for k, v in provenance.items()), "", head,
             "|" + "---|" * (head.count("|") - 1)]
    for r in report["rows"]:
        d = r.get("vs_baseline")
        diff = "(baseline)" if d is None else (
            f"{_fmt(d['mean'])} [{_fmt(d['ci_low'])}, {_fmt(d['ci_high'])}]")
        lines.append(f"| {r['arm']} | {r['runs']} | {_fmt(r['observations']['mean'])} | "
                     f"{_fmt(r['over_runs']['std'])} | "
                     + "".join(f"{_fmt(r['per_part'].get(p))} | " for p in parts)
                     + f"{diff} | {_p(None if d is None else d['p_ttest'])} | "
                     f"{_p(None if d is None else d['p_wilcoxon'])} | {'-' if d is None else d['n']} |")
    lines += ["", f"Mean {m}: over all paired observations (validation cases for segmentation and restoration, runs "
              "for classification); sd over runs: of each run's mean. Differences pair the same observation of both "
              "trainers; the interval is Student's t."]
    return "\n".join(lines) + "\n"


def plot(observations: dict, metric: str, baseline: str, path: Path, title: str) -> None:
    """Left: each arm's observations (box + points). Right: paired differences against the baseline."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    arms = list(observations)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(4 + 1.6 * len(arms), 4), dpi=120)
    data = [[o[metric] for o in observations[a].values() if not math.isnan(o[metric])] for a in arms]
    ax1.boxplot(data, showfliers=False)
    rng = np.random.default_rng(0)
    for i, d in enumerate(data, 1):
        ax1.scatter(i + rng.uniform(-0.15, 0.15, len(d)), d, s=6, alpha=0.5)
    ax1.set_xticks(range(1, len(arms) + 1), arms, rotation=20, ha="right", fontsize=7)
    ax1.set_ylabel(metric)
    ax1.set_title(title, fontsize=8)
    base = observations.get(baseline, {})
    others = [a for a in arms if a != baseline]
    diffs = []
    for a in others:
        keys = set(observations[a]) & set(base)
        diffs.append([observations[a][k][metric] - base[k][metric] for k in keys
                      if not (math.isnan(observations[a][k][metric]) or math.isnan(base[k][metric]))])
    if others:
        ax2.boxplot(diffs, showfliers=False)
        for i, d in enumerate(diffs, 1):
            ax2.scatter(i + rng.uniform(-0.15, 0.15, len(d)), d, s=6, alpha=0.5)
        ax2.set_xticks(range(1, len(others) + 1), others, rotation=20, ha="right", fontsize=7)
    ax2.axhline(0, color="grey", lw=0.8)
    ax2.set_ylabel(f"{metric} minus {baseline}")
    ax2.set_title("paired differences", fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(path.name + ".partial.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)


def write(reports: list[dict], observations: dict, provenance: dict, out: Path) -> list[Path]:
    """comparison.md (one table per metric), comparison.json and comparison.png (the first metric) in ``out``,
    each written atomically."""
    out.mkdir(parents=True, exist_ok=True)
    files = []
    text = "\n".join(markdown(r, provenance) for r in reports)
    for name, content in (("comparison.md", text),
                          ("comparison.json", json.dumps({"provenance": provenance, "reports": reports}, indent=2)
                           + "\n")):
        tmp = out / f"{name}.partial"
        tmp.write_text(content)
        os.replace(tmp, out / name)
        files.append(out / name)
    if reports and observations:
        plot(observations, reports[0]["metric"], reports[0]["baseline"], out / "comparison.png", reports[0]["title"])
        files.append(out / "comparison.png")
    return files
