"""The chunked kernel family: maps of at most one chunk (``plan.CHUNK`` steps), forward and backward.

One program owns the whole sequence of one batch element for a block of channels: a ``(T, BD)`` tile of steps x
channels. Directions are grouped by axis order: a *group* holds up to one forward and one reverse direction of the
same order (the default sets pair them). Both members visit the same canonical positions for a given index ``t'``
of that axis order (the reverse one walks ``t'`` downwards), so they share the loads of ``u`` / ``z`` / ``dout``
and the store of ``out`` / ``du``; every kernel maps steps to canonical positions by index arithmetic
(``directions.scan_geometry``), no permuted copies are made.

Per state ``n`` the forward scans ``h_t = a_t h_{t-1} + dt_t u_t B_t`` over the tile's step axis with
``tl.associative_scan`` and accumulates ``y += h C_n``. Groups are launched one after another and accumulate
``out`` (and ``du``, and ``y`` for ``dz``) in an fp32 buffer, so the sum over directions needs no atomics and is
deterministic. The backward recomputes the states (none are stored), runs the adjoint scan
``g_t = dy_t C_t + a_{t+1} g_{t+1}`` with a 3-tuple combine that carries the decay of the neighbouring step (no
shifted load or second ``exp``), and forms ``a_t h_{t-1}`` as ``h_t - dt_t u_t B_t`` as mamba-ssm does; this
cancels where ``a_t = exp(dt A)`` is tiny (huge deltas), a limitation the README lists.

Reductions: ``dA`` / ``dD`` / ``ddelta_bias`` leave as per-batch partials summed by :mod:`.param_grads`
(deterministic); ``dB`` / ``dC`` are summed over the program's channels in registers and, with more than one
channel block, combined by relaxed fp32 atomics, or, deterministic, stored as one fp32 slab per block and summed by
torch. State is accumulated in fp32 for every input dtype.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..directions import scan_geometry
from .common import comb2, positions, softplus, wide
from .launch import launcher, memo
from .param_grads import bc_buffers, finish_grads


@triton.jit
def _comb3(s_l, p_l, v_l, s_r, p_r, v_r):
    # Adjoint recurrence g_t = c_t + a_next * g_next, scanned in adjoint order (l first).
    # Summary of a segment: s = decay of its last element (in adjoint order, i.e. the step the
    # segment hands over from), p = product of the other decays, v = local adjoint value.
    m = p_r * s_l
    return s_r, m * p_l, v_r + m * v_l


@triton.jit
def _tile(L, D, n_b, n_c, s_a, s_b, s_c, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr, I64: tl.constexpr):
    """This program's (channel block, batch) tile: canonical rows of its scan steps and its channels."""
    pid_d = tl.program_id(1)
    b = tl.program_id(2)
    t = tl.arange(0, BLOCK_T)
    tmask = t < L
    row = b * L + positions(t, n_b, n_c, s_a, s_b, s_c)
    if I64:
        row = row.to(tl.int64)
    row = tl.where(tmask, row, 0)
    d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    dmask = d < D
    m2 = tmask[:, None] & dmask[None, :]
    return pid_d, b, tmask, row, d, dmask, m2


@triton.jit
def _load_dt(delta, delta_bias, rowk, k, d, dmask, m2, D, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):
    """dt (after bias/softplus) and the raw pre-softplus value, fp32 (BLOCK_T, BLOCK_D); 0 outside."""
    raw = tl.load(delta + rowk[:, None] + d[None, :], mask=m2, other=0.0).to(tl.float32)
    if HAS_BIAS:
        bias = tl.load(delta_bias + k * D + d, mask=dmask, other=0.0).to(tl.float32)
        raw = raw + bias[None, :]
    if SOFTPLUS:
        dt = softplus(raw)
    else:
        dt = raw
    dt = tl.where(m2, dt, 0.0)
    return dt, raw


