"""Selective-scan operators (``nnunet_mamba.kernels``).

* :func:`multidir_selective_scan`: K directions over a 1D/2D/3D grid in one operator,
  channels-last ``(B, L, D)`` tokens, per-direction parameters, outputs summed.
* :func:`selective_scan`: Mamba-1 single-direction scan in mamba-ssm's layout.

Backends: ``triton`` (CUDA), ``reference`` (vectorised PyTorch, any device),
``mamba_ssm`` (optional, comparison only); see :mod:`.dispatch`. Options: :func:`scan_options` and the three
environment variables of :mod:`.options`.
"""
from __future__ import annotations

from math import prod
from typing import Optional, Sequence

import torch
from torch import Tensor

from .directions import ScanDirection, default_directions, encode_directions, scan_order_index
from .dispatch import BACKENDS, ENV_VAR, explain_backend, resolve_backend
from .options import scan_options

__all__ = ["multidir_selective_scan", "selective_scan", "ScanDirection", "default_directions", "scan_order_index",
           "resolve_backend", "explain_backend", "scan_options", "compile_training_step", "BACKENDS", "ENV_VAR"]


def compile_training_step(forward) -> Optional[int]:
    """Compile the Triton kernels of every scan call of a training step at once, on a thread pool: ``forward()``
    runs one forward of the network (at the training batch shape, under the training autocast; autograd not
    needed), in which the scan calls compile their forward's and backward's kernels and return zeros. Returns the
    number of kernels compiled in this process for it, or None where nothing runs ahead (no Triton, the
    interpreter, a Triton without asynchronous compiles)."""
    from .dispatch import triton_available
    if not triton_available():
        return None
    from .triton.ahead import compile_training_step as compile_step
    return compile_step(forward)


def _check(name: str, t: Optional[Tensor], shape: tuple) -> None:
    if t is not None and tuple(t.shape) != tuple(shape):
        raise ValueError(f"multidir_selective_scan: {name} has shape {tuple(t.shape)}, expected {tuple(shape)}")


def multidir_selective_scan(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor] = None,
                            z: Optional[Tensor] = None, delta_bias: Optional[Tensor] = None, *,
                            grid: Sequence[int], directions: Sequence[ScanDirection],
                            delta_softplus: bool = True, backend: Optional[str] = None) -> Tensor:
    """Fused multi-directional selective scan.

    Shapes: ``u, z`` (B, L, D); ``delta`` (B, L, K, D); ``A`` (K, D, N); ``B, C`` (B, L, K, N);
    ``D, delta_bias`` (K, D). ``grid`` is the spatial shape (prod == L, row-major), ``directions``
    the K scan orders. Returns (B, L, D) in ``u``'s dtype: ``sum_k y_k`` (times ``silu(z)``).
    """
    Bsz, L, Dm = u.shape
    K, N = len(directions), A.shape[-1]
    grid = [int(g) for g in grid]
    if prod(grid) != L:
        raise ValueError(f"multidir_selective_scan: grid {grid} has {prod(grid)} voxels, but u has L={L}")
    _check("delta", delta, (Bsz, L, K, Dm))
    _check("A", A, (K, Dm, N))
    _check("B", B, (Bsz, L, K, N))
    _check("C", C, (Bsz, L, K, N))
    _check("D", D, (K, Dm))
    _check("delta_bias", delta_bias, (K, Dm))
    _check("z", z, (Bsz, L, Dm))
    dt = u.dtype
    pdt = torch.float64 if dt == torch.float64 else torch.float32  # parameters stay >= float32
    name = resolve_backend(u.device, backend)
    from .ops import multidir_scan_op
    return multidir_scan_op(u.contiguous(), delta.to(dt).contiguous(), A.to(pdt).contiguous(),
                            B.to(dt).contiguous(), C.to(dt).contiguous(),
                            None if D is None else D.to(pdt).contiguous(),
                            None if delta_bias is None else delta_bias.to(pdt).contiguous(),
                            None if z is None else z.to(dt).contiguous(), grid, encode_directions(directions),
                            bool(delta_softplus), name)[0]


def selective_scan(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor] = None,
                   z: Optional[Tensor] = None, delta_bias: Optional[Tensor] = None, delta_softplus: bool = False,
                   backend: Optional[str] = None) -> Tensor:
    """Mamba-1 selective scan with mamba-ssm's ``selective_scan_fn`` layout and semantics.

    ``u, delta, z`` (B, D, L); ``A`` (D, N); ``B, C`` (B, N, L); ``D, delta_bias`` (D,). Returns (B, D, L).
    """
    L = u.shape[-1]
    out = multidir_selective_scan(
        u.transpose(1, 2), delta.transpose(1, 2).unsqueeze(2), A.unsqueeze(0), B.transpose(1, 2).unsqueeze(2),
        C.transpose(1, 2).unsqueeze(2), None if D is None else D.unsqueeze(0),
        None if z is None else z.transpose(1, 2), None if delta_bias is None else delta_bias.unsqueeze(0),
        grid=(L,), directions=(ScanDirection((0,)),), delta_softplus=delta_softplus, backend=backend)
    return out.transpose(1, 2)
