"""Segmentation networks built from nnU-Net plans (``build_network(name, ...)``)."""
from .hybrid_unet import HybridResEncUNet, StageWithMixer, count_parameters, mixers
from .plans import from_configuration, resolve_arch_kwargs
from .registry import build_network, list_networks, register_network
from .segmamba import SegMamba

__all__ = ["HybridResEncUNet", "SegMamba", "StageWithMixer", "build_network", "list_networks", "register_network",
           "resolve_arch_kwargs", "from_configuration", "count_parameters", "mixers"]
