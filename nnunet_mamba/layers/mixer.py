"""Mamba token mixers for N-D feature maps (building blocks of every network here).

:class:`MultiDirMamba` is a residual, multi-directional Mamba-1 mixer for 2D/3D maps: one
shared input projection and depthwise spatial conv, per-direction ``x_proj``/``dt_proj``/``A``/``D``
computed pointwise in the canonical layout, and the fused scan of :mod:`nnunet_mamba.kernels`.
Scan orders are derived from the actual feature-map shape at every call.
"""
from __future__ import annotations

import contextlib
import math
from typing import Optional, Sequence

import torch
from torch import nn
import torch.nn.functional as F

from nnunet_mamba.kernels import ScanDirection, default_directions, multidir_selective_scan

_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}


class SelectiveSSMParams(nn.Module):
    """Per-direction Mamba-1 SSM parameters (x_proj, dt_proj, A_log, D) with mamba-ssm's init."""

    def __init__(self, d_inner: int, n_directions: int, d_state: int = 16, dt_rank: Optional[int] = None,
                 dt_min: float = 1e-3, dt_max: float = 0.1, dt_init_floor: float = 1e-4):
        super().__init__()
        K = n_directions
        self.d_state = d_state
        self.dt_rank = dt_rank or max(1, math.ceil(d_inner / 16))
        self.x_proj_weight = nn.Parameter(torch.empty(K, self.dt_rank + 2 * d_state, d_inner))
        nn.init.uniform_(self.x_proj_weight, -d_inner ** -0.5, d_inner ** -0.5)
        self.dt_proj_weight = nn.Parameter(torch.empty(K, d_inner, self.dt_rank))
        nn.init.uniform_(self.dt_proj_weight, -self.dt_rank ** -0.5, self.dt_rank ** -0.5)
        dt = torch.exp(torch.rand(K, d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_init_floor)
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
        A = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(K, d_inner, 1)
        self.A_log = nn.Parameter(torch.log(A))
        self.D = nn.Parameter(torch.ones(K, d_inner))
        for p in (self.dt_bias, self.A_log, self.D):
            p._no_weight_decay = True

    def forward(self, x: torch.Tensor):
        """x: (B, L, d_inner) -> delta (B, L, K, d_inner), B and C (B, L, K, N)."""
        proj = torch.einsum("bld,kcd->blkc", x, self.x_proj_weight.to(x.dtype))
        dt, Bm, Cm = proj.split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = torch.einsum("blkr,kdr->blkd", dt, self.dt_proj_weight.to(x.dtype))
        return delta, Bm, Cm

    @property
    def A(self) -> torch.Tensor:
        return -torch.exp(self.A_log.float())


# Training-memory model, in the units of nnU-Net's planner estimate (``compute_conv_feature_map_size``:
# a few bytes each under bf16 AMP for ResEnc). Fitted to measured peak memory
# (benchmarks/results/train_h100_nocompile.json, NETWORK_NOTES.md): the layer keeps about
# expand * (6 + 0.7 K) such elements per token and model channel.
def _tokens(spatial_size) -> int:
    return int(math.prod(int(s) for s in spatial_size))


@torch.compiler.assume_constant_result
def cuda_has_bf16() -> bool:
    """``torch.cuda.is_bf16_supported()`` as a constant for torch.compile: traced inside the network it breaks the
    graph at every mixer under float16 autocast, which makes compiling slow."""
    return torch.cuda.is_bf16_supported()


def wider_than_fp16(device: torch.device) -> Optional[torch.dtype]:
    """Under float16 autocast: bfloat16 where the device has it, else float32; otherwise None.

    The scan's states accumulate in fp32, but fp16 *tensors* around it (the scan output, the gate, the
    projections) overflow at 65504; bf16 has fp32's exponent range. (This alone did not stop the Mamba
    restorer's NaNs under fp16 AMP, see ``MambaRestorationTrainer.amp_dtype``.)
    """
    if not torch.is_autocast_enabled(device.type) or torch.get_autocast_dtype(device.type) != torch.float16:
        return None
    if device.type == "cuda" and cuda_has_bf16():
        return torch.bfloat16
    return torch.bfloat16 if device.type == "cpu" else torch.float32


def fp16_safe_precision(x: torch.Tensor):
    """(context, input) for a Mamba layer: under float16 autocast, bf16 autocast (float32 without bf16) and the input
    in float32; otherwise the ambient precision and the input unchanged."""
    wider = wider_than_fp16(x.device)
    if wider is None:
        return contextlib.nullcontext(), x
    if wider == torch.float32:
        return torch.autocast(x.device.type, enabled=False), x.float()
    return torch.autocast(x.device.type, dtype=wider), x.float()


class MultiDirMamba(nn.Module):
    """Residual multi-directional Mamba mixer: ``x + out_proj(scan(conv(in_proj(norm(x)))))``.

    ``directions``: an int K (first K of :func:`default_directions`) or explicit ScanDirections.
    """

    def __init__(self, dim: int, ndim: int = 3, directions: int | Sequence[ScanDirection] = 2, d_state: int = 16,
                 expand: float = 2.0, d_conv: int = 3, residual: bool = True, backend: Optional[str] = None):
        super().__init__()
        self.ndim = ndim
        self.directions = (default_directions(ndim, directions) if isinstance(directions, int)
                           else tuple(directions))
        self.d_inner = int(expand * dim)
        self.residual = residual
        self.backend = backend
        self.norm = nn.LayerNorm(dim)
        self.in_proj = nn.Linear(dim, 2 * self.d_inner, bias=False)
        self.conv = _CONV[ndim](self.d_inner, self.d_inner, d_conv, padding=d_conv // 2, groups=self.d_inner)
        self.ssm = SelectiveSSMParams(self.d_inner, len(self.directions), d_state)
        self.out_proj = nn.Linear(self.d_inner, dim, bias=False)
        if residual:  # start as the identity, like nnU-Net's zero-initialised last norm in residual blocks
            nn.init.zeros_(self.out_proj.weight)

    def activation_elements(self, spatial_size) -> int:
        """Training memory per sample for a map of ``spatial_size``, in nnU-Net planner units."""
        expand = self.d_inner / self.norm.normalized_shape[0]
        return int(expand * (6 + 0.7 * len(self.directions)) * self.norm.normalized_shape[0] * _tokens(spatial_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        Bsz, C, *grid = x.shape
        if len(grid) != self.ndim:
            raise ValueError(f"MultiDirMamba built for {self.ndim}D maps got input of shape {tuple(x.shape)}")
        wider = wider_than_fp16(x.device)
        if wider is not None:  # fp16 autocast (nnU-Net's CUDA default): run the mixer with fp32's exponent range
            with torch.autocast(x.device.type, dtype=wider, enabled=wider != torch.float32):
                out = self._mix(x.to(wider) if wider == torch.float32 else x, Bsz, C, grid)
            return x + out.to(x.dtype) if self.residual else out.to(x.dtype)
        out = self._mix(x, Bsz, C, grid)
        return x + out.to(x.dtype) if self.residual else out.to(x.dtype)

    def _mix(self, x: torch.Tensor, Bsz: int, C: int, grid) -> torch.Tensor:
        tokens = x.flatten(2).transpose(1, 2)  # (B, L, C)
        xi, z = self.in_proj(self.norm(tokens)).chunk(2, dim=-1)
        xi = xi.transpose(1, 2).reshape(Bsz, self.d_inner, *grid)
        xi = F.silu(self.conv(xi)).flatten(2).transpose(1, 2)  # (B, L, d_inner)
        delta, Bm, Cm = self.ssm(xi)
        y = multidir_selective_scan(xi, delta, self.ssm.A, Bm, Cm, self.ssm.D, z, self.ssm.dt_bias, grid=grid,
                                    directions=self.directions, delta_softplus=True, backend=self.backend)
        return self.out_proj(y).transpose(1, 2).reshape(Bsz, C, *grid)
