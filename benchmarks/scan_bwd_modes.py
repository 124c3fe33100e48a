"""Backward ablation for the chunked Triton scan: how dB/dC are summed over channels.

For each shape, K and dtype (bf16 unless --dtypes says otherwise; default tile configs unless --configs is
given) it times the backward
call (``multidir_scan_bwd``, which recomputes the forward) with
  mode 0: warp-shuffle trees (``tl.sum``), one per step and state,
  mode 1: tensor cores (``tl.dot`` with a one-hot operand, tf32x3),
  mode 2: dB/dC skipped (ablation only: shows what the reductions cost; gradients wrong),
and writes JSON + markdown rows as it goes.

    python benchmarks/scan_bwd_modes.py --out results/scan_bwd_modes_h100 [--configs '{"BLOCK_T":16,...}' ...]
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from scan import DTYPES, SHAPES, bench, git_commit, make_inputs, parse_shape, scan_env, versions  # noqa: E402

from nnunet_mamba.kernels import triton_scan as T  # noqa: E402
from nnunet_mamba.kernels.directions import default_directions  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True, help="path prefix for .json / .md")
    ap.add_argument("--ks", type=int, nargs="*", default=[2, 3, 4])
    ap.add_argument("--shapes", type=int, nargs="*", default=None, help="indices into scan.py's SHAPES")
    ap.add_argument("--shape", action="append", default=[], metavar="B,D,AxBxC",
                    help="an extra (batch, channels, grid) shape, e.g. 58,128,10x14x10 (repeatable)")
    ap.add_argument("--modes", type=int, nargs="*", default=[0, 1, 2])
    ap.add_argument("--configs", nargs="*", default=[None], help="JSON tile configs; omitted = default config")
    ap.add_argument("--dtypes", nargs="*", default=["bf16"], choices=sorted(DTYPES))
    a = ap.parse_args()
    extra = [parse_shape(s) for s in a.shape]
    shapes = [SHAPES[i] for i in a.shapes] if a.shapes else ([] if extra else SHAPES)
    shapes += extra
    meta = dict(device=torch.cuda.get_device_name(), versions=versions(), commit=git_commit(None),
                scan_env=scan_env())
    rows = []
    for (Bsz, D, grid), K, dt in itertools.product(shapes, a.ks, a.dtypes):
        args, dout = make_inputs(Bsz, D, grid, K, DTYPES[dt], "cuda")
        rest = (grid, default_directions(len(grid), K), True)
        for cfg_s in a.configs:
            cfg = json.loads(cfg_s) if cfg_s else None
            for mode in a.modes:
                base = cfg if cfg is not None else {**T._config(math.prod(grid), D, True, Bsz)}
                T._CONFIG_OVERRIDE = {"fwd": dict(T._config(math.prod(grid), D, False, Bsz)) if cfg is None
                                      else dict(cfg), "bwd": dict(base, bc_mode=mode)}
                try:
                    fwd = bench(lambda: T.multidir_scan_fwd(*args, *rest))
                    carries = T.multidir_scan_fwd(*args, *rest, return_carries=True)[1]
                    bwd = bench(lambda: T.multidir_scan_bwd(dout, *args, *rest, carries=carries))
                except Exception as e:  # noqa: BLE001
                    fwd = bwd = float("nan")
                    print("failed", cfg, mode, type(e).__name__, str(e)[:300], flush=True)
                used = T._config(math.prod(grid), D, True, Bsz)
                T._CONFIG_OVERRIDE = None
                row = dict(B=Bsz, D=D, grid="x".join(map(str, grid)), K=K, dtype=dt, mode=mode, cfg=used,
                           fwd_ms=fwd, bwd_call_ms=bwd, fwdbwd_ms=fwd + bwd)
                rows.append(row)
                print(f"B={Bsz} D={D} {row['grid']} K={K} {dt} mode {mode} cfg {used}: fwd {fwd:.3f} bwd-call "
                      f"{bwd:.3f} fwd+bwd {fwd + bwd:.3f} ms", flush=True)
                with open(a.out + ".json", "w") as f:
                    json.dump(dict(meta=meta, rows=rows), f, indent=1)
        del args, dout
        torch.cuda.empty_cache()
    T._CONFIG_OVERRIDE = None
    lines = [f"# Backward dB/dC reduction ablation ({meta['device']})", "", f"- commit: {meta['commit']}",
             f"- versions: {meta['versions']}", "- N=16; mode 0 = tl.sum shuffles, 1 = tensor cores (tf32x3), "
             "2 = dB/dC skipped (ablation, wrong gradients); ms, median of triton.testing.do_bench", "",
             "| B | D | grid | K | dtype | mode | config | fwd | bwd call | fwd+bwd |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        c = r["cfg"]
        lines.append(f"| {r['B']} | {r['D']} | {r['grid']} | {r['K']} | {r['dtype']} | {r['mode']} | "
                     f"T{c.get('BLOCK_T')} D{c.get('BLOCK_D')} w{c.get('num_warps')}{' seq' if c.get('seq') else ''} | "
                     f"{r['fwd_ms']:.3f} | {r['bwd_call_ms']:.3f} | {r['fwdbwd_ms']:.3f} |")
    with open(a.out + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
