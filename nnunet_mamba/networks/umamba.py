"""U-Mamba Bot and U-Mamba Enc (Ma, Li and Wang, 2024), 2D and 3D, as the authors' code builds them.

Module names, shapes and initialisation follow ``bowang-lab/U-Mamba``
(``umamba/nnunetv2/nets/UMamba{Bot,Enc}_{2d,3d}.py``), so a state dict trained with the U-Mamba fork
loads unchanged:

* encoder: a stem (``BasicResBlock`` with 1x1-conv shortcut + ``n-1`` ``BasicBlockD``), then per stage a
  strided ``BasicResBlock`` with 1x1-conv shortcut + ``n-1`` ``BasicBlockD``; the deeper half of the
  stages has one block;
* U-Mamba Bot: one Mamba layer on the bottleneck output; U-Mamba Enc: one after every encoder stage
  (3D: every stage; 2D: alternate stages ending at the bottleneck), mixing over channels instead of voxels
  where a stage's map has no more voxels than channels (the "channel-token" mode, decided from the
  patch size);
* decoder: nearest upsampling + 1x1 conv, concatenation with the skip, ``BasicResBlock`` (1x1-conv
  shortcut) + ``n-1`` ``BasicBlockD`` with the shallower half of the stages at one block; 2D drops the
  full-resolution skip; one 1x1 head per stage (deep supervision);
* He initialisation of every convolution (``InitWeights_He(1e-2)``), nothing else.

The Mamba layer (LayerNorm + mamba-ssm's Mamba) runs in float32 under any autocast; the originals do the
same for float16 inputs, which is what nnU-Net trains with (they fail on bfloat16 inputs instead).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F
from dynamic_network_architectures.building_blocks.residual import BasicBlockD
from dynamic_network_architectures.initialization.weight_init import InitWeights_He

from nnunet_mamba.layers import Mamba
from .base import EncoderDecoder


class BasicResBlock(nn.Module):
    """conv-norm-act-conv-norm, plus the input (through a 1x1 conv when ``use_1x1conv``), then act."""

    def __init__(self, conv_op, input_channels: int, output_channels: int, norm_op, norm_op_kwargs: dict,
                 kernel_size=3, padding=1, stride=1, use_1x1conv: bool = False, nonlin=nn.LeakyReLU,
                 nonlin_kwargs: Optional[dict] = None):
        super().__init__()
        nonlin_kwargs = {"inplace": True} if nonlin_kwargs is None else nonlin_kwargs
        self.conv1 = conv_op(input_channels, output_channels, kernel_size, stride=stride, padding=padding)
        self.norm1 = norm_op(output_channels, **norm_op_kwargs)
        self.act1 = nonlin(**nonlin_kwargs)
        self.conv2 = conv_op(output_channels, output_channels, kernel_size, padding=padding)
        self.norm2 = norm_op(output_channels, **norm_op_kwargs)
        self.act2 = nonlin(**nonlin_kwargs)
        self.conv3 = conv_op(input_channels, output_channels, kernel_size=1, stride=stride) if use_1x1conv else None
        self.stride = [stride] * (conv_op.__name__[-2] == "3" and 3 or 2) if isinstance(stride, int) else stride
        self.output_channels = output_channels

    def forward(self, x):
        y = self.act1(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        if self.conv3 is not None:
            x = self.conv3(x)
        return self.act2(y + x)

    def compute_conv_feature_map_size(self, input_size):
        size = [i // s for i, s in zip(input_size, self.stride)]
        return np.int64(self.output_channels * np.prod(size) * (4 + (self.conv3 is not None)))


class UpsampleLayer(nn.Module):
    """Nearest-neighbour upsampling by the stage's stride, then a 1x1 conv (with bias)."""

    def __init__(self, conv_op, input_channels: int, output_channels: int, pool_op_kernel_size, mode="nearest"):
        super().__init__()
        self.conv = conv_op(input_channels, output_channels, kernel_size=1)
        self.pool_op_kernel_size = pool_op_kernel_size
        self.mode = mode

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=self.pool_op_kernel_size, mode=self.mode))


