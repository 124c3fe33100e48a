"""The sequential kernel family on the host: chunk summaries, the carry pass, the forward and backward launches.

Forward, per direction: ``seq_summary`` (chunk-exit states from a zero carry-in), then one carry pass over the
chunks of every direction, then ``seq_fwd`` seeded with the carries; the carries go to the backward. Backward, per
direction: ``seq_summary`` in its backward mode (sub-chunk states from the true carries, y / dz / dC, the adjoint's
chunk summaries), the adjoint's carry pass, then ``seq_bwd``. One launch per direction: the sum over directions is
accumulated in fp32 in launch order, so it is deterministic.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..directions import scan_geometry
from .common import comb2, position_args, wide
from .launch import launcher, memo
from .param_grads import bc_buffers, finish_grads
from .plan import CARRY_ROWS, CARRY_ROWS_LONG, INT32_MAX, SUB_CHUNK, cdiv
from .sequential_source import kernels


@triton.jit
def _carry_kernel(st, dts, A, D, N, K, nC, P, rev_mask, K_SEL, BLOCK_R: tl.constexpr, BLOCK_ND: tl.constexpr,
                  I64: tl.constexpr, PART0=0):
    """In place: chunk summaries -> the state after each chunk, ``H_c = exp(A sum dt_c) H_{c-1} + S_c`` scanned over
    tiles of chunks with ``tl.associative_scan``."""
    pid = tl.program_id(0)
    j = tl.program_id(1)  # chain = part * K + k; or part (from PART0 on) for the one direction K_SEL >= 0
    b = tl.program_id(2)
    part = tl.where(K_SEL >= 0, j + PART0, j // K)
    k = tl.where(K_SEL >= 0, K_SEL, j % K)
    rev = ((rev_mask >> k) & 1) ^ part
    ND = N * D
    idx = pid * BLOCK_ND + tl.arange(0, BLOCK_ND)
    imask = idx < ND
    n = idx // D
    d = idx % D
    a2 = tl.load(A + (k * D + d) * N + n, mask=imask, other=0.0) * 1.4426950408889634
    base_st = wide(((b * P + part) * K + k), I64) * nC
    base_dt = wide((b * K + k), I64) * nC
    carry = tl.zeros([BLOCK_ND], dtype=tl.float32)
    for i0 in range(0, nC, BLOCK_R):
        r = i0 + tl.arange(0, BLOCK_R)
        rmask = r < nC
        cidx = tl.where(rev == 1, nC - 1 - r, r)
        cidx = tl.where(rmask, cidx, 0)
        m2 = rmask[:, None] & imask[None, :]
        offs = (base_st + cidx)[:, None] * ND + idx[None, :]
        x = tl.load(st + offs, mask=m2, other=0.0)
        sdt = tl.load(dts + (base_dt + cidx)[:, None] * D + d[None, :], mask=m2, other=0.0)
        q = tl.where(m2, tl.exp2(sdt * a2[None, :]), 1.0)
        aa, hh = tl.associative_scan((q, x), 0, comb2)
        h = hh + aa * carry[None, :]
        tl.store(st + offs, h, mask=m2)
        # padded rows are identities, so the last row holds the state after the last valid chunk
        carry = tl.sum(tl.where((tl.arange(0, BLOCK_R) == BLOCK_R - 1)[:, None], h, 0.0), 0)


def _carry_setup(st, directions, k_sel, part0):
    """A carry launch's grid, integer arguments and launch options."""
    Bsz, P, K, nC, N, D = st.shape
    rev_mask = 0
    for k, dirn in enumerate(directions):
        if dirn.reverse:
            rev_mask |= 1 << k
    i64 = max(Bsz * nC * K * max(D, N), Bsz * P * K * nC * N * D) >= INT32_MAX
    BLOCK_R = CARRY_ROWS if nC < CARRY_ROWS_LONG else 64  # many chunks: taller, narrower tiles
    BLOCK_ND = min(256 if BLOCK_R <= 16 else 64, triton.next_power_of_2(N * D))
    return ((cdiv(N * D, BLOCK_ND), P - part0 if k_sel >= 0 else P * K, Bsz), (D, N, K, nC, P, rev_mask, k_sel),
            dict(BLOCK_R=BLOCK_R, BLOCK_ND=BLOCK_ND, I64=i64, PART0=part0, num_warps=4))


