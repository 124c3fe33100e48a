"""Registry of segmentation networks (timm-style): ``build_network(name, ...)``.

Every entry is built from resolved nnU-Net plans kwargs (:mod:`.plans`) plus
input channels, output channels and the deep-supervision flag, for 2D or 3D.

| name          | network                                                                    |
|---------------|----------------------------------------------------------------------------|
| mamba_resenc  | ResEnc U-Net + residual multi-directional Mamba mixers on the 2 lowest-resolution stages (our default) |
| nomamba       | the same network without mixers (the ablation)                             |
| umamba_bot    | U-Mamba Bot: U-Mamba's raster Mamba layer on the bottleneck                |
| umamba_enc    | U-Mamba Enc: U-Mamba's raster Mamba layer after every encoder stage         |
| segmamba      | SegMamba: GSC + tri-orientated Mamba (fwd, rev, inter-slice) + MLP skip heads |
"""
from __future__ import annotations

import math
from typing import Callable

from torch import nn

from nnunet_mamba.layers import MultiDirMamba, RasterMamba
from .hybrid_unet import HybridResEncUNet
from .segmamba import SegMamba

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_network(name: str):
    def deco(fn):
        if name in _REGISTRY:
            raise KeyError(f"network {name!r} registered twice")
        _REGISTRY[name] = fn
        return fn
    return deco


def list_networks() -> list[str]:
    return sorted(_REGISTRY)


def build_network(name: str, arch_kwargs: dict, input_channels: int, num_classes: int,
                  deep_supervision: bool = True, **options) -> nn.Module:
    """Build a registered network from resolved plans kwargs; ``options`` override its defaults."""
    if name not in _REGISTRY:
        raise KeyError(f"unknown network {name!r}; available: {', '.join(list_networks())}")
    return _REGISTRY[name](arch_kwargs=dict(arch_kwargs), input_channels=input_channels, num_classes=num_classes,
                           deep_supervision=deep_supervision, **options)


@register_network("mamba_resenc")
def mamba_resenc(arch_kwargs, input_channels, num_classes, deep_supervision, mixer_stages=(-2, -1),
                 directions=None, d_state=16, expand=1.0, backend=None):
    """``directions``: scan directions per mixer, one int for all, or one per entry of ``mixer_stages``
    (None: every axis order both ways, 6 in 3D / 4 in 2D, the default). ``[2, None]`` (raster both ways at
    stage n-2) is ``MambaTrainerFast``: 1.25x instead of 1.39x ResEnc M's step time under torch.compile, 0.0024
    lower mean Dice in one 5-epoch Hippocampus run (benchmarks/NETWORK_NOTES.md)."""
    n = arch_kwargs["n_stages"]
    per_stage = directions if isinstance(directions, (list, tuple)) else [directions] * len(mixer_stages)
    if len(per_stage) != len(mixer_stages):
        raise ValueError(f"directions {directions!r}: need one per mixer stage {tuple(mixer_stages)}")
    k_of = {s % n: k for s, k in zip(mixer_stages, per_stage)}

    def factory(stage, channels, ndim):
        k = k_of[stage] or 2 * ndim
        return MultiDirMamba(channels, ndim, directions=k, d_state=d_state, expand=expand, backend=backend)
    return HybridResEncUNet(input_channels=input_channels, num_classes=num_classes, deep_supervision=deep_supervision,
                            mixer_stages=mixer_stages, mixer_factory=factory, **arch_kwargs)


@register_network("nomamba")
def nomamba(arch_kwargs, input_channels, num_classes, deep_supervision):
    return HybridResEncUNet(input_channels=input_channels, num_classes=num_classes, deep_supervision=deep_supervision,
                            mixer_stages=(), **arch_kwargs)


def _umamba_blocks(arch_kwargs: dict) -> dict:
    """U-Mamba forces one residual block per stage in the deeper half of the encoder."""
    kw = dict(arch_kwargs)
    n = kw["n_stages"]
    blocks = list(kw["n_blocks_per_stage"])
    for s in range(math.ceil(n / 2), n):
        blocks[s] = 1
    kw["n_blocks_per_stage"] = blocks
    return kw


@register_network("umamba_bot")
def umamba_bot(arch_kwargs, input_channels, num_classes, deep_supervision, d_state=16, backend=None):
    return HybridResEncUNet(input_channels=input_channels, num_classes=num_classes, deep_supervision=deep_supervision,
                            mixer_stages=(-1,), **_umamba_blocks(arch_kwargs),
                            mixer_factory=lambda s, c, nd: RasterMamba(c, d_state=d_state, backend=backend))


@register_network("umamba_enc")
def umamba_enc(arch_kwargs, input_channels, num_classes, deep_supervision, d_state=16, backend=None):
    n = arch_kwargs["n_stages"]
    return HybridResEncUNet(input_channels=input_channels, num_classes=num_classes, deep_supervision=deep_supervision,
                            mixer_stages=tuple(range(n)), **_umamba_blocks(arch_kwargs),
                            mixer_factory=lambda s, c, nd: RasterMamba(c, d_state=d_state, backend=backend))


@register_network("segmamba")
def segmamba(arch_kwargs, input_channels, num_classes, deep_supervision, depth=2, directions=3, d_state=16,
             expand=2.0, backend=None):
    return SegMamba(input_channels=input_channels, num_classes=num_classes, deep_supervision=deep_supervision,
                    depth=depth, directions=directions, d_state=d_state, expand=expand, backend=backend,
                    **arch_kwargs)
