"""Segmentation networks built from nnU-Net plans (``build_network(name, ...)``)."""
from .hybrid_unet import HybridResEncUNet, StageWithMixer, count_parameters, mixers
from .plans import from_configuration, resolve_arch_kwargs
from .registry import build_network, list_networks, register_network

__all__ = ["HybridResEncUNet", "StageWithMixer", "build_network", "list_networks", "register_network",
           "resolve_arch_kwargs", "from_configuration", "count_parameters", "mixers"]
