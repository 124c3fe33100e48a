"""nnMamba (Gong et al., "nnMamba: 3D Biomedical Image Segmentation, Classification and Landmark Detection with
State Space Model", ISBI 2025), as the authors' code builds it (``lhaof/nnMamba`` at commit
6fb35a3d7e9352f7b3cc83a035ef3ae0d0e8fa28), module for module, so its state dicts load unchanged (identity key map).

* :class:`NnMambaSeg` is ``nnMambaSeg`` of ``nnMamba.py``: a stride-2 double conv stem (``channels`` at 1/2),
  three residual stages (widths 2, 4, 8 x ``channels`` at 1/4, 1/8, 1/16; ``blocks`` BasicBlocks each, the first
  strided with a 1x1 projection shortcut), a U-Net decoder of trilinear x2 upsampling + double convs whose skips
  are scaled by squeeze-excitation style channel attentions (``att1..3``, bottleneck ``dim // 16``), and a last
  double conv to ``number_classes`` (so the logits pass BatchNorm + ReLU, as in the original). In blocks
  2..``blocks`` of each stage a MICCSS layer is added to the residual branch: 1x1 conv + BN + ReLU, then ONE
  Mamba (tied parameters) applied to the token sequence, its channel flip, its sequence flip and both, each
  flipped back, averaged, plus the layer's input, then 1x1 conv + BN + ReLU. As in the original, the stage's
  blocks share ONE such layer instance (its parameters count once; its keys appear once per block).
* :class:`NnMambaCls` is ``nnMambaEncoder`` of ``nnMamba4cls.py`` (= ``classification/networks/ssm_nnMamba.py``):
  the same stem, a residual Mamba layer on the stem output (``d_state=8``; a single Mamba, no flips: the released
  classifier has no MICCSS), the three residual stages without Mamba, global average pooling of the three stage
  outputs (14 x ``channels`` features) and an MLP (Linear, ReLU, Dropout 0.5, Linear) to ``number_classes``.

BatchNorm3d throughout; PyTorch's default initialisation (mamba-ssm's inside each Mamba), which is what the
original's scripts and nnU-Net trainers use. Where ours generalises the original:

* :class:`NnMambaSeg` takes any input size: it zero-pads each spatial size to a multiple of 16 and crops the
  output back (the original needs multiples of 16, else its skip concatenations fail);
* under float16 autocast the Mamba layers run in bf16 (float32 without bf16), as our other Mamba networks;
* :func:`nnmamba_from_plans` builds the segmentation network for nnU-Net plans: channels in/out from the
  dataset, the original's fixed topology, one output (the released ``nnMamba.py`` has no deep supervision);
* :class:`NnMambaCls` exposes ``total_stride`` (16) for whole-image padding; it accepts any input size, as the
  original does (global pooling).
"""
from __future__ import annotations

import warnings
from typing import Optional

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

from nnunet_mamba.layers import Mamba
from nnunet_mamba.layers.mixer import fp16_safe_precision

TOTAL_STRIDE = 16


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv3d:
    return nn.Conv3d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv3d:
    return nn.Conv3d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class MambaLayer(nn.Module):
    """``relu(bn(conv1x1(ssm(a) + a)))`` with ``a = relu(bn(conv1x1(x)))``, ``ssm`` over the voxel tokens.

    ``siamese=True`` (segmentation, MICCSS): ``ssm(t) = mean over flips f in {none, channels, sequence, both} of
    f(mamba(f(t)))`` with one Mamba; ``siamese=False`` (classification): ``ssm = mamba``.
    """

    def __init__(self, dim: int, d_state: int = 16, d_conv: int = 4, expand: int = 2, siamese: bool = True,
                 backend: Optional[str] = None):
        super().__init__()
        self.dim, self.siamese = dim, siamese
        self.nin = conv1x1(dim, dim)
        self.nin2 = conv1x1(dim, dim)
        self.norm2 = nn.BatchNorm3d(dim)
        self.relu2 = nn.ReLU(inplace=True)
        self.norm = nn.BatchNorm3d(dim)
        self.relu = nn.ReLU(inplace=True)
        self.mamba = Mamba(d_model=dim, d_state=d_state, d_conv=d_conv, expand=expand, backend=backend)

    def _ssm(self, tokens: torch.Tensor) -> torch.Tensor:
        if not self.siamese:
            return self.mamba(tokens)
        Bsz = tokens.shape[0]
        # (B, L, C): dim 2 flips the channels, dim 1 the sequence; one batched call runs the four tied copies
        variants = torch.cat([tokens, tokens.flip(2), tokens.flip(1), tokens.flip(1, 2)], dim=0)
        y = self.mamba(variants)
        y_ori, y_c, y_l, y_lc = y.split(Bsz, dim=0)
        return (y_ori + y_c.flip(2) + y_l.flip(1) + y_lc.flip(1, 2)) / 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        Bsz, C, *grid = x.shape
        if C != self.dim:
            raise ValueError(f"MambaLayer expects {self.dim} channels, got {C}")
        act = self.relu(self.norm(self.nin(x)))
        tokens = act.reshape(Bsz, C, -1).transpose(1, 2)
        context, inp = fp16_safe_precision(tokens)
        with context:
            y = self._ssm(inp)
        out = y.to(act.dtype).transpose(1, 2).reshape(act.shape) + act
        return self.relu2(self.norm2(self.nin2(out)))


