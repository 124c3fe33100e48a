"""Compile time of the scan kernels a network's first training step needs, one by one against ahead in parallel, on
this machine's CPUs: no GPU needed (a benchmark, not a test).

Triton compiles each kernel on its first launch, and a new machine (or an empty Triton cache) compiles every scan
kernel of a network during its first training step. ``kernels/triton/ahead.py`` compiles all the kernels of a scan
call at once on a thread pool. Both are CPU work, so both are measured here without a GPU: Triton's JIT is pointed
at a stand-in driver whose target is sm_90 (H100 / H200), and the host code of every scan call of one forward and
one backward of the network (``network_scan_shapes.network_calls``: sizes, directions and optional inputs of each
call) runs with compile-only launches, in the order a training step reaches them (forward calls in order, backward
calls in reverse). Each side runs in its own process with an empty Triton cache:

* ``one by one``: a pool of one thread, which compiles as the launches themselves do;
* ``per call``: the first call of each problem compiles its kernels at once (``ahead.compile_ahead``), on the pool
  of ``ahead.executor()`` (``MAX_THREADS``, at most the CPU count): what any first step gets;
* ``whole step``: every call's forward and backward kernels in one batch (``ahead.compile_training_step``), as our
  trainers do before their first step.

Inputs are uninitialised CPU tensors of the call's sizes in ``--dtype`` (bf16: the scan's input dtype under bf16
autocast for the networks whose Mamba layers follow autocast; U-Mamba's run in float32, the same kernels in another
dtype). Kernels shared by several calls compile once, as in training.

    python benchmarks/compile_ahead.py [--networks umamba_enc segmamba ...] [--plan hippocampus_resenc_m]
Writes results/compile_ahead_<host>.json and .md.
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

import torch

HERE = Path(__file__).parent
DEFAULT_NETWORKS = ("umamba_bot", "umamba_enc", "segmamba", "lightmunet", "nnmamba", "mamba_resenc")
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
MODES = ("one_by_one", "per_call", "step")


def stand_in_hopper_driver() -> None:
    """Triton's JIT compiles for sm_90; nothing can be launched."""
    import types

    from triton.backends.compiler import GPUTarget
    from triton.runtime import driver
    driver.set_active(types.SimpleNamespace(get_current_device=lambda: 0, get_current_stream=lambda device: 0,
                                            get_current_target=lambda: GPUTarget("cuda", 90, 32)))


def call_inputs(c, dtype) -> dict:
    L = 1
    for s in c.grid:
        L *= s
    K, e = len(c.directions), lambda *shape, dt=dtype: torch.empty(shape, dtype=dt)  # noqa: E731
    return dict(u=e(c.batch, L, c.channels), delta=e(c.batch, L, K, c.channels),
                A=e(K, c.channels, c.states, dt=torch.float32), Bm=e(c.batch, L, K, c.states),
                Cm=e(c.batch, L, K, c.states), Dskip=e(K, c.channels, dt=torch.float32) if c.has_D else None,
                delta_bias=e(K, c.channels, dt=torch.float32) if c.has_delta_bias else None,
                z=e(c.batch, L, c.channels) if c.has_z else None, grid=c.grid, directions=c.directions,
                delta_softplus=c.delta_softplus)


def compiled_count() -> int:
    """Kernels in the JIT caches of every scan kernel (device 0)."""
    from nnunet_mamba.kernels.triton import chunked, param_grads, sequential
    fns = [chunked._fwd_kernel, chunked._bwd_kernel, sequential._carry_kernel, param_grads._param_grads_kernel]
    for n in (16,):
        fns += list(sequential.kernels(n, sequential.SUB_CHUNK).values())
    return sum(len(f.device_caches[0][0]) for f in fns if 0 in f.device_caches)


