"""MedMamba (Yue and Li, "MedMamba: Vision Mamba for Medical Image Classification", 2024), as the authors' code
builds it: ``YubiaoYue/MedMamba`` at commit 104beb3d641d67cef6f09b94ac299083d91bc417 (``MedMamba.py``: ``VSSM``,
``SS_Conv_SSM``), module for module, so its state dicts (and the released per-dataset weights) load unchanged.

* ``patch_embed``: 4x4 stride-4 conv to ``dims[0]`` + LayerNorm (channels-last from here on);
* ``layers``: four stages of SS-Conv-SSM blocks (:class:`SSConvSSM`), each but the last followed by
  ``PatchMerging2D``. A block splits the channels in two halves: the first goes through a conv branch
  (BN, 3x3 conv, BN, ReLU, 3x3 conv, BN, ReLU, 1x1 conv, ReLU), the second through LayerNorm + SS2D
  (:class:`~nnunet_mamba.layers.ss2d.SS2D`, width ``dim / 2``); the halves are concatenated (conv first), channel-
  shuffled with two groups and added to the block input;
* global average pooling and a linear ``head``;
* initialisation: VMamba's for linear layers and LayerNorms (truncated normal std 0.02, zero biases, 1/0), then
  Kaiming-normal (fan_out, ReLU) for every convolution weight (the patch embedding, the conv branches and SS2D's
  depthwise conv); stochastic depth 0 -> ``drop_path_rate`` (0.1) over the blocks.

Configurations (``MedMamba.py``'s last lines): MedMamba-T ``depths=[2, 2, 4, 2]``, ``dims=[96, 192, 384, 768]``
(the one ``train.py`` trains, at 3x224x224 after ``Resize((224, 224))``); -S ``depths=[2, 2, 8, 2]``; -B
``depths=[2, 2, 12, 2]``, ``dims=[128, 256, 512, 1024]``. :data:`MEDMAMBA_CONFIGS` holds them.

Inputs: any number of channels (``in_chans``), shape (B, in_chans, H, W). The original runs for H, W >= 32 (an odd
map loses its last row/column at each patch merging; below 32 the third merging meets a 1-pixel map and fails).
Where ours generalises the original:

* H or W below 32 (e.g. MedMNIST's 28x28) is zero-padded, centred, to 32 (as the classification pipeline pads to
  ``total_stride``); the original needs the input resized (its ``train.py`` resizes every image to 224x224);
* the selective scan is the fused four-direction scan of :mod:`nnunet_mamba.kernels` (Triton on CUDA).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn
import torch.nn.functional as F

from nnunet_mamba.layers.ss2d import SS2D, DropPath, PatchEmbed2D, PatchMerging2D, drop_path_rates, \
    vmamba_init_weights

MIN_SIZE = 32
MEDMAMBA_CONFIGS = {
    "t": dict(depths=[2, 2, 4, 2], dims=[96, 192, 384, 768]),
    "s": dict(depths=[2, 2, 8, 2], dims=[96, 192, 384, 768]),
    "b": dict(depths=[2, 2, 12, 2], dims=[128, 256, 512, 1024]),
}


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Channel shuffle on a channels-last map: (g, c/g) -> (c/g, g)."""
    B, H, W, C = x.shape
    return x.view(B, H, W, groups, C // groups).transpose(3, 4).reshape(B, H, W, C)


class SSConvSSM(nn.Module):
    """MedMamba's ``SS_Conv_SSM`` block on channels-last maps (B, H, W, hidden_dim)."""

    def __init__(self, hidden_dim: int, drop_path: float = 0.0, norm_layer=nn.LayerNorm, attn_drop_rate: float = 0.0,
                 d_state: int = 16, backend: Optional[str] = None):
        super().__init__()
        half = hidden_dim // 2
        self.ln_1 = norm_layer(half)
        self.self_attention = SS2D(half, d_state=d_state, dropout=attn_drop_rate, backend=backend)
        self.drop_path = DropPath(drop_path)
        self.conv33conv33conv11 = nn.Sequential(
            nn.BatchNorm2d(half), nn.Conv2d(half, half, 3, 1, 1), nn.BatchNorm2d(half), nn.ReLU(),
            nn.Conv2d(half, half, 3, 1, 1), nn.BatchNorm2d(half), nn.ReLU(), nn.Conv2d(half, half, 1, 1), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left, right = x.chunk(2, dim=-1)
        right = self.drop_path(self.self_attention(self.ln_1(right)))
        left = self.conv33conv33conv11(left.permute(0, 3, 1, 2).contiguous()).permute(0, 2, 3, 1)
        return channel_shuffle(torch.cat((left, right), dim=-1), groups=2) + x


class MedMambaLayer(nn.Module):
    """A stage: ``depth`` SS-Conv-SSM blocks, then ``PatchMerging2D`` if ``downsample``."""

    def __init__(self, dim: int, depth: int, drop_path: Sequence[float], norm_layer=nn.LayerNorm, d_state: int = 16,
                 downsample: bool = False, attn_drop: float = 0.0, backend: Optional[str] = None):
        super().__init__()
        self.dim = dim
        self.blocks = nn.ModuleList(SSConvSSM(dim, drop_path[i], norm_layer, attn_drop, d_state, backend)
                                    for i in range(depth))
        self.downsample = PatchMerging2D(dim, norm_layer) if downsample else None

    def forward(self, x):
        for blk in self.blocks:
            x = blk(x)
        return self.downsample(x) if self.downsample is not None else x


class MedMamba(nn.Module):
    """MedMamba's ``VSSM`` classifier from its kwargs (defaults: MedMamba-T, 3 channels, 1000 classes).

    ``depths_decoder`` / ``dims_decoder`` / ``use_checkpoint`` are accepted and unused, as in the original.
    Output: logits (B, num_classes).
    """

    total_stride = (32, 32)  # inputs padded to a multiple of it pool every stage cleanly

    def __init__(self, patch_size: int = 4, in_chans: int = 3, num_classes: int = 1000,
                 depths: Sequence[int] = (2, 2, 4, 2), depths_decoder: Sequence[int] = (2, 9, 2, 2),
                 dims: Sequence[int] | int = (96, 192, 384, 768), dims_decoder: Sequence[int] = (768, 384, 192, 96),
                 d_state: Optional[int] = 16, drop_rate: float = 0.0, attn_drop_rate: float = 0.0,
                 drop_path_rate: float = 0.1, norm_layer=nn.LayerNorm, patch_norm: bool = True,
                 use_checkpoint: bool = False, backend: Optional[str] = None):
        super().__init__()
        n = len(depths)
        if isinstance(dims, int):
            dims = [int(dims * 2 ** i) for i in range(n)]
        self.num_classes, self.num_layers, self.dims = num_classes, n, list(dims)
        self.in_chans = in_chans
        self.embed_dim, self.num_features = dims[0], dims[-1]
        d_state = -(-dims[0] // 6) if d_state is None else d_state
        self.patch_embed = PatchEmbed2D(patch_size, in_chans, dims[0], norm_layer if patch_norm else None)
        self.pos_drop = nn.Dropout(p=drop_rate)
        dpr = drop_path_rates(depths, drop_path_rate)
        self.layers = nn.ModuleList(
            MedMambaLayer(dims[i], depths[i], dpr[i], norm_layer, d_state, downsample=i < n - 1,
                          attn_drop=attn_drop_rate, backend=backend) for i in range(n))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.apply(vmamba_init_weights)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        self.min_size = patch_size * 2 ** (n - 1)

    def forward_backbone(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[2:]
        pad = [max(0, self.min_size - s) for s in size]
        if any(pad):
            x = F.pad(x, (pad[1] // 2, pad[1] - pad[1] // 2, pad[0] // 2, pad[0] - pad[0] // 2))
        x = self.pos_drop(self.patch_embed(x))
        for layer in self.layers:
            x = layer(x)
        return x

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled last-stage features (B, dims[-1]): the head's input."""
        return torch.flatten(self.avgpool(self.forward_backbone(x).permute(0, 3, 1, 2)), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def medmamba(variant: str, in_chans: int, num_classes: int, **kwargs) -> MedMamba:
    """MedMamba-T/S/B (``variant`` "t", "s", "b") for ``in_chans`` channels and ``num_classes`` classes."""
    return MedMamba(in_chans=in_chans, num_classes=num_classes, **{**MEDMAMBA_CONFIGS[variant.lower()], **kwargs})