@triton.jit
def _state_inputs(A, Bm, Cm, k, D, N, n, rowb, d, dmask, tmask):
    """State n's A (per channel) and B, C (per step), as stored; zeros past the last state."""
    valid = n < N
    a = tl.load(A + (k * D + d) * N + n, mask=dmask & valid, other=0.0)
    b = tl.load(Bm + rowb + n, mask=tmask & valid, other=0.0)
    c = tl.load(Cm + rowb + n, mask=tmask & valid, other=0.0)
    return a, b, c


@triton.jit
def _fwd_member(delta, Bm, Cm, A, Dskip, delta_bias, u_t, k, row, tmask, d, dmask, m2, D, N, K,
                REV: tl.constexpr, HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
                BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr):
    rowk = (row * K + k) * D
    dt, raw = _load_dt(delta, delta_bias, rowk, k, d, dmask, m2, D, HAS_BIAS, SOFTPLUS)
    dtu = dt * u_t
    rowb = (row * K + k) * N
    y = tl.zeros([BLOCK_T, BLOCK_D], dtype=tl.float32)
    # per-state vectors are prefetched one iteration ahead (their latency would otherwise stall every iteration:
    # the loop body is short and occupancy is low)
    pa, pB, pC = _state_inputs(A, Bm, Cm, k, D, N, 0, rowb, d, dmask, tmask)
    for n in range(N):
        a2 = pa * 1.4426950408889634  # log2(e): exp(x) = exp2(x log2 e)
        Bn = pB.to(tl.float32)
        Cn = pC.to(tl.float32)
        pa, pB, pC = _state_inputs(A, Bm, Cm, k, D, N, n + 1, rowb, d, dmask, tmask)
        a = tl.exp2(dt * a2[None, :])
        bb = dtu * Bn[:, None]
        _aa, h = tl.associative_scan((a, bb), 0, comb2, reverse=REV)
        y += h * Cn[:, None]
    if HAS_D:
        dsk = tl.load(Dskip + k * D + d, mask=dmask, other=0.0)
        y += dsk[None, :] * u_t
    return y


@triton.jit(do_not_specialize=["D"])
def _fwd_kernel(u, delta, A, Bm, Cm, Dskip, delta_bias, z, acc, out, L, D, N, K, n_b, n_c, s_a, s_b, s_c, k_f, k_r,
                HAS_F: tl.constexpr, HAS_R: tl.constexpr, HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr,
                HAS_Z: tl.constexpr, SOFTPLUS: tl.constexpr, ACC_IN: tl.constexpr, FINAL: tl.constexpr,
                BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr, I64: tl.constexpr):
    pid_d, b, tmask, row, d, dmask, m2 = _tile(L, D, n_b, n_c, s_a, s_b, s_c, BLOCK_T, BLOCK_D, I64)
    offs = row[:, None] * D + d[None, :]
    u_t = tl.load(u + offs, mask=m2, other=0.0).to(tl.float32)
    y = tl.zeros([BLOCK_T, BLOCK_D], dtype=tl.float32)
    if HAS_F:
        y += _fwd_member(delta, Bm, Cm, A, Dskip, delta_bias, u_t, k_f, row, tmask, d, dmask, m2, D, N, K,
                         False, HAS_D, HAS_BIAS, SOFTPLUS, BLOCK_T, BLOCK_D)
    if HAS_R:
        y += _fwd_member(delta, Bm, Cm, A, Dskip, delta_bias, u_t, k_r, row, tmask, d, dmask, m2, D, N, K,
                         True, HAS_D, HAS_BIAS, SOFTPLUS, BLOCK_T, BLOCK_D)
    if ACC_IN:
        y += tl.load(acc + offs, mask=m2, other=0.0)
    if FINAL:
        if HAS_Z:
            zz = tl.load(z + offs, mask=m2, other=0.0).to(tl.float32)
            y = y * zz * tl.sigmoid(zz)
    tl.store(out + offs, y.to(out.dtype.element_ty), mask=m2)


