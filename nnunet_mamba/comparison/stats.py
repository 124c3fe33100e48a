"""Summary statistics and paired differences for comparing trainers."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def describe(values: Sequence[float]) -> dict:
    """Mean, sample standard deviation and count (NaNs dropped)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    return {"n": int(v.size), "mean": float(v.mean()) if v.size else None,
            "std": float(v.std(ddof=1)) if v.size > 1 else None}


def paired_difference(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> dict:
    """``a - b`` over paired observations: the mean difference, its Student-t confidence interval, the paired
    t-test and the Wilcoxon signed-rank test (two-sided p-values). Pairs with a NaN on either side are dropped."""
    from scipy import stats
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired observations need equal lengths, got {a.shape} and {b.shape}")
    keep = ~(np.isnan(a) | np.isnan(b))
    d = a[keep] - b[keep]
    n = int(d.size)
    out = {"n": n, "mean": float(d.mean()) if n else None, "ci_low": None, "ci_high": None,
           "confidence": confidence, "p_ttest": None, "p_wilcoxon": None}
    if n < 2:
        return out
    se = d.std(ddof=1) / math.sqrt(n)
    half = float(stats.t.ppf((1 + confidence) / 2, n - 1) * se)
    out["ci_low"], out["ci_high"] = out["mean"] - half, out["mean"] + half
    if se > 1e-12 * max(1.0, abs(out["mean"])):
        out["p_ttest"] = float(stats.ttest_rel(a[keep], b[keep]).pvalue)
    elif out["mean"] == 0:
        out["p_ttest"] = 1.0  # identical: no difference; a constant nonzero difference leaves the t-test undefined
    out["p_wilcoxon"] = float(stats.wilcoxon(d).pvalue) if np.any(d != 0) else 1.0
    return out