class UMambaLayer(nn.Module):
    """U-Mamba's ``MambaLayer``: LayerNorm + Mamba over voxel tokens (d_model = channels), or over channel
    tokens (d_model = voxels) when ``channel_token``; float32, no residual."""

    def __init__(self, dim: int, d_state: int = 16, d_conv: int = 4, expand: int = 2, channel_token: bool = False,
                 backend: Optional[str] = None):
        super().__init__()
        self.dim = int(dim)
        self.norm = nn.LayerNorm(self.dim)
        self.mamba = Mamba(self.dim, d_state=d_state, d_conv=d_conv, expand=expand, backend=backend)
        self.channel_token = channel_token

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            x = x.float()
            Bsz, C, *grid = x.shape
            width = math.prod(grid) if self.channel_token else C
            if width != self.dim:
                reason = ("the patch size differs from the one it was built for" if self.channel_token
                          else "wrong channels")
                raise ValueError(f"U-Mamba layer built for d_model {self.dim} "
                                 f"({'voxels' if self.channel_token else 'channels'}) got a map of shape "
                                 f"{tuple(x.shape)}: {reason}")
            if self.channel_token:
                return self.mamba(self.norm(x.flatten(2))).reshape(x.shape)
            out = self.mamba(self.norm(x.flatten(2).transpose(1, 2)))
            return out.transpose(1, 2).reshape(x.shape)

    def activation_elements(self, spatial_size) -> int:
        """Training memory per sample, in nnU-Net planner units (float32 layer, expand 2)."""
        return int(9 * self.mamba.d_inner * (self.mamba.d_model if self.channel_token else 1)
                   * (1 if self.channel_token else math.prod(spatial_size)))


