"""Where the fused scan's time goes, kernel by kernel (torch.profiler), for one shape on a GPU.

Runs forward + backward of the Triton operator a few times under ``torch.profiler`` and prints the CUDA time
per kernel name and phase (forward call, backward call: summary walks, carries, scans, torch reductions), so a
change can be aimed at the kernel that costs most. With ``--ncu-once`` it runs exactly one forward + backward after a warm-up (for
``ncu --kernel-name regex:seq_bwd --launch-skip ...``).

    python benchmarks/scan_profile.py --shape 2,256,32x32x32 --K 3 [--dtype bf16] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from scan import git_commit, make_inputs, parse_shape, scan_env, versions  # noqa: E402

from nnunet_mamba.kernels import triton_scan as T  # noqa: E402
from nnunet_mamba.kernels.directions import default_directions  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="2,256,32x32x32", help="B,D,AxBxC")
    ap.add_argument("--K", type=int, default=3)
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"])
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--ncu-once", action="store_true", help="warm up, then exactly one fwd + bwd (for ncu)")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    Bsz, D, grid = parse_shape(a.shape)
    dtype = torch.bfloat16 if a.dtype == "bf16" else torch.float32
    args, dout = make_inputs(Bsz, D, grid, a.K, dtype, "cuda")
    rest = (grid, default_directions(len(grid), a.K), True)

    def step():
        _, c = T.multidir_scan_fwd(*args, *rest, return_carries=True)
        T.multidir_scan_bwd(dout, *args, *rest, carries=c)

    carries = T.multidir_scan_fwd(*args, *rest, return_carries=True)[1]

    step()
    torch.cuda.synchronize()
    if a.ncu_once:
        torch.cuda.cudart().cudaProfilerStart()
        step()
        torch.cuda.synchronize()
        torch.cuda.cudart().cudaProfilerStop()
        return
    per_kernel = {}
    for phase, call in (("fwd", lambda: T.multidir_scan_fwd(*args, *rest)),
                        ("bwd", lambda: T.multidir_scan_bwd(dout, *args, *rest, carries=carries))):
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            for _ in range(a.iters):
                call()
            torch.cuda.synchronize()
        for ev in prof.events():
            if ev.device_type == torch.autograd.DeviceType.CUDA:
                name = f"{phase}: " + ev.name.split("(")[0][:55]
                t, n = per_kernel.get(name, (0.0, 0))
                per_kernel[name] = (t + ev.device_time / 1000.0, n + 1)
    rows = sorted(((t / a.iters, n // a.iters, name) for name, (t, n) in per_kernel.items()), reverse=True)
    total = sum(r[0] for r in rows)
    print(f"{a.shape} K={a.K} {a.dtype}: {total:.3f} ms of kernels per fwd+bwd "
          f"(L={math.prod(grid)}, cfg bwd {T._config(math.prod(grid), D, True, Bsz)})")
    for ms, n, name in rows:
        print(f"  {ms:8.3f} ms  {100 * ms / total:5.1f} %  x{n:<3d} {name}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(dict(shape=a.shape, K=a.K, dtype=a.dtype, device=torch.cuda.get_device_name(),
                           versions=versions(), commit=git_commit(None), scan_env=scan_env(),
                           kernels=[dict(ms=ms, launches=n, name=name) for ms, n, name in rows]), f, indent=1)


if __name__ == "__main__":
    main()
