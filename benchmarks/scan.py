"""Benchmark of the fused multi-directional selective scan.

GPU mode (default): for each stage shape (batch, channels, grid) and K = 1..4, in bf16 and fp32,
median times (``triton.testing.do_bench``, CUDA events, warm-up; inputs rotated over several
sets when one set fits in L2) of forward and forward+backward for

  (a) the fused Triton operator (``nnunet_mamba.kernels.triton``; fwd+bwd = fwd call + bwd call,
      the bwd starts from the forward's chunk carries),
  (b) the naive mamba-ssm path (``kernels.mamba_ssm_backend``: permuted copies + one
      ``selective_scan_fn`` per direction + un-permute + sum; fwd+bwd = autograd forward + backward),
      when mamba_ssm is importable,
  (c) the PyTorch reference (skipped where it would take too long; said so in the output),
  (d) K x one mamba-ssm ``selective_scan_fn`` call on an already (B, D, L)-contiguous direction
      (no copies: the per-direction kernel cost alone),

plus the traffic floor ``s*((3K+5)E + 6KS)`` bytes for fwd+bwd (``s*((K+2)E + 2KS)`` for fwd; E=B*D*L,
S=B*N*L) and the bandwidth it implies at the measured fused time, next to a device-to-device copy
measured in the same run. In the first pass it also records the summed CUDA kernel time of (a) and (d) forward+
backward (torch.profiler): the markdown then names the rows whose wall time is over 1.5x their kernel time (the
host did not issue the launches in time) and gives both kernel times next to every cell that misses K x 1-dir.
Writes benchmarks/results/scan_<device>.json and .md.

CPU mode (``--cpu``): the reference's fwd+bwd time at (1, 64, 16^3), K=2, on this machine's CPU;
writes benchmarks/results/scan_cpu.json and .md.

A/B between commits (``--base REF``, REF a wheel or a git commit; see ``ab.py``): every row's fused forward and
forward+backward, timed alternately with the base and with the current install, each time in a fresh process
(base, current, base, current, ... ``--repeats`` pairs per row; the lowest median of each side is kept); writes
scan_ab_<base>_<current>.json and .md (base, current, current / base per row). Where git exists, build the base's
wheel:

    python benchmarks/scan.py --base HEAD~1 --prepare-only        # prints .whl_base/<commit>/nnunet_mamba-*.whl

then, on the GPU machine (the current wheel installed, ``.whl_base/`` carried along):

    python benchmarks/scan.py --base .whl_base/<commit>/nnunet_mamba-*.whl --shapes 0 2 --ks 2 3 --dtypes bf16

(``--base COMMIT`` alone builds and times in one go where git and a GPU are both at hand.) Every timing starts a
process, so pick the rows (``--shapes``, ``--shape``, ``--ks``, ``--dtypes``).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import subprocess
import sys
import time

import torch

import ab  # benchmarks/ab.py (this script's folder is on sys.path)
from nnunet_mamba.kernels import reference as R
from nnunet_mamba.kernels.directions import default_directions

N_STATE = 16
SHAPES = [(2, 640, (8, 8, 8)), (2, 512, (16, 16, 16)), (2, 256, (32, 32, 32)), (2, 128, (64, 64, 64)),
          (1, 96, (64, 64, 64))]
HERE = os.path.dirname(os.path.abspath(__file__))
_BW = {}


def make_inputs(Bsz, D, grid, K, dtype, device, seed=0, N=N_STATE):
    g = torch.Generator(device=device).manual_seed(seed)
    L = math.prod(grid)

    def rnd(*shape, scale=1.0, shift=0.0):
        return torch.randn(*shape, generator=g, device=device) * scale + shift

    u = rnd(Bsz, L, D).to(dtype)
    delta = rnd(Bsz, L, K, D, scale=0.5, shift=-1.0).to(dtype)
    A = -(torch.arange(1, N + 1, dtype=torch.float32).repeat(K, D, 1)).to(device)
    Bm = rnd(Bsz, L, K, N).to(dtype)
    Cm = rnd(Bsz, L, K, N).to(dtype)
    Dk = rnd(K, D)
    db = rnd(K, D, scale=0.3)
    z = rnd(Bsz, L, D).to(dtype)
    dout = rnd(Bsz, L, D).to(dtype)
    return (u, delta, A, Bm, Cm, Dk, db, z), dout


def input_bytes(args, dout):
    return sum(x.numel() * x.element_size() for x in (*args, dout) if isinstance(x, torch.Tensor))


def floor_bytes(Bsz, D, L, K, s, N=N_STATE):
    E, S = Bsz * D * L, Bsz * N * L
    return s * ((3 * K + 5) * E + 6 * K * S), s * ((K + 2) * E + 2 * K * S)


def bench(fn, warmup=25, rep=100):
    import triton
    return triton.testing.do_bench(fn, warmup=warmup, rep=rep, return_mode="median")


DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}  # the benchmarks' dtype names
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}


def cuda_kernels(fn, iters: int) -> list:
    """(kernel name, CUDA time in ms) of every kernel that ``iters`` calls of ``fn`` launched (torch.profiler)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(iters):
            fn()
        torch.cuda.synchronize()
    return [(ev.name, ev.device_time / 1000.0) for ev in prof.events()
            if ev.device_type == torch.autograd.DeviceType.CUDA]


