"""Is the fused scan bound by the CPU that launches its kernels? For one shape and several K on a GPU.

Per forward+backward (``multidir_scan_fwd`` with carries, then ``multidir_scan_bwd``) it reports
  * enqueue: CPU time to issue the calls (no synchronisation: the GPU runs behind),
  * wall: time per call with the queue kept full, as ``triton.testing.do_bench`` sees it (median),
  * kernels: summed CUDA kernel time per call (torch.profiler),
  * launches: kernels per call.
When enqueue is close to wall and well above kernels, the launches (Python + driver) are the bottleneck.

    python benchmarks/scan_launch_overhead.py --shape 2,512,16x16x16 --ks 1 2 3 [--dtype bf16] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from scan import bench, git_commit, make_inputs, parse_shape, scan_env, versions  # noqa: E402

from nnunet_mamba.kernels import triton_scan as T  # noqa: E402
from nnunet_mamba.kernels.directions import default_directions  # noqa: E402


def measure(shape: str, K: int, dtype, reps: int) -> dict:
    Bsz, D, grid = parse_shape(shape)
    args, dout = make_inputs(Bsz, D, grid, K, dtype, "cuda")
    rest = (grid, default_directions(len(grid), K), True)

    def fwd_bwd():
        _, carries = T.multidir_scan_fwd(*args, *rest, return_carries=True)
        T.multidir_scan_bwd(dout, *args, *rest, carries=carries)

    for _ in range(3):
        fwd_bwd()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        fwd_bwd()
    enqueue = (time.perf_counter() - t0) / reps
    torch.cuda.synchronize()
    wall = bench(fwd_bwd)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            fwd_bwd()
        torch.cuda.synchronize()
    events = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    kernels = sum(e.device_time for e in events) / 1000.0 / reps
    return dict(shape=shape, K=K, enqueue_ms=enqueue * 1e3, wall_ms=wall, kernels_ms=kernels,
                launches=len(events) / reps)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="2,512,16x16x16", help="B,D,AxBxC")
    ap.add_argument("--ks", type=int, nargs="*", default=[1, 2, 3])
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"])
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    dtype = torch.bfloat16 if a.dtype == "bf16" else torch.float32
    rows = []
    for K in a.ks:
        r = measure(a.shape, K, dtype, a.reps)
        rows.append(r)
        print(f"{a.shape} K={K} {a.dtype}: enqueue {r['enqueue_ms']:.3f} ms, wall {r['wall_ms']:.3f} ms, "
              f"kernels {r['kernels_ms']:.3f} ms, {r['launches']:.0f} launches", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(dict(device=torch.cuda.get_device_name(), versions=versions(), commit=git_commit(None),
                           scan_env=scan_env(), dtype=a.dtype, rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
