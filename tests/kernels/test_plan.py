"""The Triton scan's plan: which kernel family, chunk lengths, output modes and load paths, and the gradient
buffers each output mode needs."""
import pytest
import torch

pytest.importorskip("triton")
from nnunet_mamba.kernels.triton import carries_shape, param_grads  # noqa: E402
from nnunet_mamba.kernels.triton import plan as P  # noqa: E402


def plan(Bsz, L, D, K=3, N=16, dtype=torch.bfloat16, aligned=True, deterministic=False, bwd=True):
    return P.plan(Bsz, L, D, K, N, dtype, aligned, deterministic, bwd)


@pytest.mark.parametrize("bwd", [False, True])
def test_sequence_length_and_parallelism_pick_the_kernel_family(bwd):
    """Sequential kernels beyond one chunk (64 steps), and on single-chunk maps when batch x channels give
    >= 4096 sequential programs; chunked ones otherwise."""
    assert plan(58, 1400, 128, bwd=bwd).sequential  # long map
    p = plan(58, 175, 256, bwd=bwd)  # Hippocampus bottleneck: 8 x 58 x 11 = 5104 programs
    assert p.sequential and p.T == 16 and p.nC == 11
    assert plan(58, 1400, 128, bwd=bwd).T == 64  # Hippocampus stage 2: 4 x 58 x 22 = 5104 programs
    # long maps: at most 64 chunks, even with fewer programs (16^3: 2048 programs of 64 steps)
    assert plan(2, 4096, 512, bwd=bwd).T == 64
    assert plan(2, 32768, 256, bwd=bwd).T == 256
    for D in (64, 320, 640):  # 8^3 at any width: sequential, 16-step chunks
        p = plan(2, 512, D, bwd=bwd)
        assert p.sequential and p.T == 16
    assert plan(2, 65, 320, bwd=bwd).sequential
    p = plan(2, 64, 320, bwd=bwd)  # BraTS-like 4^3: one chunk, 80 programs
    assert not p.sequential and (p.T, p.BD, p.nC, p.nDB) == (64, 16, 1, 20)
    p = plan(2, 64, 16384, bwd=bwd)  # one chunk of the chunked tiles, but 512 x 2 x 4 = 4096 programs
    assert p.sequential and p.T == 16
    p = plan(256, 16, 512, bwd=bwd)  # 16 x 256 = 4096 programs of 16 steps: sequential, one chunk
    assert p.sequential and p.nC == 1


