"""Triton backend of the fused multi-directional selective scan (Mamba-1 semantics).

Same contract as :mod:`nnunet_mamba.kernels.reference` (channels-last, canonical row-major grid
order; see that module's docstring). One operator serves all K directions: every kernel reads
u / delta / B / C / dout in the canonical layout and maps scan steps to canonical positions by
index arithmetic (``directions.scan_geometry``); no permuted copies are made.

Algorithm (chunked scan, parallel over L)
-----------------------------------------
Directions are grouped by axis order: a *group* holds up to one forward and one reverse
direction of the same order (the default sets pair them). Both members of a group visit the
same canonical positions for a given index ``t'`` of that axis order (the reverse direction
just walks ``t'`` downwards), so a tile of ``BLOCK_T`` consecutive ``t'`` is the same set of
positions for both members: they share the loads of ``u``/``z``/``dout`` and the store of
``out``/``du``.

``t'`` is cut into chunks of ``BLOCK_T`` steps. Per launch group:

1. *chunk summaries* (``_summary_kernel``): for every (b, direction, chunk, d, n) the state at
   the chunk's exit with zero carry-in, in closed form
   ``sum_t exp(A * dt_suffix(t)) * dt_t u_t B_t`` (the exponents are sums of ``dt*A <= 0``, so
   this cannot overflow), plus the chunk's ``sum dt``. The backward also makes the summary of
   the adjoint (reverse) recurrence ``sum_t exp(A * dt_prefix(t)) dy_t C_t``.
2. *carry pass* (``_carry_kernel``, one launch for all directions): a scan over chunks of
   ``H_c = exp(A * sum dt_c) * H_{c-1} + S_c`` (tiles of chunks, ``tl.associative_scan``).
3. *chunk pass* (``_fwd_kernel`` / ``_bwd_kernel``, one launch per group): the chunk-local scan
   (``tl.associative_scan`` over the ``BLOCK_T`` axis of a ``(BLOCK_T, BLOCK_D)`` tile, one state
   ``n`` at a time) seeded with the carry, then outputs / gradients. Groups are launched one
   after another and accumulate ``out`` (and ``du``, and ``y`` for ``dz``) in an fp32 buffer, so
   the sum over directions needs no atomics and is deterministic. If L fits one chunk, passes 1
   and 2 are skipped (a single launch per group).

The backward recomputes the forward state inside the chunk pass (no (L, N) state is stored);
``dy = dout * silu(z)`` does not need y, and ``dz`` needs ``sum_k y_k`` which the chunk pass
recomputes for free (``h`` is there anyway). ``h_{t-1} a_t`` is formed as ``h_t - dt_t u_t B_t``
(as mamba-ssm does). The adjoint scan uses a 3-tuple combine that carries the decay of the
neighbouring step, so ``a_{t+1}`` needs no shifted load or second ``exp``.

Reductions: ``dA`` / ``dD`` / ``ddelta_bias`` are written as per-(batch, chunk) partials and
summed by torch (deterministic). ``dB`` / ``dC`` are summed over the program's ``BLOCK_D``
channels in registers; when D needs more than one channel block, the blocks are combined with
relaxed fp32 ``atomic_add`` into an fp32 buffer (relaxed: a ``red`` without the fences of the default
acq_rel semantics, which cost the sequential backward a third of its time): the summation order then
varies from run to run, so dB
and dC are *not* bitwise deterministic (differences at fp32 rounding level, ~1e-7 relative).
With one channel block (``D <= BLOCK_D``) they are stored directly and everything is
deterministic. Set ``NNUNET_MAMBA_SCAN_DETERMINISTIC=1`` to write one fp32 partial per channel
block instead and sum them with torch (deterministic, more memory traffic).

State is accumulated in fp32 for every input dtype.

Sequences longer than one chunk (L > 64), and shorter ones whose batch x channels alone give enough programs
(large batches, see ``_seq_min_programs``), instead use the sequential state-in-registers kernels of
:mod:`.triton_seq` (one launch per direction, sum over directions in fp32 in launch order:
deterministic), forward and backward; ``NNUNET_MAMBA_SCAN_SEQ=0`` / ``NNUNET_MAMBA_SCAN_SEQ_BWD=0``
switch back to the chunked scan, ``NNUNET_MAMBA_SCAN_SEQ_MIN_L=<n>`` and
``NNUNET_MAMBA_SCAN_SEQ_MIN_PROGRAMS=<n>`` move the two thresholds. Their backward sums dB/dC over a warp's 32 channels
with a butterfly of warp shuffles (inline PTX) and combines warps with relaxed fp32 atomics, or, with
``NNUNET_MAMBA_SCAN_DETERMINISTIC=1`` or ``NNUNET_MAMBA_SCAN_BC_SLABS=1``, stores one fp32 slab per warp that
torch sums (deterministic). Defaults measured on H100 (benchmarks/SCAN_NOTES.md, 52665e6): 2-step sub-chunks whose
adjoint half reuses the forward half's per-step values, one lane per channel (``NNUNET_MAMBA_SCAN_SPLIT_*``
splits a channel's states over 2 or 4 lanes: slower), no register cap (``NNUNET_MAMBA_SCAN_MAXNREG_*``).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import triton
import triton.language as tl

from .directions import ScanDirection, scan_geometry
from .dispatch import triton_interpreting
from .env import env_count, getenv, snapshot_items, snapshotted
from .launch import NumberedLaunches, current_operator, launcher
from .param_grads import param_grads
from . import triton_seq
from .triton_seq import _positions, _softplus  # device helpers shared by both kernel families


__all__ = ["multidir_scan_fwd", "multidir_scan_bwd"]


# ----------------------------------------------------------------------------------------------
# Triton helpers
# ----------------------------------------------------------------------------------------------
@triton.jit
def _comb2(a_l, b_l, a_r, b_r):
    # (a_l, b_l) then (a_r, b_r): h -> a_r * (a_l * h + b_l) + b_r
    return a_l * a_r, b_l * a_r + b_r


@triton.jit
def _comb3(s_l, p_l, v_l, s_r, p_r, v_r):
    # Adjoint recurrence g_t = c_t + a_next * g_next, scanned in adjoint order (l first).
    # Summary of a segment: s = decay of its last element (in adjoint order, i.e. the step the
    # segment hands over from), p = product of the other decays, v = local adjoint value.
    m = p_r * s_l
    return s_r, m * p_l, v_r + m * v_l


@triton.jit
def _wide(x, I64: tl.constexpr):
    if I64:
        return x.to(tl.int64)
    else:
        return x


@triton.jit
def _tile(L, D, n_b, n_c, s_a, s_b, s_c, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr, I64: tl.constexpr):
    """This program's (chunk, channel block, batch) tile: canonical rows of its scan steps and its channels."""
    c = tl.program_id(0)  # chunks on grid axis 0: up to 2^31-1 (axes 1 and 2 stop at 65535)
    pid_d = tl.program_id(1)
    b = tl.program_id(2)
    t = c * BLOCK_T + tl.arange(0, BLOCK_T)
    tmask = t < L
    row = b * L + _positions(t, n_b, n_c, s_a, s_b, s_c)
    if I64:
        row = row.to(tl.int64)
    row = tl.where(tmask, row, 0)
    d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    dmask = d < D
    m2 = tmask[:, None] & dmask[None, :]
    return c, pid_d, b, tmask, row, d, dmask, m2


@triton.jit
def _load_dt(delta, delta_bias, rowk, k, d, dmask, m2, D, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):
    """dt (after bias/softplus) and the raw pre-softplus value, fp32 (BLOCK_T, BLOCK_D); 0 outside."""
    raw = tl.load(delta + rowk[:, None] + d[None, :], mask=m2, other=0.0).to(tl.float32)
    if HAS_BIAS:
        bias = tl.load(delta_bias + k * D + d, mask=dmask, other=0.0).to(tl.float32)
        raw = raw + bias[None, :]
    if SOFTPLUS:
        dt = _softplus(raw)
    else:
        dt = raw
    dt = tl.where(m2, dt, 0.0)
    return dt, raw


# ----------------------------------------------------------------------------------------------
# Pass 1: chunk summaries (closed form, zero carry-in)
# ----------------------------------------------------------------------------------------------
@triton.jit
def _summary_member(delta, Bm, Cm, A, delta_bias, st, dts, u_t, dy_t,
                    b, c, k, row, tmask, d, dmask, m2,
                    L, D, N, K, nC, P,
                    REV: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, BWD: tl.constexpr,
                    I64: tl.constexpr):
    rowk = (row * K + k) * D
    dt, raw = _load_dt(delta, delta_bias, rowk, k, d, dmask, m2, D, HAS_BIAS, SOFTPLUS)
    tl.store(dts + _wide(((b * K + k) * nC + c), I64) * D + d, tl.sum(dt, 0), mask=dmask)
    fc = tl.cumsum(dt, 0)  # inclusive prefix sums along t'
    rc = tl.cumsum(dt, 0, reverse=True)  # inclusive suffix sums along t'
    if REV:
        e_h = fc - dt  # decay from step t to the chunk's exit (lowest t') for the forward state
        e_g = rc
    else:
        e_h = rc - dt
        e_g = fc
    dtu = dt * u_t
    rowb = (row * K + k) * N
    base_h = _wide(((b * P) * K + k), I64) * nC + c
    base_g = _wide(((b * P + 1) * K + k), I64) * nC + c
    # per-state vectors are prefetched one iteration ahead (their latency would otherwise stall
    # every iteration: the loop body is short and occupancy is low)
    pa = tl.load(A + (k * D + d) * N, mask=dmask, other=0.0)
    pB = tl.load(Bm + rowb, mask=tmask, other=0.0)
    pC = pB
    if BWD:
        pC = tl.load(Cm + rowb, mask=tmask, other=0.0)
    for n in range(N):
        a2 = pa * 1.4426950408889634
        Bn = pB.to(tl.float32)
        Cn = pC.to(tl.float32)
        more = (n + 1) < N
        pa = tl.load(A + (k * D + d) * N + n + 1, mask=dmask & more, other=0.0)
        pB = tl.load(Bm + rowb + n + 1, mask=tmask & more, other=0.0)
        if BWD:
            pC = tl.load(Cm + rowb + n + 1, mask=tmask & more, other=0.0)
        hs = tl.sum(tl.exp2(e_h * a2[None, :]) * dtu * Bn[:, None], 0)
        tl.store(st + (base_h * N + n) * D + d, hs, mask=dmask)
        if BWD:
            gs = tl.sum(tl.exp2(e_g * a2[None, :]) * dy_t * Cn[:, None], 0)
            tl.store(st + (base_g * N + n) * D + d, gs, mask=dmask)


