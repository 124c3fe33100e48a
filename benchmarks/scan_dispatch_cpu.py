"""Host-side cost of the fused scan's dispatch, without a GPU: Python, plan, options and torch bookkeeping.

Runs ``multidir_scan_fwd`` (with carries) + ``multidir_scan_bwd`` on ``meta`` tensors (shapes and dtypes, no
data, no compute) with every Triton launch replaced by a no-op, so what is left is the CPU work the dispatch adds
around the launches (on a GPU add the launches themselves: ~9 us each through the C launcher, ~37 us each through
Triton's JIT on the H100 machine; ``scan_launch_overhead.py``). Use it to see a host-side change pay off on the
development machine.

    python benchmarks/scan_dispatch_cpu.py [--shape 2,512,16x16x16] [--ks 1 2 3] [--dtype bf16]
        [--profile [--sort tottime|cumulative] [--top 20]] [--direct]
"""
from __future__ import annotations

import argparse
import cProfile
import importlib
import os
import pstats
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nnunet_mamba.kernels import triton as T  # noqa: E402
from nnunet_mamba.kernels.directions import default_directions  # noqa: E402

# the submodules themselves (the package's ``plan`` attribute is the function of that name)
L, PLAN = (importlib.import_module(f"nnunet_mamba.kernels.triton.{m}") for m in ("launch", "plan"))
LAUNCHING = [importlib.import_module(f"nnunet_mamba.kernels.triton.{m}") for m in ("chunked", "sequential",
                                                                                    "param_grads")]


class _NoLaunch:
    def __getitem__(self, grid):
        return lambda *args, **kwargs: None


class _CompiledNoOp:
    """What the direct launcher gets from the stand-in JIT: a compiled kernel whose C launcher does nothing."""
    function = packed_metadata = 0

    @staticmethod
    def run(*args):
        pass


_DIRECT: dict = {}


def _direct_no_launch(fn):
    """The real DirectLauncher (key, launch numbering, argument list) around a JIT stand-in and a no-op kernel."""
    if id(fn) not in _DIRECT:
        d = L.DirectLauncher(fn)
        d.fn = type("_Jit", (), {"__getitem__": lambda self, grid: lambda *a, **k: _CompiledNoOp()})()
        _DIRECT[id(fn)] = d
    return _DIRECT[id(fn)]


def stub_launches(direct: bool) -> None:
    """Every Triton launch of the scan becomes a no-op (``direct``: behind the real direct launcher), and the plan
    and the launcher take their GPU code paths."""
    if direct:
        import types
        L.driver = types.SimpleNamespace(active=types.SimpleNamespace(get_current_device=lambda: 0,
                                                                      get_current_stream=lambda device: 0))
    for module in LAUNCHING:
        module.launcher = _direct_no_launch if direct else (lambda fn: _NoLaunch())
    PLAN.triton_interpreting = L.triton_interpreting = lambda: False


def meta_inputs(Bsz: int, D: int, grid: tuple, K: int, dtype, N: int = 16):
    L = 1
    for s in grid:
        L *= s
    e = lambda *shape, dt=dtype: torch.empty(shape, device="meta", dtype=dt)  # noqa: E731
    args = (e(Bsz, L, D), e(Bsz, L, K, D), e(K, D, N, dt=torch.float32), e(Bsz, L, K, N), e(Bsz, L, K, N),
            e(K, D, dt=torch.float32), e(K, D, dt=torch.float32), e(Bsz, L, D))
    return args, e(Bsz, L, D)


def per_call_us(shape: str, K: int, dtype, reps: int, profile=None) -> float:
    """Median host time of one forward+backward in microseconds; ``profile``: (sort key, rows) to print cProfile's
    table of ``reps`` more calls."""
    b, d, g = shape.split(",")
    grid = tuple(int(x) for x in g.split("x"))
    args, dout = meta_inputs(int(b), int(d), grid, K, dtype)
    rest = (grid, default_directions(len(grid), K), True)

    def fwd_bwd():
        _, carries = T.multidir_scan_fwd(*args, *rest, return_carries=True)
        T.multidir_scan_bwd(dout, *args, *rest, carries=carries)

    for _ in range(5):
        fwd_bwd()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fwd_bwd()
        times.append(time.perf_counter() - t0)
    if profile:
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(reps):
            fwd_bwd()
        prof.disable()
        pstats.Stats(prof).sort_stats(profile[0]).print_stats(profile[1])
    return sorted(times)[len(times) // 2] * 1e6


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", action="append", default=[], metavar="B,D,AxBxC")
    ap.add_argument("--ks", type=int, nargs="*", default=[1, 2, 3, 4])
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"])
    ap.add_argument("--reps", type=int, default=300)
    ap.add_argument("--profile", action="store_true", help="cProfile the calls (top functions)")
    ap.add_argument("--sort", default="tottime", help="--profile: pstats sort key (tottime, cumulative, ...)")
    ap.add_argument("--top", type=int, default=20, help="--profile: rows of the table")
    ap.add_argument("--direct", action="store_true",
                    help="count the direct launcher's host work too (its key, launch numbering and argument list; the "
                         "compiled kernel's C launcher is a no-op)")
    ap.add_argument("--json", default=None, help="also write the figures with the machine, commit and versions")
    a = ap.parse_args()
    dtype = torch.bfloat16 if a.dtype == "bf16" else torch.float32
    stub_launches(a.direct)
    rows = []
    for shape in a.shape or ["2,640,8x8x8", "2,512,16x16x16"]:
        for K in a.ks:
            us = per_call_us(shape, K, dtype, a.reps, (a.sort, a.top) if a.profile else None)
            rows.append(dict(shape=shape, K=K, dtype=a.dtype, direct_launcher=a.direct, host_us_per_fwd_bwd=us))
            what = "the direct launcher's Python counted, its C launcher not" if a.direct else "launches not counted"
            print(f"{shape} K={K} {a.dtype}: {us:.0f} us of host work per forward+backward ({what})", flush=True)
    if a.json:
        import json
        import platform
        from ab import current_commit
        from scan import versions
        with open(a.json, "w") as f:
            json.dump(dict(machine=f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
                           commit=current_commit(), versions=versions(), reps=a.reps, rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