def kernel_ms(fn, iters: int = 5):
    """Summed CUDA kernel time of one call of ``fn`` (mean over ``iters`` calls): the time a host that issues the
    launches in no time would see. None where the profiler records no CUDA kernels or fails (a profiler problem
    must not cost the table)."""
    try:
        fn()
        torch.cuda.synchronize()
        total = sum(ms for _, ms in cuda_kernels(fn, iters))
    except Exception as e:  # noqa: BLE001
        print(f"kernel time not measured: {type(e).__name__}: {str(e)[:200]}", flush=True)
        return None
    return total / iters if total > 0 else None


def rotating(sets, body):
    """A closure that calls body(*set) on the next input set each time."""
    state = {"i": 0}

    def f():
        i = state["i"]
        state["i"] = (i + 1) % len(sets)
        return body(*sets[i])
    return f


def copy_bandwidth(device):
    n = 1 << 28  # 1 GiB fp32
    a = torch.empty(n, device=device, dtype=torch.float32).normal_()
    b = torch.empty_like(a)
    ms = bench(lambda: b.copy_(a), warmup=10, rep=200)
    del a, b
    torch.cuda.empty_cache()
    return 2 * n * 4 / (ms * 1e-3)


def versions():
    v = {"torch": torch.__version__, "python": platform.python_version()}
    try:
        import triton
        v["triton"] = triton.__version__
    except ImportError:
        v["triton"] = None
    try:
        from importlib.metadata import version
        v["mamba_ssm"] = version("mamba_ssm")
    except Exception:
        v["mamba_ssm"] = None
    return v


def parse_shape(text: str, option: str = "--shape") -> tuple[int, int, tuple[int, ...]]:
    """'58,128,10x14x10' -> (58, 128, (10, 14, 10)); a clear exit naming ``option`` otherwise."""
    try:
        b, d, grid = text.split(",")
        return int(b), int(d), tuple(int(g) for g in grid.split("x"))
    except ValueError:
        raise SystemExit(f"{option} {text!r}: expected B,D,AxBxC such as 58,128,10x14x10") from None


def scan_options_in_force() -> dict:
    """The scan options this process runs with (``nnunet_mamba.kernels.options``): part of every result."""
    from nnunet_mamba.kernels import options
    return dict(zip(("backend", "deterministic", "direct_launch"), options.current()))


def fused_module():
    """The Triton backend's module (``multidir_scan_fwd`` / ``multidir_scan_bwd``), found through the dispatch, so
    that an A/B base with another module layout is timed by the same code."""
    from nnunet_mamba.kernels.dispatch import backend_module
    return backend_module("triton")


def build_mamba_ssm(sdist, target):
    """Build mamba-ssm's CUDA extension for sm_90 only from its sdist (offline) into ``target``.

    setup.py is patched so that cc_flag holds only ``-gencode arch=compute_90,code=sm_90``
    (TORCH_CUDA_ARCH_LIST is ignored by it) and MAMBA_FORCE_BUILD skips the prebuilt-wheel download.
    """
    import glob
    import tarfile
    import tempfile
    t0 = time.time()
    target = os.path.abspath(target)
    work = tempfile.mkdtemp()
    with tarfile.open(sdist) as tf:
        tf.extractall(work)
    src = glob.glob(os.path.join(work, "mamba_ssm-*"))[0]
    sp = os.path.join(src, "setup.py")
    text = open(sp).read()
    marker = "    # HACK: The compiler flag -D_GLIBCXX_USE_CXX11_ABI"
    if marker not in text:
        raise RuntimeError("unexpected mamba-ssm setup.py layout")
    text = text.replace(marker, '    cc_flag = ["-gencode", "arch=compute_90,code=sm_90"]\n' + marker, 1)
    open(sp, "w").write(text)
    env = dict(os.environ, MAMBA_FORCE_BUILD="TRUE", MAX_JOBS=str(os.cpu_count() or 8))
    wheels = os.path.join(work, "wheels")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-build-isolation", "--no-deps", "-w", wheels,
                    src], check=True, env=env)
    whl = glob.glob(os.path.join(wheels, "*.whl"))[0]
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", target, whl],
                   check=True)
    sys.path.insert(0, target)
    print(f"built mamba-ssm from {os.path.basename(sdist)} for sm_90 in {time.time() - t0:.0f} s", flush=True)


