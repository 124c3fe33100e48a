"""Random damage to a small real dataset, many times: how often a converter's result is unchanged, how often it
refuses with a message naming the damaged file, and how often it writes a wrong result or loses data (both must
be 0). The same trial as tests/test_fault_injection.py.

    python benchmarks/fault_injection.py [--trials 300] [--out benchmarks/results/fault_injection_cpu.json]
"""
from __future__ import annotations

import argparse
import collections
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from test_fault_injection import trial, tree_digest  # noqa: E402
from test_msd_conversion import small_task  # noqa: E402


class Capture:
    """The part of pytest's capsys that ``trial`` uses: stderr of the last command."""

    def readouterr(self):
        err = sys.stderr.getvalue()
        sys.stderr.seek(0)
        sys.stderr.truncate()
        return collections.namedtuple("Captured", "out err")("", err)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "fault_injection_cpu.json"))
    args = ap.parse_args()
    from nnunet_mamba.dataset_conversion.msd import convert_msd
    import io

    counts, failures = collections.Counter(), []
    start = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        task = small_task(tmp / "clean", n_train=2, n_test=1)
        clean = tree_digest(convert_msd(task, 920, tmp / "clean_raw", "Fault"))
        rng = np.random.default_rng(args.seed)
        real_stderr = sys.stderr
        for i in range(args.trials):
            sys.stderr = io.StringIO()
            try:
                outcome = trial(task, clean, tmp / "work", rng, Capture())
            finally:
                sys.stderr = real_stderr
            kind = outcome if outcome in ("same", "clear") else "failure"
            counts[kind] += 1
            if kind == "failure":
                failures.append(outcome)
            if (i + 1) % 50 == 0:
                print(f"{i + 1}/{args.trials}: {dict(counts)}", flush=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=ROOT).stdout.strip()
    result = {"trials": args.trials, "seed": args.seed, "same_output": counts["same"],
              "clear_message": counts["clear"], "silent_wrong_or_lost": counts["failure"], "failures": failures,
              "seconds": round(time.time() - start, 1), "commit": commit, "machine": platform.platform(),
              "python": platform.python_version(), "dataset": "3 MSD Hippocampus cases (2 training, 1 test)"}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "failures"}))
    for f in failures[:20]:
        print("FAILURE", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