class BasicBlock(nn.Module):
    """ResNet basic block; with ``mamba_layer``, ``mamba_layer(x)`` joins the residual branch before the sum."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: Optional[nn.Module] = None,
                 mamba_layer: Optional[MambaLayer] = None):
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm3d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm3d(planes)
        self.mamba_layer = mamba_layer
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        if self.mamba_layer is not None:
            out = out + self.mamba_layer(x)
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


def make_res_layer(inplanes: int, planes: int, blocks: int, stride: int = 1,
                   mamba_layer: Optional[MambaLayer] = None) -> nn.Sequential:
    """A strided block with a 1x1 conv + BN shortcut, then ``blocks - 1`` blocks that all hold ``mamba_layer``."""
    downsample = nn.Sequential(conv1x1(inplanes, planes, stride), nn.BatchNorm3d(planes))
    layers = [BasicBlock(inplanes, planes, stride, downsample)]
    layers += [BasicBlock(planes, planes, mamba_layer=mamba_layer) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


class DoubleConv(nn.Module):
    """(conv k, stride s, bias) + BN + ReLU, (conv 3, bias) + BN + ReLU."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, kernel_size: int = 3):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv3d(in_ch, out_ch, kernel_size=kernel_size, stride=stride, padding=kernel_size // 2),
            nn.BatchNorm3d(out_ch), nn.ReLU(inplace=True),
            nn.Conv3d(out_ch, out_ch, 3, padding=1), nn.BatchNorm3d(out_ch), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class ChannelAttention(nn.Module):
    """``sigmoid(layer2(relu(layer1(v))))`` on pooled features (B, dim); bottleneck ``dim // r`` (may be 0)."""

    def __init__(self, dim: int, r: int = 16):
        super().__init__()
        with warnings.catch_warnings():  # below r channels the bottleneck is empty, as in the original
            warnings.filterwarnings("ignore", message="Initializing zero-element tensors is a no-op")
            self.layer1 = nn.Linear(dim, dim // r)
            self.layer2 = nn.Linear(dim // r, dim)
        self.relu = nn.ReLU()
        self.sigmoid = nn.Sigmoid()

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return self.sigmoid(self.layer2(self.relu(self.layer1(v))))


class NnMambaSeg(nn.Module):
    """nnMamba's segmentation network from the original's kwargs (defaults: 1 -> 6 channels, width 32, 3 blocks)."""

    def __init__(self, in_ch: int = 1, channels: int = 32, blocks: int = 3, number_classes: int = 6,
                 backend: Optional[str] = None):
        super().__init__()
        if blocks < 1:
            raise ValueError(f"blocks must be >= 1, got {blocks}")
        self.in_ch, self.channels, self.blocks, self.number_classes = in_ch, channels, blocks, number_classes
        # registered (and initialised) in the original's order, so that the state-dict keys come in its order
        self.in_conv = DoubleConv(in_ch, channels, stride=2, kernel_size=3)
        self.pooling = nn.AdaptiveAvgPool3d((1, 1, 1))
        for i in (1, 2, 3):
            c_in, c_out = channels * 2 ** (i - 1), channels * 2 ** i
            self.add_module(f"att{i}", ChannelAttention(c_in))
            mamba_layer = MambaLayer(c_out, siamese=True, backend=backend)  # one instance for the whole stage
            self.add_module(f"layer{i}", make_res_layer(c_in, c_out, blocks, stride=2, mamba_layer=mamba_layer))
        self.up5 = nn.Upsample(scale_factor=2, mode="trilinear", align_corners=False)
        self.conv5 = DoubleConv(channels * 12, channels * 4)
        self.up6 = nn.Upsample(scale_factor=2, mode="trilinear", align_corners=False)
        self.conv6 = DoubleConv(channels * 6, channels * 2)
        self.up7 = nn.Upsample(scale_factor=2, mode="trilinear", align_corners=False)
        self.conv7 = DoubleConv(channels * 3, channels)
        self.up8 = nn.Upsample(scale_factor=2, mode="trilinear", align_corners=False)
        self.conv8 = DoubleConv(channels, number_classes)

    def _scaled(self, att: ChannelAttention, c: torch.Tensor) -> torch.Tensor:
        return c * att(self.pooling(c).flatten(1)).reshape(*c.shape[:2], 1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[2:]
        pad = [(-s) % TOTAL_STRIDE for s in size]
        if any(pad):
            x = F.pad(x, [p for p_axis in reversed(pad) for p in (0, p_axis)])
        c1 = self.in_conv(x)
        c2 = self.layer1(c1)
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.conv5(torch.cat([self.up5(c4), self._scaled(self.att3, c3)], dim=1))
        c6 = self.conv6(torch.cat([self.up6(c5), self._scaled(self.att2, c2)], dim=1))
        c7 = self.conv7(torch.cat([self.up7(c6), self._scaled(self.att1, c1)], dim=1))
        out = self.conv8(self.up8(c7))
        return out[(..., *[slice(0, s) for s in size])] if any(pad) else out

    def compute_conv_feature_map_size(self, input_size) -> np.int64:
        """nnU-Net-style activation count per sample (for planning): conv/BN maps per level plus the MICCSS
        layers' Mamba activations (four tied copies per application, ``blocks - 1`` applications per stage)."""
        full = int(np.prod([s + (-s) % TOTAL_STRIDE for s in input_size]))
        c, k = self.channels, self.number_classes
        total = self.in_ch * full + 2 * c * full + 2 * k * full  # input, up8, conv8
        widths = [c, 2 * c, 4 * c, 8 * c]
        decoder = [c, 2 * c, 4 * c, 0]  # conv7, conv6, conv5 outputs (+ their concatenated inputs below)
        for level, w in enumerate(widths, start=1):
            voxels = full // 8 ** level
            total += 4 * w * voxels  # stem / first block (2 convs + BN each) and the projection shortcut
            total += 4 * w * voxels * max(self.blocks - 1, 0)  # further blocks
            if decoder[level - 1]:
                total += (4 * decoder[level - 1] + 3 * widths[level]) * voxels  # concat, double conv, upsample
            if level > 1:
                d_inner = 2 * w
                total += max(self.blocks - 1, 0) * (4 * 9 * d_inner + 6 * w) * voxels
        return np.int64(total)


class NnMambaCls(nn.Module):
    """nnMamba's classifier from the original's kwargs (defaults: 1 channel, width 32, 3 blocks, 1 logit).

    Input (B, in_ch, D, H, W) of any size (global average pooling; BatchNorm in training needs more than one
    value per channel at 1/16, i.e. a batch of 2 or a 1/16 map larger than 1 voxel); output (B, number_classes).
    """

    total_stride = (TOTAL_STRIDE,) * 3

    def __init__(self, in_ch: int = 1, channels: int = 32, blocks: int = 3, number_classes: int = 1,
                 backend: Optional[str] = None):
        super().__init__()
        if blocks < 1:
            raise ValueError(f"blocks must be >= 1, got {blocks}")
        self.in_ch, self.channels, self.blocks, self.number_classes = in_ch, channels, blocks, number_classes
        self.num_classes = number_classes
        self.in_conv = DoubleConv(in_ch, channels, stride=2, kernel_size=3)
        self.mamba_layer_stem = MambaLayer(channels, d_state=8, d_conv=4, expand=2, siamese=False, backend=backend)
        for i in (1, 2, 3):
            setattr(self, f"layer{i}", make_res_layer(channels * 2 ** (i - 1), channels * 2 ** i, blocks, stride=2))
        self.pooling = nn.AdaptiveAvgPool3d((1, 1, 1))
        self.mlp = nn.Sequential(nn.Linear(channels * 14, channels), nn.ReLU(), nn.Dropout(0.5),
                                 nn.Linear(channels, number_classes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled stage features (B, 14 * channels): the MLP's input."""
        c1 = self.in_conv(x)
        c2 = self.layer1(self.mamba_layer_stem(c1) + c1)
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        return torch.cat([self.pooling(c).flatten(1) for c in (c2, c3, c4)], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.features(x))


def nnmamba_from_plans(arch_kwargs: dict, input_channels: int, num_classes: int, deep_supervision: bool,
                       channels: int = 32, blocks: int = 3, backend: Optional[str] = None) -> NnMambaSeg:
    """:class:`NnMambaSeg` for nnU-Net plans: the original's fixed topology (width ``channels``, ``blocks`` per
    stage, total stride 16; the plans' stages, kernels and strides are not used), channels in and out from the
    dataset. One output whatever ``deep_supervision`` says: the trainer turns nnU-Net's deep supervision off."""
    if arch_kwargs.get("conv_op") is not nn.Conv3d:
        raise ValueError("nnMamba is a 3D network: use a 3d configuration (3d_fullres)")
    return NnMambaSeg(in_ch=input_channels, channels=channels, blocks=blocks, number_classes=num_classes,
                      backend=backend)