def naive_paths(M, ssf, sets, args, rest) -> dict:
    """The mamba-ssm timings of one row: the naive multi-directional path (permute copies, one selective_scan_fn
    per direction, un-permute and sum; forward, and autograd forward + backward) and one bare direction with its
    inputs already (B, D, L) contiguous (times K: the cost with a free permutation)."""
    def naive_f(ar, do):
        return M.multidir_scan_fwd(*ar, *rest)

    leaf_sets = []
    for ar, do in sets:
        leaves = [x.detach().requires_grad_(True) if isinstance(x, torch.Tensor) and x.is_floating_point() else x
                  for x in ar]
        leaf_sets.append((leaves, do))

    def naive_fb(ar, do):
        for x in ar:
            if isinstance(x, torch.Tensor):
                x.grad = None
        out = M.naive_forward(*ar, *rest)
        out.backward(do)

    u1 = sets[0][0][0][:, :, :].transpose(1, 2).contiguous()
    dl1 = sets[0][0][1][:, :, 0].transpose(1, 2).contiguous()
    B1 = sets[0][0][3][:, :, 0].transpose(1, 2).contiguous()
    C1 = sets[0][0][4][:, :, 0].transpose(1, 2).contiguous()
    A1, D1, db1 = args[2][0], args[5][0], args[6][0]
    lv = [x.detach().requires_grad_(True) for x in (u1, dl1, A1, B1, C1, D1, db1)]
    dy1 = torch.randn_like(u1)

    def one_fb():
        y = ssf(lv[0], lv[1], lv[2], lv[3], lv[4], D=lv[5], delta_bias=lv[6], delta_softplus=True)
        y.backward(dy1)
    return {"naive_fwd_ms": rotating(sets, naive_f), "naive_fwdbwd_ms": rotating(leaf_sets, naive_fb),
            "mamba_1dir_fwd_ms": lambda: ssf(u1, dl1, A1, B1, C1, D=D1, delta_bias=db1, delta_softplus=True),
            "mamba_1dir_fwdbwd_ms": one_fb}


def input_sets(Bsz, D, grid, K, dtype, l2, dev) -> list:
    """The (args, dout) sets of one row: one, or as many as it takes to keep a set out of L2 from one call to its
    next."""
    args, dout = make_inputs(Bsz, D, grid, K, dtype, dev)
    nbytes = input_bytes(args, dout)
    nsets = 1 if nbytes * 2 > l2 else min(8, max(2, math.ceil(3 * l2 / nbytes)))
    return [(args, dout)] + [make_inputs(Bsz, D, grid, K, dtype, dev, seed=i + 1) for i in range(nsets - 1)]


def fused_paths(T, sets, rest) -> dict:
    """The fused operator's forward and forward+backward (the backward from the forward's chunk carries where the
    forward keeps them), each a closure over the rotating input sets."""
    def fused_f(ar, do):
        return T.multidir_scan_fwd(*ar, *rest)

    def fused_fb(ar, do):
        _, carries = T.multidir_scan_fwd(*ar, *rest, return_carries=True)
        return T.multidir_scan_bwd(do, *ar, *rest, carries=carries)
    return {"fused_fwd_ms": rotating(sets, fused_f), "fused_fwdbwd_ms": rotating(sets, fused_fb)}


