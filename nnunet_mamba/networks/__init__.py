"""Segmentation networks built from nnU-Net plans (``build_network(name, ...)``), their encoders as shared
backbones (``build_encoder``) and the classification head (``EncoderClassifier``)."""
from .backbones import build_encoder, list_backbones
from .classifier import EncoderClassifier
from .hybrid_unet import HybridResEncUNet, StageWithMixer, count_parameters, mixers
from .plans import from_configuration, resolve_arch_kwargs
from .precision import guard_fp16_inference
from .registry import build_network, list_networks, network_dims, network_source, register_network
from .segmamba import SegMamba
from .umamba import UMamba

__all__ = ["HybridResEncUNet", "SegMamba", "UMamba", "StageWithMixer", "build_network", "list_networks",
           "network_dims", "network_source", "register_network", "resolve_arch_kwargs", "from_configuration",
           "count_parameters", "mixers", "build_encoder", "list_backbones", "EncoderClassifier", "guard_fp16_inference"]
