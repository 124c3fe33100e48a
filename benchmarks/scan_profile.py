"""Where the fused scan's time goes, kernel by kernel (torch.profiler), on a GPU.

Runs forward + backward of the Triton operator a few times under ``torch.profiler`` and prints the CUDA time
per kernel name and phase (forward call, backward call: summary walks, carries, scans, torch reductions), so a
change can be aimed at the kernel that costs most. Several shapes, K and dtypes give one block each; with
``--totals`` only one line per case (kernel time of the forward and of the backward call, launches, and the wall
time of a forward+backward with the queue kept full): on a machine whose CPU cannot keep up with the GPU, the
kernel time is what a faster host would see. With ``--ncu-once`` it runs exactly one forward + backward after a
warm-up (for ``ncu --kernel-name regex:seq_bwd --launch-skip ...``).

    python benchmarks/scan_profile.py --shape 2,256,32x32x32 --K 3 [--dtype bf16] [--json out.json]
    python benchmarks/scan_profile.py --shape 2,640,8x8x8 --shape 2,320,4x4x4 --K 2 3 4 --dtype fp32 bf16 --totals
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ab import current_commit  # noqa: E402
from scan import (DTYPES, N_STATE, bench, cuda_kernels, make_inputs, parse_shape, scan_options_in_force,  # noqa: E402
                  versions)

from nnunet_mamba.kernels import options  # noqa: E402
from nnunet_mamba.kernels import triton as T  # noqa: E402
from nnunet_mamba.kernels.directions import default_directions  # noqa: E402
from nnunet_mamba.kernels.triton.plan import plan  # noqa: E402


def profile_case(shape: str, K: int, dtype: str, iters: int, ncu_once: bool = False) -> dict:
    """Kernel times per (phase, kernel name) of one forward and one backward call, averaged over ``iters``."""
    Bsz, D, grid = parse_shape(shape)
    args, dout = make_inputs(Bsz, D, grid, K, DTYPES[dtype], "cuda")
    rest = (grid, default_directions(len(grid), K), True)

    def step():
        _, c = T.multidir_scan_fwd(*args, *rest, return_carries=True)
        T.multidir_scan_bwd(dout, *args, *rest, carries=c)

    carries = T.multidir_scan_fwd(*args, *rest, return_carries=True)[1]
    step()
    torch.cuda.synchronize()
    if ncu_once:
        torch.cuda.cudart().cudaProfilerStart()
        step()
        torch.cuda.synchronize()
        torch.cuda.cudart().cudaProfilerStop()
        return {}
    per_kernel = {}
    for phase, call in (("fwd", lambda: T.multidir_scan_fwd(*args, *rest)),
                        ("bwd", lambda: T.multidir_scan_bwd(dout, *args, *rest, carries=carries))):
        for kernel, ms in cuda_kernels(call, iters):
            name = f"{phase}: " + kernel.split("(")[0][:55]
            t, n = per_kernel.get(name, (0.0, 0))
            per_kernel[name] = (t + ms, n + 1)
    rows = sorted(((t / iters, n // iters, name) for name, (t, n) in per_kernel.items()), reverse=True)
    phase_ms = {p: sum(ms for ms, _, name in rows if name.startswith(p)) for p in ("fwd", "bwd")}
    plan_bwd = plan(Bsz, math.prod(grid), D, K, N_STATE, DTYPES[dtype], True, options.deterministic(), True)
    return dict(shape=shape, K=K, dtype=dtype, L=math.prod(grid), plan_bwd=dataclasses.asdict(plan_bwd),
                kernels_fwd_ms=phase_ms["fwd"], kernels_bwd_ms=phase_ms["bwd"],
                kernels_ms=phase_ms["fwd"] + phase_ms["bwd"], launches=sum(n for _, n, _ in rows),
                wall_ms=bench(step), kernels=[dict(ms=ms, launches=n, name=name) for ms, n, name in rows])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", action="append", default=None, help="B,D,AxBxC (repeatable; default 2,256,32x32x32)")
    ap.add_argument("--K", type=int, nargs="+", default=[3])
    ap.add_argument("--dtype", nargs="+", default=["bf16"], choices=["bf16", "fp32"])
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--totals", action="store_true", help="one line per case instead of the per-kernel table")
    ap.add_argument("--ncu-once", action="store_true", help="warm up, then exactly one fwd + bwd (for ncu)")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    cases = []
    for shape, K, dtype in itertools.product(a.shape or ["2,256,32x32x32"], a.K, a.dtype):
        case = profile_case(shape, K, dtype, a.iters, a.ncu_once)
        if a.ncu_once:
            return
        cases.append(case)
        head = (f"{shape} K={K} {dtype}: kernels {case['kernels_fwd_ms']:.3f} + {case['kernels_bwd_ms']:.3f} = "
                f"{case['kernels_ms']:.3f} ms per fwd+bwd, {case['launches']} launches, wall {case['wall_ms']:.3f} ms")
        print(head if a.totals else f"{head} (L={case['L']}, backward plan {case['plan_bwd']})", flush=True)
        if not a.totals:
            for k in case["kernels"]:
                print(f"  {k['ms']:8.3f} ms  {100 * k['ms'] / case['kernels_ms']:5.1f} %  "
                      f"x{k['launches']:<3d} {k['name']}")
        torch.cuda.empty_cache()
    if a.json:
        with open(a.json, "w") as f:
            json.dump(dict(device=torch.cuda.get_device_name(), versions=versions(), commit=current_commit(),
                           scan_options=scan_options_in_force(), cases=cases), f, indent=1)


if __name__ == "__main__":
    main()