def time_case(case, row, T, M, ssf, l2, a, first: bool, dev: str = "cuda") -> dict:
    """One pass over one row of the table: every path's do_bench median is appended to ``<path>_runs_ms``; the
    row's time of a path is the lowest so far. The reference is timed in the first pass only."""
    Bsz, D, grid, dtype, K = case
    L = math.prod(grid)
    sets = input_sets(Bsz, D, grid, K, dtype, l2, dev)
    args, dout = sets[0]
    rest = (grid, default_directions(len(grid), K), True)
    if row is None:
        row = dict(B=Bsz, D=D, grid="x".join(map(str, grid)), L=L, K=K, dtype=str(dtype).replace("torch.", ""),
                   input_sets=len(sets))
        s = torch.finfo(dtype).bits // 8
        row["floor_bytes_fwdbwd"], row["floor_bytes_fwd"] = floor_bytes(Bsz, D, L, K, s)

    paths = fused_paths(T, sets, rest)
    if M is not None:
        paths.update(naive_paths(M, ssf, sets, args, rest))
    for name, fn in paths.items():  # one after another, so that a slow moment is not always the same path's
        runs = row.setdefault(name.replace("_ms", "_runs_ms"), [])
        runs.append(bench(fn, rep=a.rep_ms))
        row[name] = min(runs)
    if first:  # kernel time of the forward+backward rows: does the wall time above follow the GPU or the host?
        for name in ("fused_fwdbwd_ms", "mamba_1dir_fwdbwd_ms"):
            if name in paths:
                row[name.replace("_ms", "_kernels_ms")] = kernel_ms(paths[name])
    fb, ff = row["floor_bytes_fwdbwd"], row["floor_bytes_fwd"]
    row["fused_fwdbwd_GBps"] = fb / (row["fused_fwdbwd_ms"] * 1e-3) / 1e9
    row["fused_fwd_GBps"] = ff / (row["fused_fwd_ms"] * 1e-3) / 1e9
    if M is not None:
        row["mamba_Kx1dir_fwd_ms"] = K * row["mamba_1dir_fwd_ms"]
        row["mamba_Kx1dir_fwdbwd_ms"] = K * row["mamba_1dir_fwdbwd_ms"]
        row["speedup_fwd"] = row["naive_fwd_ms"] / row["fused_fwd_ms"]
        row["speedup_fwdbwd"] = row["naive_fwdbwd_ms"] / row["fused_fwdbwd_ms"]
    # reference: only where it is reasonably quick (it materialises (B,K,L,d,N) blocks)
    work = Bsz * K * L * D
    if first and a.reference and work <= a.ref_limit:
        row["ref_fwd_ms"] = bench(lambda: R.multidir_scan_fwd(*args, *rest), warmup=1, rep=50)
        row["ref_fwdbwd_ms"] = bench(lambda: (R.multidir_scan_fwd(*args, *rest),
                                              R.multidir_scan_bwd(dout, *args, *rest)), warmup=1, rep=50)
    elif first:
        row["ref_fwd_ms"] = row["ref_fwdbwd_ms"] = None
        row["ref_note"] = f"skipped (B*K*L*D={work} > {a.ref_limit}: too slow/too much memory)"
    del sets, args, dout, paths
    torch.cuda.empty_cache()
    return row


def table_cases(a) -> list:
    """(B, D, grid, dtype, K) of every row: ``--shapes`` (indices into SHAPES; all without ``--shape``) and the
    ``--shape`` extras, times ``--dtypes`` and ``--ks``."""
    extra = [parse_shape(s) for s in a.shape]
    shapes = ([SHAPES[i] for i in a.shapes] if a.shapes else ([] if extra else SHAPES)) + extra
    return [(Bsz, D, grid, DTYPES[dt], K) for Bsz, D, grid in shapes for dt in a.dtypes for K in a.ks]


def l2_bytes() -> int:
    return getattr(torch.cuda.get_device_properties(0), "L2_cache_size", 50 << 20)


def run_gpu(a, on_row=None):
    import triton  # noqa: F401
    from nnunet_mamba.kernels import mamba_ssm_backend as M
    T = fused_module()
    dev = "cuda"
    have_mamba = M.available()
    ssf = M._load_selective_scan_fn() if have_mamba else None
    l2 = l2_bytes()
    bw_copy = copy_bandwidth(dev)
    _BW["copy"] = bw_copy
    print(f"device {torch.cuda.get_device_name()} | copy bandwidth {bw_copy / 1e9:.0f} GB/s | mamba_ssm "
          f"{'yes' if have_mamba else 'NO (naive path skipped)'}", flush=True)
    cases = table_cases(a)
    rows = [None] * len(cases)
    # whole passes over the table, so that a slow spell of the machine (seconds) hits one pass of a row, not all
    for p in range(a.repeats):
        for i, case in enumerate(cases):
            rows[i] = time_case(case, rows[i], T, M if have_mamba else None, ssf, l2, a, first=p == 0, dev=dev)
            if p == a.repeats - 1:
                print(fmt_row(rows[i]), flush=True)
                if on_row is not None:
                    on_row(rows[:i + 1])
            else:  # progress of the earlier passes
                r = rows[i]
                print(f"pass {p + 1}/{a.repeats} row {i + 1}/{len(cases)} B={r['B']} D={r['D']} {r['grid']} K={r['K']} "
                      f"{r['dtype']}: fused fwd+bwd {r['fused_fwdbwd_runs_ms'][-1]:.3f} ms", flush=True)
    meta = gpu_meta(a, bw_copy, l2)
    return meta, rows


