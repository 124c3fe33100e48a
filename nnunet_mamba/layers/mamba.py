"""Mamba-1 blocks with the parameter layout of the published code, computed with our scan.

:class:`Mamba` is mamba-ssm's ``Mamba`` (``mamba_ssm/modules/mamba_simple.py``): the same parameter
names, shapes and initialisation (``dt_rank = ceil(d_model / 16)``), so a state dict of the original
loads as it is. :class:`TriOrientedMamba` is SegMamba's ``bimamba_type="v3"`` variant of it: three
scans (forward, reverse, inter-slice), each with its own causal conv1d, ``x_proj``, ``dt_proj``, ``A``
and ``D``, summed before one ``out_proj``.

Both take tokens ``(B, L, d_model)`` and return the same shape. Like mamba-ssm's fused ``mamba_inner_fn``, they keep
for the backward only the input projection's output and the scan outputs; the causal convolutions and the x/dt
projections are recomputed there (:func:`recompute_around_scan`). The selective scan is
:func:`nnunet_mamba.kernels.multidir_selective_scan` (Triton on CUDA, the PyTorch reference elsewhere).
"""
from __future__ import annotations

import functools
import math
from typing import Optional, Sequence

import torch
from torch import nn
import torch.nn.functional as F
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

from nnunet_mamba.kernels import ScanDirection, multidir_selective_scan
from nnunet_mamba.kernels.ops import multidir_scan_op


def causal_conv1d(x: torch.Tensor, conv: nn.Conv1d) -> torch.Tensor:
    """``silu(conv(x))`` over (B, D, L), causal: mamba-ssm's left padding of ``kernel - 1``, right side cut."""
    return F.silu(conv(x)[..., : x.shape[-1]])


def _keep_scan_outputs(ctx, func, *args, **kwargs) -> CheckpointPolicy:
    """Selective checkpointing: the scan's outputs are kept, everything else between the input projection and the
    output projection (causal conv, SiLU, x_proj, dt_proj, layout copies) is recomputed in the backward."""
    if func is multidir_scan_op._opoverload:
        return CheckpointPolicy.MUST_SAVE
    return CheckpointPolicy.PREFER_RECOMPUTE


def _without_autocast_cache(inner, *args):
    """``inner(*args)`` with autocast's cache of weight casts off: a block called twice in one autocast region finds
    its casts cached on the second call, while their recomputation in the backward does not, and the selective
    checkpoint needs the same operations in both."""
    device = args[0].device.type
    if not torch.is_autocast_enabled(device):
        return inner(*args)
    with torch.autocast(device, dtype=torch.get_autocast_dtype(device), cache_enabled=False):
        return inner(*args)


def recompute_around_scan(inner, *args):
    """``inner(*args)`` keeping for the backward only its inputs and its scans' outputs, as mamba-ssm's fused
    ``mamba_inner_fn`` does: the per-token activations of the causal conv and the projections (several times the
    block's width) are recomputed instead of stored."""
    if not torch.is_grad_enabled():
        return inner(*args)
    return checkpoint(_without_autocast_cache, inner, *args, use_reentrant=False, preserve_rng_state=False,
                      context_fn=functools.partial(create_selective_checkpoint_contexts, _keep_scan_outputs))