def test_both_passes_plan_alike_and_carries_follow_the_plan():
    for args in ((2, 64, 320), (58, 175, 256), (2, 4096, 512), (2, 64, 16384), (256, 16, 512)):
        f, b = plan(*args, bwd=False), plan(*args, bwd=True)
        assert (f.sequential, f.T, f.BD, f.nC) == (b.sequential, b.T, b.BD, b.nC)
    L, D, Bsz, K, N = 32 ** 3, 256, 2, 3, 16
    assert carries_shape(Bsz, L, D, K, N) == (Bsz, 1, K, L // plan(Bsz, L, D).T, N, D)
    assert carries_shape(Bsz, 8 ** 3, 64, K, N) == (Bsz, 1, K, 8 ** 3 // 16, N, 64)  # 8^3: 16-step chunks
    assert carries_shape(Bsz, 4 ** 3, 64, K, N) == (0,)  # single-chunk map: chunked kernels
    assert carries_shape(256, 16, 512, K, N) == (0,)  # sequential, but one chunk


def test_output_modes_and_load_paths():
    assert plan(2, 512, 32).bc == "store"  # one channel block: plain stores
    assert plan(2, 512, 64).bc == "atomic" and plan(2, 512, 64, deterministic=True).bc == "slabs"
    assert plan(2, 64, 17).bc == "atomic"  # chunked: 16-channel blocks
    p = plan(2, 512, 64)
    assert p.shuffles and p.prefetch and p.vec_bc == 1
    assert plan(2, 512, 64, dtype=torch.float32).vec_bc == 2
    assert plan(2, 512, 64, dtype=torch.float16).vec_bc == 0  # fp16: scalar loads
    assert plan(2, 512, 64, dtype=None).vec_bc == 0  # B and C of different dtypes
    assert plan(2, 512, 64, N=4).vec_bc == 0  # 8 bytes per step: no 16-byte vector
    assert plan(2, 512, 64, aligned=False).vec_bc == 0
    assert not plan(2, 512, 64, N=12).shuffles  # the butterfly needs a power of two
    chunked = plan(2, 64, 64)
    assert not (chunked.shuffles or chunked.prefetch or chunked.vec_bc)
    assert not plan(2, 512, 64).i64 and plan(64, 2 ** 21, 64).i64


def test_interpreter_plans_no_inline_ptx(monkeypatch):
    monkeypatch.setattr(P, "triton_interpreting", lambda: True)
    P.plan.cache_clear()
    try:
        p = plan(2, 512, 64)
        assert p.sequential and not (p.vec_bc or p.shuffles or p.prefetch)
    finally:
        P.plan.cache_clear()


def test_gradient_buffers_of_each_output_mode(monkeypatch):
    """Slabs are summed over channel blocks; atomic buffers and single-block outputs only change dtype."""
    monkeypatch.setattr(param_grads, "MAX_ROWS", 0)  # torch's sums: no Triton launch on a CPU
    Bm = torch.zeros(2, 5, 3, 4, dtype=torch.bfloat16)  # (B, L, K, N)
    Cm = torch.zeros(2, 5, 3, 4, dtype=torch.float32)
    dA_p = torch.ones(2, 1, 3, 4, 6)  # (B, nC, K, N, D)
    slabs = plan(2, 5, 40, deterministic=True)
    assert slabs.bc == "slabs" and slabs.nDB == 3
    dB, dC = param_grads.bc_buffers(slabs, Bm, Cm)
    assert dB.shape == (3, 2, 5, 3, 4) and dB.dtype == torch.float32
    dB.copy_(torch.arange(3.0).view(3, 1, 1, 1, 1).expand_as(dB))
    dC.fill_(0.5)
    dA, dD, dbias, oB, oC = param_grads.finish_grads(dA_p, None, None, dB, dC, slabs, Bm, Cm, torch.float32, None,
                                                     None)
    assert oB.dtype == torch.bfloat16 and oC.dtype == torch.float32 and oB.shape == Bm.shape
    assert torch.all(oB == 3.0) and torch.all(oC == 1.5)
    assert dA.shape == (3, 6, 4) and torch.all(dA == 2.0) and dD is None and dbias is None
    atomic = plan(2, 5, 40)
    aB, aC = param_grads.bc_buffers(atomic, Bm, Cm)
    assert aB.shape == Bm.shape and aB.dtype == torch.float32 and not aB.any()
    assert aB.untyped_storage().data_ptr() != aC.untyped_storage().data_ptr()  # fp32 dC is an output itself
    both = Cm.bfloat16()  # both converted afterwards: one zero fill for the pair
    pB, pC = param_grads.bc_buffers(atomic, Bm, both)
    assert pB.dtype == pC.dtype == torch.float32 and not pB.any() and not pC.any()
    assert pC.data_ptr() == pB.data_ptr() + pB.numel() * 4
    pB.fill_(1.0)
    pC.fill_(-2.0)
    *_, oB, oC = param_grads.finish_grads(dA_p, None, None, pB, pC, atomic, Bm, both, torch.float32, None, None)
    assert oB.dtype == oC.dtype == torch.bfloat16 and torch.all(oB == 1.0) and torch.all(oC == -2.0)
    assert oB.untyped_storage().data_ptr() != oC.untyped_storage().data_ptr()
    one_B, one_C = param_grads.bc_buffers(plan(2, 5, 8, deterministic=True), Bm, Cm)
    assert one_B.dtype == torch.bfloat16 and one_C.dtype == torch.float32 and one_B.shape == Bm.shape