def gpu_meta(a, bw_copy, l2):
    return dict(device=torch.cuda.get_device_name(), versions=versions(), commit=ab.current_commit(a.commit),
                scan_options=scan_options_in_force(), copy_GBps=bw_copy / 1e9, l2_bytes=l2, N=N_STATE,
                delta_softplus=True,
                notes="fused fwd+bwd = multidir_scan_fwd (returning its chunk carries) + multidir_scan_bwd (the bwd "
                      "recomputes the forward, from those carries where the forward keeps them); "
                      "naive fwd+bwd = autograd forward + backward through selective_scan_fn and the permute copies; "
                      f"times: {a.repeats} passes over the whole table, each path of a row timed once per pass "
                      f"with triton.testing.do_bench ({a.rep_ms} ms of repetitions, median); the lowest of those "
                      f"medians, the same rule for every path (ms; all of them in the JSON's *_runs_ms)")


def fmt(x, p=3):
    return "-" if x is None else (f"{x:.{p}f}" if isinstance(x, float) else str(x))


def fmt_row(r):
    return (f"B={r['B']} D={r['D']} {r['grid']} K={r['K']} {r['dtype']}: fused fwd {fmt(r['fused_fwd_ms'])} "
            f"fwd+bwd {fmt(r['fused_fwdbwd_ms'])} ms ({r['fused_fwdbwd_GBps']:.0f} GB/s floor-equiv) | naive "
            f"{fmt(r.get('naive_fwd_ms'))} / {fmt(r.get('naive_fwdbwd_ms'))} | Kx1dir "
            f"{fmt(r.get('mamba_Kx1dir_fwd_ms'))} / {fmt(r.get('mamba_Kx1dir_fwdbwd_ms'))} | ref "
            f"{fmt(r.get('ref_fwd_ms'))} / {fmt(r.get('ref_fwdbwd_ms'))}"
            f" | speedup fwd {fmt(r.get('speedup_fwd'), 2)} fwd+bwd {fmt(r.get('speedup_fwdbwd'), 2)}")


def kernel_note(r) -> str:
    """' (kernels: fused X vs K x 1-dir Y ms)' where both kernel times were measured, else ''."""
    fused, one = r.get("fused_fwdbwd_kernels_ms"), r.get("mamba_1dir_fwdbwd_kernels_ms")
    if not fused or not one:
        return ""
    return f" (kernels: {fused:.3f} vs {r['K'] * one:.3f} ms)"


def target_lines(rows) -> list:
    """The targets at K = 2-4 (fused forward+backward >= 2x the naive path, and faster than K x mamba-ssm's
    single direction), the cells that miss them, and the rows whose medians moved > 20 % between passes."""
    def cell(r):
        return f"({r['B']},{r['D']},{r['grid']}) K={r['K']} {r['dtype']}"
    timed = [r for r in rows if 2 <= r["K"] <= 4 and r.get("speedup_fwdbwd") is not None]
    slow = [r for r in timed if r["speedup_fwdbwd"] < 2]
    behind = [r for r in timed if r["fused_fwdbwd_ms"] >= r["mamba_Kx1dir_fwdbwd_ms"]]
    out = [f"Targets, K = 2-4: fused forward+backward >= 2x the naive path in {len(timed) - len(slow)} of {len(timed)} "
           f"cells; faster than K x 1-dir in {len(timed) - len(behind)} of {len(timed)}."]
    out += [f"- below 2x: {cell(r)}: {r['speedup_fwdbwd']:.2f}x" for r in slow]
    out += [f"- not faster than K x 1-dir: {cell(r)}: {r['fused_fwdbwd_ms']:.3f} vs "
            f"{r['mamba_Kx1dir_fwdbwd_ms']:.3f} ms" + kernel_note(r) for r in behind]
    host = [r for r in rows
            if r.get("fused_fwdbwd_kernels_ms") and r["fused_fwdbwd_ms"] > 1.5 * r["fused_fwdbwd_kernels_ms"]]
    if host:
        out += ["", "Rows whose fused forward+backward took over 1.5x its kernel time (the host did not issue the "
                "launches in time; wall / kernels, ms): "
                + "; ".join(f"{cell(r)} {r['fused_fwdbwd_ms']:.3f} / {r['fused_fwdbwd_kernels_ms']:.3f}" for r in host)
                + "."]
    moved = []
    for r in rows:
        for name, runs in r.items():
            if name.endswith("_runs_ms") and len(runs) > 1 and max(runs) > 1.2 * min(runs):
                moved.append(f"{cell(r)} {name[:-8]} {min(runs):.3f}-{max(runs):.3f}")
    if moved:
        out += ["", "Medians that moved more than 20 % between passes (lowest kept): " + "; ".join(moved) + "."]
    return out


