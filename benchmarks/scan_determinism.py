"""Run-to-run spread of the Triton scan's gradients (fp32 atomics in dB/dC) and the deterministic mode.

For each shape: the same inputs, the backward run R times; reports max |x_r - x_0| / max |x_0| per gradient,
with the default (atomics) and with the ``deterministic`` scan option (``scan_options(deterministic=True)``:
per-block partials summed by torch).

    python benchmarks/scan_determinism.py --out results/scan_determinism_h100.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ab import current_commit  # noqa: E402
from scan import make_inputs, versions  # noqa: E402

from nnunet_mamba.kernels import scan_options  # noqa: E402
from nnunet_mamba.kernels import triton as T  # noqa: E402
from nnunet_mamba.kernels.directions import default_directions  # noqa: E402

NAMES = ["du", "ddelta", "dA", "dB", "dC", "dD", "ddelta_bias", "dz"]


def spread(runs):
    out = {}
    for i, name in enumerate(NAMES):
        ref = runs[0][i].double()
        scale = ref.abs().max().item() or 1.0
        out[name] = max((r[i].double() - ref).abs().max().item() for r in runs[1:]) / scale
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--reps", type=int, default=8)
    a = ap.parse_args()
    rows = []
    for Bsz, D, grid, K in [(2, 640, (8, 8, 8), 3), (2, 256, (32, 32, 32), 3), (1, 96, (64, 64, 64), 2)]:
        for dtype in (torch.float32, torch.bfloat16):
            args, dout = make_inputs(Bsz, D, grid, K, dtype, "cuda")
            rest = (grid, default_directions(3, K), True)
            for det in (False, True):
                with scan_options(deterministic=det):
                    runs = [T.multidir_scan_bwd(dout, *args, *rest) for _ in range(a.reps)]
                torch.cuda.synchronize()
                row = dict(B=Bsz, D=D, grid="x".join(map(str, grid)), K=K, dtype=str(dtype).replace("torch.", ""),
                           deterministic=det, reps=a.reps, max_rel_spread=spread(runs))
                rows.append(row)
                print(json.dumps(row), flush=True)
                del runs
            del args, dout
            torch.cuda.empty_cache()
    json.dump(dict(device=torch.cuda.get_device_name(), versions=versions(), commit=current_commit(), rows=rows),
              open(a.out, "w"), indent=1)


if __name__ == "__main__":
    main()