@triton.jit
def _bwd_member(Bm, Cm, A, Dskip, delta, delta_bias, u_t, dy_t, ddelta, dB, dC, dA_p, dD_p, dbias_p,
                b, k, row, tmask, d, dmask, m2, D, N, K,
                REV: tl.constexpr, HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
                NEED_Y: tl.constexpr, ATOMIC_BC: tl.constexpr, PARTIAL_BC: tl.constexpr, BLOCK_T: tl.constexpr,
                BLOCK_D: tl.constexpr, I64: tl.constexpr):
    rowk = (row * K + k) * D
    dt, raw = _load_dt(delta, delta_bias, rowk, k, d, dmask, m2, D, HAS_BIAS, SOFTPLUS)
    dtu = dt * u_t
    rowb = (row * K + k) * N
    base_p = wide(b * K + k, I64)  # partials (B, 1, K, ...)
    ones = tl.full([BLOCK_T, BLOCK_D], 1.0, tl.float32)
    sgB = tl.zeros([BLOCK_T, BLOCK_D], dtype=tl.float32)
    ddt = tl.zeros([BLOCK_T, BLOCK_D], dtype=tl.float32)
    y = tl.zeros([BLOCK_T, BLOCK_D], dtype=tl.float32)
    pa, pB, pC = _state_inputs(A, Bm, Cm, k, D, N, 0, rowb, d, dmask, tmask)
    for n in range(N):
        An = pa
        a2 = An * 1.4426950408889634
        Bn = pB.to(tl.float32)
        Cn = pC.to(tl.float32)
        pa, pB, pC = _state_inputs(A, Bm, Cm, k, D, N, n + 1, rowb, d, dmask, tmask)
        a = tl.exp2(dt * a2[None, :])
        bb = dtu * Bn[:, None]
        _aa, h = tl.associative_scan((a, bb), 0, comb2, reverse=REV)
        if NEED_Y:
            y += h * Cn[:, None]
        dCn = tl.sum(h * dy_t, 1)
        cc = dy_t * Cn[:, None]
        _s, _pp, g = tl.associative_scan((a, ones, cc), 0, _comb3, reverse=not REV)
        x = g * (h - bb)  # dL/d(dt*A) = g_t * a_t * h_{t-1}, as h_t - b_t
        tl.store(dA_p + (base_p * N + n) * D + d, tl.sum(x * dt, 0), mask=dmask)
        ddt += x * An[None, :]
        sgB += g * Bn[:, None]
        dBn = tl.sum(g * dtu, 1)
        if ATOMIC_BC:
            tl.atomic_add(dB + rowb + n, dBn, mask=tmask, sem="relaxed")
            tl.atomic_add(dC + rowb + n, dCn, mask=tmask, sem="relaxed")
        elif PARTIAL_BC:
            tl.store(dB + rowb + n, dBn, mask=tmask)
            tl.store(dC + rowb + n, dCn, mask=tmask)
        else:
            tl.store(dB + rowb + n, dBn.to(dB.dtype.element_ty), mask=tmask)
            tl.store(dC + rowb + n, dCn.to(dC.dtype.element_ty), mask=tmask)
    du = sgB * dt
    ddt = ddt + sgB * u_t
    if SOFTPLUS:
        ddt = ddt * tl.sigmoid(raw)
    ddt = tl.where(m2, ddt, 0.0)
    tl.store(ddelta + rowk[:, None] + d[None, :], ddt.to(ddelta.dtype.element_ty), mask=m2)
    if HAS_BIAS:
        tl.store(dbias_p + base_p * D + d, tl.sum(ddt, 0), mask=dmask)
    if HAS_D:
        dsk = tl.load(Dskip + k * D + d, mask=dmask, other=0.0)
        du += dsk[None, :] * dy_t
        tl.store(dD_p + base_p * D + d, tl.sum(dy_t * u_t, 0), mask=dmask)
        if NEED_Y:
            y += dsk[None, :] * u_t
    return du, y