def _summary_kernel_src(u, delta, Bm, Cm, A, delta_bias, z, dout, st, dts,
                    L, D, N, K, nC, P, n_b, n_c, s_a, s_b, s_c, k_f, k_r,
                    HAS_F: tl.constexpr, HAS_R: tl.constexpr, HAS_BIAS: tl.constexpr,
                    SOFTPLUS: tl.constexpr, BWD: tl.constexpr, HAS_Z: tl.constexpr,
                    BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr, I64: tl.constexpr):
    c, pid_d, b, tmask, row, d, dmask, m2 = _tile(L, D, n_b, n_c, s_a, s_b, s_c, BLOCK_T, BLOCK_D, I64)
    u_t = tl.load(u + row[:, None] * D + d[None, :], mask=m2, other=0.0).to(tl.float32)
    dy_t = u_t
    if BWD:
        dy_t = tl.load(dout + row[:, None] * D + d[None, :], mask=m2, other=0.0).to(tl.float32)
        if HAS_Z:
            zz = tl.load(z + row[:, None] * D + d[None, :], mask=m2, other=0.0).to(tl.float32)
            dy_t = dy_t * zz * tl.sigmoid(zz)
    if HAS_F:
        _summary_member(delta, Bm, Cm, A, delta_bias, st, dts, u_t, dy_t, b, c, k_f, row, tmask, d, dmask, m2,
                        L, D, N, K, nC, P, False, HAS_BIAS, SOFTPLUS, BWD, I64)
    if HAS_R:
        _summary_member(delta, Bm, Cm, A, delta_bias, st, dts, u_t, dy_t, b, c, k_r, row, tmask, d, dmask, m2,
                        L, D, N, K, nC, P, True, HAS_BIAS, SOFTPLUS, BWD, I64)


# ----------------------------------------------------------------------------------------------
# Pass 2: carries across chunks (in place: summaries -> inclusive states after each chunk)
# ----------------------------------------------------------------------------------------------
@triton.jit
def _carry_kernel(st, dts, A, D, N, K, nC, P, rev_mask, K_SEL, BLOCK_R: tl.constexpr, BLOCK_ND: tl.constexpr,
                  I64: tl.constexpr, PART0=0):
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
    base_st = _wide(((b * P + part) * K + k), I64) * nC
    base_dt = _wide((b * K + k), I64) * nC
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
        aa, hh = tl.associative_scan((q, x), 0, _comb2)
        h = hh + aa * carry[None, :]
        tl.store(st + offs, h, mask=m2)
        # padded rows are identities, so the last row holds the state after the last valid chunk
        carry = tl.sum(tl.where((tl.arange(0, BLOCK_R) == BLOCK_R - 1)[:, None], h, 0.0), 0)


# ----------------------------------------------------------------------------------------------
# Pass 3 forward
# ----------------------------------------------------------------------------------------------
@triton.jit
def _fwd_member(delta, Bm, Cm, A, Dskip, delta_bias, st, u_t,
                b, c, k, row, tmask, d, dmask, m2,
                D, N, K, nC, P,
                REV: tl.constexpr, HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
                HAS_CARRY: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr, I64: tl.constexpr):
    rowk = (row * K + k) * D
    dt, raw = _load_dt(delta, delta_bias, rowk, k, d, dmask, m2, D, HAS_BIAS, SOFTPLUS)
    dtu = dt * u_t
    rowb = (row * K + k) * N
    if REV:
        cin = c + 1
    else:
        cin = c - 1
    cmask = dmask & (cin >= 0) & (cin < nC)
    cin = tl.minimum(tl.maximum(cin, 0), nC - 1)
    base_h = _wide(((b * P) * K + k), I64) * nC + cin
    y = tl.zeros([BLOCK_T, BLOCK_D], dtype=tl.float32)
    pa = tl.load(A + (k * D + d) * N, mask=dmask, other=0.0)
    pB = tl.load(Bm + rowb, mask=tmask, other=0.0)
    pC = tl.load(Cm + rowb, mask=tmask, other=0.0)
    ph = tl.load(st + (base_h * N) * D + d, mask=cmask & HAS_CARRY, other=0.0)
    for n in range(N):
        a2 = pa * 1.4426950408889634
        Bn = pB.to(tl.float32)
        Cn = pC.to(tl.float32)
        hin = ph
        more = (n + 1) < N
        pa = tl.load(A + (k * D + d) * N + n + 1, mask=dmask & more, other=0.0)
        pB = tl.load(Bm + rowb + n + 1, mask=tmask & more, other=0.0)
        pC = tl.load(Cm + rowb + n + 1, mask=tmask & more, other=0.0)
        if HAS_CARRY:
            ph = tl.load(st + (base_h * N + n + 1) * D + d, mask=cmask & more, other=0.0)
        a = tl.exp2(dt * a2[None, :])
        bb = dtu * Bn[:, None]
        aa, h = tl.associative_scan((a, bb), 0, _comb2, reverse=REV)
        if HAS_CARRY:
            h = h + aa * hin[None, :]
        y += h * Cn[:, None]
    if HAS_D:
        dsk = tl.load(Dskip + k * D + d, mask=dmask, other=0.0)
        y += dsk[None, :] * u_t
    return y


def _fwd_kernel_src(u, delta, A, Bm, Cm, Dskip, delta_bias, z, st, acc, out,
                L, D, N, K, nC, P, n_b, n_c, s_a, s_b, s_c, k_f, k_r,
                HAS_F: tl.constexpr, HAS_R: tl.constexpr, HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr,
                HAS_Z: tl.constexpr, SOFTPLUS: tl.constexpr, HAS_CARRY: tl.constexpr,
                ACC_IN: tl.constexpr, FINAL: tl.constexpr,
                BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr, I64: tl.constexpr):
    c, pid_d, b, tmask, row, d, dmask, m2 = _tile(L, D, n_b, n_c, s_a, s_b, s_c, BLOCK_T, BLOCK_D, I64)
    offs = row[:, None] * D + d[None, :]
    u_t = tl.load(u + offs, mask=m2, other=0.0).to(tl.float32)
    y = tl.zeros([BLOCK_T, BLOCK_D], dtype=tl.float32)
    if HAS_F:
        y += _fwd_member(delta, Bm, Cm, A, Dskip, delta_bias, st, u_t, b, c, k_f, row, tmask, d, dmask, m2,
                         D, N, K, nC, P, False, HAS_D, HAS_BIAS, SOFTPLUS, HAS_CARRY, BLOCK_T, BLOCK_D, I64)
    if HAS_R:
        y += _fwd_member(delta, Bm, Cm, A, Dskip, delta_bias, st, u_t, b, c, k_r, row, tmask, d, dmask, m2,
                         D, N, K, nC, P, True, HAS_D, HAS_BIAS, SOFTPLUS, HAS_CARRY, BLOCK_T, BLOCK_D, I64)
    if ACC_IN:
        y += tl.load(acc + offs, mask=m2, other=0.0)
    if FINAL:
        if HAS_Z:
            zz = tl.load(z + offs, mask=m2, other=0.0).to(tl.float32)
            y = y * zz * tl.sigmoid(zz)
    tl.store(out + offs, y.to(out.dtype.element_ty), mask=m2)


# ----------------------------------------------------------------------------------------------
# Pass 3 backward
# ----------------------------------------------------------------------------------------------
@triton.jit
def _previous_steps(u, delta, delta_bias, b, c, k, d, dmask, L, D, N, K, n_b, n_c, s_a, s_b, s_c,
                    REV: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, BLOCK_T: tl.constexpr,
                    I64: tl.constexpr):
    """dt * u and the B-row base of each tile row's previous step in scan order, where it lies in the same
    chunk (else dt = 0: the identity of the state scan, so the chunk's first step takes the carry)."""
    t = c * BLOCK_T + tl.arange(0, BLOCK_T)
    if REV:
        tp = t + 1
        pmask = (tp < (c + 1) * BLOCK_T) & (tp < L)
    else:
        tp = t - 1
        pmask = (tp >= c * BLOCK_T) & (tp < L)  # rows past the end have no previous step either
    rowp = b * L + _positions(tl.where(pmask, tp, 0), n_b, n_c, s_a, s_b, s_c)
    if I64:
        rowp = rowp.to(tl.int64)
    rowp = tl.where(pmask, rowp, 0)
    m2p = pmask[:, None] & dmask[None, :]
    up = tl.load(u + rowp[:, None] * D + d[None, :], mask=m2p, other=0.0).to(tl.float32)
    dtp, _raw = _load_dt(delta, delta_bias, (rowp * K + k) * D, k, d, dmask, m2p, D, HAS_BIAS, SOFTPLUS)
    return dtp, dtp * up, (rowp * K + k) * N, pmask