def one_side(network: str, plan: str, mode: str, dtype: str) -> dict:
    """Child process: the compile-only passes of one forward and one backward, timed."""
    from concurrent.futures import ThreadPoolExecutor

    from network_scan_shapes import network_calls  # this folder is on sys.path

    import nnunet_mamba.kernels.triton as kt
    from nnunet_mamba.kernels.triton import ahead
    from nnunet_mamba.kernels.triton.plan import carries_shape
    stand_in_hopper_driver()
    if mode == "one_by_one":
        ahead._executor = ThreadPoolExecutor(1)
    calls = network_calls(network, plan)
    if calls is None:
        return {"error": "not built for this plan"}
    distinct = list(dict.fromkeys(calls))  # a repeated call finds its kernels compiled: no pass of its own
    inputs = [call_inputs(c, DTYPES[dtype]) for c in distinct]
    start = time.perf_counter()
    if mode == "step":  # every call's forward and backward kernels in one batch
        if ahead.compile_training_step(lambda: [kt.multidir_scan_fwd(**x) for x in inputs]) is None:
            raise RuntimeError("the compile-ahead pass did not run")
        t_fwd = None
    else:  # each call's forward kernels in one batch, in order; then each call's backward kernels, in reverse
        for x in inputs:
            if not ahead.compile_ahead(lambda: kt.multidir_scan_fwd(**x)):
                raise RuntimeError("the compile-ahead pass did not run")
        t_fwd = round(time.perf_counter() - start, 2)
        for c, x in reversed(list(zip(distinct, inputs))):
            shape = carries_shape(c.batch, x["u"].shape[1], c.channels, len(c.directions), c.states)
            carries = torch.empty(shape) if shape != (0,) else None
            if not ahead.compile_ahead(lambda: kt.multidir_scan_bwd(torch.empty_like(x["u"]), **x, carries=carries)):
                raise RuntimeError("the compile-ahead pass did not run")
    total = time.perf_counter() - start
    return {"scan_calls": len(calls), "distinct_calls": len(distinct), "kernels_compiled": compiled_count(),
            "forward_s": t_fwd, "total_s": round(total, 2)}


def run_side(network, plan, mode, dtype) -> dict:
    with tempfile.TemporaryDirectory(prefix="triton_cache_") as cache:
        cmd = [sys.executable, __file__, "--one", network, plan, mode, "--dtype", dtype]
        env = dict(os.environ, TRITON_CACHE_DIR=cache)
        env.pop("TRITON_INTERPRET", None)
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=HERE)
    rows = [line[4:] for line in r.stdout.splitlines() if line.startswith("ROW ")]
    return json.loads(rows[-1]) if rows else {"error": (r.stderr or r.stdout).strip().splitlines()[-1:]}


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=HERE, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--networks", nargs="+", default=list(DEFAULT_NETWORKS))
    ap.add_argument("--plan", default="hippocampus_resenc_m")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    ap.add_argument("--one", nargs=3, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(HERE / "results"))
    a = ap.parse_args()
    if a.one:
        network, plan, mode = a.one
        print("ROW " + json.dumps(one_side(network, plan, mode, a.dtype)), flush=True)
        return
    import triton

    from nnunet_mamba.kernels.triton import ahead
    pool = min(ahead.MAX_THREADS, os.cpu_count() or 1)
    meta = {"host": platform.node(), "cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "ahead_threads": pool, "torch": torch.__version__, "triton": triton.__version__, "commit": commit(),
            "plan": a.plan, "dtype": a.dtype, "target": "sm_90", "date": time.strftime("%Y-%m-%d")}
    rows = []
    for network in a.networks:
        row = {"network": network, **{mode: run_side(network, a.plan, mode, a.dtype) for mode in MODES}}
        rows.append(row)
        print(json.dumps(row), flush=True)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"compile_ahead_{a.plan}_{meta['cpus']}cpu"
    stem.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    lines = [f"# Scan-kernel compile time of one training step, sm_90 target, on {meta['cpus']} CPUs",
             "",
             f"Plan {a.plan}, inputs {a.dtype}; Triton {meta['triton']}, torch {meta['torch']}, commit "
             f"{meta['commit']}, {meta['date']}; ahead: {pool} threads. Empty Triton cache per side "
             "(`benchmarks/compile_ahead.py`).",
             "",
             "| network | scan calls (distinct) | kernels compiled | one by one, s | per call, s | whole step, s | "
             "one by one / per call | one by one / whole step |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        s, c, w = (r[m] for m in MODES)
        failed = [x["error"] for x in (s, c, w) if "error" in x]
        if failed:
            lines.append(f"| {r['network']} | {failed[0]} | | | | | | |")
            continue
        lines.append(f"| {r['network']} | {s['scan_calls']} ({s['distinct_calls']}) | {c['kernels_compiled']} | "
                     f"{s['total_s']:.1f} | {c['total_s']:.1f} | {w['total_s']:.1f} | "
                     f"{s['total_s'] / c['total_s']:.2f}x | {s['total_s'] / w['total_s']:.2f}x |")
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
