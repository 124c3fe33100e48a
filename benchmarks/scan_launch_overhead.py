"""Is the fused scan bound by the CPU that launches its kernels? For one shape and several K on a GPU.

Per forward+backward (``multidir_scan_fwd`` with carries, then ``multidir_scan_bwd``) it reports
  * enqueue: CPU time to issue the calls (no synchronisation: the GPU runs behind),
  * CPU per call: median CPU time of one call issued onto an idle queue (no waiting for the GPU at all),
  * wall: time per call with the queue kept full, as ``triton.testing.do_bench`` sees it (median),
  * kernels: summed CUDA kernel time per call (torch.profiler),
  * launches: kernels per call.
When enqueue is close to wall and well above kernels, the launches (Python + driver) are the bottleneck.

    python benchmarks/scan_launch_overhead.py --shape 2,512,16x16x16 --ks 1 2 3 [--dtype bf16] [--launcher] [--json F]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ab import current_commit  # noqa: E402
from scan import bench, make_inputs, parse_shape, scan_options_in_force, versions  # noqa: E402

from nnunet_mamba.kernels import scan_options  # noqa: E402
from nnunet_mamba.kernels import triton as T  # noqa: E402
from nnunet_mamba.kernels.directions import default_directions  # noqa: E402
from nnunet_mamba.kernels.triton.launch import launch_counts  # noqa: E402


def forward_backward(shape: str, K: int, dtype):
    """(inputs, directions, a function running one forward (with carries) + backward) for B,D,AxBxC and K."""
    Bsz, D, grid = parse_shape(shape)
    args, dout = make_inputs(Bsz, D, grid, K, dtype, "cuda")
    rest = (grid, default_directions(len(grid), K), True)

    def fwd_bwd():
        _, carries = T.multidir_scan_fwd(*args, *rest, return_carries=True)
        T.multidir_scan_bwd(dout, *args, *rest, carries=carries)
    return args, dout, rest, fwd_bwd


def measure(shape: str, K: int, dtype, reps: int) -> dict:
    fwd_bwd = forward_backward(shape, K, dtype)[3]

    for _ in range(3):
        fwd_bwd()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        fwd_bwd()
    enqueue = (time.perf_counter() - t0) / reps
    torch.cuda.synchronize()
    # CPU time of one call on an idle queue (a long queue of launches can make the CPU wait for the GPU)
    cpu = []
    for _ in range(reps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fwd_bwd()
        cpu.append(time.perf_counter() - t0)
    torch.cuda.synchronize()
    cpu_ms = sorted(cpu)[len(cpu) // 2] * 1e3
    wall = bench(fwd_bwd)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            fwd_bwd()
        torch.cuda.synchronize()
    events = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    kernels = sum(e.device_time for e in events) / 1000.0 / reps
    return dict(shape=shape, K=K, enqueue_ms=enqueue * 1e3, cpu_per_call_ms=cpu_ms, wall_ms=wall,
                kernels_ms=kernels, launches=len(events) / reps)


def launcher_split(shape: str, K: int, dtype, reps: int) -> dict:
    """CPU time per forward+backward spent inside Triton's JIT launches (binder, cache lookup, launch; direct
    launches off), and what the same launches cost when replayed straight through the compiled kernels' C launcher
    (``CompiledKernel.run`` with the bound arguments of the JIT call)."""
    with scan_options(direct_launch=False):
        return _launcher_split(shape, K, dtype, reps)


def _launcher_split(shape: str, K: int, dtype, reps: int) -> dict:
    import inspect
    from triton.runtime.jit import JITFunction
    fwd_bwd = forward_backward(shape, K, dtype)[3]
    spent, replay = [0.0], []
    orig_run = JITFunction.run

    def timed_run(self, *a, grid, warmup, **kw):
        t0 = time.perf_counter()
        kernel = orig_run(self, *a, grid=grid, warmup=warmup, **kw)
        spent[0] += time.perf_counter() - t0
        if record and kernel is not None:
            bound = inspect.signature(self.fn).bind(*a, **{k: v for k, v in kw.items() if k in self.arg_names})
            bound.apply_defaults()
            g = grid(bound.arguments) if callable(grid) else tuple(grid) + (1,) * (3 - len(grid))
            replay.append((kernel, g, [bound.arguments[n] for n in self.arg_names]))
        return kernel

    JITFunction.run = timed_run
    try:
        record = False
        for _ in range(3):
            fwd_bwd()
        torch.cuda.synchronize()
        spent[0] = 0.0
        t0 = time.perf_counter()
        for _ in range(reps):
            fwd_bwd()
        total = (time.perf_counter() - t0) / reps
        jit = spent[0] / reps
        torch.cuda.synchronize()
        record = True
        fwd_bwd()
        torch.cuda.synchronize()
    finally:
        JITFunction.run = orig_run
    stream = torch.cuda.current_stream().cuda_stream
    t0 = time.perf_counter()
    for _ in range(reps):
        for kernel, g, values in replay:
            kernel.run(g[0], g[1], g[2], stream, kernel.function, kernel.packed_metadata, None, None, None, *values)
    direct = (time.perf_counter() - t0) / reps
    torch.cuda.synchronize()
    return dict(shape=shape, K=K, enqueue_ms=total * 1e3, in_triton_jit_ms=jit * 1e3,
                direct_replay_ms=direct * 1e3, triton_launches=len(replay))


def direct_vs_jit(shape: str, K: int, dtype, reps: int) -> dict:
    """Timings with the JIT launches and with direct launches (``scan_options(direct_launch=...)``), and the
    largest relative difference between the two paths' outputs and gradients (the forward should be identical;
    dB/dC are fp32 atomics, so their order may differ)."""
    args, dout, rest, _ = forward_backward(shape, K, dtype)
    res = {}
    for direct in (False, True):
        with scan_options(direct_launch=direct):
            counts0 = launch_counts()
            out, carries = T.multidir_scan_fwd(*args, *rest, return_carries=True)
            got = [out, *T.multidir_scan_bwd(dout, *args, *rest, carries=carries)]
            res[direct] = (measure(shape, K, dtype, reps), [g.float() if g is not None else None for g in got])
            res[direct][0]["jit_and_direct_launches"] = [b - a for a, b in zip(counts0, launch_counts())]
    diffs = [((a - b).norm() / b.norm().clamp_min(1e-30)).item()
             for a, b in zip(res[True][1], res[False][1]) if a is not None]
    return dict(jit=res[False][0], direct=res[True][0],
                forward_identical=bool(torch.equal(res[True][1][0], res[False][1][0])), max_rel_diff=max(diffs))


def cpu_profile(shape: str, K: int, dtype, reps: int, top: int = 25):
    """Where the CPU time of a forward+backward goes (cProfile; the profiler slows Python calls down)."""
    import cProfile
    import pstats
    fwd_bwd = forward_backward(shape, K, dtype)[3]
    for _ in range(3):
        fwd_bwd()
    torch.cuda.synchronize()
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(reps):
        fwd_bwd()
    prof.disable()
    torch.cuda.synchronize()
    print(f"    cProfile of {reps} forward+backward calls ({shape}, K={K}):")
    pstats.Stats(prof).sort_stats("tottime").print_stats(top)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="2,512,16x16x16", help="B,D,AxBxC")
    ap.add_argument("--ks", type=int, nargs="*", default=[1, 2, 3])
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"])
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--json", default=None)
    ap.add_argument("--direct", action="store_true",
                    help="compare JIT launches with direct launches (scan_options(direct_launch=...)): "
                         "times, outputs")
    ap.add_argument("--launcher", action="store_true",
                    help="also split the CPU time: inside Triton's JIT launches vs a direct replay "
                         "of the same launches")
    ap.add_argument("--cprofile", action="store_true",
                    help="also profile the CPU side of --reps forward+backward calls (cProfile, top functions)")
    a = ap.parse_args()
    dtype = torch.bfloat16 if a.dtype == "bf16" else torch.float32
    rows = []
    for K in a.ks:
        r = measure(a.shape, K, dtype, a.reps)
        rows.append(r)
        print(f"{a.shape} K={K} {a.dtype}: enqueue {r['enqueue_ms']:.3f} ms, "
              f"CPU per call {r['cpu_per_call_ms']:.3f} ms, wall {r['wall_ms']:.3f} ms, "
              f"kernels {r['kernels_ms']:.3f} ms, {r['launches']:.0f} launches", flush=True)
        if a.direct:
            c = direct_vs_jit(a.shape, K, dtype, a.reps)
            r["direct"] = c
            print(f"    JIT launches: CPU per call {c['jit']['cpu_per_call_ms']:.3f} "
                  f"wall {c['jit']['wall_ms']:.3f} ms; "
                  f"direct: CPU per call {c['direct']['cpu_per_call_ms']:.3f} wall {c['direct']['wall_ms']:.3f} ms; "
                  f"forward identical "
                  f"{c['forward_identical']}, largest relative difference {c['max_rel_diff']:.1e}; "
                  f"direct launcher: JIT / direct "
                  f"launches {c['direct']['jit_and_direct_launches']}", flush=True)
        if a.cprofile:
            cpu_profile(a.shape, K, dtype, a.reps)
        if a.launcher:
            s = launcher_split(a.shape, K, dtype, a.reps)
            r["launcher"] = s
            print(f"    CPU per fwd+bwd: {s['enqueue_ms']:.3f} ms, of it in Triton's JIT launches "
                  f"{s['in_triton_jit_ms']:.3f} ms ({s['triton_launches']} launches); the same launches replayed "
                  f"through the compiled kernels' C launcher: {s['direct_replay_ms']:.3f} ms", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(dict(device=torch.cuda.get_device_name(), versions=versions(), commit=current_commit(),
                           scan_options=scan_options_in_force(), dtype=a.dtype, rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
