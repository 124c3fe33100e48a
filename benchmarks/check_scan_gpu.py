"""GPU correctness check: Triton multi-direction scan vs the float64 reference at full stage sizes.

For every case: fresh random inputs, the Triton forward and backward in fp32 or bf16 on the GPU,
the reference (``nnunet_mamba.kernels.reference``) in float64 on the same (rounded) inputs, and
relative errors ||x - ref|| / ||ref|| for out and all 8 gradients. Outputs are checked for
NaN/Inf. Prints a pass/fail table, optionally writes JSON, exits 1 on any failure.

    python benchmarks/check_scan_gpu.py [--quick] [--json out.json]
    python benchmarks/check_scan_gpu.py --networks --only-extra   # every scan problem of the shipped networks
                                                                  # (network_scan_shapes.py), fp32 and bf16
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time

import torch

from nnunet_mamba.kernels import reference as R
from nnunet_mamba.kernels import triton as T
from nnunet_mamba.kernels.directions import default_directions
from scan import parse_shape  # benchmarks/scan.py (this script's folder is on sys.path)

NAMES = ["out", "du", "ddelta", "dA", "dB", "dC", "dD", "ddelta_bias", "dz"]
TOL = {torch.float32: 1e-4, torch.bfloat16: 2e-2, torch.float16: 5e-3}
# dA/dD/ddelta_bias are sums over the whole batch x sequence in fp32: allow a bit more in fp32
TOL_SUM = {torch.float32: 1e-3, torch.bfloat16: 2e-2, torch.float16: 1e-2}


def make_inputs(Bsz, D, grid, K, dtype, N=16, dt_shift=0.0, seed=0, full=True, device="cuda"):
    g = torch.Generator(device=device).manual_seed(seed)
    L = math.prod(grid)

    def rnd(*shape, scale=1.0, shift=0.0):
        return torch.randn(*shape, generator=g, device=device) * scale + shift

    u = rnd(Bsz, L, D).to(dtype)
    delta = rnd(Bsz, L, K, D, scale=0.5, shift=-1.0 + dt_shift).to(dtype)
    A = -(torch.arange(1, N + 1, dtype=torch.float32, device=device).repeat(K, D, 1)
          * (0.5 + torch.rand(K, D, N, generator=g, device=device)))
    Bm = rnd(Bsz, L, K, N).to(dtype)
    Cm = rnd(Bsz, L, K, N).to(dtype)
    Dk = rnd(K, D) if full else None
    db = rnd(K, D, scale=0.3) if full else None
    z = rnd(Bsz, L, D).to(dtype) if full else None
    dout = rnd(Bsz, L, D).to(dtype)
    return (u, delta, A, Bm, Cm, Dk, db, z), dout


def poison():
    """Fill freed allocator blocks with NaN so that unwritten outputs show up."""
    x = torch.empty(64 << 20, device="cuda")
    x.fill_(float("nan"))
    del x


def rel(a, b):
    if a is None and b is None:
        return 0.0
    if (a is None) != (b is None):
        return float("inf")
    a = a.double()
    b = b.double()
    if not torch.isfinite(a).all():
        return float("nan")
    n = b.norm().item()
    return (a - b).norm().item() / max(n, 1e-30)


def run_case(Bsz, D, grid, K, dtype, dt_shift=0.0, full=True, seed=0, N=16, users=None):
    dirs = default_directions(len(grid), K)
    args, dout = make_inputs(Bsz, D, grid, K, dtype, N=N, dt_shift=dt_shift, seed=seed, full=full)
    rest = (grid, dirs, True)
    poison()
    t0 = time.time()
    out, carries = T.multidir_scan_fwd(*args, *rest, return_carries=True)
    poison()
    grads = T.multidir_scan_bwd(dout, *args, *rest, carries=carries)
    torch.cuda.synchronize()
    t_tri = time.time() - t0
    d64 = [None if x is None else x.double() for x in args]
    t0 = time.time()
    with torch.no_grad():
        ref = R.multidir_scan_fwd(*d64, *rest)
        rgrads = R.multidir_scan_bwd(dout.double(), *d64, *rest)
    torch.cuda.synchronize()
    t_ref = time.time() - t0
    errs = [rel(out, ref)] + [rel(a, b) for a, b in zip(grads, rgrads)]
    ok = True
    for name, e in zip(NAMES, errs):
        tol = TOL_SUM[dtype] if name in ("dA", "dD", "ddelta_bias") else TOL[dtype]
        if not (e <= tol):
            ok = False
    # dtypes of the contract
    exp_dt = [dtype, dtype, dtype, torch.float32, dtype, dtype, torch.float32, torch.float32, dtype]
    for x, dt in zip([out, *grads], exp_dt):
        if x is not None and x.dtype != dt:
            ok = False
    del args, grads, rgrads, d64
    torch.cuda.empty_cache()
    return ok, errs, t_tri, t_ref


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="skip the 64^3 shapes")
    ap.add_argument("--json", default=None)
    ap.add_argument("--big", action="store_true", help="add a 128^3 full-resolution case (131072 chunks of 16)")
    ap.add_argument("--dtype", choices=["fp32", "bf16"], default=None, help="only the cases of this dtype")
    ap.add_argument("--min-len", type=int, default=0, help="only grids with more than this many steps")
    ap.add_argument("--case", action="append", default=[], metavar="B,D,AxBxC,K",
                    help="an extra case in both dtypes, e.g. 58,256,5x7x5,6 (repeatable)")
    ap.add_argument("--only-extra", action="store_true", help="run only the --case / --networks cases")
    ap.add_argument("--networks", action="store_true",
                    help="add every scan problem the shipped networks pose at the benchmark plans, in both dtypes")
    a = ap.parse_args()
    cases = []
    big = [(2, 640, (8, 8, 8), 3), (2, 512, (16, 16, 16), 3), (2, 256, (32, 32, 32), 3),
           (2, 128, (64, 64, 64), 2), (1, 96, (64, 64, 64), 2)]
    if a.quick:
        big = big[:3]
    for dtype in (torch.float32, torch.bfloat16):
        for Bsz, D, grid, K in big:
            cases.append(dict(Bsz=Bsz, D=D, grid=grid, K=K, dtype=dtype))
    # odd grids, all K up to 6, 1D/2D, optional inputs absent, large deltas over a long sequence
    extra = [dict(Bsz=2, D=48, grid=(13, 17, 19), K=6, dtype=torch.float32),
             dict(Bsz=2, D=40, grid=(37, 29), K=4, dtype=torch.float32, full=False),
             dict(Bsz=1, D=24, grid=(4099,), K=2, dtype=torch.bfloat16),
             dict(Bsz=2, D=64, grid=(31, 33, 35), K=3, dtype=torch.float32, dt_shift=8.0),
             dict(Bsz=2, D=64, grid=(31, 33, 35), K=5, dtype=torch.bfloat16, dt_shift=8.0)]
    cases += extra
    if a.only_extra:
        cases = []
    for text in a.case:
        shape, _, k = text.rpartition(",")
        if not k.isdigit() or shape.count(",") != 2:
            raise SystemExit(f"--case {text!r}: expected B,D,AxBxC,K such as 58,256,5x7x5,6")
        Bsz, D, grid = parse_shape(shape, "--case")
        for dtype in (torch.float32, torch.bfloat16):
            cases.append(dict(Bsz=Bsz, D=D, grid=grid, K=int(k), dtype=dtype))
    if a.networks:
        from network_scan_shapes import problems  # benchmarks/network_scan_shapes.py
        for (Bsz, grid, D, K, N), users in sorted(problems().items(), key=lambda kv: math.prod(kv[0][1])):
            for dtype in (torch.float32, torch.bfloat16):
                cases.append(dict(Bsz=Bsz, D=D, grid=grid, K=K, N=N, dtype=dtype, users=" ".join(sorted(set(users)))))
    if a.big:  # more chunks than a CUDA grid's y/z axes allow (65535): chunks must sit on axis 0
        cases.append(dict(Bsz=1, D=24, grid=(128, 128, 128), K=2, dtype=torch.bfloat16))
    if a.dtype:
        cases = [c for c in cases if c["dtype"] == {"fp32": torch.float32, "bf16": torch.bfloat16}[a.dtype]]
    cases = [c for c in cases if math.prod(c["grid"]) > a.min_len]
    rows = []
    all_ok = True
    for c in cases:
        ok, errs, t_tri, t_ref = run_case(**c)
        all_ok &= ok
        row = dict(c, dtype=str(c["dtype"]).replace("torch.", ""), ok=ok, errs=dict(zip(NAMES, errs)),
                   t_triton_s=t_tri, t_ref_s=t_ref)
        rows.append(row)
        print(f"{'PASS' if ok else 'FAIL'} B={c['Bsz']} D={c['D']} grid={c['grid']} K={c['K']} {row['dtype']}"
              f"{' (' + c['users'] + ')' if c.get('users') else ''}"
              f"{' dt+' + str(c.get('dt_shift')) if c.get('dt_shift') else ''}"
              f"{' minimal' if c.get('full') is False else ''}"
              f" | " + " ".join(f"{n}={e:.1e}" for n, e in zip(NAMES, errs)) + f" | tri {t_tri:.1f}s ref {t_ref:.1f}s",
              flush=True)
    print()
    print(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}")
    hdr = "| case | dtype | " + " | ".join(NAMES) + " | result |"
    print(hdr)
    print("|" + "---|" * (len(NAMES) + 3))
    for r in rows:
        name = f"B={r['Bsz']} D={r['D']} {'x'.join(map(str, r['grid']))} K={r['K']}"
        if r.get("dt_shift"):
            name += f" dt+{r['dt_shift']}"
        print(f"| {name} | {r['dtype']} | " + " | ".join(f"{r['errs'][n]:.1e}" for n in NAMES)
              + f" | {'PASS' if r['ok'] else 'FAIL'} |")
    print("ALL PASS" if all_ok else "SOME FAILED")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(dict(device=torch.cuda.get_device_name(), torch=torch.__version__, rows=rows,
                           tol=dict(fp32=TOL[torch.float32], bf16=TOL[torch.bfloat16]), all_ok=all_ok), f, indent=1,
                      default=str)
    sys.exit(0 if all_ok else 1)


if __name__ == "__main__":
    main()