def _stage(conv_op, c_in, c_out, kernel, stride, n_blocks, conv_bias, norm_op, norm_kwargs, nonlin, nonlin_kwargs):
    """``BasicResBlock`` (1x1-conv shortcut, carries the stride) + ``n_blocks - 1`` ``BasicBlockD``."""
    return nn.Sequential(
        BasicResBlock(conv_op, c_in, c_out, norm_op, norm_kwargs, kernel_size=kernel, padding=[k // 2 for k in kernel],
                      stride=stride, use_1x1conv=True, nonlin=nonlin, nonlin_kwargs=nonlin_kwargs),
        *[BasicBlockD(conv_op=conv_op, input_channels=c_out, output_channels=c_out, kernel_size=kernel, stride=1,
                      conv_bias=conv_bias, norm_op=norm_op, norm_op_kwargs=norm_kwargs, nonlin=nonlin,
                      nonlin_kwargs=nonlin_kwargs) for _ in range(n_blocks - 1)])


def channel_token_stages(patch_size: Sequence[int], strides, features_per_stage) -> list[bool]:
    """U-Mamba Enc's rule: a stage mixes over channels when its map has no more voxels than channels."""
    flags, size = [], list(patch_size)
    for stride, c in zip(strides, features_per_stage):
        size = [i // j for i, j in zip(size, stride)]
        flags.append(bool(np.prod(size) <= c))
    return flags


class UMambaEncoder(nn.Module):
    """U-Mamba's residual encoder; ``mamba_layers`` (U-Mamba Enc) follow the stages, feeding skip and next stage."""

    def __init__(self, input_channels: int, n_stages: int, features_per_stage: Sequence[int], conv_op: type,
                 kernel_sizes, strides, n_blocks_per_stage: Sequence[int], conv_bias: bool, norm_op: type,
                 norm_op_kwargs: dict, nonlin: type, nonlin_kwargs: dict,
                 mamba_layers: Optional[Sequence[nn.Module]] = None):
        super().__init__()
        ndim = {nn.Conv2d: 2, nn.Conv3d: 3}[conv_op]
        kernel_sizes = [[k] * ndim if isinstance(k, int) else list(k) for k in kernel_sizes]
        strides = [[s] * ndim if isinstance(s, int) else list(s) for s in strides]
        common = (conv_bias, norm_op, norm_op_kwargs, nonlin, nonlin_kwargs)
        self.stem = _stage(conv_op, input_channels, features_per_stage[0], kernel_sizes[0], 1, n_blocks_per_stage[0],
                           *common)
        c_in, stages = features_per_stage[0], []
        for s in range(n_stages):
            stages.append(_stage(conv_op, c_in, features_per_stage[s], kernel_sizes[s], strides[s],
                                 n_blocks_per_stage[s], *common))
            c_in = features_per_stage[s]
        if mamba_layers is not None:  # registered before the stages, as in U-Mamba (parameter order)
            self.mamba_layers = nn.ModuleList(mamba_layers)
        self.stages = nn.ModuleList(stages)
        self.output_channels = list(features_per_stage)
        self.strides = strides
        self.kernel_sizes = kernel_sizes
        self.conv_pad_sizes = [[k // 2 for k in krnl] for krnl in kernel_sizes]
        self.conv_op, self.norm_op, self.norm_op_kwargs = conv_op, norm_op, norm_op_kwargs
        self.nonlin, self.nonlin_kwargs, self.conv_bias = nonlin, nonlin_kwargs, conv_bias
        self.dropout_op, self.dropout_op_kwargs = None, None

    def forward(self, x):
        x = self.stem(x)
        skips = []
        for s, stage in enumerate(self.stages):
            x = stage(x)
            if hasattr(self, "mamba_layers"):
                x = self.mamba_layers[s](x)
            skips.append(x)
        return skips

    def compute_conv_feature_map_size(self, input_size):
        total = _blocks_size(self.stem, input_size)
        size = list(input_size)
        for s, stage in enumerate(self.stages):
            total += _blocks_size(stage, size)
            size = [i // j for i, j in zip(size, self.strides[s])]
            if hasattr(self, "mamba_layers") and hasattr(self.mamba_layers[s], "activation_elements"):
                total += self.mamba_layers[s].activation_elements(size)
        return np.int64(total)


def _blocks_size(seq: nn.Sequential, input_size) -> int:
    total, size = 0, list(input_size)
    for block in seq:
        total += int(block.compute_conv_feature_map_size(size))
        if isinstance(block, BasicResBlock):
            size = [i // s for i, s in zip(size, block.stride)]
    return total


class UMambaDecoder(nn.Module):
    """U-Mamba's ``UNetResDecoder``; ``full_res_skip=False`` is the 2D originals' last stage without a skip."""

    def __init__(self, encoder: UMambaEncoder, num_classes: int, n_conv_per_stage: Sequence[int],
                 deep_supervision: bool, full_res_skip: bool = True):
        super().__init__()
        self.deep_supervision = deep_supervision
        self.encoder = encoder
        self.num_classes = num_classes
        self.full_res_skip = full_res_skip
        n = len(encoder.output_channels)
        stages, upsample_layers, seg_layers = [], [], []
        for s in range(1, n):
            below, skip = encoder.output_channels[-s], encoder.output_channels[-(s + 1)]
            upsample_layers.append(UpsampleLayer(encoder.conv_op, below, skip, encoder.strides[-s]))
            concat = full_res_skip or s < n - 1
            kernel = encoder.kernel_sizes[-(s + 1)]
            stages.append(_stage(encoder.conv_op, 2 * skip if concat else skip, skip, kernel, 1,
                                 n_conv_per_stage[s - 1], encoder.conv_bias, encoder.norm_op, encoder.norm_op_kwargs,
                                 encoder.nonlin, encoder.nonlin_kwargs))
            seg_layers.append(encoder.conv_op(skip, num_classes, 1, 1, 0, bias=True))
        self.stages = nn.ModuleList(stages)
        self.upsample_layers = nn.ModuleList(upsample_layers)
        self.seg_layers = nn.ModuleList(seg_layers)

    def forward(self, skips):
        lres, outputs = skips[-1], []
        for s, stage in enumerate(self.stages):
            x = self.upsample_layers[s](lres)
            if self.full_res_skip or s < len(self.stages) - 1:
                x = torch.cat((x, skips[-(s + 2)]), 1)
            x = stage(x)
            if self.deep_supervision:
                outputs.append(self.seg_layers[s](x))
            elif s == len(self.stages) - 1:
                outputs.append(self.seg_layers[-1](x))
            lres = x
        outputs = outputs[::-1]
        return outputs if self.deep_supervision else outputs[0]

    def compute_conv_feature_map_size(self, input_size):
        sizes, size = [], list(input_size)
        for stride in self.encoder.strides[:-1]:
            size = [i // j for i, j in zip(size, stride)]
            sizes.append(size)
        total = 0
        for s, stage in enumerate(self.stages):
            sz = sizes[-(s + 1)]
            total += _blocks_size(stage, sz) + int(np.prod([self.encoder.output_channels[-(s + 2)], *sz]))
            if self.deep_supervision or s == len(self.stages) - 1:
                total += int(np.prod([self.num_classes, *sz]))
        return np.int64(total)


def _deeper_half_one(counts: Sequence[int], first: int) -> list[int]:
    counts = list(counts)
    for s in range(first, len(counts)):
        counts[s] = 1
    return counts


class UMamba(EncoderDecoder):
    """U-Mamba Bot (``variant="bot"``) or U-Mamba Enc (``variant="enc"``), 2D or 3D, from plain kwargs.

    ``n_conv_per_stage`` / ``n_conv_per_stage_decoder`` are the plans' counts before U-Mamba's overrides
    (deeper half of the encoder and shallower half of the decoder at one block). U-Mamba Enc needs the
    ``patch_size`` for its channel-token decision.
    """

    def __init__(self, variant: str, input_channels: int, n_stages: int, features_per_stage: Sequence[int],
                 conv_op: type, kernel_sizes, strides, n_conv_per_stage: Sequence[int], num_classes: int,
                 n_conv_per_stage_decoder: Sequence[int], conv_bias: bool = True, norm_op: type = nn.InstanceNorm3d,
                 norm_op_kwargs: Optional[dict] = None, nonlin: type = nn.LeakyReLU,
                 nonlin_kwargs: Optional[dict] = None, deep_supervision: bool = False,
                 patch_size: Optional[Sequence[int]] = None, d_state: int = 16, backend: Optional[str] = None):
        super().__init__()
        if variant not in ("bot", "enc"):
            raise ValueError(f"U-Mamba variant must be 'bot' or 'enc', not {variant!r}")
        ndim = {nn.Conv2d: 2, nn.Conv3d: 3}[conv_op]
        norm_op_kwargs = {"eps": 1e-5, "affine": True} if norm_op_kwargs is None else norm_op_kwargs
        nonlin_kwargs = {"inplace": True} if nonlin_kwargs is None else nonlin_kwargs
        n_conv_per_stage = [n_conv_per_stage] * n_stages if isinstance(n_conv_per_stage, int) else n_conv_per_stage
        if isinstance(n_conv_per_stage_decoder, int):
            n_conv_per_stage_decoder = [n_conv_per_stage_decoder] * (n_stages - 1)
        blocks = _deeper_half_one(n_conv_per_stage, math.ceil(n_stages / 2))
        decoder_blocks = _deeper_half_one(n_conv_per_stage_decoder, math.ceil((n_stages - 1) / 2 + 0.5))
        strides = [[s] * ndim if isinstance(s, int) else list(s) for s in strides]
        mamba_layers = None
        if variant == "enc":
            if patch_size is None:
                raise ValueError("U-Mamba Enc needs the patch size (its channel-token mode depends on it)")
            tokens = channel_token_stages(patch_size, strides, features_per_stage)
            sizes = _stage_sizes(patch_size, strides)
            with_mamba = [ndim == 3 or (bool(s % 2) ^ bool(n_stages % 2)) for s in range(n_stages)]
            mamba_layers = [UMambaLayer(int(np.prod(sizes[s])) if tokens[s] else features_per_stage[s], d_state,
                                        channel_token=tokens[s], backend=backend) if with_mamba[s] else nn.Identity()
                            for s in range(n_stages)]
        self.encoder = UMambaEncoder(input_channels, n_stages, features_per_stage, conv_op, kernel_sizes, strides,
                                     blocks, conv_bias, norm_op, norm_op_kwargs, nonlin, nonlin_kwargs, mamba_layers)
        if variant == "bot":
            self.mamba_layer = UMambaLayer(features_per_stage[-1], d_state, backend=backend)
        self.decoder = UMambaDecoder(self.encoder, num_classes, decoder_blocks, deep_supervision,
                                     full_res_skip=ndim == 3)

    def forward(self, x):
        skips = self.encoder(x)
        if hasattr(self, "mamba_layer"):
            skips[-1] = self.mamba_layer(skips[-1])
        return self.decoder(skips)

    def compute_conv_feature_map_size(self, input_size):
        total = super().compute_conv_feature_map_size(input_size)
        if hasattr(self, "mamba_layer"):
            total += self.mamba_layer.activation_elements(_stage_sizes(input_size, self.encoder.strides)[-1])
        return total

    @staticmethod
    def initialize(module):
        InitWeights_He(1e-2)(module)


def _stage_sizes(patch_size, strides) -> list[list[int]]:
    sizes, size = [], list(patch_size)
    for stride in strides:
        size = [i // j for i, j in zip(size, stride)]
        sizes.append(size)
    return sizes
