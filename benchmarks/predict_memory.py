"""Memory of a long CPU prediction run (nnUNetv2_predict_from_modelfolder), sampled over time.

Runs the stock command on every image of --images and samples the memory of the whole process tree
(proportional set size from Linux /proc/*/smaps_rollup; summed RSS would count the pages that nnU-Net's
forked workers share several times) every --interval seconds, with the number of finished cases.
Writes <out>.json (samples, summary) and <out>.png (RSS against finished cases).

    python benchmarks/predict_memory.py --model MODEL_FOLDER --images IMAGES --out results/predict_memory_cpu
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def tree_pss_mb(pid: int) -> float:
    """Proportional set size (PSS: shared pages split between the processes that map them, so forked workers
    are not counted twice) of ``pid`` and all its descendants, in MB."""
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
                        break
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    stack.extend(int(c) for c in f.read().split())
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return total / 1024


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, help="trained model folder")
    ap.add_argument("--images", required=True)
    ap.add_argument("--folds", nargs="+", default=["all"])
    ap.add_argument("--interval", type=float, default=0.5)
    ap.add_argument("--out", required=True, help="path prefix")
    a = ap.parse_args()
    n_cases = len({p.name.rsplit("_", 1)[0] for p in Path(a.images).glob("*_0000.nii.gz")})
    exe = str(Path(sys.executable).with_name("nnUNetv2_predict_from_modelfolder"))
    out_dir = Path(tempfile.mkdtemp(prefix="predict_memory_"))
    cmd = [exe, "-i", a.images, "-o", str(out_dir), "-m", a.model, "-f", *a.folds, "-device", "cpu", "-npp", "1",
           "-nps", "1"]
    t0 = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    samples = []
    while proc.poll() is None:
        samples.append(dict(t=time.time() - t0, pss_mb=tree_pss_mb(proc.pid),
                            done=len(list(out_dir.glob("*.nii.gz")))))
        time.sleep(a.interval)
    err = proc.stderr.read()
    if proc.returncode != 0:
        sys.exit(f"prediction failed:\n{err[-3000:]}")
    done = len(list(out_dir.glob("*.nii.gz")))
    by_case = {}
    for s in samples:  # peak RSS while each number of cases was finished
        by_case[s["done"]] = max(by_case.get(s["done"], 0.0), s["pss_mb"])
    xs = sorted(k for k in by_case if k >= 1)
    half = [k for k in xs if k >= done // 2]
    slope = None
    if len(half) >= 2:
        import numpy as np
        slope = float(np.polyfit(half, [by_case[k] for k in half], 1)[0])
    summary = dict(cases=done, expected=n_cases, wall_s=time.time() - t0, peak_pss_mb=max(s["pss_mb"] for s in samples),
                   pss_after_first_case_mb=by_case.get(xs[0]) if xs else None,
                   pss_at_end_mb=by_case.get(xs[-1]) if xs else None, slope_mb_per_case_second_half=slope,
                   command=" ".join(Path(c).name if i == 0 else c for i, c in enumerate(cmd)),
                   cpu=platform.processor() or platform.machine(), cpus=os.cpu_count())
    json.dump(dict(summary=summary, samples=samples), open(a.out + ".json", "w"), indent=1)
    print(json.dumps(summary, indent=1))
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 3.4), dpi=120)
    ax.plot([s["done"] for s in samples], [s["pss_mb"] for s in samples], ".", ms=2)
    ax.set_xlabel("cases finished")
    ax.set_ylabel("memory of the process tree, PSS (MB)")
    ax.set_title(f"nnUNetv2_predict_from_modelfolder, {done} cases, CPU", fontsize=9)
    fig.tight_layout()
    fig.savefig(a.out + ".png")


if __name__ == "__main__":
    main()