@triton.jit(do_not_specialize=["D"])
def _bwd_kernel(u, delta, A, Bm, Cm, Dskip, delta_bias, z, dout, du_acc, y_acc, du_out, dz_out, ddelta, dB, dC,
                dA_p, dD_p, dbias_p, L, D, N, K, n_b, n_c, s_a, s_b, s_c, k_f, k_r,
                HAS_F: tl.constexpr, HAS_R: tl.constexpr, HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr,
                HAS_Z: tl.constexpr, SOFTPLUS: tl.constexpr, ACC_IN: tl.constexpr, FINAL: tl.constexpr,
                ATOMIC_BC: tl.constexpr, PARTIAL_BC: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr,
                I64: tl.constexpr):
    pid_d, b, tmask, row, d, dmask, m2 = _tile(L, D, n_b, n_c, s_a, s_b, s_c, BLOCK_T, BLOCK_D, I64)
    offs = row[:, None] * D + d[None, :]
    if PARTIAL_BC:  # one fp32 (B, L, K, N) slab per channel block, summed afterwards
        slab = wide(pid_d, I64) * (tl.num_programs(2) * L * K * N)
        dB += slab
        dC += slab
    u_t = tl.load(u + offs, mask=m2, other=0.0).to(tl.float32)
    dy_t = tl.load(dout + offs, mask=m2, other=0.0).to(tl.float32)
    if HAS_Z:
        zz = tl.load(z + offs, mask=m2, other=0.0).to(tl.float32)
        sz = tl.sigmoid(zz)
        dout_t = dy_t
        dy_t = dy_t * zz * sz
    du = tl.zeros([BLOCK_T, BLOCK_D], dtype=tl.float32)
    y = tl.zeros([BLOCK_T, BLOCK_D], dtype=tl.float32)
    if HAS_F:
        du_m, y_m = _bwd_member(Bm, Cm, A, Dskip, delta, delta_bias, u_t, dy_t, ddelta, dB, dC, dA_p, dD_p, dbias_p,
                                b, k_f, row, tmask, d, dmask, m2, D, N, K, False, HAS_D, HAS_BIAS, SOFTPLUS, HAS_Z,
                                ATOMIC_BC, PARTIAL_BC, BLOCK_T, BLOCK_D, I64)
        du += du_m
        y += y_m
    if HAS_R:
        du_m, y_m = _bwd_member(Bm, Cm, A, Dskip, delta, delta_bias, u_t, dy_t, ddelta, dB, dC, dA_p, dD_p, dbias_p,
                                b, k_r, row, tmask, d, dmask, m2, D, N, K, True, HAS_D, HAS_BIAS, SOFTPLUS, HAS_Z,
                                ATOMIC_BC, PARTIAL_BC, BLOCK_T, BLOCK_D, I64)
        du += du_m
        y += y_m
    if ACC_IN:
        du += tl.load(du_acc + offs, mask=m2, other=0.0)
        if HAS_Z:
            y += tl.load(y_acc + offs, mask=m2, other=0.0)
    if FINAL:
        tl.store(du_out + offs, du.to(du_out.dtype.element_ty), mask=m2)
        if HAS_Z:
            dz = dout_t * y * sz * (1.0 + zz * (1.0 - sz))
            tl.store(dz_out + offs, dz.to(dz_out.dtype.element_ty), mask=m2)
    else:
        tl.store(du_acc + offs, du, mask=m2)
        if HAS_Z:
            tl.store(y_acc + offs, y, mask=m2)


def groups(grid, directions):
    """Pair directions of equal axis order: [(geometry, k_fwd or None, k_rev or None)]."""
    found = []
    for k, dirn in enumerate(directions):
        geo = scan_geometry(grid, dirn)
        slot = 2 if dirn.reverse else 1
        for g in found:
            if g[0] == geo[:6] and g[slot] is None:
                g[slot] = k
                break
        else:
            g = [geo[:6], None, None]
            g[slot] = k
            found.append(g)
    return found


def _member_args(kf, kr) -> tuple:
    return kf if kf is not None else 0, kr if kr is not None else 0


