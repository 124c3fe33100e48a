"""Property-based (hypothesis): the Triton kernels (TRITON_INTERPRET=1, CPU) equal the float64 reference on
random shapes (both kernel families: short maps take the chunked kernels, longer ones the sequential), strides,
output modes and extreme but valid values (huge deltas, near-zero A), in fp32 and bf16, and stay finite.

Hypothesis runs inside one subprocess (TRITON_INTERPRET must be set before triton is imported); a
falsifying example makes the subprocess fail with hypothesis' report, which this test shows.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("triton")
pytestmark = [pytest.mark.interpreter, pytest.mark.faults]

WORKER = textwrap.dedent(r'''
    import math, os
    os.environ["TRITON_INTERPRET"] = "1"
    import torch
    from hypothesis import given, settings, HealthCheck, strategies as st
    from nnunet_mamba.kernels import reference as R, scan_options
    from nnunet_mamba.kernels import triton as T
    from nnunet_mamba.kernels.directions import default_directions
    from nnunet_mamba.kernels.triton import plan as P

    @st.composite
    def problems(draw):
        ndim = draw(st.integers(1, 3))
        grid = tuple(draw(st.lists(st.integers(1, 6), min_size=ndim, max_size=ndim)))
        if ndim == 1:
            grid = (draw(st.integers(1, 90)),)  # up to several sequential chunks
        elif ndim == 3 and draw(st.booleans()):
            grid = grid[:2] + (draw(st.integers(7, 12)),)  # > 64 steps for some: the sequential kernels
        return dict(grid=grid, K=draw(st.integers(1, 2 * ndim)), B=draw(st.integers(1, 2)),
                    D=draw(st.sampled_from([1, 2, 3, 5, 17, 33])), N=draw(st.integers(1, 3)),
                    dtype=draw(st.sampled_from(["float32", "bfloat16"])),
                    dt_scale=draw(st.sampled_from([0.01, 1.0, 40.0])), a_scale=draw(st.sampled_from([1e-6, 1.0, 8.0])),
                    full=draw(st.booleans()), noncontig=draw(st.booleans()), deterministic=draw(st.booleans()),
                    carries=draw(st.booleans()), seed=draw(st.integers(0, 2 ** 31 - 1)))

    @settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "10")), deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(problems())
    def check(p):
        g = torch.Generator().manual_seed(p["seed"])
        dtype = getattr(torch, p["dtype"])
        grid, K, Bsz, D, N = p["grid"], p["K"], p["B"], p["D"], p["N"]
        L = math.prod(grid)
        u = torch.randn(Bsz, L, D, generator=g).to(dtype)
        delta = (torch.randn(Bsz, L, K, D, generator=g) * p["dt_scale"]).to(dtype)
        A = -(torch.rand(K, D, N, generator=g) + 0.01) * p["a_scale"]
        Bm = torch.randn(Bsz, L, K, N, generator=g).to(dtype)
        Cm = torch.randn(Bsz, L, K, N, generator=g).to(dtype)
        Dk = torch.randn(K, D, generator=g) if p["full"] else None
        db = torch.randn(K, D, generator=g) * 0.3 if p["full"] else None
        z = torch.randn(Bsz, L, D, generator=g).to(dtype) if p["full"] else None
        dout = torch.randn(Bsz, L, D, generator=g).to(dtype)
        if p["noncontig"]:
            u = u.transpose(1, 2).contiguous().transpose(1, 2)
            delta = delta.permute(0, 2, 1, 3).contiguous().permute(0, 2, 1, 3)
            Cm = Cm.transpose(2, 3).contiguous().transpose(2, 3)
        args = (u, delta, A, Bm, Cm, Dk, db, z, grid, default_directions(len(grid), K), True)
        d64 = tuple(x.double() if isinstance(x, torch.Tensor) else x for x in args)
        sequential = P.is_sequential(Bsz, L, D)
        with scan_options(deterministic=p["deterministic"]):
            # the sequential backward with or without the forward's chunk carries
            out, carries = T.multidir_scan_fwd(*args, return_carries=True)
            got = (out, *T.multidir_scan_bwd(dout, *args, carries=carries if p["carries"] else None))
        want = (R.multidir_scan_fwd(*d64), *R.multidir_scan_bwd(dout.double(), *d64))
        tol = 2e-2 if dtype == torch.bfloat16 else 1e-4
        # Known limitation (tests/kernels/test_triton_interpreter.py::test_chunked_dA_cancellation_at_huge_delta):
        # the chunked backward forms a_t h_{t-1} as h_t - dt_t u_t B_t, which cancels when a_t = exp(dt A) is
        # tiny, so with huge deltas only finiteness is checked for the outputs built from it (dA, ddelta,
        # ddelta_bias); the sequential kernels are checked everywhere.
        cancel = p["dt_scale"] > 1.0 and not sequential
        for name, a, b in zip(["out", "du", "ddelta", "dA", "dB", "dC", "dD", "ddelta_bias", "dz"], got, want):
            assert (a is None) == (b is None), name
            if a is None:
                continue
            assert torch.isfinite(a.double()).all(), (name, p)
            if cancel and name in ("dA", "ddelta", "ddelta_bias"):
                continue
            scale = b.norm().item()
            err = (a.double() - b).norm().item() / max(scale, 1e-30)
            # outputs that are exactly zero in float64 (e.g. dA with vanishing states) must be ~zero here too
            assert err <= tol or (a.double() - b).abs().max().item() <= 1e-6, (name, err, p)

    check()
    print("FUZZ-OK")
''')


def test_triton_kernels_match_reference_on_fuzzed_problems(tmp_path):
    script = tmp_path / "fuzz_worker.py"
    script.write_text(WORKER)
    env = dict(os.environ, TRITON_INTERPRET="1")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0 and "FUZZ-OK" in proc.stdout, f"{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"
