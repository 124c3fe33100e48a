"""SegMamba (Xing et al., MICCAI 2024) for nnU-Net plans.

Encoder as in SegMamba's released code: per stage a downsampling conv, a gated spatial
convolution (GSC; the released code adds its two branches), ``depth`` tri-orientated Mamba
layers (ToM: forward, reverse and inter-slice scans, residual), and a skip head
(InstanceNorm + 1x1-conv MLP) that feeds only the decoder. Differences, by design:

* stages, widths, kernel sizes and strides come from the plans; scan orders come from the
  actual feature-map shape (the original hard-codes ``nslices`` for a 128^3 patch);
* the full-resolution stage has no Mamba layers (the original's stride-2 stem has the same
  effect, with a separate full-resolution conv path);
* the three scans are one fused operator with a shared depthwise spatial conv instead of
  three causal 1D convs; the decoder is nnU-Net's U-Net decoder (deep supervision) instead
  of MONAI's UNETR blocks.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from torch import nn
from dynamic_network_architectures.building_blocks.unet_decoder import UNetDecoder
from dynamic_network_architectures.initialization.weight_init import InitWeights_He

from nnunet_mamba.layers import MultiDirMamba
from .base import EncoderDecoder


class GatedSpatialConv(nn.Module):
    """GSC: ``act(norm(conv1x1(branch3x3(x) + branch1x1(x)))) + x``."""

    def __init__(self, channels: int, conv_op: type, norm_op: type, norm_kwargs: dict):
        super().__init__()

        def cbr(k):
            return nn.Sequential(conv_op(channels, channels, k, padding=k // 2), norm_op(channels, **norm_kwargs),
                                 nn.ReLU(inplace=True))
        self.spatial = nn.Sequential(cbr(3), cbr(3))
        self.pointwise = cbr(1)
        self.merge = cbr(1)

    def forward(self, x):
        return self.merge(self.spatial(x) + self.pointwise(x)) + x


class SkipHead(nn.Module):
    """Norm + channel MLP applied to a stage's output before it goes to the decoder."""

    def __init__(self, channels: int, conv_op: type, norm_op: type, norm_kwargs: dict):
        super().__init__()
        self.net = nn.Sequential(norm_op(channels, **norm_kwargs), conv_op(channels, 2 * channels, 1), nn.GELU(),
                                 conv_op(2 * channels, channels, 1))

    def forward(self, x):
        return self.net(x)


class SegMambaEncoder(nn.Module):
    """Exposes the attributes nnU-Net's ``UNetDecoder`` reads from an encoder."""

    def __init__(self, input_channels: int, n_stages: int, features_per_stage: Sequence[int], conv_op: type,
                 kernel_sizes, strides, conv_bias: bool, norm_op: type, norm_op_kwargs: Optional[dict],
                 nonlin: type, nonlin_kwargs: Optional[dict], depth: int = 2, mamba_from_stage: int = 1,
                 directions: int = 3, d_state: int = 16, expand: float = 2.0, backend: Optional[str] = None):
        super().__init__()
        ndim = {nn.Conv1d: 1, nn.Conv2d: 2, nn.Conv3d: 3}[conv_op]
        norm_kwargs = norm_op_kwargs or {}
        self.output_channels = list(features_per_stage)
        self.strides = [list(s) if not isinstance(s, int) else [s] * ndim for s in strides]
        self.kernel_sizes = [list(k) if not isinstance(k, int) else [k] * ndim for k in kernel_sizes]
        self.conv_op, self.conv_bias, self.norm_op, self.norm_op_kwargs = conv_op, conv_bias, norm_op, norm_op_kwargs
        self.dropout_op, self.dropout_op_kwargs, self.nonlin, self.nonlin_kwargs = None, None, nonlin, nonlin_kwargs
        self.downsample, self.blocks, self.skip_heads = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        c_in = input_channels
        for s in range(n_stages):
            c = features_per_stage[s]
            if s == 0:  # full-resolution stem conv
                k = self.kernel_sizes[0]
                down = conv_op(c_in, c, k, stride=self.strides[0], padding=[i // 2 for i in k], bias=conv_bias)
            else:  # SegMamba's downsampling: norm + conv with kernel == stride
                down = nn.Sequential(norm_op(c_in, **norm_kwargs),
                                     conv_op(c_in, c, self.strides[s], stride=self.strides[s], bias=conv_bias))
            self.downsample.append(down)
            mambas = [MultiDirMamba(c, ndim, directions=directions, d_state=d_state, expand=expand, backend=backend)
                      for _ in range(depth if s >= mamba_from_stage else 0)]
            self.blocks.append(nn.Sequential(GatedSpatialConv(c, conv_op, norm_op, norm_kwargs), *mambas))
            self.skip_heads.append(SkipHead(c, conv_op, norm_op, norm_kwargs))
            c_in = c

    def forward(self, x):
        skips = []
        for down, block, head in zip(self.downsample, self.blocks, self.skip_heads):
            x = block(down(x))
            skips.append(head(x))
        return skips

    def compute_conv_feature_map_size(self, input_size):
        total, size = 0, np.array(input_size)
        for s, c in enumerate(self.output_channels):
            size = size // np.array(self.strides[s])
            total += 6 * c * np.prod(size)  # rough: stem/down + GSC + skip-head activations
            total += sum(m.activation_elements(size) for m in self.blocks[s] if hasattr(m, "activation_elements"))
        return np.int64(total)


class SegMamba(EncoderDecoder):
    def __init__(self, input_channels: int, n_stages: int, features_per_stage: Sequence[int], conv_op: type,
                 kernel_sizes, strides, num_classes: int, n_conv_per_stage_decoder, conv_bias: bool = True,
                 norm_op: Optional[type] = None, norm_op_kwargs: Optional[dict] = None, dropout_op=None,
                 dropout_op_kwargs=None, nonlin: Optional[type] = None, nonlin_kwargs: Optional[dict] = None,
                 deep_supervision: bool = False, n_blocks_per_stage=None, **mamba_options):
        super().__init__()
        if isinstance(n_conv_per_stage_decoder, int):
            n_conv_per_stage_decoder = [n_conv_per_stage_decoder] * (n_stages - 1)
        self.encoder = SegMambaEncoder(input_channels, n_stages, features_per_stage, conv_op, kernel_sizes, strides,
                                       conv_bias, norm_op, norm_op_kwargs, nonlin, nonlin_kwargs, **mamba_options)
        self.decoder = UNetDecoder(self.encoder, num_classes, n_conv_per_stage_decoder, deep_supervision)

    @staticmethod
    def initialize(module):
        InitWeights_He(1e-2)(module)