@triton.jit
def _bwd_member(u, delta, Bm, Cm, A, Dskip, delta_bias, st, u_t, dy_t,
                ddelta, dB, dC, dA_p, dD_p, dbias_p,
                b, c, k, row, tmask, d, dmask, m2,
                L, D, N, K, nC, P, n_b, n_c, s_a, s_b, s_c,
                REV: tl.constexpr, HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
                HAS_CARRY: tl.constexpr, NEED_Y: tl.constexpr, ATOMIC_BC: tl.constexpr, PARTIAL_BC: tl.constexpr,
                BC_MODE: tl.constexpr, EXACT_DA: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr,
                I64: tl.constexpr):
    rowk = (row * K + k) * D
    dt, raw = _load_dt(delta, delta_bias, rowk, k, d, dmask, m2, D, HAS_BIAS, SOFTPLUS)
    dtu = dt * u_t
    rowb = (row * K + k) * N
    if EXACT_DA:
        dtp, dtup, rowbp, pmask = _previous_steps(u, delta, delta_bias, b, c, k, d, dmask, L, D, N, K, n_b,
                                                  n_c, s_a, s_b, s_c, REV, HAS_BIAS, SOFTPLUS, BLOCK_T, I64)
    if REV:
        cin_h = c + 1
        cin_g = c - 1
    else:
        cin_h = c - 1
        cin_g = c + 1
    hmask = dmask & (cin_h >= 0) & (cin_h < nC)
    gmask = dmask & (cin_g >= 0) & (cin_g < nC)
    cin_h = tl.minimum(tl.maximum(cin_h, 0), nC - 1)
    cin_g = tl.minimum(tl.maximum(cin_g, 0), nC - 1)
    base_h = _wide(((b * P) * K + k), I64) * nC + cin_h
    base_g = _wide(((b * P + 1) * K + k), I64) * nC + cin_g
    base_p = _wide(((b * nC + c) * K + k), I64)
    ones = tl.full([BLOCK_T, BLOCK_D], 1.0, tl.float32)
    # BC_MODE 1: channel sums for dB/dC on the tensor cores, (T, BD) @ e0 with e0 = (BD, 16) one-hot
    # column 0 (exact operand) in tf32x3 (hi + lo split: ~2^-22 relative), instead of one warp-shuffle
    # tree per step and state. BC_MODE 2 skips dB/dC (timing ablation only; wrong gradients).
    e0 = tl.where((tl.arange(0, BLOCK_D)[:, None] >= 0) & (tl.arange(0, 16)[None, :] == 0), 1.0, 0.0)
    sgB = tl.zeros([BLOCK_T, BLOCK_D], dtype=tl.float32)
    ddt = tl.zeros([BLOCK_T, BLOCK_D], dtype=tl.float32)
    y = tl.zeros([BLOCK_T, BLOCK_D], dtype=tl.float32)
    pa = tl.load(A + (k * D + d) * N, mask=dmask, other=0.0)
    pB = tl.load(Bm + rowb, mask=tmask, other=0.0)
    pC = tl.load(Cm + rowb, mask=tmask, other=0.0)
    ph = tl.load(st + (base_h * N) * D + d, mask=hmask & HAS_CARRY, other=0.0)
    pg = tl.load(st + (base_g * N) * D + d, mask=gmask & HAS_CARRY, other=0.0)
    for n in range(N):
        An = pa
        a2 = An * 1.4426950408889634
        Bn = pB.to(tl.float32)
        Cn = pC.to(tl.float32)
        hin = ph
        gin = pg
        more = (n + 1) < N
        pa = tl.load(A + (k * D + d) * N + n + 1, mask=dmask & more, other=0.0)
        pB = tl.load(Bm + rowb + n + 1, mask=tmask & more, other=0.0)
        pC = tl.load(Cm + rowb + n + 1, mask=tmask & more, other=0.0)
        if HAS_CARRY:
            ph = tl.load(st + (base_h * N + n + 1) * D + d, mask=hmask & more, other=0.0)
            pg = tl.load(st + (base_g * N + n + 1) * D + d, mask=gmask & more, other=0.0)
        a = tl.exp2(dt * a2[None, :])
        bb = dtu * Bn[:, None]
        aa, h = tl.associative_scan((a, bb), 0, _comb2, reverse=REV)
        if HAS_CARRY:
            h = h + aa * hin[None, :]
        if NEED_Y:
            y += h * Cn[:, None]
        if BC_MODE == 1:
            dCn = tl.sum(tl.dot(h * dy_t, e0, input_precision="tf32x3"), 1)
        else:
            dCn = tl.sum(h * dy_t, 1)
        cc = dy_t * Cn[:, None]
        _s, pp, g = tl.associative_scan((a, ones, cc), 0, _comb3, reverse=not REV)
        if HAS_CARRY:
            g = g + pp * gin[None, :]
        if EXACT_DA:  # h_{t-1} by its own scan over the previous steps: no cancellation when a_t is tiny
            Bp = tl.load(Bm + rowbp + n, mask=pmask, other=0.0).to(tl.float32)
            aap, hp = tl.associative_scan((tl.exp2(dtp * a2[None, :]), dtup * Bp[:, None]), 0, _comb2,
                                          reverse=REV)
            if HAS_CARRY:
                hp = hp + aap * hin[None, :]
            x = g * (a * hp)
        else:
            x = g * (h - bb)  # dL/d(dt*A) = g_t * a_t * h_{t-1}, as h_t - b_t: cancels when a_t is tiny
        tl.store(dA_p + (base_p * N + n) * D + d, tl.sum(x * dt, 0), mask=dmask)
        ddt += x * An[None, :]
        sgB += g * Bn[:, None]
        if BC_MODE == 1:
            dBn = tl.sum(tl.dot(g * dtu, e0, input_precision="tf32x3"), 1)
        else:
            dBn = tl.sum(g * dtu, 1)
        if BC_MODE == 2:
            pass
        elif ATOMIC_BC:
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


def _bwd_kernel_src(u, delta, A, Bm, Cm, Dskip, delta_bias, z, dout, st,
                du_acc, y_acc, du_out, dz_out, ddelta, dB, dC, dA_p, dD_p, dbias_p,
                L, D, N, K, nC, P, n_b, n_c, s_a, s_b, s_c, k_f, k_r,
                HAS_F: tl.constexpr, HAS_R: tl.constexpr, HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr,
                HAS_Z: tl.constexpr, SOFTPLUS: tl.constexpr, HAS_CARRY: tl.constexpr,
                ACC_IN: tl.constexpr, FINAL: tl.constexpr, ATOMIC_BC: tl.constexpr, PARTIAL_BC: tl.constexpr,
                BC_MODE: tl.constexpr, EXACT_DA: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr,
                I64: tl.constexpr):
    c, pid_d, b, tmask, row, d, dmask, m2 = _tile(L, D, n_b, n_c, s_a, s_b, s_c, BLOCK_T, BLOCK_D, I64)
    offs = row[:, None] * D + d[None, :]
    if PARTIAL_BC:  # one fp32 (B, L, K, N) slab per channel block, summed afterwards
        slab = _wide(pid_d, I64) * (tl.num_programs(2) * L * K * N)
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
        du_m, y_m = _bwd_member(u, delta, Bm, Cm, A, Dskip, delta_bias, st, u_t, dy_t, ddelta, dB, dC, dA_p,
                                dD_p, dbias_p, b, c, k_f, row, tmask, d, dmask, m2, L, D, N, K, nC, P, n_b, n_c,
                                s_a, s_b, s_c, False, HAS_D, HAS_BIAS, SOFTPLUS, HAS_CARRY, HAS_Z, ATOMIC_BC,
                                PARTIAL_BC, BC_MODE, EXACT_DA, BLOCK_T, BLOCK_D, I64)
        du += du_m
        y += y_m
    if HAS_R:
        du_m, y_m = _bwd_member(u, delta, Bm, Cm, A, Dskip, delta_bias, st, u_t, dy_t, ddelta, dB, dC, dA_p,
                                dD_p, dbias_p, b, c, k_r, row, tmask, d, dmask, m2, L, D, N, K, nC, P, n_b, n_c,
                                s_a, s_b, s_c, True, HAS_D, HAS_BIAS, SOFTPLUS, HAS_CARRY, HAS_Z, ATOMIC_BC,
                                PARTIAL_BC, BC_MODE, EXACT_DA, BLOCK_T, BLOCK_D, I64)
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


# Each tile kernel is compiled in two variants. With Triton's usual integer specialisation
# (D % 16 == 0 is known) channel loads become 16-byte vectors, a thread owns several channels of
# one step and the scan axis is spread over lanes (cheap channel sums, dearer scans). With D left
# unspecialised ("vec1") loads are scalar, a warp spans up to 32 channels and each thread owns a
# run of consecutive steps (cheap scans, dearer channel sums for dB/dC).
_KERNELS = {
    False: {n: triton.jit(f) for n, f in (("summary", _summary_kernel_src), ("fwd", _fwd_kernel_src),
                                          ("bwd", _bwd_kernel_src))},
    True: {n: triton.jit(do_not_specialize=["D"])(f) for n, f in (("summary", _summary_kernel_src),
                                                                   ("fwd", _fwd_kernel_src),
                                                                   ("bwd", _bwd_kernel_src))},
}
_summary_kernel = _KERNELS[False]["summary"]
_fwd_kernel = _KERNELS[False]["fwd"]
_bwd_kernel = _KERNELS[False]["bwd"]


# ----------------------------------------------------------------------------------------------
# Host side
# ----------------------------------------------------------------------------------------------
_CONFIG_OVERRIDE: Optional[dict] = None  # tests: {"BLOCK_T":..., "BLOCK_D":..., "BLOCK_R":..., "num_warps":...}