def forward(u, delta, A, Bm, Cm, Dskip, delta_bias, z, grid, directions, delta_softplus, p):
    """``out`` (B, L, D) of one chunked forward with plan ``p``."""
    Bsz, L, D = u.shape
    K, N = len(directions), A.shape[-1]
    pairs = memo("groups", groups, grid, directions)
    out = torch.empty((Bsz, L, D), device=u.device, dtype=u.dtype)
    G = len(pairs)
    acc = torch.empty((Bsz, L, D), device=u.device, dtype=torch.float32) if G > 1 else out
    dummy = u
    for gi, (geo, kf, kr) in enumerate(pairs):
        n_a, n_b, n_c, s_a, s_b, s_c = geo
        final = gi == G - 1
        launcher(_fwd_kernel)[(1, p.nDB, Bsz)](
            u, delta, A, Bm, Cm, Dskip if Dskip is not None else dummy,
            delta_bias if delta_bias is not None else dummy, z if z is not None else dummy, acc,
            out if final else acc, L, D, N, K, n_b, n_c, s_a, s_b, s_c, *_member_args(kf, kr),
            HAS_F=kf is not None, HAS_R=kr is not None, HAS_D=Dskip is not None, HAS_BIAS=delta_bias is not None,
            HAS_Z=z is not None, SOFTPLUS=bool(delta_softplus), ACC_IN=gi > 0, FINAL=final,
            BLOCK_T=p.T, BLOCK_D=p.BD, I64=p.i64, num_warps=p.num_warps)
    return out


def backward(dout, u, delta, A, Bm, Cm, Dskip, delta_bias, z, grid, directions, delta_softplus, p, dtypes):
    """(du, ddelta, dA, dB, dC, dD, ddelta_bias, dz) of one chunked backward with plan ``p``; ``dtypes``: the
    parameters' dtypes (A, D, delta_bias) before their conversion to fp32."""
    Bsz, L, D = u.shape
    K, N = len(directions), A.shape[-1]
    pairs = memo("groups", groups, grid, directions)
    dev = u.device
    dB, dC = bc_buffers(p, Bm, Cm)
    ddelta = torch.empty((Bsz, L, K, D), device=dev, dtype=delta.dtype)
    dA_p = torch.empty((Bsz, 1, K, N, D), device=dev, dtype=torch.float32)
    dD_p = torch.empty((Bsz, 1, K, D), device=dev, dtype=torch.float32) if Dskip is not None else None
    dbias_p = torch.empty((Bsz, 1, K, D), device=dev, dtype=torch.float32) if delta_bias is not None else None
    du = torch.empty((Bsz, L, D), device=dev, dtype=u.dtype)
    dz = torch.empty((Bsz, L, D), device=dev, dtype=z.dtype) if z is not None else None
    G = len(pairs)
    du_acc = torch.empty((Bsz, L, D), device=dev, dtype=torch.float32) if G > 1 else du
    y_acc = torch.empty((Bsz, L, D), device=dev, dtype=torch.float32) if (G > 1 and z is not None) else du_acc
    dummy = u
    for gi, (geo, kf, kr) in enumerate(pairs):
        n_a, n_b, n_c, s_a, s_b, s_c = geo
        final = gi == G - 1
        launcher(_bwd_kernel)[(1, p.nDB, Bsz)](
            u, delta, A, Bm, Cm, Dskip if Dskip is not None else dummy,
            delta_bias if delta_bias is not None else dummy, z if z is not None else dummy, dout,
            du_acc, y_acc, du, dz if dz is not None else dummy, ddelta, dB, dC, dA_p,
            dD_p if dD_p is not None else dA_p, dbias_p if dbias_p is not None else dA_p,
            L, D, N, K, n_b, n_c, s_a, s_b, s_c, *_member_args(kf, kr),
            HAS_F=kf is not None, HAS_R=kr is not None, HAS_D=Dskip is not None, HAS_BIAS=delta_bias is not None,
            HAS_Z=z is not None, SOFTPLUS=bool(delta_softplus), ACC_IN=gi > 0, FINAL=final,
            ATOMIC_BC=p.bc == "atomic", PARTIAL_BC=p.bc == "slabs", BLOCK_T=p.T, BLOCK_D=p.BD, I64=p.i64,
            num_warps=p.num_warps)
    dA, dD, dbias, dB, dC = finish_grads(dA_p, dD_p, dbias_p, dB, dC, p, Bm, Cm, *dtypes)
    return du, ddelta, dA, dB, dC, dD, dbias, dz
