"""Comparison backend: the *naive* multi-direction path on mamba-ssm's CUDA ``selective_scan_fn``.

For every direction the canonical channels-last inputs are materialised in that direction's
scan order as (B, D, L) / (B, N, L) copies (permute of the grid axes + flip), one
``selective_scan_fn`` call runs per direction, each output is permuted back to the canonical
order and the K outputs are summed (then gated by ``silu(z)``). This is what a model without a
fused operator does (SegMamba / VMamba-style), and is the baseline the fused Triton kernel is
measured against. Same two-function contract as :mod:`nnunet_mamba.kernels.reference`; the
backward runs autograd through ``selective_scan_fn`` (recomputing the forward).

mamba-ssm is optional: importing this module never fails, the first call raises a clear
``ImportError`` if ``mamba_ssm``'s CUDA extension cannot be loaded.
"""
from __future__ import annotations

import importlib.util
import sys
import types
from math import prod
from typing import Sequence

import torch
import torch.nn.functional as F

from .directions import ScanDirection

_SSF = None


def _load_selective_scan_fn():
    """``selective_scan_fn``; falls back to loading the interface module without mamba_ssm/__init__."""
    global _SSF
    if _SSF is not None:
        return _SSF
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn  # noqa: WPS433
        _SSF = selective_scan_fn
        return _SSF
    except Exception as first:  # package __init__ pulls transformers, tilelang, ...; retry bare
        err = first
    try:
        import selective_scan_cuda  # noqa: F401  (the CUDA extension itself)
        spec = importlib.util.find_spec("mamba_ssm")
        if spec is None or not spec.submodule_search_locations:
            raise ImportError("mamba_ssm is not installed")
        root = list(spec.submodule_search_locations)[0]
        for name, path in (("mamba_ssm", root), ("mamba_ssm.ops", root + "/ops"),
                           ("mamba_ssm.utils", root + "/utils")):
            if name not in sys.modules:
                mod = types.ModuleType(name)
                mod.__path__ = [path]
                sys.modules[name] = mod
        mspec = importlib.util.spec_from_file_location("mamba_ssm.ops.selective_scan_interface",
                                                       root + "/ops/selective_scan_interface.py")
        mod = importlib.util.module_from_spec(mspec)
        sys.modules["mamba_ssm.ops.selective_scan_interface"] = mod
        mspec.loader.exec_module(mod)
        _SSF = mod.selective_scan_fn
        return _SSF
    except Exception as second:
        raise ImportError(
            "the mamba-ssm comparison backend needs mamba_ssm with its CUDA extension "
            f"(selective_scan_cuda): {type(err).__name__}: {err}; bare load: {type(second).__name__}: {second}"
        ) from second


def available() -> bool:
    try:
        _load_selective_scan_fn()
        return True
    except ImportError:
        return False


def _to_scan(x: torch.Tensor, grid: Sequence[int], d: ScanDirection) -> torch.Tensor:
    """Canonical (B, L, C) -> (B, C, L) in the direction's scan order (a materialised copy)."""
    B, L, C = x.shape
    nd = len(grid)
    v = x.reshape(B, *grid, C).permute(0, nd + 1, *[1 + a for a in d.order])  # (B, C, axes in scan order)
    v = v.reshape(B, C, L)
    if d.reverse:
        v = v.flip(-1)
    return v.contiguous()


def _from_scan(y: torch.Tensor, grid: Sequence[int], d: ScanDirection) -> torch.Tensor:
    """(B, C, L) in scan order -> canonical (B, L, C) (a materialised copy)."""
    B, C, L = y.shape
    nd = len(grid)
    if d.reverse:
        y = y.flip(-1)
    sizes = [grid[a] for a in d.order]
    v = y.reshape(B, C, *sizes)
    inv = [0] * nd
    for i, a in enumerate(d.order):
        inv[a] = i
    v = v.permute(0, *[2 + inv[a] for a in range(nd)], 1)  # (B, *grid, C)
    return v.reshape(B, L, C)


def naive_forward(u, delta, A, Bm, Cm, Dskip, delta_bias, z, grid, directions, delta_softplus):
    """Differentiable naive forward (autograd through selective_scan_fn and the copies)."""
    ssf = _load_selective_scan_fn()
    grid = tuple(int(g) for g in grid)
    if prod(grid) != u.shape[1]:
        raise ValueError("grid does not match L")
    out = None
    for k, d in enumerate(directions):
        y = ssf(_to_scan(u, grid, d), _to_scan(delta[:, :, k], grid, d), A[k].float(),
                _to_scan(Bm[:, :, k], grid, d), _to_scan(Cm[:, :, k], grid, d),
                D=None if Dskip is None else Dskip[k].float(), z=None,
                delta_bias=None if delta_bias is None else delta_bias[k].float(),
                delta_softplus=bool(delta_softplus))
        y = _from_scan(y, grid, d)
        out = y if out is None else out + y
    if z is not None:
        out = out * F.silu(z)
    return out.to(u.dtype)


def multidir_scan_fwd(u, delta, A, Bm, Cm, Dskip, delta_bias, z, grid, directions, delta_softplus):
    with torch.no_grad():
        return naive_forward(u, delta, A, Bm, Cm, Dskip, delta_bias, z, grid, directions, delta_softplus)


def multidir_scan_bwd(dout, u, delta, A, Bm, Cm, Dskip, delta_bias, z, grid, directions, delta_softplus):
    leaves = [None if x is None else x.detach().requires_grad_(True)
              for x in (u, delta, A, Bm, Cm, Dskip, delta_bias, z)]
    with torch.enable_grad():
        out = naive_forward(*leaves, grid, directions, delta_softplus)
        wanted = [x for x in leaves if x is not None]
        grads = torch.autograd.grad(out, wanted, dout, allow_unused=True)
    it = iter(grads)
    res = []
    for x in leaves:
        if x is None:
            res.append(None)
        else:
            g = next(it)
            res.append(torch.zeros_like(x) if g is None else g)
    du, ddelta, dA, dB, dC, dD, dbias, dz = res
    f32 = lambda t: None if t is None else t.float()  # noqa: E731
    return du, ddelta, f32(dA), dB, dC, f32(dD), f32(dbias), dz