def ssm_branch(d_inner: int, d_state: int, d_conv: int, dt_rank: int, dt_min: float = 1e-3, dt_max: float = 0.1,
               dt_init_floor: float = 1e-4, conv_bias: bool = True, dt_init: bool = True) -> dict:
    """What one scan direction owns in mamba-ssm, initialised as there: causal ``conv1d``, ``x_proj``,
    ``dt_proj`` (with ``dt_init``: its bias the inverse softplus of a log-uniform dt in [dt_min, dt_max];
    otherwise ``nn.Linear``'s default), ``A_log`` (S4D-real) and ``D`` (ones)."""
    conv1d = nn.Conv1d(d_inner, d_inner, d_conv, padding=d_conv - 1, groups=d_inner, bias=conv_bias)
    x_proj = nn.Linear(d_inner, dt_rank + 2 * d_state, bias=False)
    dt_proj = nn.Linear(dt_rank, d_inner, bias=True)
    if dt_init:
        std = dt_rank ** -0.5
        nn.init.uniform_(dt_proj.weight, -std, std)
        dt = torch.exp(torch.rand(d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_init_floor)
        with torch.no_grad():
            dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
    A_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32).repeat(d_inner, 1)))
    D = nn.Parameter(torch.ones(d_inner))
    A_log._no_weight_decay = True
    D._no_weight_decay = True
    return {"conv1d": conv1d, "x_proj": x_proj, "dt_proj": dt_proj, "A_log": A_log, "D": D}


def branch_scan(u: torch.Tensor, z: torch.Tensor, x_proj: nn.Linear, dt_proj: nn.Linear, A_log: torch.Tensor,
                D: torch.Tensor, d_state: int, grid: Sequence[int], direction: ScanDirection,
                backend: Optional[str]) -> torch.Tensor:
    """One direction's selective scan of conv output ``u`` (B, L, d_inner), gated by ``silu(z)``."""
    dt, Bm, Cm = x_proj(u).split([dt_proj.in_features, d_state, d_state], dim=-1)
    delta = F.linear(dt, dt_proj.weight)  # the bias is added inside the scan, before softplus
    return multidir_selective_scan(u, delta.unsqueeze(2), -torch.exp(A_log.float()).unsqueeze(0), Bm.unsqueeze(2),
                                   Cm.unsqueeze(2), D.float().unsqueeze(0), z, dt_proj.bias.float().unsqueeze(0),
                                   grid=grid, directions=(direction,), delta_softplus=True, backend=backend)


