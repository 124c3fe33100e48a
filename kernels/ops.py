"""The fused multi-directional scan as PyTorch custom ops (``torch.library``).

Registering forward and backward as opaque custom ops with fake (meta) kernels lets
``torch.compile`` (on by default in nnU-Net on CUDA) trace our layers without graph
breaks, whichever backend runs underneath.
"""
from __future__ import annotations

from typing import List, Optional

import torch
from torch import Tensor

from .dispatch import backend_module


def _opt(t: Optional[Tensor]) -> Optional[Tensor]:
    return t if t is not None and t.numel() > 0 else None


@torch.library.custom_op("nnunet_mamba::multidir_scan", mutates_args=())
def multidir_scan_op(u: Tensor, delta: Tensor, A: Tensor, Bm: Tensor, Cm: Tensor, Dskip: Optional[Tensor],
                     delta_bias: Optional[Tensor], z: Optional[Tensor], grid: List[int], directions: List[int],
                     delta_softplus: bool, backend: str) -> Tensor:
    from .directions import decode_directions
    impl = backend_module(backend)
    return impl.multidir_scan_fwd(u, delta, A, Bm, Cm, Dskip, delta_bias, z, tuple(grid),
                                  decode_directions(directions), delta_softplus)


@multidir_scan_op.register_fake
def _(u, delta, A, Bm, Cm, Dskip, delta_bias, z, grid, directions, delta_softplus, backend):
    return torch.empty_like(u, memory_format=torch.contiguous_format)


@torch.library.custom_op("nnunet_mamba::multidir_scan_bwd", mutates_args=())
def multidir_scan_bwd_op(dout: Tensor, u: Tensor, delta: Tensor, A: Tensor, Bm: Tensor, Cm: Tensor,
                         Dskip: Optional[Tensor], delta_bias: Optional[Tensor], z: Optional[Tensor],
                         grid: List[int], directions: List[int], delta_softplus: bool,
                         backend: str) -> List[Tensor]:
    from .directions import decode_directions
    impl = backend_module(backend)
    grads = impl.multidir_scan_bwd(dout, u, delta, A, Bm, Cm, Dskip, delta_bias, z, tuple(grid),
                                   decode_directions(directions), delta_softplus)
    # custom ops cannot return None: absent gradients travel as empty tensors
    return [g.contiguous() if g is not None else u.new_empty(0) for g in grads]


@multidir_scan_bwd_op.register_fake
def _(dout, u, delta, A, Bm, Cm, Dskip, delta_bias, z, grid, directions, delta_softplus, backend):
    def like(t, dtype=None):
        return u.new_empty(0) if t is None else torch.empty(t.shape, dtype=dtype or t.dtype, device=t.device)
    return [like(u), like(delta), like(A), like(Bm), like(Cm), like(Dskip), like(delta_bias), like(z)]


def _setup_context(ctx, inputs, output):
    u, delta, A, Bm, Cm, Dskip, delta_bias, z, grid, directions, delta_softplus, backend = inputs
    ctx.save_for_backward(u, delta, A, Bm, Cm, Dskip, delta_bias, z)
    ctx.meta = (grid, directions, delta_softplus, backend)


def _backward(ctx, dout):
    u, delta, A, Bm, Cm, Dskip, delta_bias, z = ctx.saved_tensors
    grid, directions, delta_softplus, backend = ctx.meta
    grads = multidir_scan_bwd_op(dout.contiguous(), u, delta, A, Bm, Cm, Dskip, delta_bias, z, grid, directions,
                                 delta_softplus, backend)
    grads = [_opt(g) if ref is not None else None
             for g, ref in zip(grads, (u, delta, A, Bm, Cm, Dskip, delta_bias, z))]
    return (*grads, None, None, None, None)


multidir_scan_op.register_autograd(_backward, setup_context=_setup_context)