def _carry(st, dts, A, directions, k_sel=-1, part0=0):
    """Chunk carries from the summaries, in place: every direction, or only ``k_sel`` (its parts from ``part0`` on:
    1 = only the adjoint's)."""
    launch_grid, ints, opts = memo(("carry", k_sel, part0), _carry_setup, st, directions, k_sel, part0)
    launcher(_carry_kernel)[launch_grid](st, dts, A, *ints, **opts)


def _setup(A, grid, directions):
    """The kernels for this N and each direction's position arguments and REV flag."""
    geometry = []
    for dirn in directions:
        n_a, n_b, n_c, s_a, s_b, s_c, rev = scan_geometry(grid, dirn)
        geometry.append(((n_b, n_c, s_a, s_b, s_c, *position_args(n_b, n_c)), int(bool(rev))))
    return kernels(A.shape[-1], SUB_CHUNK), geometry


def _summary(ks, k, positions, rev, u, delta, A, Bm, Cm, delta_bias, z, st, dts, delta_softplus, p, dout=None,
             scr=None, cst=None, Dskip=None, y_acc=None, dz=None, dC=None, acc_in=0, final=0):
    """One direction's ``seq_summary`` launch: forward mode, or backward mode where ``dout`` is given."""
    Bsz, L, D = u.shape
    bwd = dout is not None
    dummy = u
    launcher(ks["summary"])[(p.nC, p.nDB, Bsz)](
        u, delta, Bm, Cm, A, delta_bias if delta_bias is not None else dummy, z if z is not None else dummy,
        dout if bwd else dummy, st, dts, scr if bwd else dummy, cst if bwd else dummy,
        Dskip if Dskip is not None else dummy, y_acc if y_acc is not None else dummy, dz if dz is not None else dummy,
        dC if bwd else dummy, L, D, st.shape[2], p.nC, st.shape[1], *positions, k, acc_in, final,
        N=A.shape[-1], REV=rev, HAS_BIAS=delta_bias is not None, SOFTPLUS=bool(delta_softplus), BWD=bwd,
        HAS_Z=bwd and z is not None, HAS_D=bwd and Dskip is not None, T=p.T, BD=p.BD, I64=p.i64, VEC_BC=p.vec_bc,
        ATOMIC_BC=bwd and p.bc == "atomic", PARTIAL_BC=bwd and p.bc == "slabs", SHFL=bwd and p.shuffles,
        PF=int(p.prefetch), num_warps=p.num_warps)


def _forward_carries(u, delta, A, Bm, Cm, delta_bias, directions, delta_softplus, p, ks, geometry):
    """The state entering each chunk of every direction, ``(B, 1, K, nC, N, D)`` fp32: summaries, then carries."""
    Bsz, L, D = u.shape
    K, N = len(directions), A.shape[-1]
    st = torch.empty((Bsz, 1, K, p.nC, N, D), device=u.device, dtype=torch.float32)
    dts = torch.empty((Bsz, K, p.nC, D), device=u.device, dtype=torch.float32)
    for k, (positions, rev) in enumerate(geometry):
        _summary(ks, k, positions, rev, u, delta, A, Bm, Cm, delta_bias, None, st, dts, delta_softplus, p)
    _carry(st, dts, A, directions)
    return st


def forward(u, delta, A, Bm, Cm, Dskip, delta_bias, z, grid, directions, delta_softplus, p):
    """(out, carries or None) of one sequential forward with plan ``p``."""
    Bsz, L, D = u.shape
    K = len(directions)
    ks, geometry = memo("seq_setup", _setup, A, grid, directions)
    has_carry = p.carries
    st = _forward_carries(u, delta, A, Bm, Cm, delta_bias, directions, delta_softplus, p, ks, geometry) \
        if has_carry else u
    out = torch.empty((Bsz, L, D), device=u.device, dtype=u.dtype)
    acc = torch.empty((Bsz, L, D), device=u.device, dtype=torch.float32) if K > 1 else out
    dummy = u
    for k, (positions, rev) in enumerate(geometry):
        final = k == K - 1
        launcher(ks["fwd"])[(p.nC, p.nDB, Bsz)](
            u, delta, A, Bm, Cm, Dskip if Dskip is not None else dummy,
            delta_bias if delta_bias is not None else dummy, z if z is not None else dummy, st, acc,
            out if final else acc, L, D, K, p.nC, *positions, k, int(k > 0), int(final), N=A.shape[-1], REV=rev,
            HAS_D=Dskip is not None, HAS_BIAS=delta_bias is not None, HAS_Z=z is not None,
            SOFTPLUS=bool(delta_softplus), HAS_CARRY=has_carry, T=p.T, BD=p.BD, I64=p.i64, VEC_BC=p.vec_bc,
            PF=int(p.prefetch), num_warps=p.num_warps)
    return out, (st if has_carry else None)


