"""LightM-UNet (Liao et al., "LightM-UNet: Mamba Assists in Lightweight UNet for Medical Image Segmentation",
arXiv 2403.05246, 2024), 2D and 3D, as the authors' code builds it (``MrBlankness/LightM-UNet`` at commit
6b72e27ba70c499ba8f6f341843de75262086fa5, ``lightm-unet/nnunetv2/nets/LightMUNet.py`` and the trainer
``nnUNetTrainerLightMUNet``), module for module, so its state dicts load unchanged.

* stem ``convInit``: depthwise 3x3(x3) then pointwise conv, no bias;
* encoder level i (width ``init_filters * 2**i``): for i > 0 a Mamba layer that doubles the width at the
  previous resolution, then 2x max pooling; then ``blocks_down[i]`` residual Mamba blocks
  (GroupNorm-ReLU-Mamba layer, twice, plus the input). No convolution in the encoder after the stem;
* Mamba layer: the voxels in row-major order as tokens, ``proj(norm(mamba(norm(t)) + skip_scale * t))``
  with one LayerNorm applied twice and mamba-ssm's Mamba-1 block (d_state 16, d_conv 4, expand 2);
* decoder level: 1x1 conv halving the width, trilinear/bilinear upsampling (``align_corners=False``), the
  skip ADDED, then ``blocks_up[i]`` blocks ``relu(gn(dwconv(relu(gn(x))) + skip_scale * x))``;
* head: GroupNorm, ReLU, depthwise + pointwise 1x1 convs with bias. One output: no deep supervision
  (the authors' trainer derives from nnU-Net's ``nnUNetTrainerNoDeepSupervision``);
* PyTorch's default initialisation everywhere (the trainer applies no other).

The trainer takes only the dimensionality and the channels from the plans: ``init_filters=32``,
``blocks_down=(1, 2, 2, 4)``, ``blocks_up=(1, 1, 1)`` for every dataset, i.e. 5.0M parameters, not the
paper's ~1M (:func:`lightmunet_from_plans`).

Where this version generalises the original:

* it pads each spatial size up to a multiple of ``2 ** (len(blocks_down) - 1)`` and crops the output back
  (the original fails at the first skip addition on any other size);
* under float16 autocast (nnU-Net's default on CUDA) each Mamba layer runs under bf16 autocast (float32 where the
  GPU has no bf16): the original casts float16 inputs to float32 but leaves autocast on, so its projections and
  activations stay float16, whose range ends at 65504. Under bf16 autocast and in float32 both run alike;
* ``d_state``, ``d_conv`` and ``expand`` of the Mamba layers are arguments (the original fixes 16, 4, 2);
* ``len(blocks_up) != len(blocks_down) - 1`` is refused with a message (the original fails in the forward);
* :func:`lightmunet_from_plans` takes ``init_filters``, ``blocks_down`` and ``blocks_up`` as options (the
  trainer hard-codes them).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F
from monai.networks.blocks.convolutions import Convolution
from monai.networks.blocks.segresnet_block import get_conv_layer, get_upsample_layer
from monai.networks.layers.factories import Dropout
from monai.networks.layers.utils import get_act_layer, get_norm_layer
from monai.utils import UpsampleMode

from nnunet_mamba.layers import Mamba
from nnunet_mamba.layers.mixer import fp16_safe_precision

_MAXPOOL = {2: nn.MaxPool2d, 3: nn.MaxPool3d}


def dwconv(spatial_dims: int, in_channels: int, out_channels: int, kernel_size: int = 3, bias: bool = False):
    """Depthwise ``kernel_size`` conv then pointwise conv (MONAI ``Convolution``s, so the keys are ``0.conv``,
    ``1.conv``)."""
    return nn.Sequential(
        Convolution(spatial_dims, in_channels, in_channels, kernel_size=kernel_size, bias=bias, conv_only=True,
                    groups=in_channels),
        Convolution(spatial_dims, in_channels, out_channels, kernel_size=1, bias=bias, conv_only=True))


class MambaLayer(nn.Module):
    """``proj(norm(mamba(norm(t)) + skip_scale * t))`` over the voxel tokens ``t`` (one LayerNorm, used twice)."""

    def __init__(self, input_dim: int, output_dim: int, d_state: int = 16, d_conv: int = 4, expand: float = 2,
                 backend: Optional[str] = None):
        super().__init__()
        self.input_dim, self.output_dim = input_dim, output_dim
        self.norm = nn.LayerNorm(input_dim)
        self.mamba = Mamba(input_dim, d_state=d_state, d_conv=d_conv, expand=expand, backend=backend)
        self.proj = nn.Linear(input_dim, output_dim)
        self.skip_scale = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        Bsz, C, *grid = x.shape
        if C != self.input_dim:
            raise ValueError(f"Mamba layer built for {self.input_dim} channels got a map of shape {tuple(x.shape)}")
        context, inp = fp16_safe_precision(x)
        with context:
            t = inp.reshape(Bsz, C, -1).transpose(1, 2)
            y = self.proj(self.norm(self.mamba(self.norm(t)) + self.skip_scale * t))
        return y.transpose(1, 2).reshape(Bsz, self.output_dim, *grid)

    def activation_elements(self, spatial_size) -> int:
        """Training memory per sample, in nnU-Net planner units (Mamba block plus norms, sum, projection)."""
        tokens = math.prod(int(s) for s in spatial_size)
        return int((9 * self.mamba.d_inner + 4 * self.input_dim + 2 * self.output_dim) * tokens)


def mamba_layer(spatial_dims: int, in_channels: int, out_channels: int, stride: int = 1, **mamba_kwargs):
    """A Mamba layer, followed by max pooling by ``stride`` where it is not 1."""
    layer = MambaLayer(in_channels, out_channels, **mamba_kwargs)
    return layer if stride == 1 else nn.Sequential(layer, _MAXPOOL[spatial_dims](kernel_size=stride, stride=stride))


class ResMambaBlock(nn.Module):
    """``x + mamba2(act(norm2(mamba1(act(norm1(x))))))``; the layers are named ``conv1``/``conv2`` as released."""

    def __init__(self, spatial_dims: int, in_channels: int, norm, act=("RELU", {"inplace": True}), **mamba_kwargs):
        super().__init__()
        self.norm1 = get_norm_layer(name=norm, spatial_dims=spatial_dims, channels=in_channels)
        self.norm2 = get_norm_layer(name=norm, spatial_dims=spatial_dims, channels=in_channels)
        self.act = get_act_layer(act)
        self.conv1 = mamba_layer(spatial_dims, in_channels, in_channels, **mamba_kwargs)
        self.conv2 = mamba_layer(spatial_dims, in_channels, in_channels, **mamba_kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv1(self.act(self.norm1(x)))
        return self.conv2(self.act(self.norm2(y))) + x


class ResUpBlock(nn.Module):
    """``act(norm2(dwconv(act(norm1(x))) + skip_scale * x))``."""

    def __init__(self, spatial_dims: int, in_channels: int, norm, kernel_size: int = 3,
                 act=("RELU", {"inplace": True})):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.norm1 = get_norm_layer(name=norm, spatial_dims=spatial_dims, channels=in_channels)
        self.norm2 = get_norm_layer(name=norm, spatial_dims=spatial_dims, channels=in_channels)
        self.act = get_act_layer(act)
        self.conv = dwconv(spatial_dims, in_channels, in_channels, kernel_size=kernel_size)
        self.skip_scale = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(self.act(self.norm1(x))) + self.skip_scale * x
        return self.act(self.norm2(y))


class LightMUNet(nn.Module):
    """LightM-UNet from plain kwargs: the original constructor's arguments, plus ``d_state``, ``d_conv``,
    ``expand`` of the Mamba layers and the scan ``backend``. ``norm`` and ``act`` are MONAI layer specs."""

    def __init__(self, spatial_dims: int = 3, init_filters: int = 8, in_channels: int = 1, out_channels: int = 2,
                 dropout_prob: Optional[float] = None, act=("RELU", {"inplace": True}),
                 norm=("GROUP", {"num_groups": 8}), norm_name: str = "", num_groups: int = 8,
                 use_conv_final: bool = True, blocks_down: Sequence[int] = (1, 2, 2, 4),
                 blocks_up: Sequence[int] = (1, 1, 1), upsample_mode: UpsampleMode | str = UpsampleMode.NONTRAINABLE,
                 d_state: int = 16, d_conv: int = 4, expand: float = 2, backend: Optional[str] = None):
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        if len(blocks_up) != len(blocks_down) - 1:
            raise ValueError(f"blocks_up {tuple(blocks_up)} needs one entry per level below the top of "
                             f"blocks_down {tuple(blocks_down)}")
        if norm_name:
            if norm_name.lower() != "group":
                raise ValueError(f"norm_name={norm_name!r}: only 'group' is accepted; use 'norm' instead")
            norm = ("group", {"num_groups": num_groups})
        self.spatial_dims, self.init_filters, self.in_channels = spatial_dims, init_filters, in_channels
        self.out_channels = out_channels if use_conv_final else init_filters
        self.blocks_down, self.blocks_up = tuple(blocks_down), tuple(blocks_up)
        self.dropout_prob, self.act, self.norm = dropout_prob, act, norm
        self.act_mod = get_act_layer(act)
        self.upsample_mode = UpsampleMode(upsample_mode)
        self.use_conv_final = use_conv_final
        mk = dict(d_state=d_state, d_conv=d_conv, expand=expand, backend=backend)

        self.convInit = dwconv(spatial_dims, in_channels, init_filters)
        self.down_layers = nn.ModuleList()
        for i, n_blocks in enumerate(blocks_down):
            c = init_filters * 2 ** i
            down = mamba_layer(spatial_dims, c // 2, c, stride=2, **mk) if i > 0 else nn.Identity()
            self.down_layers.append(nn.Sequential(
                down, *[ResMambaBlock(spatial_dims, c, norm=norm, act=act, **mk) for _ in range(n_blocks)]))
        self.up_layers, self.up_samples = nn.ModuleList(), nn.ModuleList()
        n_up = len(blocks_up)
        for i, n_blocks in enumerate(blocks_up):
            c = init_filters * 2 ** (n_up - i)
            self.up_layers.append(nn.Sequential(
                *[ResUpBlock(spatial_dims, c // 2, norm=norm, act=act) for _ in range(n_blocks)]))
            self.up_samples.append(nn.Sequential(
                get_conv_layer(spatial_dims, c, c // 2, kernel_size=1),
                get_upsample_layer(spatial_dims, c // 2, upsample_mode=self.upsample_mode)))
        self.conv_final = nn.Sequential(
            get_norm_layer(name=norm, spatial_dims=spatial_dims, channels=init_filters), self.act_mod,
            dwconv(spatial_dims, init_filters, out_channels, kernel_size=1, bias=True))
        if dropout_prob is not None:
            self.dropout = Dropout[Dropout.DROPOUT, spatial_dims](dropout_prob)

    @property
    def total_stride(self) -> int:
        return 2 ** (len(self.blocks_down) - 1)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = self.convInit(x)
        if self.dropout_prob is not None:
            x = self.dropout(x)
        down_x = []
        for down in self.down_layers:
            x = down(x)
            down_x.append(x)
        return x, down_x

    def decode(self, x: torch.Tensor, down_x: list[torch.Tensor]) -> torch.Tensor:
        """``down_x``: the encoder's outputs, deepest first."""
        for i, (up, upl) in enumerate(zip(self.up_samples, self.up_layers)):
            x = upl(up(x) + down_x[i + 1])
        return self.conv_final(x) if self.use_conv_final else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[2:]
        pad = [(-s) % self.total_stride for s in size]
        if any(pad):
            x = F.pad(x, [p for p_axis in reversed(pad) for p in (0, p_axis)])
        x, down_x = self.encode(x)
        out = self.decode(x, down_x[::-1])
        return out[(..., *[slice(0, s) for s in size])] if any(pad) else out

    def compute_conv_feature_map_size(self, input_size) -> np.int64:
        """nnU-Net-style activation count per sample (planner units): every norm/act/conv output, plus what each
        Mamba layer keeps (:meth:`MambaLayer.activation_elements`)."""
        size = [s + (-s) % self.total_stride for s in input_size]
        voxels = math.prod(size)
        total = (2 * self.in_channels + self.init_filters) * voxels  # stem
        for i, level in enumerate(self.down_layers):
            grid = [s // 2 ** i for s in size]
            c, v = self.init_filters * 2 ** i, math.prod(grid)
            for block in level:
                if isinstance(block, ResMambaBlock):
                    total += 5 * c * v + block.conv1.activation_elements(grid) + block.conv2.activation_elements(grid)
                elif isinstance(block, nn.Sequential):  # the widening Mamba layer at the finer grid, then the pool
                    total += block[0].activation_elements([s * 2 for s in grid]) + c * v
        n_up = len(self.blocks_up)
        for i, level in enumerate(self.up_layers):
            c, v = self.init_filters * 2 ** (n_up - i - 1), voxels // 2 ** (self.spatial_dims * (n_up - i - 1))
            total += 3 * c * v // 2 ** self.spatial_dims + 2 * c * v  # 1x1 conv, upsampling, sum
            total += 7 * c * v * len(level)
        if self.use_conv_final:
            total += (3 * self.init_filters + self.out_channels) * voxels
        return np.int64(total)


def lightmunet_from_plans(arch_kwargs: dict, input_channels: int, num_classes: int, deep_supervision: bool,
                          init_filters: int = 32, blocks_down: Sequence[int] = (1, 2, 2, 4),
                          blocks_up: Sequence[int] = (1, 1, 1), d_state: int = 16,
                          backend: Optional[str] = None) -> LightMUNet:
    """LightM-UNet as ``nnUNetTrainerLightMUNet.build_network_architecture`` builds it from resolved plans kwargs:
    ``spatial_dims`` from ``conv_op``, ``in_channels=input_channels``, ``out_channels=num_classes`` (the label
    manager's segmentation heads), ``init_filters=32``, ``blocks_down=(1, 2, 2, 4)``, ``blocks_up=(1, 1, 1)``
    and every other argument at its default. Widths, kernels, strides and stage counts of the plans are not
    used: the network always halves every axis three times.

    The network has no deep supervision: it returns one full-resolution output whatever ``deep_supervision``
    says (the authors' trainer turns nnU-Net's off, and so must the trainer that uses this)."""
    conv_op = arch_kwargs["conv_op"]
    dims = {nn.Conv2d: 2, nn.Conv3d: 3}.get(conv_op)
    if dims is None:
        raise ValueError(f"LightM-UNet exists in 2D and 3D; the plans' conv_op is {conv_op!r}")
    return LightMUNet(spatial_dims=dims, init_filters=init_filters, in_channels=input_channels,
                      out_channels=num_classes, blocks_down=list(blocks_down), blocks_up=list(blocks_up),
                      d_state=d_state, backend=backend)
