"""Vectorised PyTorch reference of the fused multi-directional selective scan.

Runs on any device (the CPU path of every Mamba layer, and the test oracle in
float64). No Python loop over the sequence length: the linear recurrence is
computed with a chunked two-level scan (a fixed loop over the ``chunk`` positions
inside all chunks at once, then the same scan over the chunk summaries).
Memory is bounded by processing the channel dimension in blocks.

Layout contract (shared with the Triton backend):

    u          (B, L, D)        input tokens, canonical row-major grid order
    delta      (B, L, K, D)     per-direction time steps (before bias/softplus)
    A          (K, D, N)        float32, negative real
    Bm, Cm     (B, L, K, N)     per-direction input/output projections
    Dskip      (K, D) | None    float32 skip weight
    delta_bias (K, D) | None    float32
    z          (B, L, D) | None gate: out = (sum_k y_k) * silu(z)
    out        (B, L, D)        dtype of u

``y_k`` is the Mamba-1 selective scan of direction ``k`` (state accumulated in
float32, or float64 for float64 inputs), mapped back to the canonical order.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from .directions import ScanDirection, scan_order_index

_CHUNK = 16
_MAX_BLOCK_ELEMS = 1 << 21  # elements of one (B, K, L, D_block, N) intermediate


@torch.no_grad()
def linear_scan(a: torch.Tensor, b: torch.Tensor, reverse: bool = False, h0: Optional[torch.Tensor] = None,
                chunk: int = _CHUNK) -> torch.Tensor:
    """Inclusive linear recurrence along dim 1, without copies of the inputs.

    forward: ``h_t = a_t * h_{t-1} + b_t``; reverse: ``h_t = a_t * h_{t+1} + b_t``; the state
    before the first step is ``h0`` (default 0). Chunks of ``chunk`` steps are scanned all at
    once, then the chunk carries (recursively) and a fix-up pass; a tail shorter than one
    chunk runs step by step.
    """
    M, L = a.shape[:2]
    h = torch.empty_like(b)
    nc = L // chunk
    main = slice(L - nc * chunk, L) if reverse else slice(0, nc * chunk)
    tail = range(L - nc * chunk - 1, -1, -1) if reverse else range(nc * chunk, L)
    state = h0
    if nc >= 2:
        shape = (M, nc, chunk, *a.shape[2:])
        a4, b4, h4 = a[:, main].reshape(shape), b[:, main].reshape(shape), h[:, main].view(shape)
        p4 = torch.empty_like(a4)
        steps = range(chunk - 1, -1, -1) if reverse else range(chunk)
        prev = None
        for t in steps:
            if prev is None:
                h4[:, :, t] = b4[:, :, t]
                p4[:, :, t] = a4[:, :, t]
            else:
                torch.addcmul(b4[:, :, t], a4[:, :, t], h4[:, :, prev], out=h4[:, :, t])
                torch.mul(a4[:, :, t], p4[:, :, prev], out=p4[:, :, t])
            prev = t
        edge = 0 if reverse else chunk - 1  # last step of each chunk in scan order
        carry = linear_scan(p4[:, :, edge], h4[:, :, edge], reverse, h0, chunk)  # state after each chunk
        inner = slice(0, nc - 1) if reverse else slice(1, nc)
        outer = slice(1, nc) if reverse else slice(0, nc - 1)
        h4[:, inner] += p4[:, inner] * carry[:, outer].unsqueeze(2)
        if h0 is not None:
            first = nc - 1 if reverse else 0
            h4[:, first] += p4[:, first] * h0.unsqueeze(1)
        state = carry[:, 0] if reverse else carry[:, -1]
        del p4
    else:
        tail = range(L - 1, -1, -1) if reverse else range(L)
    for t in tail:
        if state is None:
            h[:, t] = b[:, t]
        else:
            torch.addcmul(b[:, t], a[:, t], state, out=h[:, t])
        state = h[:, t]
    return h


def _orders(grid: Sequence[int], directions: Sequence[ScanDirection], device) -> tuple[torch.Tensor, torch.Tensor]:
    """(K, L) scan-order positions and their inverse permutations."""
    idx = torch.stack([scan_order_index(grid, d, device) for d in directions])
    return idx, torch.argsort(idx, dim=1)


def _gather_steps(x: torch.Tensor, idx: torch.Tensor, per_direction: bool) -> torch.Tensor:
    """Canonical (B, L, [K,] C) -> scan order (B, K, L, C)."""
    B = x.shape[0]
    K, L = idx.shape
    if per_direction:  # x: (B, L, K, C)
        x = x.permute(0, 2, 1, 3)  # (B, K, L, C)
        return torch.gather(x, 2, idx.view(1, K, L, 1).expand(B, K, L, x.shape[-1]))
    return x[:, idx]  # (B, K, L, C)


def _scatter_steps(x: torch.Tensor, inv: torch.Tensor) -> torch.Tensor:
    """Scan order (B, K, L, C) -> canonical (B, K, L, C)."""
    B, K, L, C = x.shape
    return torch.gather(x, 2, inv.view(1, K, L, 1).expand(B, K, L, C))


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _block_size(B: int, K: int, L: int, D: int, N: int) -> int:
    return max(1, min(D, _MAX_BLOCK_ELEMS // max(1, B * K * L * N)))


def _prep(u, delta, Bm, Cm, delta_bias, grid, directions, delta_softplus):
    cd = _compute_dtype(u.dtype)
    idx, inv = _orders(grid, directions, u.device)
    U = _gather_steps(u.to(cd), idx, False)  # (B, K, L, D)
    dt_raw = _gather_steps(delta.to(cd), idx, True)  # (B, K, L, D)
    if delta_bias is not None:
        dt_raw = dt_raw + delta_bias.to(cd)[None, :, None, :]
    dt = F.softplus(dt_raw) if delta_softplus else dt_raw
    Bk = _gather_steps(Bm.to(cd), idx, True)  # (B, K, L, N)
    Ck = _gather_steps(Cm.to(cd), idx, True)
    return cd, idx, inv, U, dt_raw, dt, Bk, Ck


def _states(U, dt, A, Bk, sl):
    """Scan states h (B, K, L, d, N) and decays exp(dt*A) for a channel block ``sl``."""
    B, K, L, _ = U.shape
    dt_b = dt[..., sl]
    dA = torch.exp(dt_b.unsqueeze(-1) * A[:, sl].to(dt.dtype)[None, :, None])
    dBu = (dt_b * U[..., sl]).unsqueeze(-1) * Bk.unsqueeze(3)
    d, N = dA.shape[-2:]
    h = linear_scan(dA.view(B * K, L, d, N), dBu.view(B * K, L, d, N)).view(B, K, L, d, N)
    return h, dA


def _contract_n(x, Ck):
    """sum_n x[b,k,l,d,n] * Ck[b,k,l,n] -> (B, K, L, d), as a batched matmul."""
    return torch.matmul(x, Ck.unsqueeze(-1)).squeeze(-1)


@torch.no_grad()
def multidir_scan_fwd(u, delta, A, Bm, Cm, Dskip, delta_bias, z, grid, directions, delta_softplus):
    """Forward of the fused multi-directional scan (see module docstring)."""
    out = _forward_sum(u, delta, A, Bm, Cm, Dskip, delta_bias, grid, directions, delta_softplus)
    if z is not None:
        out = out * F.silu(z.to(out.dtype))
    return out.to(u.dtype)


def _forward_sum(u, delta, A, Bm, Cm, Dskip, delta_bias, grid, directions, delta_softplus):
    cd, idx, inv, U, _, dt, Bk, Ck = _prep(u, delta, Bm, Cm, delta_bias, grid, directions, delta_softplus)
    B, K, L, D = U.shape
    y = torch.empty_like(U)
    step = _block_size(B, K, L, D, A.shape[-1])
    for d0 in range(0, D, step):
        sl = slice(d0, d0 + step)
        y[..., sl] = _contract_n(_states(U, dt, A, Bk, sl)[0], Ck)
    if Dskip is not None:
        y += Dskip.to(cd)[None, :, None, :] * U
    return _scatter_steps(y, inv).sum(1)  # (B, L, D)


@torch.no_grad()
def multidir_scan_bwd(dout, u, delta, A, Bm, Cm, Dskip, delta_bias, z, grid, directions, delta_softplus):
    """Gradients (du, ddelta, dA, dB, dC, dD, ddelta_bias, dz); recomputes the forward."""
    cd, idx, inv, U, dt_raw, dt, Bk, Ck = _prep(u, delta, Bm, Cm, delta_bias, grid, directions, delta_softplus)
    B, K, L, D = U.shape
    N = A.shape[-1]
    dout = dout.to(cd)
    if z is not None:
        zc = z.to(cd)
        sig = torch.sigmoid(zc)
        dY = (dout * zc * sig)[:, idx]  # d(sum_k y_k) in scan order
        y = torch.empty_like(U)  # recomputed below, for dz
    else:
        dY = dout[:, idx]
    dU = torch.empty_like(U)
    ddt = torch.empty_like(U)
    dA_param = torch.zeros((K, D, N), dtype=cd, device=u.device)
    dBk = torch.zeros_like(Bk)
    dCk = torch.zeros_like(Ck)
    step = _block_size(B, K, L, D, N)
    for d0 in range(0, D, step):
        sl = slice(d0, d0 + step)
        h, dA = _states(U, dt, A, Bk, sl)
        dY_b, U_b, dt_b = dY[..., sl], U[..., sl], dt[..., sl]
        if z is not None:
            y[..., sl] = _contract_n(h, Ck)
        dCk += torch.einsum("bkld,bkldn->bkln", dY_b, h)
        d = dA.shape[3]
        dh = (dY_b.unsqueeze(-1) * Ck.unsqueeze(3)).view(B * K, L, d, N)
        # g_t = dh_t + exp(dt A)_{t+1} g_{t+1}: a reverse scan over views, no flipped copies
        g = torch.empty_like(dh)
        g[:, -1] = dh[:, -1]
        if L > 1:
            g[:, :-1] = linear_scan(dA.view(B * K, L, d, N)[:, 1:], dh[:, :-1], reverse=True, h0=dh[:, -1])
        del dh
        g = g.view(B, K, L, d, N)
        # gradient w.r.t. the exp argument dt*A: g_t * h_{t-1} * exp(dt A)_t (zero at t = 0)
        d_dA = g[:, :, 1:] * h[:, :, :-1]
        d_dA *= dA[:, :, 1:]
        del h, dA
        gB = _contract_n(g, Bk)  # sum_n g * B
        ddt[..., sl] = gB * U_b
        ddt[:, :, 1:, sl] += torch.einsum("bkldn,kdn->bkld", d_dA, A[:, sl].to(cd))
        dA_param[:, sl] += torch.einsum("bkldn,bkld->kdn", d_dA, dt_b[:, :, 1:])
        dBk += torch.einsum("bkldn,bkld->bkln", g, dt_b * U_b)
        dU[..., sl] = gB * dt_b
    dz = None
    if z is not None:
        if Dskip is not None:
            y += Dskip.to(cd)[None, :, None, :] * U
        y_sum = _scatter_steps(y, inv).sum(1)
        dz = (dout * y_sum * sig * (1 + zc * (1 - sig))).to(z.dtype)
    dD = None
    if Dskip is not None:
        dU += Dskip.to(cd)[None, :, None, :] * dY
        dD = (dY * U).sum((0, 2)).to(Dskip.dtype)
    dt_grad = ddt * torch.sigmoid(dt_raw) if delta_softplus else ddt
    dbias = dt_grad.sum((0, 2)).to(delta_bias.dtype) if delta_bias is not None else None
    du = _scatter_steps(dU, inv).sum(1).to(u.dtype)
    ddelta = _scatter_steps(dt_grad, inv).permute(0, 2, 1, 3).to(delta.dtype)
    dB = _scatter_steps(dBk, inv).permute(0, 2, 1, 3).to(Bm.dtype)
    dC = _scatter_steps(dCk, inv).permute(0, 2, 1, 3).to(Cm.dtype)
    return du, ddelta, dA_param.to(A.dtype), dB, dC, dD, dbias, dz