def backward(dout, u, delta, A, Bm, Cm, Dskip, delta_bias, z, grid, directions, delta_softplus, p, dtypes,
             carries=None):
    """(du, ddelta, dA, dB, dC, dD, ddelta_bias, dz) of one sequential backward with plan ``p``, from the forward's
    ``carries`` (recomputed where not given); ``dtypes``: the parameters' dtypes before their conversion to fp32."""
    Bsz, L, D = u.shape
    K, N = len(directions), A.shape[-1]
    ks, geometry = memo("seq_setup", _setup, A, grid, directions)
    has_carry = p.carries
    dev = u.device
    if has_carry:
        if carries is None:
            carries = _forward_carries(u, delta, A, Bm, Cm, delta_bias, directions, delta_softplus, p, ks, geometry)
        elif tuple(carries.shape) != (Bsz, 1, K, p.nC, N, D):
            raise ValueError(f"carries of shape {tuple(carries.shape)} do not belong to this problem "
                             f"(expected {(Bsz, 1, K, p.nC, N, D)})")
        carries = carries.contiguous()
        st = torch.empty((Bsz, 2, K, p.nC, N, D), device=dev, dtype=torch.float32)  # part 1: the adjoint's
        dts = torch.empty((Bsz, K, p.nC, D), device=dev, dtype=torch.float32)
    else:
        st = u
    scr = torch.empty((Bsz, p.nC, p.T // SUB_CHUNK, N, D), device=dev, dtype=torch.float32)  # sub-chunk states
    dB, dC = bc_buffers(p, Bm, Cm)
    ddelta = torch.empty((Bsz, L, K, D), device=dev, dtype=delta.dtype)
    dA_p = torch.empty((Bsz, p.nC, K, N, D), device=dev, dtype=torch.float32)
    dD_p = torch.empty((Bsz, p.nC, K, D), device=dev, dtype=torch.float32) if Dskip is not None else None
    dbias_p = torch.empty((Bsz, p.nC, K, D), device=dev, dtype=torch.float32) if delta_bias is not None else None
    du = torch.empty((Bsz, L, D), device=dev, dtype=u.dtype)
    dz = torch.empty((Bsz, L, D), device=dev, dtype=z.dtype) if z is not None else None
    du_acc = torch.empty((Bsz, L, D), device=dev, dtype=torch.float32) if K > 1 else du
    y_acc = torch.empty((Bsz, L, D), device=dev, dtype=torch.float32) if (K > 1 and z is not None) else du_acc
    dummy = u
    for k, (positions, rev) in enumerate(geometry):
        final = k == K - 1
        if has_carry:
            _summary(ks, k, positions, rev, u, delta, A, Bm, Cm, delta_bias, z, st, dts, delta_softplus, p,
                     dout=dout, scr=scr, cst=carries, Dskip=Dskip, y_acc=y_acc, dz=dz, dC=dC, acc_in=int(k > 0),
                     final=int(final))
            _carry(st, dts, A, directions, k_sel=k, part0=1)
        launcher(ks["bwd"])[(p.nC, p.nDB, Bsz)](
            u, delta, A, Bm, Cm, Dskip if Dskip is not None else dummy,
            delta_bias if delta_bias is not None else dummy, z if z is not None else dummy, dout, st, scr,
            du_acc, y_acc, du, dz if dz is not None else dummy, ddelta, dB, dC, dA_p,
            dD_p if dD_p is not None else dA_p, dbias_p if dbias_p is not None else dA_p,
            L, D, K, p.nC, *positions, k, int(k > 0), int(final), N=N, REV=rev, HAS_D=Dskip is not None,
            HAS_BIAS=delta_bias is not None, HAS_Z=z is not None, SOFTPLUS=bool(delta_softplus),
            HAS_CARRY=has_carry, ATOMIC_BC=p.bc == "atomic", PARTIAL_BC=p.bc == "slabs", T=p.T, BD=p.BD, I64=p.i64,
            SHFL=p.shuffles, SCR_READY=has_carry, VEC_BC=p.vec_bc, PF=int(p.prefetch), num_warps=p.num_warps)
    dA, dD, dbias, dB, dC = finish_grads(dA_p, dD_p, dbias_p, dB, dC, p, Bm, Cm, *dtypes)
    return du, ddelta, dA, dB, dC, dD, dbias, dz
