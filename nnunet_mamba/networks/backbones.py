"""Backbones: the encoders of the registered segmentation networks, shared by every task head.

A backbone is the ``.encoder`` of a :func:`~nnunet_mamba.networks.registry.build_network` network (a module
that maps an image to a list of feature maps, one per stage, and has ``.output_channels``). Heads keep it as
a submodule named ``encoder``, so its state-dict keys (``encoder.*``) are those of the segmentation network:
that is what lets weights move between a segmentation network, a classifier and other heads.
"""
from __future__ import annotations

from torch import nn

from .registry import build_network, list_networks


#: networks whose encoder carries all of its Mamba layers and runs at any input size (U-Mamba Bot's Mamba layer
#: sits outside its encoder, U-Mamba Enc's is built for one patch size, SegMamba's skips bypass its encoder)
BACKBONES = ("mamba_resenc", "nomamba")


def list_backbones() -> list[str]:
    """Names accepted by :func:`build_encoder`."""
    return [name for name in BACKBONES if name in list_networks()]


def build_encoder(name: str, arch_kwargs: dict, input_channels: int, **options) -> nn.Module:
    """The initialised encoder of the registered network ``name`` (built from resolved plans kwargs)."""
    if name not in BACKBONES:
        raise ValueError(f"network {name!r} is not a backbone; backbones: {', '.join(list_backbones())}")
    network = build_network(name, arch_kwargs, input_channels, num_classes=1, deep_supervision=False, **options)
    if hasattr(network, "initialize"):
        network.apply(network.initialize)
    encoder = network.encoder
    if not hasattr(encoder, "output_channels"):
        raise TypeError(f"network {name!r}: its encoder has no 'output_channels'; it cannot serve as a backbone")
    return encoder
