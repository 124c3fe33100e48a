"""Peak memory of ``nnunet-mamba convert brats`` against the number of cases (a benchmark, not a test).

Writes synthetic BraTS 2021-style cases of the real size (240 x 240 x 155, four int16 channels and a label; a
random 40^3 block in a zero volume, so that they compress quickly), converts 4, N/4, N/2 and N of them in a
fresh process each, and records that process's peak resident memory (``ru_maxrss``). The converter keeps no
image between checking a case and writing it, so the peak must not grow with the number of cases.

    python benchmarks/convert_memory.py [--cases 200] [--out benchmarks/results/convert_memory_cpu.json]
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[1]
SHAPE = (155, 240, 240)  # z, y, x
CHANNELS = ("t1", "t1ce", "t2", "flair")


def write_case(folder: Path, cid: str, rng: np.random.Generator) -> None:
    d = folder / cid
    d.mkdir(parents=True)
    z, y, x = (int(rng.integers(0, s - 40)) for s in SHAPE)
    for key in CHANNELS:
        arr = np.zeros(SHAPE, np.int16)
        arr[z:z + 40, y:y + 40, x:x + 40] = rng.integers(1, 1000, (40, 40, 40), dtype=np.int16)
        sitk.WriteImage(sitk.GetImageFromArray(arr), str(d / f"{cid}_{key}.nii.gz"), True)
    seg = np.zeros(SHAPE, np.uint8)
    seg[z:z + 40, y:y + 40, x:x + 40] = rng.choice(np.array([0, 1, 2, 4], np.uint8), (40, 40, 40))
    sitk.WriteImage(sitk.GetImageFromArray(seg), str(d / f"{cid}_seg.nii.gz"), True)


def convert_peak(src: Path, out: Path) -> tuple[float, float]:
    """(peak RSS in MB, seconds) of one ``convert brats`` process."""
    start = time.time()
    code = ("import resource, sys; from nnunet_mamba.cli.main import main; rc = main(sys.argv[1:]); "
            "print('PEAK', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code, "convert", "brats", str(src), "-d", "777", "-o", str(out),
                           "--overwrite"], capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(proc.stderr[-2000:])
    peak_kb = int(next(ln for ln in proc.stdout.splitlines() if ln.startswith("PEAK")).split()[1])
    return peak_kb / 1024, time.time() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=200)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "convert_memory_cpu.json"))
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        pool = tmp / "pool"
        t0 = time.time()
        for i in range(args.cases):
            write_case(pool, f"BraTS2021_{i:05d}", rng)
        print(f"wrote {args.cases} synthetic cases in {time.time() - t0:.0f} s", flush=True)
        for n in sorted({4, args.cases // 4, args.cases // 2, args.cases}):
            src = tmp / f"in_{n}"
            src.mkdir()
            for case in sorted(pool.iterdir())[:n]:
                (src / case.name).symlink_to(case, target_is_directory=True)
            peak, seconds = convert_peak(src, tmp / "raw")
            rows.append({"cases": n, "peak_rss_mb": round(peak, 1), "seconds": round(seconds, 1)})
            print(json.dumps(rows[-1]), flush=True)
            shutil.rmtree(tmp / "raw", ignore_errors=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=ROOT).stdout.strip()
    result = {"benchmark": "convert brats peak memory vs cases", "case_shape_zyx": SHAPE, "channels": len(CHANNELS),
              "rows": rows, "commit": commit, "machine": platform.platform(), "cpus": __import__("os").cpu_count(),
              "python": platform.python_version(), "simpleitk": sitk.Version_VersionString()}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