def write_md(path, meta, rows, title):
    lines = [f"# {title}", ""]
    for k in ("device", "commit", "copy_GBps", "notes"):
        if k in meta:
            v = meta[k]
            lines.append(f"- {k}: {v:.0f}" if isinstance(v, float) else f"- {k}: {v}")
    lines.append(f"- versions: {meta.get('versions')}")
    lines.append("")
    if rows and "fused_fwd_ms" in rows[0]:
        lines.append("| B | D | grid | K | dtype | fused fwd | fused fwd+bwd | naive fwd | naive fwd+bwd | speedup fwd "
                     "| speedup fwd+bwd | K x 1-dir fwd | K x 1-dir fwd+bwd | ref fwd | ref fwd+bwd "
                     "| floor GB (fwd+bwd) | fused GB/s (floor/time) | % of copy BW |")
        lines.append("|" + "---|" * 18)
        for r in rows:
            lines.append(
                f"| {r['B']} | {r['D']} | {r['grid']} | {r['K']} | {r['dtype']} | {fmt(r['fused_fwd_ms'])} | "
                f"{fmt(r['fused_fwdbwd_ms'])} | {fmt(r.get('naive_fwd_ms'))} | {fmt(r.get('naive_fwdbwd_ms'))} | "
                f"{fmt(r.get('speedup_fwd'), 2)} | {fmt(r.get('speedup_fwdbwd'), 2)} | "
                f"{fmt(r.get('mamba_Kx1dir_fwd_ms'))} | {fmt(r.get('mamba_Kx1dir_fwdbwd_ms'))} | "
                f"{fmt(r.get('ref_fwd_ms'), 1)} | {fmt(r.get('ref_fwdbwd_ms'), 1)} | "
                f"{r['floor_bytes_fwdbwd'] / 1e9:.3f} | {r['fused_fwdbwd_GBps']:.0f} | "
                f"{100 * r['fused_fwdbwd_GBps'] / meta['copy_GBps']:.1f} |")
        lines.append("")
        lines.append("Times in ms (median). '-' = not measured (see JSON `ref_note` / mamba_ssm availability).")
        lines += [""] + target_lines(rows)
    else:
        for r in rows:
            lines.append(f"- {r}")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def run_cpu(a):
    torch.set_num_threads(os.cpu_count() or 1)
    Bsz, D, grid, K = 1, 64, (16, 16, 16), 2
    args, dout = make_inputs(Bsz, D, grid, K, torch.float32, "cpu")
    rest = (grid, default_directions(3, K), True)
    R.multidir_scan_fwd(*args, *rest)  # warm-up
    times = []
    for _ in range(a.cpu_reps):
        t0 = time.perf_counter()
        R.multidir_scan_fwd(*args, *rest)
        R.multidir_scan_bwd(dout, *args, *rest)
        times.append(time.perf_counter() - t0)
    times.sort()
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            m = re.search(r"model name\s*:\s*(.*)", f.read())
            cpu = m.group(1) if m else cpu
    except OSError:
        pass
    row = dict(B=Bsz, D=D, grid="x".join(map(str, grid)), K=K, dtype="float32", backend="reference (PyTorch, CPU)",
               fwdbwd_s_median=times[len(times) // 2], fwdbwd_s_all=times, threads=torch.get_num_threads())
    meta = dict(device=f"CPU: {cpu} ({os.cpu_count()} cores)", versions=versions(), commit=ab.current_commit(a.commit),
                notes="reference multidir_scan_fwd + multidir_scan_bwd (the bwd recomputes the forward), fp32, "
                      "delta_softplus, z/D/delta_bias present; wall-clock median")
    print(f"CPU reference fwd+bwd at (1,64,16^3) K=2: {row['fwdbwd_s_median']:.2f} s (median of {len(times)})")
    return meta, [row]


AB_PATHS = ("fused_fwd_ms", "fused_fwdbwd_ms")


def ab_child(a) -> None:
    """One A/B row in this process, with whichever ``nnunet_mamba`` comes first on the path: one do_bench median of
    the fused forward and of the forward+backward, printed as ``ROW {json}`` with that package's file and the card."""
    import nnunet_mamba
    shape, K, dtype = a.ab_child
    Bsz, D, grid = parse_shape(shape)
    K = int(K)
    sets = input_sets(Bsz, D, grid, K, DTYPES[dtype], l2_bytes(), "cuda")
    rest = (grid, default_directions(len(grid), K), True)
    row = {name: bench(fn, rep=a.rep_ms) for name, fn in fused_paths(fused_module(), sets, rest).items()}
    row.update(device=torch.cuda.get_device_name(), nnunet_mamba_file=nnunet_mamba.__file__)
    print("ROW " + json.dumps(row), flush=True)


def ab_row(a, base, case) -> dict:
    """One row of the A/B: ``--repeats`` pairs of fresh processes (base, then current); each side keeps its lowest
    median."""
    Bsz, D, grid, dtype, K = case
    row = dict(B=Bsz, D=D, grid="x".join(map(str, grid)), K=K, dtype=DTYPE_NAMES[dtype])
    cmd = [sys.executable, os.path.abspath(__file__), "--ab-child", f"{Bsz},{D},{row['grid']}", str(K), row["dtype"],
           "--rep-ms", str(a.rep_ms)]
    for _ in range(a.repeats):
        for side, target in ab.sides(base):
            got = ab.run_row(cmd, target)
            if "error" in got:
                row["error"] = f"{side}: {got['error']}"
                return row
            row["device"] = got["device"]
            for name in AB_PATHS:
                row.setdefault(f"{side}_{name[:-3]}_runs_ms", []).append(got[name])
    for name in AB_PATHS:
        for side, _ in ab.sides(base):
            row[f"{side}_{name}"] = min(row[f"{side}_{name[:-3]}_runs_ms"])
        row[f"ratio_{name[:-3]}"] = row[f"current_{name}"] / row[f"base_{name}"]
    return row


def fmt_ab_row(r) -> str:
    head = f"B={r['B']} D={r['D']} {r['grid']} K={r['K']} {r['dtype']}: "
    if "error" in r:
        return head + r["error"]
    return head + "; ".join(f"{label} base {r[f'base_{name}']:.3f} current {r[f'current_{name}']:.3f} ms "
                            f"(x{r[f'ratio_{name[:-3]}']:.3f})" for label, name in zip(("fwd", "fwd+bwd"), AB_PATHS))


def write_ab(path, meta, rows) -> None:
    """The side-by-side table: per row base, current and current / base of the forward and the forward+backward."""
    device = next((r["device"] for r in rows if "device" in r), "unknown")
    lines = [f"# Fused scan A/B: {meta['base_commit']} (base) vs {meta['current_commit']} (current)", "",
             f"- device: {device}", f"- base wheel: {meta['base_wheel']}", f"- versions: {meta['versions']}",
             f"- scan options (current): {meta['scan_options']}", f"- notes: {meta['notes']}", "",
             "| B | D | grid | K | dtype | fwd base | fwd current | current / base | fwd+bwd base | fwd+bwd current "
             "| current / base |", "|" + "---|" * 11]
    for r in rows:
        cells = [r["B"], r["D"], r["grid"], r["K"], r["dtype"]]
        if "error" in r:
            cells += [r["error"]] + [""] * 5
        else:
            for name in AB_PATHS:
                cells += [f"{r[f'base_{name}']:.3f}", f"{r[f'current_{name}']:.3f}", f"{r[f'ratio_{name[:-3]}']:.3f}"]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    lines += ["", "Times in ms. " + "; ".join(
        f"{label}: " + ab.ratio_note([r[f"ratio_{name[:-3]}"] for r in rows if "error" not in r])
        for label, name in zip(("forward", "forward+backward"), AB_PATHS)) + "."]
    with open(path + ".json", "w") as f:
        json.dump(dict(meta=dict(meta, device=device), rows=rows), f, indent=1)
    with open(path + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")


def run_ab(a, base) -> None:
    """The A/B table of the fused scan, written after every row (partial results survive a time limit)."""
    meta = dict(base_commit=base.commit, base_wheel=base.wheel, current_commit=ab.current_commit(a.commit),
                versions=versions(), scan_options=scan_options_in_force(), repeats=a.repeats, rep_ms=a.rep_ms,
                notes=f"fused forward and forward+backward (the backward from the forward's chunk carries); per row "
                      f"{a.repeats} pairs of fresh processes, base then current, each one triton.testing.do_bench "
                      f"median over {a.rep_ms} ms; each side keeps its lowest (all in the JSON's *_runs_ms)")
    path = os.path.join(a.out_dir, f"scan_ab_{base.commit}_{meta['current_commit']}")
    rows = []
    for case in table_cases(a):
        rows.append(ab_row(a, base, case))
        print(fmt_ab_row(rows[-1]), flush=True)
        write_ab(path, meta, rows)
    print(f"wrote {path}.json/.md")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpu", action="store_true")
    ap.add_argument("--shapes", type=int, nargs="*", default=None, help="indices into SHAPES")
    ap.add_argument("--shape", action="append", default=[], metavar="B,D,AxBxC",
                    help="an extra (batch, channels, grid) row shape, e.g. 58,128,10x14x10 (repeatable)")
    ap.add_argument("--ks", type=int, nargs="*", default=[1, 2, 3, 4])
    ap.add_argument("--dtypes", nargs="*", default=["bf16", "fp32"])
    ap.add_argument("--no-reference", dest="reference", action="store_false")
    ap.add_argument("--ref-limit", type=int, default=2 * 4 * 4096 * 512, help="max B*K*L*D for timing the reference")
    ap.add_argument("--cpu-reps", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3,
                    help="GPU: passes over the table (A/B: base / current pairs per row); every path keeps its "
                         "lowest median")
    ap.add_argument("--rep-ms", type=int, default=100, help="GPU: milliseconds of repetitions per do_bench median")
    ap.add_argument("--out-dir", default=os.path.join(HERE, "results"))
    ap.add_argument("--commit", default=None)
    ap.add_argument("--build-mamba", default=None, help="mamba-ssm sdist to build for sm_90 first")
    ap.add_argument("--mamba-target", default="/tmp/mamba_site")
    ap.add_argument("--build-only", action="store_true", help="only build mamba-ssm (--build-mamba) and exit")
    ab.add_arguments(ap)
    ap.add_argument("--ab-child", nargs=3, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.ab_child:
        return ab_child(a)
    base = ab.prepare(a)
    if base is not None:
        os.makedirs(a.out_dir, exist_ok=True)
        return run_ab(a, base)
    if a.build_mamba:
        build_mamba_ssm(a.build_mamba, a.mamba_target)
        if a.build_only:
            return
    elif os.path.isdir(a.mamba_target):
        sys.path.insert(0, os.path.abspath(a.mamba_target))
    os.makedirs(a.out_dir, exist_ok=True)
    if a.cpu:
        meta, rows = run_cpu(a)
        name = "cpu"
        title = "Selective-scan reference on CPU"
    else:
        name = re.sub(r"[^A-Za-z0-9]+", "_", torch.cuda.get_device_name()).strip("_").lower()
        title = f"Fused multi-directional selective scan on {torch.cuda.get_device_name()}"

        def save(rows_so_far):  # partial results survive a time limit
            m = gpu_meta(a, _BW.get("copy", float("nan")), 0)
            m["partial"] = True
            with open(os.path.join(a.out_dir, f"scan_{name}.json"), "w") as f:
                json.dump(dict(meta=m, rows=rows_so_far), f, indent=1, default=str)
        meta, rows = run_gpu(a, on_row=save)
    with open(os.path.join(a.out_dir, f"scan_{name}.json"), "w") as f:
        json.dump(dict(meta=meta, rows=rows), f, indent=1, default=str)
    write_md(os.path.join(a.out_dir, f"scan_{name}.md"), meta, rows, title)
    print(f"wrote {a.out_dir}/scan_{name}.json/.md")
    if not a.cpu:  # the verdict in the output too (a GPU call's files can fail to come back)
        print("\n".join(target_lines(rows)[:12]))


if __name__ == "__main__":
    main()
