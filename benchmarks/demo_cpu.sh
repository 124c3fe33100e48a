#!/usr/bin/env bash
# `make demo` from a fresh clone, timed: the install (make install into a new .venv) and then `make demo` itself
# (whose install step is then only the package's re-install). Writes benchmarks/results/demo_cpu.json with the
# held-out Dice, the times, the commit and the machine. Run it from a fresh clone:
#   git clone <repo> x && cd x && bash benchmarks/demo_cpu.sh [warm|cold]
# cold: pip's cache is not used (every package downloaded).
set -euo pipefail
CACHE=${1:-warm}
[ "$CACHE" = cold ] && export PIP_NO_CACHE_DIR=1
[ -e .venv ] && { echo "run this from a fresh clone (.venv exists)"; exit 1; }
t0=$(date +%s.%N)
make install > demo_install.log 2>&1
t1=$(date +%s.%N)
make demo 2>&1 | tee demo_run.log
t2=$(date +%s.%N)
.venv/bin/python - "$t0" "$t1" "$t2" "$CACHE" <<'PY'
import json, os, platform, subprocess, sys
t0, t1, t2 = map(float, sys.argv[1:4])
summary = json.load(open("nnunet_mamba_demo/demo_summary.json"))
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
mem_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30, 1)
import torch, nnunetv2
from importlib.metadata import version
result = {
    "mean_dice": summary["mean_dice"], "dice_per_label": summary["dice_per_label"],
    "total_seconds": round(t2 - t0, 1), "install_seconds": round(t1 - t0, 1),
    "demo_seconds": round(t2 - t1, 1), "demo_steps_seconds": {k: round(v, 1) for k, v in summary["seconds"].items()},
    "pip_cache": sys.argv[4], "trainer": summary["trainer"], "configuration": summary["configuration"],
    "device": summary["device"],
    "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip(),
    "machine": {"cpu": cpu, "cores": os.cpu_count(), "memory_gb": mem_gb, "python": platform.python_version(),
                "torch": torch.__version__, "nnunetv2": version("nnunetv2")},
}
os.makedirs("benchmarks/results", exist_ok=True)
json.dump(result, open("benchmarks/results/demo_cpu.json", "w"), indent=2)
print(json.dumps(result, indent=2))
PY