def _cdiv(a: int, b: int) -> int:
    """Ceiling division on the host (``triton.cdiv`` is a JIT function: microseconds per call from Python)."""
    return -(-a // b)


def _pow2(x: int) -> int:
    return 1 << max(0, (int(x) - 1).bit_length())


def _switch(cfg: dict, key: str, var: str, default: bool) -> bool:
    """An on/off kernel switch: config ``key`` if given, else the environment variable ``var`` ("1" = on)."""
    return bool(cfg.get(key, getenv(var, "1" if default else "0") == "1"))


def _seq_min_length() -> int:
    """Longest sequence that may use the chunked kernels: 64, one chunk of their short-map tiles (no summaries,
    no carries: one launch per direction pair). Longer ones always use the sequential kernels, whose GPU time
    since the prefetches and saved carries is lower at every such map measured: H200, forward+backward kernels,
    K = 2 / 3 / 4, fp32, chunked vs sequential: (2, 640, 8^3) 0.473 / 0.658 / 0.935 vs 0.219 / 0.321 / 0.427 ms,
    (2, 64, 8^3) 0.155 / 0.202 / 0.280 vs 0.130 / 0.190 / 0.246, (2, 256, 32x32) 0.351 / 0.486 / 0.697 vs
    0.179 / 0.258 / 0.339; at 4^3 (64 steps) the chunked kernels stay faster, 0.114 / 0.140 / 0.199 vs 0.122 /
    0.180 / 0.237 (benchmarks/SCAN_NOTES.md, dd4d44c; the line was 1024 before). ``NNUNET_MAMBA_SCAN_SEQ_MIN_L``
    overrides it."""
    return env_count("NNUNET_MAMBA_SCAN_SEQ_MIN_L", 64)


def _seq_min_programs(bwd: bool = False) -> int:
    """Programs per direction from which a sequence of at most :func:`_seq_min_length` steps also takes the
    sequential kernels (16-step chunks, 32 channels per one-warp program). Measured on H100 (K=6, bf16,
    benchmarks/SCAN_NOTES.md, e33f53b): at (58, 256, 5x7x5), 5,104 programs, 3.3 vs 6.8 ms forward+backward; at
    (2, 320, 4^3), 80 programs, chunked 2.6x faster. ``NNUNET_MAMBA_SCAN_SEQ_MIN_PROGRAMS``
    overrides the 4096 (a very large value: short maps always chunked), ``NNUNET_MAMBA_SCAN_SEQ_MIN_PROGRAMS_BWD``
    the backward's alone (the forward's carries then go unused where the two passes differ)."""
    both = env_count("NNUNET_MAMBA_SCAN_SEQ_MIN_PROGRAMS", 4096)
    return env_count("NNUNET_MAMBA_SCAN_SEQ_MIN_PROGRAMS_BWD", both) if bwd else both


_CHUNKED_SHORT_L = 1024  # the chunked kernels' short-map tiles up to this length (latency-bound), long-map ones above
_SEQ_BD = 32  # channels per one-warp program of the sequential kernels
_SEQ_MIN_T = 16  # their shortest chunk


def _seq_programs(L: int, D: int, Bsz: int, T: int = _SEQ_MIN_T) -> int:
    """One-warp programs per direction of the sequential kernels with T-step chunks."""
    return _cdiv(D, _SEQ_BD) * Bsz * _cdiv(L, T)


def _config(L: int, D: int, bwd: bool, Bsz: int = 1) -> dict:
    if _CONFIG_OVERRIDE is not None:
        cfg = {"BLOCK_T": 64, "BLOCK_D": 32, "BLOCK_R": 16, "num_warps": 4, "sum_warps": 4, "vec1": False,
               "seq": False}
        over = _CONFIG_OVERRIDE.get("bwd" if bwd else "fwd", _CONFIG_OVERRIDE)
        cfg.update({k: v for k, v in over.items() if k not in ("fwd", "bwd")})
        return cfg
    # Measured on H100 (bf16, K=3; benchmarks/SCAN_NOTES.md): short sequences (launch/latency
    # bound) prefer 64-step chunks over 16 channels; long ones prefer 16-step chunks with the
    # channels spread over all lanes and warps ("vec1": every thread scans a run of steps of one
    # channel in registers, no cross-warp scan).
    # Sequential path (triton_seq), forward and backward: faster than the chunked scan on H100 once dB/dC use
    # the shuffle butterfly (SCAN_NOTES.md, 5c1e723) and, since the prefetches and saved carries, at every
    # map longer than one chunk (dd4d44c); on single-chunk maps only when batch x channels alone fill the GPU.
    # NNUNET_MAMBA_SCAN_SEQ=0 / NNUNET_MAMBA_SCAN_SEQ_BWD=0 switch back to the chunked scan.
    seq = getenv("NNUNET_MAMBA_SCAN_SEQ_BWD" if bwd else "NNUNET_MAMBA_SCAN_SEQ", "1") == "1"
    if seq and (L > _seq_min_length() or _seq_programs(L, D, Bsz) >= _seq_min_programs(bwd)):
        return _seq_config(L, D, Bsz)
    if L <= _CHUNKED_SHORT_L:
        return {"BLOCK_T": 64, "BLOCK_D": 16, "BLOCK_R": 16, "num_warps": 4, "sum_warps": 4, "vec1": True}
    bd = 64 if D % 64 == 0 or D > 128 else 32
    return {"BLOCK_T": 16, "BLOCK_D": bd, "BLOCK_R": 16, "num_warps": bd // 32, "sum_warps": 4, "vec1": True}


def _bc_mode(cfg: dict) -> int:
    """How the chunked backward sums dB/dC over channels: 0 warp shuffles (tl.sum, default), 1 tensor
    cores (tl.dot, tf32x3; correct but measured slower on H100, SCAN_NOTES.md). Env
    NNUNET_MAMBA_SCAN_BC=0|1 picks one; mode 2 (skip dB/dC: a timing ablation with wrong gradients) is
    reachable only through the benchmark's config override."""
    mode = cfg.get("bc_mode")
    if mode is None:
        mode = 1 if getenv("NNUNET_MAMBA_SCAN_BC", "0") == "1" else 0
    if mode == 1 and (cfg["BLOCK_T"] < 16 or cfg["BLOCK_D"] < 16):
        return 0  # tl.dot needs M, K >= 16
    return int(mode)


def _exact_da(cfg: dict) -> bool:
    """Whether the chunked backward gets ``a_t h_{t-1}`` (for dA, ddelta) from a second scan over the previous
    steps instead of as ``h_t - dt_t u_t B_t``, which cancels when ``a_t = exp(dt A)`` is tiny (huge deltas:
    1e-2 relative error in dA at dt ~ 24, tests/kernels/test_triton_interpreter.py). One more scan and
    exp2 per state: opt-in (``NNUNET_MAMBA_SCAN_EXACT_DA=1``, config ``exact_da``). It passes the float64 check on a
    GPU and cost a third more backward time at 8^3 (H200, SCAN_NOTES.md at 8812b31, when 8^3 still ran these
    kernels); they now see only single-chunk maps, where its cost is not yet timed on a GPU-bound host. The
    sequential kernels keep ``h_{t-1}`` and are exact either way."""
    return _switch(cfg, "exact_da", "NNUNET_MAMBA_SCAN_EXACT_DA", False)


def _reuse_steps(cfg: dict) -> bool:
    """Whether the sequential backward's adjoint walk reuses each step's inputs (u, dt, dy, their index math)
    from the forward recompute of the same sub-chunk instead of loading them again; B and C are reloaded.
    On by default with 2-step sub-chunks (H100, bf16, K=3: 4-8 % faster than S=4 without reuse at
    16^3-64^3, benchmarks/SCAN_NOTES.md, 385accf); ``NNUNET_MAMBA_SCAN_REUSE_STEPS=0`` (config ``reuse_steps``) turns
    it off."""
    return _switch(cfg, "reuse_steps", "NNUNET_MAMBA_SCAN_REUSE_STEPS", True)


def _lane_split(cfg: dict, N: int, bwd: bool) -> int:
    """Lanes that share one channel in the sequential kernels, each holding N / split of its states
    (1: a lane holds all N). Fewer states per lane means fewer live registers and twice the programs per
    split, but more instructions per channel: measured slower on H100 (benchmarks/SCAN_NOTES.md, 385accf), kept for
    comparisons. ``NNUNET_MAMBA_SCAN_SPLIT_BWD`` / ``NNUNET_MAMBA_SCAN_SPLIT_FWD``
    (config ``split_bwd`` / ``split_fwd``): 1, 2 or 4; the forward's value also serves its summary walks,
    the backward's the backward's. Falls back to 1 where N or the program's lanes do not divide, and under
    ``NNUNET_MAMBA_SCAN_DETERMINISTIC=1``."""
    key = "split_bwd" if bwd else "split_fwd"
    split = int(cfg.get(key, env_count("NNUNET_MAMBA_SCAN_" + key.upper(), 1)))
    if split not in (1, 2, 4):
        raise ValueError(f"NNUNET_MAMBA_SCAN_{key.upper()} must be 1, 2 or 4, not {split}")
    if N % split or cfg["BLOCK_D"] % split or _deterministic():
        return 1
    return split


def _register_cap(cfg: dict, bwd: bool) -> dict:
    """Launch option capping the registers per thread of the sequential fwd / bwd kernel (``maxnreg``: more
    resident warps, possibly spills), from config ``maxnreg_fwd`` / ``maxnreg_bwd`` or
    ``NNUNET_MAMBA_SCAN_MAXNREG_FWD`` / ``_BWD``; none by default (ptxas decides)."""
    key = "maxnreg_bwd" if bwd else "maxnreg_fwd"
    cap = int(cfg.get(key, env_count("NNUNET_MAMBA_SCAN_" + key.upper(), 0)))
    return {"maxnreg": cap} if cap else {}


def _prefetch(cfg: dict, bwd_walk2: bool = False) -> dict:
    """Launch arguments of the sequential kernels' cache prefetches: ``PF`` (0 none, 1 into L2, 2 into L1) of
    the lines that a walk loads ``PFD`` iterations later (the backward's walk 2: sub-chunks; the other walks:
    unrolled step pairs). Default: into L2, one iteration ahead (H200, bf16, K=3: forward+backward 17-22 %
    faster at 16^3-64^3; into L1 equally fast; further ahead slower; benchmarks/SCAN_NOTES.md, 8812b31).
    ``NNUNET_MAMBA_SCAN_PREFETCH`` (config ``prefetch``), ``NNUNET_MAMBA_SCAN_PREFETCH_DIST`` / ``_DIST_BWD``
    (config ``prefetch_dist`` / ``prefetch_dist_bwd``). Off in the interpreter (no PTX)."""
    mode = int(cfg.get("prefetch", env_count("NNUNET_MAMBA_SCAN_PREFETCH", 1)))
    if mode not in (0, 1, 2):
        raise ValueError(f"NNUNET_MAMBA_SCAN_PREFETCH must be 0, 1 or 2, not {mode}")
    key = "prefetch_dist_bwd" if bwd_walk2 else "prefetch_dist"
    dist = int(cfg.get(key, env_count("NNUNET_MAMBA_SCAN_" + key.upper(), 1)))
    return {"PF": 0 if triton_interpreting() else mode, "PFD": max(dist, 1)}


def _deterministic() -> bool:
    return getenv("NNUNET_MAMBA_SCAN_DETERMINISTIC", "0") == "1"


def _bc_slabs(cfg: dict) -> bool:
    """Whether the sequential backward writes dB/dC as one fp32 slab per channel block (plain stores, summed
    by torch: deterministic, but nDB times the memory) instead of fp32 atomics into one buffer
    (``NNUNET_MAMBA_SCAN_BC_SLABS=1`` or config ``bc_slabs``; implied by ``NNUNET_MAMBA_SCAN_DETERMINISTIC=1``).
    With relaxed atomics both are equally fast on H100 (benchmarks/SCAN_NOTES.md, 676abe1), so the default is the
    atomics' smaller buffer."""
    return _switch(cfg, "bc_slabs", "NNUNET_MAMBA_SCAN_BC_SLABS", False)


def _bc_buffers(nDB: int, partial: bool, Bm, Cm, L: int, K: int):
    """dB, dC outputs of a backward kernel: fp32 zeros for atomics (several channel blocks; one zero fill for both
    where they are converted to other dtypes afterwards, so that they are no outputs sharing a buffer), one fp32
    slab per channel block (``partial``), or the final tensors (one channel block)."""
    Bsz, N, dev = Bm.shape[0], Bm.shape[-1], Bm.device
    if nDB > 1 and partial:
        return (torch.empty((nDB, Bsz, L, K, N), device=dev, dtype=torch.float32) for _ in range(2))
    if nDB > 1 and Bm.dtype != torch.float32 and Cm.dtype != torch.float32:
        return torch.zeros((2, Bsz, L, K, N), device=dev, dtype=torch.float32).unbind(0)
    if nDB > 1:
        return (torch.zeros((Bsz, L, K, N), device=dev, dtype=torch.float32) for _ in range(2))
    return (torch.empty((Bsz, L, K, N), device=dev, dtype=x.dtype) for x in (Bm, Cm))


def _finish_grads(dA_p, dD_p, dbias_p, dB, dC, nDB: int, partial: bool, Bm, Cm, A_dtype, Dskip_dtype, bias_dtype):
    """(dA, dD, ddelta_bias, dB, dC): the parameter gradients from their partials, dB and dC in the input dtypes from
    what :func:`_bc_buffers` gave the kernel (converted in the parameter-gradient launch where it can)."""
    if nDB > 1 and partial:
        dB, dC = dB.sum(0), dC.sum(0)
    casts = [(x, want.dtype) for x, want in ((dB, Bm), (dC, Cm)) if x.dtype != want.dtype]
    dA, dD, dbias, converted = param_grads(dA_p, dD_p, dbias_p, A_dtype, Dskip_dtype, bias_dtype, casts)
    done = iter(converted)
    dB, dC = (next(done) if x.dtype != want.dtype else x for x, want in ((dB, Bm), (dC, Cm)))
    return dA, dD, dbias, dB, dC


def _seq_kernels(cfg: dict, N: int, bwd: bool) -> dict:
    S = _sub_chunk(cfg)
    return triton_seq.kernels(N, S, _walk_unroll(cfg, S), reuse_steps=bwd and _reuse_steps(cfg),
                              split=_lane_split(cfg, N, bwd))


def _walk_unroll(cfg: dict, S: int) -> int:
    """Steps per loop iteration of the summary and forward walks (their loads are issued together, so a longer
    unroll waits for memory less often, for more registers): a multiple of the sub-chunk S, at most the chunk.
    Config ``SF`` or ``NNUNET_MAMBA_SCAN_WALK_UNROLL``; default S."""
    SF = int(cfg.get("SF", env_count("NNUNET_MAMBA_SCAN_WALK_UNROLL", S)))
    if SF < S or SF % S:
        raise ValueError(f"NNUNET_MAMBA_SCAN_WALK_UNROLL must be a multiple of the sub-chunk {S}, not {SF}")
    SF = min(SF, max(S, cfg["BLOCK_T"]))
    if cfg["BLOCK_T"] % SF:
        raise ValueError(f"chunk {cfg['BLOCK_T']} is not a multiple of the walks' unroll {SF}")
    return SF


def _sub_chunk(cfg: dict) -> int:
    """Steps per sub-chunk of the sequential kernels (S: the backward keeps S steps of states in
    registers and writes one state per S steps to its scratch; also the walks' unroll). Default 2 (no
    register spills, with :func:`_reuse_steps`); config ``S`` or ``NNUNET_MAMBA_SCAN_SUBCHUNK`` (4 or 8 for
    comparisons; a chunk must be a multiple)."""
    return int(cfg.get("S", getenv("NNUNET_MAMBA_SCAN_SUBCHUNK", "2")))


def _seq_config(L: int, D: int, Bsz: int) -> dict:
    """Sequential state-in-registers path (triton_seq): 32 channels per one-warp program; the longest chunk
    (16..256 steps) that still gives >= ~4k programs per direction, but no shorter than it takes to cut a
    sequence into at most 64 chunks (the carry pass walks the chunks one after another). H100, bf16: 64- instead
    of 32-step chunks made (2,512,16^3) 4-13 % faster at K = 2-4, 256 instead of 128 left 32^3 and (1,96,64^3)
    unchanged, while the Hippocampus mixers (few steps, batch 58) lose 7-16 % with half as many programs
    (benchmarks/SCAN_NOTES.md, b2b8613). ``NNUNET_MAMBA_SCAN_SEQ_PROGRAMS`` moves the 4096,
    ``NNUNET_MAMBA_SCAN_SEQ_MAX_CHUNKS`` the 64."""
    want = env_count("NNUNET_MAMBA_SCAN_SEQ_PROGRAMS", 4096)
    max_chunks = env_count("NNUNET_MAMBA_SCAN_SEQ_MAX_CHUNKS", 64)
    T = 256
    while T > _SEQ_MIN_T and _seq_programs(L, D, Bsz, T) < want and _cdiv(L, T // 2) <= max_chunks:
        T //= 2
    return {"seq": True, "BLOCK_T": T, "BLOCK_D": _SEQ_BD, "BLOCK_R": 16, "num_warps": 1}


def _groups(grid: Sequence[int], directions: Sequence[ScanDirection]):
    """Pair directions of equal axis order: [(geometry5, k_fwd|None, k_rev|None)]."""
    groups = []
    for k, dirn in enumerate(directions):
        geo = scan_geometry(grid, dirn)
        slot = 2 if dirn.reverse else 1
        for g in groups:
            if g[0] == geo[:6] and g[slot] is None:
                g[slot] = k
                break
        else:
            g = [geo[:6], None, None]
            g[slot] = k
            groups.append(g)
    return groups


def _check(u, delta, A, Bm, Cm, grid, directions):
    Bsz, L, D = u.shape
    K = len(directions)
    N = A.shape[-1]
    L_grid = 1
    for s in grid:
        L_grid *= int(s)
    if L_grid != L:
        raise ValueError(f"grid {tuple(grid)} does not match L={L}")
    if delta.shape != (Bsz, L, K, D) or Bm.shape != (Bsz, L, K, N) or Cm.shape != (Bsz, L, K, N) or \
            A.shape != (K, D, N):
        raise ValueError("shape mismatch in multidir scan inputs")
    return Bsz, L, D, K, N


def _needs_i64(Bsz, L, K, D, N, nC, P=2) -> bool:
    biggest = max(Bsz * L * K * max(D, N), Bsz * P * K * nC * N * D, Bsz * L * D)
    return biggest >= 2 ** 31 - 1


def _c(x):
    return None if x is None else x.contiguous()


def _prep_inputs(u, delta, A, Bm, Cm, Dskip, delta_bias, z):
    u, delta, Bm, Cm, z = _c(u), _c(delta), _c(Bm), _c(Cm), _c(z)
    A = A.contiguous().float()
    Dskip = None if Dskip is None else Dskip.contiguous().float()
    delta_bias = None if delta_bias is None else delta_bias.contiguous().float()
    return u, delta, A, Bm, Cm, Dskip, delta_bias, z


def _summary_buffers(u, K, N, nC, P):
    """Chunk summaries / carries (B, P, K, nC, N, D) and per-chunk dt sums (B, K, nC, D), fp32, and
    whether their index math needs int64."""
    Bsz, L, D = u.shape
    st = torch.empty((Bsz, P, K, nC, N, D), device=u.device, dtype=torch.float32)
    dts = torch.empty((Bsz, K, nC, D), device=u.device, dtype=torch.float32)
    return st, dts, _needs_i64(Bsz, L, K, D, N, nC, P)


def _carry_launch(st, dts, A, directions, cfg, k_sel=-1, part0=0):
    """Chunk carries from the summaries of either kernel family, in place: every direction, or only ``k_sel``
    (its parts from ``part0`` on: 1 = only the adjoint's)."""
    launch_grid, ints, opts = _memo(("carry", k_sel, part0), _carry_setup, st, directions, cfg, k_sel, part0)
    launcher(_carry_kernel)[launch_grid](st, dts, A, *ints, **opts)


def _carry_setup(st, directions, cfg, k_sel, part0):
    """A carry launch's grid, integer arguments and launch options."""
    Bsz, P, K, nC, N, D = st.shape
    rev_mask = 0
    for k, dirn in enumerate(directions):
        if dirn.reverse:
            rev_mask |= 1 << k
    i64 = _needs_i64(Bsz, nC, K, D, N, nC, P)
    # many chunks: taller, narrower tiles (fewer sequential steps, more programs)
    BLOCK_R = cfg["BLOCK_R"] if (nC < 256 or _CONFIG_OVERRIDE is not None) else 64
    BLOCK_ND = min(256 if BLOCK_R <= 16 else 64, _pow2(N * D))
    return ((_cdiv(N * D, BLOCK_ND), P - part0 if k_sel >= 0 else P * K, Bsz), (D, N, K, nC, P, rev_mask, k_sel),
            dict(BLOCK_R=BLOCK_R, BLOCK_ND=BLOCK_ND, I64=i64, PART0=part0, num_warps=4))


def _summaries_and_carry(u, delta, A, Bm, Cm, delta_bias, z, dout, grid, directions, groups, delta_softplus,
                         cfg, nC, bwd):
    Bsz, L, D = u.shape
    K = len(directions)
    N = A.shape[-1]
    P = 2 if bwd else 1
    st, dts, i64 = _summary_buffers(u, K, N, nC, P)
    dummy = u
    nDB = _cdiv(D, cfg["BLOCK_D"])
    for geo, kf, kr in groups:
        n_a, n_b, n_c, s_a, s_b, s_c = geo
        launcher(_KERNELS[cfg["vec1"]]["summary"])[(nC, nDB, Bsz)](
            u, delta, Bm, Cm, A, delta_bias if delta_bias is not None else dummy,
            z if z is not None else dummy, dout if dout is not None else dummy, st, dts,
            L, D, N, K, nC, P, n_b, n_c, s_a, s_b, s_c, kf if kf is not None else 0, kr if kr is not None else 0,
            HAS_F=kf is not None, HAS_R=kr is not None, HAS_BIAS=delta_bias is not None,
            SOFTPLUS=bool(delta_softplus), BWD=bwd, HAS_Z=z is not None,
            BLOCK_T=cfg["BLOCK_T"], BLOCK_D=cfg["BLOCK_D"], I64=i64, num_warps=cfg["sum_warps"])
    _carry_launch(st, dts, A, directions, cfg)
    return st


def _save_carries(cfg: dict) -> bool:
    """Whether the forward hands its chunk carries (fp32, ``(B, 1, K, nC, N, D)``: 32 / T bytes per element of
    ``delta``'s 2 in bf16, T the chunk length) to the backward, whose summary walk then starts from the true
    states: no carry correction in walk 2, and (``_dc_in_summary``) y, dz and dC come from that walk. On by
    default (H200, bf16, K=3: forward+backward 10-12 % faster at 16^3-64^3; benchmarks/SCAN_NOTES.md, b216496);
    ``NNUNET_MAMBA_SCAN_SAVE_CARRIES=0`` (config ``save_carries``) turns it off."""
    return _switch(cfg, "save_carries", "NNUNET_MAMBA_SCAN_SAVE_CARRIES", True)


def _dc_in_summary(cfg: dict) -> bool:
    """With saved carries: y, dz and dC from the backward's summary walk instead of walk 2's forward recompute
    (walk 2 then needs 167 instead of 246 registers and a third fewer instructions, offline sm_90a; measured
    10-12 % faster than keeping them in walk 2). ``NNUNET_MAMBA_SCAN_DC_IN_SUMMARY=0`` (config
    ``dc_in_summary``) keeps them in walk 2."""
    return _switch(cfg, "dc_in_summary", "NNUNET_MAMBA_SCAN_DC_IN_SUMMARY", True)


def carries_shape(Bsz: int, L: int, D: int, K: int, N: int, fwd_cfg: Optional[dict] = None) -> tuple:
    """Shape of the chunk carries that :func:`multidir_scan_fwd` hands the backward (``return_carries``);
    ``(0,)`` when it hands none: the sequential kernels in both passes with one chunk length, more than one
    chunk, the backward's summary writing the sub-chunk states, and ``_save_carries``. ``fwd_cfg``: the
    forward's config where the caller has it."""
    fwd = fwd_cfg if fwd_cfg is not None else _config(L, D, bwd=False, Bsz=Bsz)
    bwd = _config(L, D, bwd=True, Bsz=Bsz)
    if not (fwd.get("seq") and bwd.get("seq") and fwd["BLOCK_T"] == bwd["BLOCK_T"] and _save_carries(bwd)
            and _switch(bwd, "scr", "NNUNET_MAMBA_SCAN_SCR", True)):
        return (0,)
    nC = _cdiv(L, fwd["BLOCK_T"])
    return (Bsz, 1, K, nC, N, D) if nC > 1 else (0,)


def _numbered(tensors, *statics) -> NumberedLaunches:
    """Numbers the launches of one operator call by everything they depend on: the (contiguous) tensors' shapes,
    dtypes, device types and 16-byte alignment, the other arguments (``statics``) and the switches. The host-side
    decisions (:func:`_memo`) and the direct launcher's kernel lookups are then made once per key: at (2, 640, 8^3),
    K = 2, fp32, 126 instead of 273 us of host Python per forward+backward on the development CPU
    (``benchmarks/scan_dispatch_cpu.py --direct``). A config override (tests, benchmarks) is part of the key by
    its contents; ``NNUNET_MAMBA_SCAN_NUMBERED=0`` numbers nothing (every call decides and keys every launch anew)."""
    if getenv("NNUNET_MAMBA_SCAN_NUMBERED", "1") == "0":
        return NumberedLaunches(None)
    override = None if _CONFIG_OVERRIDE is None else repr(_CONFIG_OVERRIDE)
    return NumberedLaunches((tuple([None if t is None else (t.shape, t.dtype, t.is_cuda, t.data_ptr() % 16 == 0)
                                    for t in tensors]), statics, snapshot_items(), override))


_MEMO: dict = {}


def _memo(tag, fn, *args):
    """``fn(*args)`` once per operator key (see :func:`_numbered`) and ``tag``: for host-side decisions that depend
    only on what that key holds (shapes, dtypes, alignment, switches); evaluated on every call outside a
    numbered call."""
    op = current_operator()
    if op is None:
        return fn(*args)
    key = (op, tag)
    value = _MEMO.get(key, _MEMO)
    if value is _MEMO:
        if len(_MEMO) >= 4096:
            _MEMO.clear()
        value = _MEMO[key] = fn(*args)
    return value


@snapshotted
def multidir_scan_fwd(u, delta, A, Bm, Cm, Dskip, delta_bias, z, grid, directions, delta_softplus,
                      return_carries=False):
    """Forward of the fused multi-directional scan (Triton). Same contract as the reference; with
    ``return_carries`` it returns ``(out, carries)`` for :func:`multidir_scan_bwd` (``carries`` None where
    :func:`carries_shape` says none)."""
    u, delta, A, Bm, Cm, Dskip, delta_bias, z = _prep_inputs(u, delta, A, Bm, Cm, Dskip, delta_bias, z)
    with _numbered((u, delta, A, Bm, Cm, Dskip, delta_bias, z), "fwd", tuple(grid), tuple(directions),
                   bool(delta_softplus), bool(return_carries)):
        return _fwd(u, delta, A, Bm, Cm, Dskip, delta_bias, z, grid, directions, delta_softplus, return_carries)


def _fwd(u, delta, A, Bm, Cm, Dskip, delta_bias, z, grid, directions, delta_softplus, return_carries):
    Bsz, L, D, K, N = _memo("check", _check, u, delta, A, Bm, Cm, grid, directions)
    cfg = _memo("config", _config, L, D, False, Bsz)
    if cfg.get("seq"):
        out, st = _seq_fwd(u, delta, A, Bm, Cm, Dskip, delta_bias, z, grid, directions, delta_softplus, cfg)
        if not return_carries:
            return out
        keep = st is not None and tuple(st.shape) == _memo("carries", carries_shape, Bsz, L, D, K, N, cfg)
        return out, (st if keep else None)
    out = _chunked_fwd(u, delta, A, Bm, Cm, Dskip, delta_bias, z, grid, directions, delta_softplus, cfg)
    return (out, None) if return_carries else out


def _chunked_fwd(u, delta, A, Bm, Cm, Dskip, delta_bias, z, grid, directions, delta_softplus, cfg):
    Bsz, L, D = u.shape
    K, N = len(directions), A.shape[-1]
    BT, BD = cfg["BLOCK_T"], cfg["BLOCK_D"]
    nC = _cdiv(L, BT)
    nDB = _cdiv(D, BD)
    groups = _groups(grid, directions)
    has_carry = nC > 1
    i64 = _needs_i64(Bsz, L, K, D, N, nC)
    if has_carry:
        st = _summaries_and_carry(u, delta, A, Bm, Cm, delta_bias, None, None, grid, directions, groups,
                                  delta_softplus, cfg, nC, bwd=False)
    else:
        st = u
    out = torch.empty((Bsz, L, D), device=u.device, dtype=u.dtype)
    G = len(groups)
    acc = torch.empty((Bsz, L, D), device=u.device, dtype=torch.float32) if G > 1 else out
    dummy = u
    for gi, (geo, kf, kr) in enumerate(groups):
        n_a, n_b, n_c, s_a, s_b, s_c = geo
        final = gi == G - 1
        launcher(_KERNELS[cfg["vec1"]]["fwd"])[(nC, nDB, Bsz)](
            u, delta, A, Bm, Cm, Dskip if Dskip is not None else dummy,
            delta_bias if delta_bias is not None else dummy, z if z is not None else dummy, st, acc,
            out if final else acc,
            L, D, N, K, nC, 1, n_b, n_c, s_a, s_b, s_c, kf if kf is not None else 0, kr if kr is not None else 0,
            HAS_F=kf is not None, HAS_R=kr is not None, HAS_D=Dskip is not None, HAS_BIAS=delta_bias is not None,
            HAS_Z=z is not None, SOFTPLUS=bool(delta_softplus), HAS_CARRY=has_carry, ACC_IN=gi > 0, FINAL=final,
            BLOCK_T=BT, BLOCK_D=BD, I64=i64, num_warps=cfg["num_warps"])
    return out


@snapshotted
def multidir_scan_bwd(dout, u, delta, A, Bm, Cm, Dskip, delta_bias, z, grid, directions, delta_softplus,
                      carries=None):
    """Gradients (du, ddelta, dA, dB, dC, dD, ddelta_bias, dz); recomputes the forward (Triton), from the
    forward's ``carries`` where given (see :func:`carries_shape`)."""
    A_dtype = A.dtype
    Dskip_dtype = None if Dskip is None else Dskip.dtype
    bias_dtype = None if delta_bias is None else delta_bias.dtype
    u, delta, A, Bm, Cm, Dskip, delta_bias, z = _prep_inputs(u, delta, A, Bm, Cm, Dskip, delta_bias, z)
    dout = dout.contiguous()
    with _numbered((dout, u, delta, A, Bm, Cm, Dskip, delta_bias, z, carries), "bwd", tuple(grid),
                   tuple(directions), bool(delta_softplus), A_dtype, Dskip_dtype, bias_dtype):
        return _bwd(dout, u, delta, A, Bm, Cm, Dskip, delta_bias, z, grid, directions, delta_softplus, carries,
                    A_dtype, Dskip_dtype, bias_dtype)


def _bwd(dout, u, delta, A, Bm, Cm, Dskip, delta_bias, z, grid, directions, delta_softplus, carries,
         A_dtype, Dskip_dtype, bias_dtype):
    Bsz, L, D, K, N = _memo("check", _check, u, delta, A, Bm, Cm, grid, directions)
    cfg = _memo("config", _config, L, D, True, Bsz)
    if cfg.get("seq"):
        return _seq_bwd(dout, u, delta, A, Bm, Cm, Dskip, delta_bias, z, grid, directions, delta_softplus, cfg,
                        A_dtype, Dskip_dtype, bias_dtype, carries)
    BT, BD = cfg["BLOCK_T"], cfg["BLOCK_D"]
    nC = _cdiv(L, BT)
    nDB = _cdiv(D, BD)
    groups = _groups(grid, directions)
    has_carry = nC > 1
    i64 = _needs_i64(Bsz, L, K, D, N, nC)
    dev = u.device
    if has_carry:
        st = _summaries_and_carry(u, delta, A, Bm, Cm, delta_bias, z, dout, grid, directions, groups,
                                  delta_softplus, cfg, nC, bwd=True)
    else:
        st = u
    partial = nDB > 1 and _deterministic()
    atomic = nDB > 1 and not partial
    dB, dC = _bc_buffers(nDB, partial, Bm, Cm, L, K)
    i64 = i64 or (partial and nDB * Bsz * L * K * N >= 2 ** 31 - 1)
    ddelta = torch.empty((Bsz, L, K, D), device=dev, dtype=delta.dtype)
    dA_p = torch.empty((Bsz, nC, K, N, D), device=dev, dtype=torch.float32)
    dD_p = torch.empty((Bsz, nC, K, D), device=dev, dtype=torch.float32) if Dskip is not None else None
    dbias_p = torch.empty((Bsz, nC, K, D), device=dev, dtype=torch.float32) if delta_bias is not None else None
    du = torch.empty((Bsz, L, D), device=dev, dtype=u.dtype)
    dz = torch.empty((Bsz, L, D), device=dev, dtype=z.dtype) if z is not None else None
    G = len(groups)
    du_acc = torch.empty((Bsz, L, D), device=dev, dtype=torch.float32) if G > 1 else du
    y_acc = torch.empty((Bsz, L, D), device=dev, dtype=torch.float32) if (G > 1 and z is not None) else du_acc
    dummy = u
    for gi, (geo, kf, kr) in enumerate(groups):
        n_a, n_b, n_c, s_a, s_b, s_c = geo
        final = gi == G - 1
        launcher(_KERNELS[cfg["vec1"]]["bwd"])[(nC, nDB, Bsz)](
            u, delta, A, Bm, Cm, Dskip if Dskip is not None else dummy,
            delta_bias if delta_bias is not None else dummy, z if z is not None else dummy, dout, st,
            du_acc, y_acc, du, dz if dz is not None else dummy, ddelta, dB, dC, dA_p,
            dD_p if dD_p is not None else dA_p, dbias_p if dbias_p is not None else dA_p,
            L, D, N, K, nC, 2, n_b, n_c, s_a, s_b, s_c, kf if kf is not None else 0, kr if kr is not None else 0,
            HAS_F=kf is not None, HAS_R=kr is not None, HAS_D=Dskip is not None, HAS_BIAS=delta_bias is not None,
            HAS_Z=z is not None, SOFTPLUS=bool(delta_softplus), HAS_CARRY=has_carry, ACC_IN=gi > 0, FINAL=final,
            ATOMIC_BC=atomic, PARTIAL_BC=partial, BC_MODE=_bc_mode(cfg), EXACT_DA=_exact_da(cfg), BLOCK_T=BT,
            BLOCK_D=BD, I64=i64,
            num_warps=cfg["num_warps"])
    dA, dD, dbias, dB, dC = _finish_grads(dA_p, dD_p, dbias_p, dB, dC, nDB, partial, Bm, Cm, A_dtype, Dskip_dtype,
                                          bias_dtype)
    return du, ddelta, dA, dB, dC, dD, dbias, dz


# ----------------------------------------------------------------------------------------------
# Sequential path (kernels generated in triton_seq): one launch per direction
# ----------------------------------------------------------------------------------------------
def _seq_summary_launch(ks, k, dirn, u, delta, A, Bm, Cm, delta_bias, z, dout, st, dts, grid, delta_softplus, cfg,
                        nC, P, i64, vec_bc, prefetch, scr=None, cdt=None, **true_scr):
    dummy = u
    launch_grid, ints, opts = _memo(("summary", P, k, scr is not None), _seq_summary_setup, ks, k, dirn, u, st, grid,
                                    cfg, nC, P, i64, vec_bc, prefetch, delta_bias is not None, z is not None,
                                    delta_softplus, scr is not None)
    launcher(ks["summary"])[launch_grid](
        u, delta, Bm, Cm, A, delta_bias if delta_bias is not None else dummy,
        z if z is not None else dummy, dout if dout is not None else dummy, st, dts,
        scr if scr is not None else dummy, cdt if cdt is not None else dummy, *ints, **opts, **true_scr)


def _seq_summary_setup(ks, k, dirn, u, st, grid, cfg, nC, P, i64, vec_bc, prefetch, has_bias, has_z, delta_softplus,
                       has_scr):
    """A summary launch's grid, integer arguments and launch options."""
    Bsz, L, D = u.shape
    K, N = st.shape[2], st.shape[4]
    positions, rev = _seq_geometry(grid, dirn)
    opts = dict(N=N, REV=rev, HAS_BIAS=has_bias, SOFTPLUS=bool(delta_softplus), BWD=P == 2, HAS_Z=has_z,
                T=cfg["BLOCK_T"], BD=cfg["BLOCK_D"], I64=i64, SCR=has_scr, VEC_BC=vec_bc, num_warps=cfg["num_warps"],
                **prefetch)
    return (nC, _cdiv(D, cfg["BLOCK_D"] // ks["split"]), Bsz), (L, D, K, nC, P, *positions, k), opts


def _seq_summaries(u, delta, A, Bm, Cm, delta_bias, z, dout, grid, directions, delta_softplus, cfg, nC, bwd, ks,
                   vec_bc, prefetch):
    """Chunk summaries of every direction, then their carries. ``vec_bc`` / ``prefetch``: the caller's decisions
    (:func:`_vector_bc`, :func:`_prefetch`)."""
    P = 2 if bwd else 1
    st, dts, i64 = _summary_buffers(u, len(directions), A.shape[-1], nC, P)
    for k, dirn in enumerate(directions):
        _seq_summary_launch(ks, k, dirn, u, delta, A, Bm, Cm, delta_bias, z, dout, st, dts, grid, delta_softplus,
                            cfg, nC, P, i64, vec_bc, prefetch)
    _carry_launch(st, dts, A, directions, cfg)
    return st


def _vector_bc(cfg: dict, Bm, Cm, bwd_kernel: bool = False, NL: Optional[int] = None) -> int:
    """How the sequential kernels load a step's B and C: 0 scalar loads; 1 / 2 16-byte vector loads
    (inline PTX) of bf16 / fp32 values. Vectors need N*itemsize % 16 == 0, 16-byte aligned tensors and
    a real GPU (no PTX in the interpreter). ``NNUNET_MAMBA_SCAN_VEC_BC=0`` (or config ``vec_bc``)
    forces scalar loads; ``NNUNET_MAMBA_SCAN_VEC_BC_BWD=0`` (config ``vec_bc_bwd``) does so in the backward
    kernel only (with 4-step sub-chunks the vectors spill there, offline sm_90a: 472 bytes, yet measured 12 %
    faster on H100 and passed the float64 check; SCAN_NOTES.md at bc3355e and e33f53b). ``NL``: the states a lane
    loads (N / split), which must fill whole 16-byte vectors."""
    if bwd_kernel:
        want = _switch(cfg, "vec_bc_bwd", "NNUNET_MAMBA_SCAN_VEC_BC_BWD", True)
    else:
        want = _switch(cfg, "vec_bc", "NNUNET_MAMBA_SCAN_VEC_BC", True)
    if not want or triton_interpreting() or Bm.dtype != Cm.dtype:
        return 0
    kind = {torch.bfloat16: 1, torch.float32: 2}.get(Bm.dtype, 0)
    NL = Bm.shape[-1] if NL is None else NL  # a multiple of 16 bytes per lane is one for all N states too
    aligned = all(x.data_ptr() % 16 == 0 for x in (Bm, Cm)) and (NL * Bm.element_size()) % 16 == 0
    return kind if aligned else 0


def _use_shuffles(cfg: dict, N: int) -> bool:
    """dB/dC of the sequential backward by a butterfly of warp shuffles (inline PTX): needs one
    channel per lane of a one-warp program and N a power of two <= 32; not in the interpreter (no
    PTX there). With per-block slabs (``NNUNET_MAMBA_SCAN_DETERMINISTIC=1``, ``NNUNET_MAMBA_SCAN_BC_SLABS=1``)
    every sum is stored by exactly one lane. ``NNUNET_MAMBA_SCAN_SHFL=0`` (or config ``shfl``) falls back to one
    tl.sum per state."""
    return _switch(cfg, "shfl", "NNUNET_MAMBA_SCAN_SHFL", True) and not triton_interpreting() and cfg["BLOCK_D"] == 32 \
        and cfg["num_warps"] == 1 and triton_seq._bfly_ok(N)


def _seq_geometry(grid, dirn) -> tuple:
    """A direction's position arguments of the sequential kernels (``n_b, n_c, s_a, s_b, s_c`` and the constants
    that divide by ``n_b`` and ``n_c``) and its REV flag."""
    n_a, n_b, n_c, s_a, s_b, s_c, rev = scan_geometry(grid, dirn)
    return (n_b, n_c, s_a, s_b, s_c, *triton_seq.position_args(n_b, n_c)), int(bool(rev))


def _seq_fwd_setup(u, A, Bm, Cm, grid, directions, cfg):
    """The forward's host-side decisions: kernels, chunks, flags, each direction's geometry and launch options."""
    Bsz, L, D = u.shape
    N = A.shape[-1]
    ks = _seq_kernels(cfg, N, bwd=False)
    nC = _cdiv(L, cfg["BLOCK_T"])
    vec_bc, prefetch = _vector_bc(cfg, Bm, Cm, NL=N // ks["split"]), _prefetch(cfg)
    opts = dict(N=N, T=cfg["BLOCK_T"], BD=cfg["BLOCK_D"], I64=_needs_i64(Bsz, L, len(directions), D, N, nC),
                VEC_BC=vec_bc, SHFL=_use_shuffles(cfg, N), num_warps=cfg["num_warps"],
                **_register_cap(cfg, bwd=False), **prefetch)
    geometry = [_seq_geometry(grid, dirn) for dirn in directions]
    return ks, nC, (nC, _cdiv(D, cfg["BLOCK_D"] // ks["split"]), Bsz), opts, geometry, (vec_bc, prefetch)


def _seq_fwd(u, delta, A, Bm, Cm, Dskip, delta_bias, z, grid, directions, delta_softplus, cfg):
    Bsz, L, D = u.shape
    K = len(directions)
    ks, nC, launch_grid, opts, geometry, summary_flags = _memo("seq_fwd", _seq_fwd_setup, u, A, Bm, Cm, grid,
                                                               directions, cfg)
    has_carry = nC > 1
    st = _seq_summaries(u, delta, A, Bm, Cm, delta_bias, None, None, grid, directions, delta_softplus, cfg, nC,
                        False, ks, *summary_flags) if has_carry else u
    out = torch.empty((Bsz, L, D), device=u.device, dtype=u.dtype)
    acc = torch.empty((Bsz, L, D), device=u.device, dtype=torch.float32) if K > 1 else out
    dummy = u
    for k, (positions, rev) in enumerate(geometry):
        final = k == K - 1
        launcher(ks["fwd"])[launch_grid](
            u, delta, A, Bm, Cm, Dskip if Dskip is not None else dummy,
            delta_bias if delta_bias is not None else dummy, z if z is not None else dummy, st, acc,
            out if final else acc, L, D, K, nC, *positions, k, REV=rev,
            HAS_D=Dskip is not None, HAS_BIAS=delta_bias is not None, HAS_Z=z is not None,
            SOFTPLUS=bool(delta_softplus), HAS_CARRY=has_carry, ACC_IN=int(k > 0), FINAL=int(final), **opts)
    return out, (st if has_carry else None)


def _seq_bwd_setup(u, A, Bm, Cm, grid, directions, cfg, carries):
    """The backward's host-side decisions: kernels, chunks, scratch and dB/dC modes, flags, each direction's geometry
    and launch options."""
    Bsz, L, D = u.shape
    K = len(directions)
    N = A.shape[-1]
    ks = _seq_kernels(cfg, N, bwd=True)
    S = ks["S"]
    T = cfg["BLOCK_T"]
    if T % S:
        raise ValueError(f"chunk {T} is not a multiple of the sub-chunk {S}")
    nC = _cdiv(L, T)
    nDB = _cdiv(D, cfg["BLOCK_D"] // ks["split"])
    has_carry = nC > 1
    # Summary walks write the zero-start states at the sub-chunk starts (with the running dt sum), so
    # the backward kernel needs no walk 1; then summary, carry and backward run per direction and share
    # one scratch. NNUNET_MAMBA_SCAN_SCR=0: summaries of all directions first, walk 1 in the backward.
    fused_scratch = has_carry and _switch(cfg, "scr", "NNUNET_MAMBA_SCAN_SCR", True)
    # the forward's carries: the summary walk starts from the true states (else from zero, corrected in walk 2)
    true_scr = fused_scratch and carries is not None and tuple(carries.shape) == (Bsz, 1, K, nC, N, D)
    dc_sum = true_scr and _dc_in_summary(cfg)
    partial = nDB > 1 and (_deterministic() or _bc_slabs(cfg))
    atomic = nDB > 1 and not partial
    scr_numel = Bsz * nC * (T // S) * N * D
    i64 = _needs_i64(Bsz, L, K, D, N, nC) or scr_numel >= 2 ** 31 - 1 or \
        (partial and nDB * Bsz * L * K * N >= 2 ** 31 - 1)
    NL = N // ks["split"]
    shfl = _use_shuffles(cfg, N)
    flags = dict(fused_scratch=fused_scratch, true_scr=true_scr, dc_sum=dc_sum, partial=partial, atomic=atomic,
                 i64=i64, shfl=shfl, vec_bc=_vector_bc(cfg, Bm, Cm, NL=NL), prefetch=_prefetch(cfg))
    opts = dict(N=N, ATOMIC_BC=atomic, PARTIAL_BC=partial, T=T, BD=cfg["BLOCK_D"], I64=i64, SHFL=shfl,
                SCR_READY=fused_scratch, VEC_BC=_vector_bc(cfg, Bm, Cm, bwd_kernel=True, NL=NL), TRUE_SCR=true_scr,
                DC_SUM=dc_sum, num_warps=cfg["num_warps"], **_register_cap(cfg, bwd=True),
                **_prefetch(cfg, bwd_walk2=True))
    geometry = [_seq_geometry(grid, dirn) for dirn in directions]
    return ks, nC, nDB, (nC, nDB, Bsz), flags, opts, geometry


def _seq_bwd(dout, u, delta, A, Bm, Cm, Dskip, delta_bias, z, grid, directions, delta_softplus, cfg,
             A_dtype, Dskip_dtype, bias_dtype, carries=None):
    Bsz, L, D = u.shape
    K = len(directions)
    N = A.shape[-1]
    ks, nC, nDB, launch_grid, f, opts, geometry = _memo("seq_bwd", _seq_bwd_setup, u, A, Bm, Cm, grid, directions,
                                                        cfg, carries)
    T, S = cfg["BLOCK_T"], ks["S"]
    dev = u.device
    has_carry = nC > 1
    fused_scratch, true_scr, partial, atomic = f["fused_scratch"], f["true_scr"], f["partial"], f["atomic"]
    if true_scr:
        carries = carries.contiguous()
    # states at the sub-chunk starts (written and read back per direction)
    scr = torch.empty((Bsz, nC, T // S, N, D), device=dev, dtype=torch.float32)
    cdt = torch.empty((Bsz, nC, T // S, D), device=dev, dtype=torch.float32) if fused_scratch and not true_scr \
        else None
    if fused_scratch:
        st, dts, st_i64 = _summary_buffers(u, K, N, nC, 2)
    else:
        st = _seq_summaries(u, delta, A, Bm, Cm, delta_bias, z, dout, grid, directions, delta_softplus, cfg, nC,
                            True, ks, f["vec_bc"], f["prefetch"]) if has_carry else u
    dB, dC = _bc_buffers(nDB, partial, Bm, Cm, L, K)
    ddelta = torch.empty((Bsz, L, K, D), device=dev, dtype=delta.dtype)
    dA_p = torch.empty((Bsz, nC, K, N, D), device=dev, dtype=torch.float32)
    dD_p = torch.empty((Bsz, nC, K, D), device=dev, dtype=torch.float32) if Dskip is not None else None
    dbias_p = torch.empty((Bsz, nC, K, D), device=dev, dtype=torch.float32) if delta_bias is not None else None
    du = torch.empty((Bsz, L, D), device=dev, dtype=u.dtype)
    dz = torch.empty((Bsz, L, D), device=dev, dtype=z.dtype) if z is not None else None
    du_acc = torch.empty((Bsz, L, D), device=dev, dtype=torch.float32) if K > 1 else du
    y_acc = torch.empty((Bsz, L, D), device=dev, dtype=torch.float32) if (K > 1 and z is not None) else du_acc
    dummy = u
    for k, (dirn, (positions, rev)) in enumerate(zip(directions, geometry)):
        final = k == K - 1
        if fused_scratch:
            extra = {}
            if true_scr:
                extra = dict(cst=carries, Dskip=Dskip if Dskip is not None else dummy, y_acc=y_acc,
                             dz_out=dz if dz is not None else dummy, dC=dC, ACC_IN=int(k > 0), FINAL=int(final),
                             TRUE_SCR=True, DC_SUM=f["dc_sum"], HAS_D=Dskip is not None, ATOMIC_BC=atomic,
                             PARTIAL_BC=partial, SHFL=f["shfl"])
            _seq_summary_launch(ks, k, dirn, u, delta, A, Bm, Cm, delta_bias, z, dout, st, dts, grid,
                                delta_softplus, cfg, nC, 2, st_i64 or f["i64"], f["vec_bc"], f["prefetch"], scr,
                                cdt if cdt is not None else dummy, **extra)
            _carry_launch(st, dts, A, directions, cfg, k_sel=k, part0=1 if true_scr else 0)
        launcher(ks["bwd"])[launch_grid](
            u, delta, A, Bm, Cm, Dskip if Dskip is not None else dummy,
            delta_bias if delta_bias is not None else dummy, z if z is not None else dummy, dout, st, scr,
            cdt if cdt is not None else dummy,
            du_acc, y_acc, du, dz if dz is not None else dummy, ddelta, dB, dC, dA_p,
            dD_p if dD_p is not None else dA_p, dbias_p if dbias_p is not None else dA_p,
            L, D, K, nC, *positions, k, REV=rev, HAS_D=Dskip is not None,
            HAS_BIAS=delta_bias is not None, HAS_Z=z is not None, SOFTPLUS=bool(delta_softplus),
            HAS_CARRY=has_carry, ACC_IN=int(k > 0), FINAL=int(final), **opts)
    dA, dD, dbias, dB, dC = _finish_grads(dA_p, dD_p, dbias_p, dB, dC, nDB, partial, Bm, Cm, A_dtype, Dskip_dtype,
                                          bias_dtype)
    return du, ddelta, dA, dB, dC, dD, dbias, dz