class Mamba(nn.Module):
    """mamba-ssm's Mamba-1 block: in_proj -> causal conv1d -> SiLU -> selective scan, gated by SiLU(z) -> out_proj.

    Parameters are named as in mamba-ssm (``in_proj``, ``conv1d``, ``x_proj``, ``dt_proj``, ``A_log``, ``D``,
    ``out_proj``); ``dt_rank="auto"`` is ``ceil(d_model / 16)``.
    """

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: float = 2,
                 dt_rank: int | str = "auto", dt_min: float = 1e-3, dt_max: float = 0.1, dt_init_floor: float = 1e-4,
                 conv_bias: bool = True, bias: bool = False, backend: Optional[str] = None):
        super().__init__()
        self.d_model, self.d_state, self.d_conv = int(d_model), d_state, d_conv
        self.d_inner = int(expand * self.d_model)
        self.dt_rank = math.ceil(self.d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.backend = backend
        self.in_proj = nn.Linear(self.d_model, 2 * self.d_inner, bias=bias)
        for name, value in ssm_branch(self.d_inner, d_state, d_conv, self.dt_rank, dt_min, dt_max, dt_init_floor,
                                      conv_bias).items():
            setattr(self, name, value)
        self.out_proj = nn.Linear(self.d_inner, self.d_model, bias=bias)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        x, z = self.in_proj(hidden_states).chunk(2, dim=-1)
        return self.out_proj(recompute_around_scan(self.inner, x, z))

    def inner(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """From the input projection's two halves to the gated scan output (B, L, d_inner)."""
        u = causal_conv1d(x.transpose(1, 2), self.conv1d).transpose(1, 2)
        return branch_scan(u, z, self.x_proj, self.dt_proj, self.A_log, self.D, self.d_state, (x.shape[1],),
                           ScanDirection((0,)), self.backend)


class TriOrientedMamba(nn.Module):
    """SegMamba's tri-orientated Mamba (its mamba-ssm fork, ``bimamba_type="v3"``) over a 3D map's tokens.

    Directions: forward raster, reverse raster (``_b``) and inter-slice (``_s``: the first spatial axis
    fastest). Each has its own causal conv1d, x_proj, dt_proj, A and D; the gated outputs are summed and
    projected once. SegMamba's code forms the inter-slice order by splitting the sequence into a fixed
    ``nslices`` (64, 32, 16, 8 for a 128^3 patch); here it comes from the map's actual first-axis size,
    which is the same order wherever the original runs.
    """

    SUFFIXES = ("", "_b", "_s")

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: float = 2,
                 dt_min: float = 1e-3, dt_max: float = 0.1, dt_init_floor: float = 1e-4, conv_bias: bool = True,
                 bias: bool = False, backend: Optional[str] = None):
        super().__init__()
        self.d_model, self.d_state = int(d_model), d_state
        self.d_inner = int(expand * self.d_model)
        self.dt_rank = math.ceil(self.d_model / 16)
        self.backend = backend
        self.in_proj = nn.Linear(self.d_model, 2 * self.d_inner, bias=bias)
        for suffix in self.SUFFIXES:
            # the fork gives only the forward direction mamba-ssm's dt initialisation
            branch = ssm_branch(self.d_inner, d_state, d_conv, self.dt_rank, dt_min, dt_max, dt_init_floor, conv_bias,
                                dt_init=suffix == "")
            for name, value in branch.items():  # the fork's names: conv1d_b, x_proj_b, dt_proj_b, A_b_log, D_b
                setattr(self, f"A{suffix}_log" if name == "A_log" else f"{name}{suffix}", value)
        self.out_proj = nn.Linear(self.d_inner, self.d_model, bias=bias)

    def _branch(self, suffix: str) -> tuple:
        return (getattr(self, f"conv1d{suffix}"), getattr(self, f"x_proj{suffix}"), getattr(self, f"dt_proj{suffix}"),
                getattr(self, f"A{suffix}_log"), getattr(self, f"D{suffix}"))

    def forward(self, hidden_states: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
        """``hidden_states`` (B, L, d_model) in row-major order of the 3D ``grid`` (prod(grid) == L)."""
        L = hidden_states.shape[1]
        if len(grid) != 3 or math.prod(grid) != L:
            raise ValueError(f"TriOrientedMamba needs a 3D grid with {L} voxels, got {tuple(grid)}")
        x, z = self.in_proj(hidden_states).chunk(2, dim=-1)
        return self.out_proj(recompute_around_scan(functools.partial(self.inner, grid=tuple(grid)), x, z))

    def inner(self, x: torch.Tensor, z: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
        """From the input projection's two halves to the sum of the three gated scans (B, L, d_inner)."""
        Bsz, L, _ = x.shape
        xc = x.transpose(1, 2)  # (B, D, L), canonical order
        d, hw = grid[0], L // grid[0]
        y = None
        for suffix, direction in zip(self.SUFFIXES, (ScanDirection((0, 1, 2)), ScanDirection((0, 1, 2), True),
                                                     ScanDirection((1, 2, 0)))):
            conv1d, x_proj, dt_proj, A_log, D = self._branch(suffix)
            if suffix == "":
                u = causal_conv1d(xc, conv1d)
            elif suffix == "_b":  # causal along the reversed sequence
                u = causal_conv1d(xc.flip(-1), conv1d).flip(-1)
            else:  # causal along the inter-slice order (first axis fastest), then back to row-major
                inter = xc.reshape(Bsz, self.d_inner, d, hw).transpose(2, 3).reshape(Bsz, self.d_inner, L)
                u = causal_conv1d(inter, conv1d).reshape(Bsz, self.d_inner, hw, d).transpose(2, 3)
                u = u.reshape(Bsz, self.d_inner, L)
            out = branch_scan(u.transpose(1, 2), z, x_proj, dt_proj, A_log, D, self.d_state, grid, direction,
                              self.backend)
            y = out if y is None else y + out
        return y
