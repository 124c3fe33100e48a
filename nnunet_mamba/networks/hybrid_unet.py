"""Residual-encoder U-Net with token mixers inserted after chosen encoder stages.

Encoder and decoder are dynamic-network-architectures' ``ResidualEncoder`` and
``UNetDecoder`` (the nnU-Net ResEnc network), so the deep-supervision contract
(``decoder.deep_supervision``, all heads always built, highest resolution first)
and nnU-Net's initialisation hold unchanged. A mixer placed after stage ``s`` also
feeds every deeper stage, as in U-Mamba Enc.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np
from torch import nn
from dynamic_network_architectures.building_blocks.residual import BasicBlockD
from dynamic_network_architectures.building_blocks.residual_encoders import ResidualEncoder
from dynamic_network_architectures.building_blocks.unet_decoder import UNetDecoder
from dynamic_network_architectures.initialization.weight_init import InitWeights_He, init_last_bn_before_add_to_0

from .base import EncoderDecoder

MixerFactory = Callable[[int, int, int], nn.Module]  # (stage index, channels, spatial ndim) -> mixer


class StageWithMixer(nn.Module):
    """An encoder stage followed by a token mixer."""

    def __init__(self, stage: nn.Module, mixer: nn.Module, stride: Sequence[int]):
        super().__init__()
        self.stage = stage
        self.mixer = mixer
        self.stride = tuple(int(s) for s in stride)

    def forward(self, x):
        return self.mixer(self.stage(x))

    def compute_conv_feature_map_size(self, input_size):
        """nnU-Net's memory estimate of the stage plus the mixer's activations at the stage output."""
        out_size = [i // s for i, s in zip(input_size, self.stride)]
        return self.stage.compute_conv_feature_map_size(input_size) + self.mixer.activation_elements(out_size)


class HybridResEncUNet(EncoderDecoder):
    """ResEnc U-Net (nnU-Net's ``ResidualEncoderUNet``) plus mixers on ``mixer_stages``."""

    def __init__(self, input_channels: int, n_stages: int, features_per_stage: Sequence[int], conv_op: type,
                 kernel_sizes, strides, n_blocks_per_stage: Sequence[int], num_classes: int,
                 n_conv_per_stage_decoder: Sequence[int], conv_bias: bool = False, norm_op: Optional[type] = None,
                 norm_op_kwargs: Optional[dict] = None, dropout_op: Optional[type] = None,
                 dropout_op_kwargs: Optional[dict] = None, nonlin: Optional[type] = None,
                 nonlin_kwargs: Optional[dict] = None, deep_supervision: bool = False,
                 mixer_stages: Sequence[int] = (), mixer_factory: Optional[MixerFactory] = None):
        super().__init__()
        if isinstance(n_blocks_per_stage, int):
            n_blocks_per_stage = [n_blocks_per_stage] * n_stages
        if isinstance(n_conv_per_stage_decoder, int):
            n_conv_per_stage_decoder = [n_conv_per_stage_decoder] * (n_stages - 1)
        self.encoder = ResidualEncoder(input_channels, n_stages, features_per_stage, conv_op, kernel_sizes, strides,
                                       n_blocks_per_stage, conv_bias, norm_op, norm_op_kwargs, dropout_op,
                                       dropout_op_kwargs, nonlin, nonlin_kwargs, BasicBlockD, return_skips=True)
        ndim = {nn.Conv1d: 1, nn.Conv2d: 2, nn.Conv3d: 3}[conv_op]
        self.mixer_stages = tuple(sorted({s % n_stages for s in mixer_stages}))
        if self.mixer_stages and mixer_factory is None:
            raise ValueError("mixer_stages given without a mixer_factory")
        for s in self.mixer_stages:
            channels = self.encoder.output_channels[s]
            stride = self.encoder.strides[s]
            stride = [stride] * ndim if isinstance(stride, int) else stride
            self.encoder.stages[s] = StageWithMixer(self.encoder.stages[s], mixer_factory(s, channels, ndim), stride)
        self.decoder = UNetDecoder(self.encoder, num_classes, n_conv_per_stage_decoder, deep_supervision)

    @staticmethod
    def initialize(module):
        InitWeights_He(1e-2)(module)
        init_last_bn_before_add_to_0(module)

    def mixer_feature_map_sizes(self, patch_size: Sequence[int]) -> dict[int, tuple[int, ...]]:
        """Spatial size seen by each mixer for a given patch size."""
        sizes, size = {}, np.array(patch_size)
        for s, stride in enumerate(self.encoder.strides):
            size = size // np.array(stride)
            if s in self.mixer_stages:
                sizes[s] = tuple(int(v) for v in size)
        return sizes


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def mixers(module: nn.Module) -> list[nn.Module]:
    return [m.mixer for m in module.modules() if isinstance(m, StageWithMixer)]
