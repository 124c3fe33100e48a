"""The backward's parameter gradients from its per-(batch, chunk) fp32 partials.

Both kernel families write ``dA`` as partials of shape (B, nC, K, N, D) and ``dD`` / ``ddelta_bias`` as
(B, nC, K, D) (no atomics: deterministic). :func:`param_grads` sums them over the B * nC rows in a fixed order and
returns ``dA`` as (K, D, N) and the others as (K, D) in the parameters' dtypes. With few rows (short maps, where
each launch costs more CPU time than the GPU needs) one Triton launch does it all instead of three torch reductions,
a transposing copy and the casts; with many rows (long maps, large batches: tens of MB of partials) torch's
reductions, which spread the rows over the whole GPU, do it: one program per channel block and direction walking
thousands of rows leaves most of the GPU idle. The same launch also converts the backward's fp32 dB / dC to the
inputs' dtype (bf16, fp16) where asked (``casts``).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import triton
import triton.language as tl

from .launch import launcher

MAX_ROWS = 128  # batch x chunk rows summed by the one Triton launch; above, torch's reductions use the whole GPU


@triton.jit
def _param_grads_kernel(dA_p, dD_p, dbias_p, dA, dD, dbias, R, K, D, src0, src1, dst0, dst1, n_cast,
                        N: tl.constexpr, NP: tl.constexpr, HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr,
                        BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr, CAST: tl.constexpr, BLOCK_C: tl.constexpr):
    """Program (d block, k): sums rows r = 0..R-1 of the partials in tiles of BLOCK_R rows; with CAST it also
    converts its share of the fp32 pair src0 / src1 (n_cast values each) into dst0 / dst1."""
    if CAST:
        nprog = tl.num_programs(0) * tl.num_programs(1)
        per = tl.cdiv(tl.cdiv(n_cast, nprog), BLOCK_C) * BLOCK_C
        lo = (tl.program_id(1) * tl.num_programs(0) + tl.program_id(0)).to(tl.int64) * per
        for off in range(0, per, BLOCK_C):
            i = lo + off + tl.arange(0, BLOCK_C)
            m = i < n_cast
            # round to nearest even, as torch's .to() (the interpreter truncates whatever is asked)
            x0 = tl.load(src0 + i, mask=m).to(dst0.dtype.element_ty, fp_downcast_rounding="rtne")
            x1 = tl.load(src1 + i, mask=m).to(dst1.dtype.element_ty, fp_downcast_rounding="rtne")
            tl.store(dst0 + i, x0, mask=m)
            tl.store(dst1 + i, x1, mask=m)
    k = tl.program_id(1).to(tl.int64)
    d0 = tl.program_id(0) * BLOCK_D
    c = tl.arange(0, NP * BLOCK_D)  # column c = n * BLOCK_D + j: state n of channel d0 + j
    n = c // BLOCK_D
    d = d0 + c % BLOCK_D
    cmask = (n < N) & (d < D)
    j = tl.arange(0, BLOCK_D)
    jmask = d0 + j < D
    acc = tl.zeros((NP * BLOCK_D,), tl.float32)
    acc_d = tl.zeros((BLOCK_D,), tl.float32)
    acc_b = tl.zeros((BLOCK_D,), tl.float32)
    for r0 in range(0, R, BLOCK_R):
        r = r0 + tl.arange(0, BLOCK_R).to(tl.int64)
        rmask = r < R
        row = r * K + k  # row of the (B * nC, K) leading axes
        acc += tl.sum(tl.load(dA_p + (row[:, None] * N + n[None, :]) * D + d[None, :],
                              mask=rmask[:, None] & cmask[None, :], other=0.0), 0)
        if HAS_D:
            acc_d += tl.sum(tl.load(dD_p + row[:, None] * D + d0 + j[None, :],
                                    mask=rmask[:, None] & jmask[None, :], other=0.0), 0)
        if HAS_BIAS:
            acc_b += tl.sum(tl.load(dbias_p + row[:, None] * D + d0 + j[None, :],
                                    mask=rmask[:, None] & jmask[None, :], other=0.0), 0)
    tl.store(dA + (k * D + d) * N + n, acc.to(dA.dtype.element_ty), mask=cmask)
    if HAS_D:
        tl.store(dD + k * D + d0 + j, acc_d.to(dD.dtype.element_ty), mask=jmask)
    if HAS_BIAS:
        tl.store(dbias + k * D + d0 + j, acc_b.to(dbias.dtype.element_ty), mask=jmask)


def param_grads(dA_p: torch.Tensor, dD_p: Optional[torch.Tensor], dbias_p: Optional[torch.Tensor],
                A_dtype: torch.dtype, Dskip_dtype: Optional[torch.dtype], bias_dtype: Optional[torch.dtype],
                casts: Sequence = ()):
    """(dA (K, D, N), dD (K, D) or None, ddelta_bias (K, D) or None, converted) from contiguous fp32 partials
    ``dA_p`` (B, nC, K, N, D) and ``dD_p`` / ``dbias_p`` (B, nC, K, D) (None where the input is absent).
    ``casts``: (fp32 tensor, dtype) pairs handed back converted (``converted``, a list), in the same launch where
    they are two contiguous tensors of one size (the backward's dB and dC: two launches fewer), else by torch."""
    Bsz, nC, K, N, D = dA_p.shape
    if Bsz * nC > MAX_ROWS:
        return (dA_p.sum((0, 1)).transpose(1, 2).contiguous().to(A_dtype),
                dD_p.sum((0, 1)).to(Dskip_dtype) if dD_p is not None else None,
                dbias_p.sum((0, 1)).to(bias_dtype) if dbias_p is not None else None,
                [x.to(dtype) for x, dtype in casts])
    dev = dA_p.device
    dA = torch.empty((K, D, N), device=dev, dtype=A_dtype)
    dD = torch.empty((K, D), device=dev, dtype=Dskip_dtype) if dD_p is not None else None
    dbias = torch.empty((K, D), device=dev, dtype=bias_dtype) if dbias_p is not None else None
    fused = len(casts) == 2 and casts[0][0].shape == casts[1][0].shape and \
        all(x.dtype == torch.float32 and x.is_contiguous() for x, _ in casts)
    converted = [torch.empty(x.shape, device=dev, dtype=dtype) for x, dtype in casts] if fused else \
        [x.to(dtype) for x, dtype in casts]
    NP = triton.next_power_of_2(N)
    BLOCK_D, BLOCK_R = _tiles(K, D, NP)
    src = [x for x, _ in casts] if fused else [dA_p, dA_p]
    dst = converted if fused else [dA_p, dA_p]
    launcher(_param_grads_kernel)[(-(-D // BLOCK_D), K)](
        dA_p, dD_p if dD_p is not None else dA_p, dbias_p if dbias_p is not None else dA_p,
        dA, dD if dD is not None else dA, dbias if dbias is not None else dA, Bsz * nC, K, D,
        src[0], src[1], dst[0], dst[1], src[0].numel() if fused else 0,
        N=N, NP=NP, HAS_D=dD_p is not None, HAS_BIAS=dbias_p is not None, BLOCK_R=BLOCK_R, BLOCK_D=BLOCK_D,
        CAST=fused, BLOCK_C=1024, num_warps=4)
    return dA, dD, dbias, converted


def _tiles(K: int, D: int, NP: int, programs: int = 256) -> tuple:
    """(channels, rows) per tile: channel blocks of 32 halved down to 8 (one 32-byte sector of a state's channels)
    until K x blocks reach ``programs`` (fewer leave part of the GPU idle), with rows raised so that a tile stays at
    8,192 values."""
    BLOCK_D = 32
    while BLOCK_D > 8 and -(-D // BLOCK_D) * K < programs:
        BLOCK_D //= 2
    BLOCK_D = max(1, min(BLOCK_D, triton.next_power_of_2(D), 512 // NP))
    return BLOCK_D, max(16, min(64, 8192 // (NP * BLOCK_D)))


def bc_buffers(p, Bm, Cm):
    """dB, dC outputs of a backward kernel with plan ``p``: fp32 zeros for atomics (one zero fill for both where
    they are converted to other dtypes afterwards, so that they are no outputs sharing a buffer), one fp32 slab
    per channel block (``slabs``), or the final tensors (one channel block: plain stores)."""
    Bsz, L, K, N = Bm.shape
    dev = Bm.device
    if p.bc == "slabs":
        return (torch.empty((p.nDB, Bsz, L, K, N), device=dev, dtype=torch.float32) for _ in range(2))
    if p.bc == "atomic" and Bm.dtype != torch.float32 and Cm.dtype != torch.float32:
        return torch.zeros((2, Bsz, L, K, N), device=dev, dtype=torch.float32).unbind(0)
    if p.bc == "atomic":
        return (torch.zeros((Bsz, L, K, N), device=dev, dtype=torch.float32) for _ in range(2))
    return (torch.empty((Bsz, L, K, N), device=dev, dtype=x.dtype) for x in (Bm, Cm))


def finish_grads(dA_p, dD_p, dbias_p, dB, dC, p, Bm, Cm, A_dtype, Dskip_dtype, bias_dtype):
    """(dA, dD, ddelta_bias, dB, dC): the parameter gradients from their partials, dB and dC in the input dtypes from
    what :func:`bc_buffers` gave the kernel (converted in the parameter-gradient launch where it can)."""
    if p.bc == "slabs":
        dB, dC = dB.sum(0), dC.sum(0)
    casts = [(x, want.dtype) for x, want in ((dB, Bm), (dC, Cm)) if x.dtype != want.dtype]
    dA, dD, dbias, converted = param_grads(dA_p, dD_p, dbias_p, A_dtype, Dskip_dtype, bias_dtype, casts)
    done = iter(converted)
    dB, dC = (next(done) if x.dtype != want.dtype else x for x, want in ((dB, Bm), (dC, Cm)))
    return dA, dD, dbias, dB, dC
