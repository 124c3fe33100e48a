"""Residual restoration head on a registry U-Net: ``restored = degraded + U-Net(degraded)``.

The wrapped network's ``encoder`` and ``decoder`` become this module's own, so the state-dict keys
(``encoder.*``, ``decoder.*``) are those of the segmentation network built from the same plans. nnU-Net's stock
``-pretrained_weights`` (which skips the ``.seg_layers.`` output convolutions) therefore moves a segmentation
encoder + decoder into a restorer and back. The output convolution starts at zero: an untrained restorer is the
identity, and training learns the residual.
"""
from __future__ import annotations

import torch
from torch import nn

from .base import EncoderDecoder
from .registry import build_network


class ResidualRestorer(EncoderDecoder):
    def __init__(self, network: EncoderDecoder):
        super().__init__()
        if not (hasattr(network, "encoder") and hasattr(network, "decoder")):
            raise TypeError(f"{type(network).__name__} has no encoder/decoder: not a registry U-Net")
        self.encoder = network.encoder
        self.decoder = network.decoder
        self.decoder.deep_supervision = False
        self.zero_output_layer()

    def output_layer(self) -> nn.Module:
        return self.decoder.seg_layers[-1]

    def zero_output_layer(self) -> None:
        layer = self.output_layer()
        nn.init.zeros_(layer.weight)
        if layer.bias is not None:
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.decoder(self.encoder(x))
        if isinstance(residual, (list, tuple)):  # deep supervision switched on from outside: highest resolution
            residual = residual[0]
        return x + residual


def build_restorer(name: str, arch_kwargs: dict, **options) -> ResidualRestorer:
    """A 1-channel-in, 1-channel-out residual restorer on the registry network ``name``."""
    network = build_network(name, arch_kwargs, input_channels=1, num_classes=1, deep_supervision=False, **options)
    if hasattr(network, "initialize"):
        network.apply(network.initialize)
    return ResidualRestorer(network)
