"""The backward's one-launch parameter-gradient sum (``kernels/triton/param_grads.py``) under TRITON_INTERPRET=1 against
float64 sums of the same partials: rows over more than one row tile, channels over a ragged channel block, a state
count that is no power of two, absent dD / ddelta_bias, and the parameters' dtypes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("triton")

pytestmark = pytest.mark.interpreter

WORKER = textwrap.dedent(r'''
    import json, os, sys
    os.environ["TRITON_INTERPRET"] = "1"
    import torch
    from nnunet_mamba.kernels.triton import param_grads as P

    out = {}
    for name, (Bsz, nC, K, N, D, has_d, has_b, dtype, max_rows, cast) in json.loads(sys.argv[1]).items():
        P.MAX_ROWS = max_rows
        g = torch.Generator().manual_seed(len(out) + 11)
        dA_p = torch.randn(Bsz, nC, K, N, D, generator=g)
        dD_p = torch.randn(Bsz, nC, K, D, generator=g) if has_d else None
        db_p = torch.randn(Bsz, nC, K, D, generator=g) if has_b else None
        dt = getattr(torch, dtype)
        pair = torch.randn(2, *cast, generator=g).unbind(0) if cast else ()  # like the backward's dB, dC
        dA, dD, db, conv = P.param_grads(dA_p, dD_p, db_p, dt, dt if has_d else None, dt if has_b else None,
                                       [(x, torch.bfloat16) for x in pair])
        want = [dA_p.double().sum((0, 1)).transpose(1, 2), dD_p.double().sum((0, 1)) if has_d else None,
                db_p.double().sum((0, 1)) if has_b else None]
        res = {}
        for key, got, ref in zip(("dA", "dD", "dbias"), (dA, dD, db), want):
            if ref is None:
                res[key] = None if got is None else "unexpected"
                continue
            res[key] = dict(shape=list(got.shape), dtype=str(got.dtype).replace("torch.", ""),
                            rel=((got.double() - ref).norm() / ref.norm()).item())
        # within one bf16 step of every value (the interpreter truncates where a GPU rounds to nearest even); a value
        # left unwritten (empty memory) is far off
        res["casts"] = [dict(shape=list(c.shape), dtype=str(c.dtype),
                             close=bool(((c.double() - x.double()).abs() <= x.double().abs() * 2 ** -7).all()))
                        for c, x in zip(conv, pair)]
        out[name] = res
    print(json.dumps(out))
''')

CASES = {  # B, nC, K, N, D, dD?, ddelta_bias?, dtype, most rows for the Triton kernel (more: torch's sums), cast pair
    "ragged_channels": (3, 7, 2, 3, 37, True, True, "float32", 128, None),
    "rows_over_two_64_row_tiles": (4, 25, 1, 16, 37, True, False, "float32", 128, None),  # 8 channels x 16 states
    "no_dD_no_bias": (2, 9, 3, 16, 5, False, False, "float32", 128, None),
    "bias_only_bf16": (1, 17, 1, 4, 33, False, True, "bfloat16", 128, None),
    "many_rows_torch_sums": (3, 7, 2, 3, 37, True, True, "float32", 20, [5, 7]),
    "casts_over_several_programs": (2, 3, 2, 4, 40, True, True, "float32", 128, [3, 2001, 2]),  # 10 x 2 blocks
}


@pytest.fixture(scope="module")
def results():
    env = dict(os.environ, TRITON_INTERPRET="1")
    proc = subprocess.run([sys.executable, "-c", WORKER, json.dumps(CASES)], capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", list(CASES))
def test_param_grads_match_float64_sums(results, name):
    Bsz, nC, K, N, D, has_d, has_b, dtype, _, cast = CASES[name]
    res = results[name]
    assert len(res["casts"]) == (2 if cast else 0)
    for c in res["casts"]:  # the pair converted, every value (several programs share the work)
        assert c == dict(shape=cast, dtype="torch.bfloat16", close=True)
    tol = 1e-6 if dtype == "float32" else 8e-3
    assert res["dA"]["shape"] == [K, D, N] and res["dA"]["dtype"] == dtype and res["dA"]["rel"] < tol
    for key, present in (("dD", has_d), ("dbias", has_b)):
        if present:
            assert res[key]["shape"] == [K, D] and res[key]["dtype"] == dtype and res[key]["rel"] < tol
        else:
            assert res[key] is None


def test_tiles_spread_short_maps_over_the_gpu():
    from nnunet_mamba.kernels.triton.param_grads import _tiles
    assert _tiles(3, 512, 16) == (8, 64)  # (2, 512, 16^3), K = 3: 192 programs instead of 48
    assert _tiles(4, 4096, 16) == (32, 16)  # enough channel blocks already
    assert _tiles(2, 37, 4) == (8, 64) and _tiles(1, 5, 16) == (8, 64)  # never below one 32-byte sector
    assert _tiles(1, 3, 16) == (4, 64)  # ... unless the channels are fewer
