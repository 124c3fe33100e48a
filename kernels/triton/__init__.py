"""Triton backend of the fused multi-directional selective scan (Mamba-1 semantics).

Same contract as :mod:`nnunet_mamba.kernels.reference` (channels-last, canonical row-major grid order; see that
module's docstring). One operator serves all K directions: every kernel reads u / delta / B / C / dout in the
canonical layout and maps scan steps to canonical positions by index arithmetic (``directions.scan_geometry``); no
permuted copies are made. :func:`~.plan.plan` picks the kernel family and its configuration; :mod:`.chunked` and
:mod:`.sequential` launch them. State is accumulated in fp32 for every input dtype.

Determinism: the sum over directions is accumulated in launch order. dB / dC of a problem with more than one channel
block are combined with relaxed fp32 atomics (differences at fp32 rounding level from run to run) unless the
``deterministic`` option (:mod:`..options`) is on, which stores one fp32 slab per channel block and sums them with
torch instead.
"""
from __future__ import annotations

import torch

from .. import options
from . import chunked, sequential
from .ahead import compile_ahead, compiling_step
from .launch import memo, numbered
from .plan import carries_shape, plan as make_plan

__all__ = ["multidir_scan_fwd", "multidir_scan_bwd", "carries_shape"]


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


def _plan(u, A, Bm, Cm, K, bwd):
    Bsz, L, D = u.shape
    aligned = Bm.data_ptr() % 16 == 0 and Cm.data_ptr() % 16 == 0
    return make_plan(Bsz, L, D, K, A.shape[-1], Bm.dtype if Bm.dtype == Cm.dtype else None, aligned,
                options.deterministic(), bwd)


def _c(x):
    return None if x is None else x.contiguous()


def _prep_inputs(u, delta, A, Bm, Cm, Dskip, delta_bias, z):
    u, delta, Bm, Cm, z = _c(u), _c(delta), _c(Bm), _c(Cm), _c(z)
    A = A.contiguous().float()
    Dskip = None if Dskip is None else Dskip.contiguous().float()
    delta_bias = None if delta_bias is None else delta_bias.contiguous().float()
    return u, delta, A, Bm, Cm, Dskip, delta_bias, z


def multidir_scan_fwd(u, delta, A, Bm, Cm, Dskip, delta_bias, z, grid, directions, delta_softplus,
                      return_carries=False):
    """Forward of the fused multi-directional scan. With ``return_carries`` it returns ``(out, carries)`` for
    :func:`multidir_scan_bwd` (``carries`` None where :func:`carries_shape` says none)."""
    args = _prep_inputs(u, delta, A, Bm, Cm, Dskip, delta_bias, z)
    u, delta, A, Bm, Cm = args[:5]
    with numbered(args, "fwd", tuple(grid), tuple(directions), bool(delta_softplus)) as call:
        memo("check", _check, u, delta, A, Bm, Cm, grid, directions)
        p = memo("plan", _plan, u, A, Bm, Cm, len(directions), False)

        def run():
            if p.sequential:
                return sequential.forward(*args, grid, directions, delta_softplus, p)
            return chunked.forward(*args, grid, directions, delta_softplus, p), None
        if compiling_step():  # compile-only launches: the backward's kernels too, and zeros for the network
            out, carries = run()
            multidir_scan_bwd(torch.empty_like(out), *args, grid, directions, delta_softplus, carries)
            out.zero_()
        else:
            if call.first:
                compile_ahead(run)
            out, carries = run()
    return (out, carries) if return_carries else out


def multidir_scan_bwd(dout, u, delta, A, Bm, Cm, Dskip, delta_bias, z, grid, directions, delta_softplus,
                      carries=None):
    """Gradients (du, ddelta, dA, dB, dC, dD, ddelta_bias, dz); recomputes the forward's states, from its
    ``carries`` where given."""
    dtypes = (A.dtype, None if Dskip is None else Dskip.dtype, None if delta_bias is None else delta_bias.dtype)
    args = _prep_inputs(u, delta, A, Bm, Cm, Dskip, delta_bias, z)
    u, delta, A, Bm, Cm = args[:5]
    dout = dout.contiguous()
    with numbered((dout, *args, carries), "bwd", tuple(grid), tuple(directions), bool(delta_softplus),
                  dtypes) as call:
        memo("check", _check, u, delta, A, Bm, Cm, grid, directions)
        p = memo("plan", _plan, u, A, Bm, Cm, len(directions), True)

        def run():
            if p.sequential:
                return sequential.backward(dout, *args, grid, directions, delta_softplus, p, dtypes, carries)
            return chunked.backward(dout, *args, grid, directions, delta_softplus, p, dtypes)
        if call.first and not compiling_step():
            compile_ahead(run)
        return run()
