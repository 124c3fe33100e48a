"""Triton scan kernels under TRITON_INTERPRET=1 (CPU) against the float64 reference.

``triton.jit`` decides between compiled and interpreted kernels when the module that defines
them is imported, so the kernels run in a fresh subprocess with TRITON_INTERPRET=1 set before
anything imports triton (other tests in this process may already have imported it). One
subprocess runs all cases (tiny shapes: the interpreter runs scans element by element in
Python); the tests below check its results case by case.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("triton")

pytestmark = pytest.mark.interpreter

# name: (batch, D, N, grid, K, dtype, options)
CASES = {
    "1d_K1_minimal_ragged": dict(B=2, D=4, N=2, grid=(13,), K=1, dtype="float32", full=False, softplus=False,
                                  cfg=dict(BLOCK_T=4, BLOCK_D=2, BLOCK_R=2)),
    "2d_K2_full_noncontig_oneblock": dict(B=2, D=4, N=3, grid=(3, 5), K=2, dtype="float32", noncontig=True,
                                           cfg=dict(BLOCK_T=4, BLOCK_D=4, BLOCK_R=2)),
    "3d_K3_full_vec1_deterministic": dict(B=2, D=4, N=2, grid=(3, 3, 5), K=3, dtype="float32", deterministic=True,
                                           cfg=dict(BLOCK_T=8, BLOCK_D=2, BLOCK_R=4, vec1=True)),
    "3d_K6_full_atomics": dict(B=2, D=4, N=2, grid=(3, 3, 3), K=6, dtype="float32",
                               cfg=dict(BLOCK_T=8, BLOCK_D=2, BLOCK_R=2)),
    "2d_K2_single_chunk_bf16": dict(B=2, D=4, N=2, grid=(3, 5), K=2, dtype="bfloat16",
                                     cfg=dict(BLOCK_T=16, BLOCK_D=4)),
    # a_t h_{t-1} from a scan over the previous steps (NNUNET_MAMBA_SCAN_EXACT_DA=1): every direction order,
    # reverse ones included, ragged chunks, carries; and in bf16 with the other tile layout
    "3d_K6_full_exact_da": dict(B=2, D=3, N=2, grid=(3, 2, 5), K=6, dtype="float32",
                                cfg=dict(BLOCK_T=4, BLOCK_D=2, BLOCK_R=2, exact_da=True)),
    "2d_K4_exact_da_vec1_bf16": dict(B=1, D=4, N=3, grid=(5, 3), K=4, dtype="bfloat16",
                                     cfg=dict(BLOCK_T=8, BLOCK_D=4, BLOCK_R=2, vec1=True, exact_da=True)),
    # dB/dC channel sums on the tensor cores (tl.dot tf32x3), two channel blocks (atomics), two chunks
    "2d_K2_full_tensorcore_bc": dict(B=1, D=32, N=2, grid=(5, 7), K=2, dtype="float32",
                                      cfg=dict(BLOCK_T=16, BLOCK_D=16, BLOCK_R=4, vec1=True, bc_mode=1)),
    # sequential state-in-registers kernels (triton_seq, default sub-chunk S=2): ragged, several sub-chunks
    "seq_1d_K1_minimal_ragged": dict(B=2, D=4, N=2, grid=(13,), K=1, dtype="float32", full=False, softplus=False,
                                      cfg=dict(seq=True, BLOCK_T=8, BLOCK_D=2, BLOCK_R=2, num_warps=1)),
    "seq_3d_K3_full_atomics": dict(B=2, D=4, N=3, grid=(2, 3, 5), K=3, dtype="float32",
                                    cfg=dict(seq=True, BLOCK_T=8, BLOCK_D=2, BLOCK_R=2, num_warps=1)),
    # dB/dC as one slab per channel block (NNUNET_MAMBA_SCAN_BC_SLABS=1), odd D; walks unrolled 4 steps (two
    # sub-chunk states written per iteration of the summary walk)
    "seq_3d_K3_full_slabs_unroll4": dict(B=2, D=5, N=3, grid=(2, 3, 5), K=3, dtype="float32",
                                         cfg=dict(seq=True, BLOCK_T=8, BLOCK_D=2, BLOCK_R=2, num_warps=1,
                                                  bc_slabs=True, SF=4)),
    "seq_2d_K2_deterministic_bf16": dict(B=1, D=4, N=2, grid=(3, 7), K=2, dtype="bfloat16", deterministic=True,
                                          cfg=dict(seq=True, BLOCK_T=8, BLOCK_D=2, BLOCK_R=2, num_warps=1)),
    # one chunk (no carries) in bf16: the carry loads read a dummy of the input dtype
    "seq_2d_K2_single_chunk_bf16": dict(B=2, D=4, N=2, grid=(3, 5), K=2, dtype="bfloat16",
                                         cfg=dict(seq=True, BLOCK_T=16, BLOCK_D=2, BLOCK_R=2, num_warps=1)),
    # sub-chunks of 4 steps without step reuse (the defaults are S=2 with reuse)
    "seq_2d_K3_subchunk4_noreuse": dict(B=1, D=4, N=2, grid=(3, 7), K=3, dtype="float32",
                                        cfg=dict(seq=True, BLOCK_T=8, BLOCK_D=2, BLOCK_R=2, num_warps=1, S=4,
                                                 reuse_steps=False)),
    # step reuse with 4-step sub-chunks
    "seq_3d_K3_reuse_steps_subchunk4_bf16": dict(B=2, D=4, N=2, grid=(2, 3, 5), K=3, dtype="bfloat16",
                                                  cfg=dict(seq=True, BLOCK_T=8, BLOCK_D=2, BLOCK_R=2, num_warps=1,
                                                           S=4, reuse_steps=True)),
    # a channel's states split over 2 lanes (NNUNET_MAMBA_SCAN_SPLIT_FWD/BWD=2): odd D (masked channels),
    # two channel blocks (atomics), ragged chunks; and over 4 lanes in bf16 with one channel per program
    "seq_3d_K3_split2_ragged": dict(B=2, D=3, N=4, grid=(2, 3, 5), K=3, dtype="float32",
                                    cfg=dict(seq=True, BLOCK_T=8, BLOCK_D=4, BLOCK_R=2, num_warps=1,
                                             split_fwd=2, split_bwd=2)),
    "seq_2d_K2_split4_bf16": dict(B=1, D=2, N=4, grid=(3, 7), K=2, dtype="bfloat16",
                                  cfg=dict(seq=True, BLOCK_T=8, BLOCK_D=4, BLOCK_R=2, num_warps=1,
                                           split_fwd=4, split_bwd=4)),
    "seq_2d_K2_split2_single_chunk_nobias": dict(B=2, D=5, N=2, grid=(3, 5), K=2, dtype="float32", full=False,
                                                 softplus=False,
                                                 cfg=dict(seq=True, BLOCK_T=16, BLOCK_D=4, BLOCK_R=2, num_warps=1,
                                                          split_fwd=2, split_bwd=2)),
    # the forward's chunk carries handed to the backward (NNUNET_MAMBA_SCAN_SAVE_CARRIES=1): true states in the
    # scratch, y / dz / dC from the summary walk (two channel blocks: atomics; reverse orders; ragged chunks), or
    # kept in walk 2 (slabs, bf16, odd D); and without z, D and bias
    "seq_3d_K3_full_saved_carries": dict(B=2, D=4, N=3, grid=(2, 3, 5), K=3, dtype="float32",
                                         cfg=dict(seq=True, BLOCK_T=8, BLOCK_D=2, BLOCK_R=2, num_warps=1,
                                                  save_carries=True)),
    "seq_2d_K2_saved_carries_dc_in_walk2_slabs_bf16": dict(B=1, D=5, N=2, grid=(3, 7), K=2, dtype="bfloat16",
                                                           cfg=dict(seq=True, BLOCK_T=8, BLOCK_D=2, BLOCK_R=2,
                                                                    num_warps=1, save_carries=True,
                                                                    dc_in_summary=False, bc_slabs=True)),
    "seq_1d_K2_saved_carries_minimal": dict(B=2, D=3, N=2, grid=(19,), K=2, dtype="float32", full=False,
                                            cfg=dict(seq=True, BLOCK_T=8, BLOCK_D=4, BLOCK_R=2, num_warps=1,
                                                     save_carries=True)),
    # the backward's own walk 1 (NNUNET_MAMBA_SCAN_SCR=0) instead of sub-chunk states from the summary walk
    "seq_3d_K2_walk1": dict(B=1, D=4, N=2, grid=(3, 3, 3), K=2, dtype="float32",
                            cfg=dict(seq=True, BLOCK_T=8, BLOCK_D=2, BLOCK_R=2, num_warps=1, scr=False)),
}
NAMES = ["out", "du", "ddelta", "dA", "dB", "dC", "dD", "ddelta_bias", "dz"]

WORKER = textwrap.dedent(r'''
    import json, os, sys, math, zlib
    os.environ["TRITON_INTERPRET"] = "1"
    import torch
    from nnunet_mamba.kernels import reference as R
    from nnunet_mamba.kernels import triton_scan as T
    from nnunet_mamba.kernels.directions import default_directions

    cases = json.loads(sys.argv[1])
    results = {}
    for name, c in cases.items():
        g = torch.Generator().manual_seed(zlib.crc32(name.encode()) % 1000)  # the same inputs on every run
        dtype = getattr(torch, c["dtype"])
        grid = tuple(c["grid"]); K = c["K"]; Bsz = c["B"]; D = c["D"]; N = c["N"]
        L = math.prod(grid)
        full = c.get("full", True)
        dirs = default_directions(len(grid), K)
        u = torch.randn(Bsz, L, D, generator=g).to(dtype)
        delta = (torch.randn(Bsz, L, K, D, generator=g) * 0.5 + (-1.0 if c.get("softplus", True) else 0.3)).to(dtype)
        A = -(torch.rand(K, D, N, generator=g) * 2 + 0.1)
        Bm = torch.randn(Bsz, L, K, N, generator=g).to(dtype)
        Cm = torch.randn(Bsz, L, K, N, generator=g).to(dtype)
        Dk = torch.randn(K, D, generator=g) if full else None
        db = torch.randn(K, D, generator=g) * 0.3 if full else None
        z = torch.randn(Bsz, L, D, generator=g).to(dtype) if full else None
        dout = torch.randn(Bsz, L, D, generator=g).to(dtype)
        if c.get("noncontig"):
            # same values, non-contiguous storage (transposed / strided views)
            u = u.transpose(1, 2).contiguous().transpose(1, 2)
            delta = delta.permute(0, 2, 1, 3).contiguous().permute(0, 2, 1, 3)
            Bm = Bm.transpose(2, 3).contiguous().transpose(2, 3)
            dout = dout.transpose(1, 2).contiguous().transpose(1, 2)
            assert not u.is_contiguous() and not delta.is_contiguous() and not Bm.is_contiguous()
        args = (u, delta, A, Bm, Cm, Dk, db, z, grid, dirs, c.get("softplus", True))
        d64 = tuple(x.double() if isinstance(x, torch.Tensor) else x for x in args)
        T._CONFIG_OVERRIDE = c["cfg"]
        os.environ["NNUNET_MAMBA_SCAN_DETERMINISTIC"] = "1" if c.get("deterministic") else "0"
        if c["cfg"].get("save_carries"):  # the forward hands its chunk carries to the backward
            out, carries = T.multidir_scan_fwd(*args, return_carries=True)
            grads = T.multidir_scan_bwd(dout, *args, carries=carries)
        else:
            out, carries = T.multidir_scan_fwd(*args), None
            grads = T.multidir_scan_bwd(dout, *args)
        ref = R.multidir_scan_fwd(*d64)
        rgrads = R.multidir_scan_bwd(dout.double(), *d64)
        errs, finite, dtypes_ok = {}, True, True
        exp = [dtype, dtype, dtype, torch.float32, dtype, dtype, torch.float32, torch.float32, dtype]
        for nm, a, b, e in zip(__NAMES__, (out, *grads), (ref, *rgrads), exp):
            if a is None or b is None:
                errs[nm] = 0.0 if (a is None and b is None) else float("inf")
                continue
            finite &= bool(torch.isfinite(a.double()).all())
            dtypes_ok &= a.dtype == e and tuple(a.shape) == tuple(b.shape)
            errs[nm] = ((a.double() - b).norm() / b.norm().clamp_min(1e-30)).item()
        results[name] = dict(errs=errs, finite=finite, dtypes_ok=dtypes_ok, carries=carries is not None)
    print("RESULTS" + json.dumps(results))
''').replace("__NAMES__", repr(NAMES))


@pytest.fixture(scope="module")
def interpreter_results(tmp_path_factory):
    return run_worker(tmp_path_factory.mktemp("triton_interp"), WORKER, json.dumps(CASES))


def run_worker(folder, source: str, *args: str):
    """Run a worker script under TRITON_INTERPRET=1 (it must be set before triton is imported) and return the
    JSON it prints after ``RESULTS``."""
    script = folder / "worker.py"
    script.write_text(source)
    proc = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True,
                          env=dict(os.environ, TRITON_INTERPRET="1"), timeout=600)
    if proc.returncode != 0:
        pytest.fail(f"interpreter worker failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULTS")][-1]
    return json.loads(line[len("RESULTS"):])


@pytest.mark.parametrize("case", list(CASES))
def test_triton_matches_reference(interpreter_results, case):
    res = interpreter_results[case]
    tol = 2e-2 if CASES[case]["dtype"] == "bfloat16" else 1e-4
    assert res["finite"], res
    assert res["dtypes_ok"], res
    assert res["carries"] == bool(CASES[case]["cfg"].get("save_carries")), res
    bad = {k: v for k, v in res["errs"].items() if not v <= tol}
    # dA / dD / ddelta_bias stay fp32 even for bf16 inputs
    assert not bad, f"relative errors above {tol}: {bad} (all: {res['errs']})"


# A 2-step scan with huge deltas (dt ~ 24, so a_t = exp(dt A) ~ 6e-6), found by the fuzz test: dA of both kernel
# families against float64. The chunked backward forms a_t h_{t-1} as h_t - dt_t u_t B_t, which cancels there.
CANCEL_WORKER = textwrap.dedent(r'''
    import json, os, sys
    os.environ["TRITON_INTERPRET"] = "1"
    import torch
    from nnunet_mamba.kernels import reference as R
    from nnunet_mamba.kernels import triton_scan as T
    from nnunet_mamba.kernels.directions import default_directions

    u = torch.tensor([[[-0.42, 1.31], [0.77, -1.05]]])
    delta = torch.tensor([[[[-22.64, 23.12]], [[12.28, 24.56]]]])
    A = torch.tensor([[[-0.794], [-0.515]]])
    Bm = torch.tensor([[[[0.93]], [[-1.41]]]])
    Cm = torch.tensor([[[[1.12]], [[0.36]]]])
    dout = torch.tensor([[[0.51, -0.88], [1.27, 0.64]]])
    args = (u, delta, A, Bm, Cm, None, None, None, (2,), default_directions(1, 1), True)
    d64 = tuple(x.double() if isinstance(x, torch.Tensor) else x for x in args)
    want = R.multidir_scan_bwd(dout.double(), *d64)[2]
    errs = {}
    for name, cfg in (("chunked", dict(BLOCK_T=4, BLOCK_D=2, BLOCK_R=2)),
                      ("chunked_exact_da", dict(BLOCK_T=4, BLOCK_D=2, BLOCK_R=2, exact_da=True)),
                      ("sequential", dict(seq=True, BLOCK_T=8, BLOCK_D=2, BLOCK_R=2, num_warps=1))):
        T._CONFIG_OVERRIDE = cfg
        got = T.multidir_scan_bwd(dout, *args)[2]
        errs[name] = ((got.double() - want).norm() / want.norm()).item()
    print("RESULTS" + json.dumps(errs))
''')


@pytest.fixture(scope="module")
def cancellation_errors(tmp_path_factory):
    return run_worker(tmp_path_factory.mktemp("triton_cancel"), CANCEL_WORKER)


def test_sequential_and_exact_chunked_dA_are_accurate_at_huge_delta(cancellation_errors):
    assert cancellation_errors["sequential"] <= 1e-5, cancellation_errors
    assert cancellation_errors["chunked_exact_da"] <= 1e-5, cancellation_errors


@pytest.mark.xfail(strict=True, reason="known: the chunked backward's default h_t - dt u B cancels when exp(dt A) is "
                                       "tiny (README, current limitations); NNUNET_MAMBA_SCAN_EXACT_DA=1 and the "
                                       "sequential kernels are exact here")
def test_chunked_dA_cancellation_at_huge_delta(cancellation_errors):
    assert cancellation_errors["chunked"] <= 1e-4, cancellation_errors


# The public operator (torch.library custom op with autograd) on the Triton backend with saved chunk carries:
# eager and under torch.compile (fullgraph: the fake kernel must give the carries' shape), against the reference.
OP_WORKER = textwrap.dedent(r'''
    import json, os
    os.environ["TRITON_INTERPRET"] = "1"
    import torch
    from nnunet_mamba.kernels import default_directions, multidir_selective_scan
    from nnunet_mamba.kernels import triton_scan as T

    T._CONFIG_OVERRIDE = dict(seq=True, BLOCK_T=8, BLOCK_D=2, BLOCK_R=2, num_warps=1, save_carries=True)
    g = torch.Generator().manual_seed(3)
    Bsz, L, D, K, N, grid = 1, 21, 3, 2, 2, (3, 7)
    leaves = [torch.randn(Bsz, L, D, generator=g), torch.randn(Bsz, L, K, D, generator=g) * 0.5 - 1.0,
              -(torch.rand(K, D, N, generator=g) + 0.2), torch.randn(Bsz, L, K, N, generator=g),
              torch.randn(Bsz, L, K, N, generator=g), torch.randn(K, D, generator=g),
              torch.randn(Bsz, L, D, generator=g), torch.randn(K, D, generator=g) * 0.3]
    dout = torch.randn(Bsz, L, D, generator=g)
    dirs = default_directions(2, K)
    used = []  # whether each Triton backward got the forward's carries
    seq_bwd = T._seq_bwd
    T._seq_bwd = lambda *a: (used.append(a[-1] is not None), seq_bwd(*a))[1]

    def run(backend, fn):
        xs = [x.detach().clone().double().requires_grad_() if backend == "reference" else
              x.detach().clone().requires_grad_() for x in leaves]
        out = fn(lambda *a: multidir_selective_scan(*a, grid=grid, directions=dirs, backend=backend))(*xs)
        out.backward(dout.to(out.dtype))
        return [out.detach().double()] + [x.grad.double() for x in xs]

    want = run("reference", lambda f: f)
    errs = {}
    for name, fn in (("eager", lambda f: f), ("compiled", lambda f: torch.compile(f, backend="aot_eager",
                                                                                  fullgraph=True))):
        got = run("triton", fn)
        errs[name] = max(((a - b).norm() / b.norm().clamp_min(1e-30)).item() for a, b in zip(got, want))
    out, carries = T.multidir_scan_fwd(*[x.detach() for x in leaves[:5]], leaves[5], leaves[7], leaves[6], grid,
                                       dirs, True, return_carries=True)
    errs["carries_shape"] = list(carries.shape)
    errs["used"] = list(used)
    # the fake kernels against the real outputs (shapes, strides, dtypes: what Inductor asserts on every call)
    from nnunet_mamba.kernels.directions import encode_directions
    u, delta, A, Bm, Cm, Dk, z, db = [x.detach() for x in leaves]
    code = encode_directions(dirs)
    fwd_args = (u, delta, A, Bm, Cm, Dk, db, z, list(grid), code, True, "triton")
    errs["opcheck"] = []
    for op, args in ((torch.ops.nnunet_mamba.multidir_scan.default, fwd_args),
                     (torch.ops.nnunet_mamba.multidir_scan_bwd.default, (dout, *fwd_args, carries))):
        report = torch.library.opcheck(op, args, test_utils=("test_schema", "test_faketensor"),
                                       raise_exception=False)
        errs["opcheck"] += [f"{op}: {k}: {v}"[:500] for k, v in report.items() if v != "SUCCESS"]
    print("RESULTS" + json.dumps(errs))
''')


def test_public_operator_with_saved_carries_eager_and_compiled(tmp_path):
    res = run_worker(tmp_path, OP_WORKER)
    assert res["carries_shape"] == [1, 1, 2, 3, 2, 3], res  # (B, 1, K, nC = ceil(21 / 8), N, D)
    assert res["eager"] <= 1e-5 and res["compiled"] <= 1e-5, res
    assert res["used"] == [True, True], res  # both backward passes started from the saved carries
    assert res["opcheck"] == [], res["opcheck"]  # fake kernels: the carries' shape once had K wrong


# Inputs that sit directly before NaN-filled memory (batch 1: views of NaN-padded buffers stay contiguous, so the
# kernels get them as they are): a read past the end of the sequence would turn outputs or gradients into NaN.
# Ragged chunks (30 steps, chunks of 4 and 8: two padding rows in the last chunk). The exact-dA chunked backward
# once read the "previous step" of padding rows, i.e. the row past the end.
PAD_WORKER = textwrap.dedent(r'''
    import json, os
    os.environ["TRITON_INTERPRET"] = "1"
    import torch
    from nnunet_mamba.kernels import reference as R
    from nnunet_mamba.kernels import triton_scan as T
    from nnunet_mamba.kernels.directions import default_directions

    g = torch.Generator().manual_seed(5)
    grid, D, K, N, PAD = (3, 2, 5), 3, 2, 2, 8
    L = 30

    def padded(*shape):
        """A (1, L, ...) tensor followed in memory by PAD rows of NaN."""
        buf = torch.full((1, L + PAD) + shape, float("nan"))
        buf[:, :L] = torch.randn((1, L) + shape, generator=g)
        view = buf[:, :L]
        assert view.is_contiguous()
        return view

    u, z, dout = padded(D), padded(D), padded(D)
    delta = padded(K, D).mul_(0.5).sub_(1.0)
    Bm, Cm = padded(K, N), padded(K, N)
    A = -(torch.rand(K, D, N, generator=g) + 0.2)
    Dk, db = torch.randn(K, D, generator=g), torch.randn(K, D, generator=g) * 0.3
    args = (u, delta, A, Bm, Cm, Dk, db, z, grid, default_directions(3, K), True)
    d64 = tuple(x.double() if isinstance(x, torch.Tensor) else x for x in args)
    want = (R.multidir_scan_fwd(*d64), *R.multidir_scan_bwd(dout.double(), *d64))
    errs = {}
    for name, cfg in (("chunked", dict(BLOCK_T=4, BLOCK_D=2, BLOCK_R=2)),
                      ("chunked_exact_da", dict(BLOCK_T=4, BLOCK_D=2, BLOCK_R=2, exact_da=True)),
                      ("chunked_vec1_exact_da", dict(BLOCK_T=8, BLOCK_D=4, BLOCK_R=2, vec1=True, exact_da=True)),
                      ("sequential", dict(seq=True, BLOCK_T=4, BLOCK_D=2, BLOCK_R=2, num_warps=1))):
        T._CONFIG_OVERRIDE = cfg
        out, carries = T.multidir_scan_fwd(*args, return_carries=True)
        got = (out, *T.multidir_scan_bwd(dout, *args, carries=carries))
        errs[name] = max(((a.double() - b).norm() / b.norm()).item() if torch.isfinite(a).all() else float("inf")
                         for a, b in zip(got, want))
    print("RESULTS" + json.dumps(errs))
''')


def test_kernels_read_nothing_past_the_sequence_end(tmp_path):
    errs = run_worker(tmp_path, PAD_WORKER)
    assert all(e <= 1e-5 for e in errs.values()), errs
