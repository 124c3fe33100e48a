"""The fused multi-directional scan as PyTorch custom ops (``torch.library``).

Registering forward and backward as opaque custom ops with fake (meta) kernels lets
``torch.compile`` (on by default in nnU-Net on CUDA) trace our layers without graph
breaks, whichever backend runs underneath.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import Tensor

from .dispatch import backend_module


def _opt(t: Optional[Tensor]) -> Optional[Tensor]:
    return t if t is not None and t.numel() > 0 else None


def _carries_shape(impl, u: Tensor, A: Tensor, directions: List[int]) -> tuple:
    """Shape of the state the backend's forward hands its backward (``(0,)``: none); ``directions`` encoded."""
    from .directions import decode_directions
    shape_of = getattr(impl, "carries_shape", None)
    if shape_of is None:
        return (0,)
    Bsz, L, D = u.shape
    return shape_of(Bsz, L, D, len(decode_directions(directions)), A.shape[-1])


@torch.library.custom_op("nnunet_mamba::multidir_scan", mutates_args=())
def multidir_scan_op(u: Tensor, delta: Tensor, A: Tensor, Bm: Tensor, Cm: Tensor, Dskip: Optional[Tensor],
                     delta_bias: Optional[Tensor], z: Optional[Tensor], grid: List[int], directions: List[int],
                     delta_softplus: bool, backend: str) -> Tuple[Tensor, Tensor]:
    """Returns (out, carries): carries are what the backend's backward may start from (empty: none)."""
    from .directions import decode_directions
    impl = backend_module(backend)
    args = (u, delta, A, Bm, Cm, Dskip, delta_bias, z, tuple(grid), decode_directions(directions), delta_softplus)
    if hasattr(impl, "carries_shape"):
        out, carries = impl.multidir_scan_fwd(*args, return_carries=True)
    else:
        out, carries = impl.multidir_scan_fwd(*args), None
    return out, carries if carries is not None else u.new_empty(0, dtype=torch.float32)


@multidir_scan_op.register_fake
def _(u, delta, A, Bm, Cm, Dskip, delta_bias, z, grid, directions, delta_softplus, backend):
    shape = _carries_shape(backend_module(backend), u, A, directions)
    return (torch.empty_like(u, memory_format=torch.contiguous_format),
            u.new_empty(shape, dtype=torch.float32))


@torch.library.custom_op("nnunet_mamba::multidir_scan_bwd", mutates_args=())
def multidir_scan_bwd_op(dout: Tensor, u: Tensor, delta: Tensor, A: Tensor, Bm: Tensor, Cm: Tensor,
                         Dskip: Optional[Tensor], delta_bias: Optional[Tensor], z: Optional[Tensor],
                         grid: List[int], directions: List[int], delta_softplus: bool,
                         backend: str, carries: Optional[Tensor] = None) -> List[Tensor]:
    from .directions import decode_directions
    impl = backend_module(backend)
    extra = {"carries": carries} if carries is not None and carries.numel() > 0 else {}
    grads = impl.multidir_scan_bwd(dout, u, delta, A, Bm, Cm, Dskip, delta_bias, z, tuple(grid),
                                   decode_directions(directions), delta_softplus, **extra)
    # custom ops cannot return None: absent gradients travel as empty tensors
    return [g.contiguous() if g is not None else u.new_empty(0) for g in grads]


@multidir_scan_bwd_op.register_fake
def _(dout, u, delta, A, Bm, Cm, Dskip, delta_bias, z, grid, directions, delta_softplus, backend, carries=None):
    def like(t, dtype=None):
        return u.new_empty(0) if t is None else torch.empty(t.shape, dtype=dtype or t.dtype, device=t.device)
    return [like(u), like(delta), like(A), like(Bm), like(Cm), like(Dskip), like(delta_bias), like(z)]


def _setup_context(ctx, inputs, output):
    u, delta, A, Bm, Cm, Dskip, delta_bias, z, grid, directions, delta_softplus, backend = inputs
    ctx.mark_non_differentiable(output[1])
    ctx.save_for_backward(u, delta, A, Bm, Cm, Dskip, delta_bias, z, output[1])
    ctx.meta = (grid, directions, delta_softplus, backend)


def _backward(ctx, dout, _dcarries):
    u, delta, A, Bm, Cm, Dskip, delta_bias, z, carries = ctx.saved_tensors
    grid, directions, delta_softplus, backend = ctx.meta
    grads = multidir_scan_bwd_op(dout.contiguous(), u, delta, A, Bm, Cm, Dskip, delta_bias, z, grid, directions,
                                 delta_softplus, backend, carries)
    grads = [_opt(g) if ref is not None else None
             for g, ref in zip(grads, (u, delta, A, Bm, Cm, Dskip, delta_bias, z))]
    return (*grads, None, None, None, None)


multidir_scan_op.register_autograd(_backward, setup_context=_setup_context)
