"""Random damage to a small real dataset, many times: how often a converter's result is unchanged, how often it
refuses with a message naming the damaged file, and how often it writes a wrong result or loses data (both must
be 0). The same trial as tests/test_fault_injection.py.

    python benchmarks/fault_injection.py [--trials 500] [--out benchmarks/results/fault_injection_cpu.json]
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
from test_fault_injection import COMMANDS, clean_run, trial  # noqa: E402


class Capture:
    """The part of pytest's capsys that ``trial`` uses: stderr of the last command."""

    def readouterr(self):
        err = sys.stderr.getvalue()
        sys.stderr.seek(0)
        sys.stderr.truncate()
        return collections.namedtuple("Captured", "out err")("", err)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=500, help="per command")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "fault_injection_cpu.json"))
    args = ap.parse_args()
    import io

    per_command, failures = {}, []
    start = time.time()
    real_stderr = sys.stderr
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for command in sorted(COMMANDS):
            sys.stderr = io.StringIO()
            try:
                task, clean = clean_run(tmp / f"clean_{command}", command, Capture())
            finally:
                sys.stderr = real_stderr
            rng = np.random.default_rng(args.seed)
            counts = collections.Counter()
            for i in range(args.trials):
                sys.stderr = io.StringIO()
                try:
                    outcome = trial(task, clean, tmp / "work", rng, Capture(), command)
                finally:
                    sys.stderr = real_stderr
                kind = outcome if outcome in ("same", "clear") else "failure"
                counts[kind] += 1
                if kind == "failure":
                    failures.append(f"{command}: {outcome}")
            per_command[command] = {"same_output": counts["same"], "clear_message": counts["clear"],
                                    "silent_wrong_or_lost": counts["failure"]}
            print(command, per_command[command], flush=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=ROOT).stdout.strip()
    result = {"trials_per_command": args.trials, "seed": args.seed, "commands": per_command, "failures": failures,
              "seconds": round(time.time() - start, 1), "commit": commit, "machine": platform.platform(),
              "python": platform.python_version(),
              "dataset": "msd, folder: 3 real MSD Hippocampus cases (2 training, 1 test); brats, submit: 2 synthetic "
                         "BraTS 2021 cases (and random predictions)"}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "failures"}))
    for f in failures[:20]:
        print("FAILURE", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
