"""VM-UNet (Ruan and Xiang, "VM-UNet: Vision Mamba UNet for Medical Image Segmentation", 2024), as the
authors' code builds it: ``JCruan519/VM-UNet`` at commit 43c495bfd0cb2bd58fd0147687c60c9c624c4840
(``models/vmunet/vmunet.py``: ``VMUNet``; ``models/vmunet/vmamba.py``: ``VSSM``), module for module, so its
state dicts load unchanged (every key under ``vmunet.``).

* ``patch_embed``: 4x4 stride-4 conv to 96 channels + LayerNorm (channels-last from here on);
* encoder ``layers``: four VMamba stages (widths 96, 192, 384, 768; ``depths`` VSS blocks each, see
  :class:`~nnunet_mamba.layers.ss2d.VSSBlock`), each but the last followed by ``PatchMerging2D``;
* decoder ``layers_up``: four stages (widths 768, 384, 192, 96; ``depths_decoder`` blocks), each but the first
  starting with ``PatchExpand2D`` (linear C -> 2C, 2x2 pixel shuffle, LayerNorm). The skip is added before the
  expansion: stage i > 0 gets ``x + encoder_stage_{4-i}_output`` (the patch-embedding output is never used);
* ``final_up``: linear 96 -> 384, 4x4 pixel shuffle to 24 channels, LayerNorm; ``final_conv``: 1x1 conv;
* a one-channel input is repeated to three channels; one class gives ``sigmoid(logits)``;
* initialisation: VMamba's (:func:`~nnunet_mamba.layers.ss2d.vmamba_init_weights` on the backbone: linear
  layers truncated-normal std 0.02, zero biases, LayerNorms 1/0; convolutions and the stacked SS2D tensors keep
  their own); stochastic depth 0 -> ``drop_path_rate`` over the encoder blocks and back over the decoder's.

The authors' training (``train.py``, ``configs/config_setting*.py``) uses ``depths=[2, 2, 2, 2]``,
``depths_decoder=[2, 2, 2, 1]``, ``drop_path_rate=0.2`` and loads the ImageNet checkpoint
``vmamba_small_e238_ema.pth`` (VMamba-S, v0 release) through ``VMUNet.load_from``: checkpoint keys that equal
``vmunet.state_dict()`` keys load as they are (``patch_embed.*``, ``layers.{i}.blocks.{j}.*`` for the blocks
that exist, ``layers.{i}.downsample.*``), then ``layers.{i}.*`` load again as ``layers_up.{3-i}.*`` (blocks
only: the expansions have no counterpart). :meth:`VMUNet.load_from` does the same with a given checkpoint.

Where ours generalises the original:

* sizes not divisible by 32: the input is zero-padded (bottom/right) to a multiple of 32 and the output cropped
  back (the original's additive skips fail to align);
* ``dims`` / ``dims_decoder`` / ``d_state`` are constructor arguments (the original ``VMUNet`` always builds the
  96..768 backbone; its ``VSSM`` takes them);
* ``sigmoid_single_class=False`` returns logits for one class too (for nnU-Net, which applies its own
  nonlinearity);
* the one-to-three channel repeat happens only when the patch embedding expects more than one channel (the
  original repeats also for ``input_channels=1`` and then fails);
* the selective scan is the fused four-direction scan of :mod:`nnunet_mamba.kernels` (Triton on CUDA).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

from nnunet_mamba.layers.ss2d import PatchEmbed2D, VSSBlock, VSSLayer, drop_path_rates, vmamba_init_weights

def _pixel_shuffle_last(x: torch.Tensor, scale: int) -> torch.Tensor:
    """``b h w (p1 p2 c) -> b (h p1) (w p2) c``."""
    B, H, W, C = x.shape
    c = C // (scale * scale)
    x = x.view(B, H, W, scale, scale, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(B, H * scale, W * scale, c)


class PatchExpand2D(nn.Module):
    """VM-UNet's 2x expansion of a ``2 * dim`` map to ``dim`` channels: linear 2dim -> 4dim, shuffle, norm."""

    def __init__(self, dim: int, dim_scale: int = 2, norm_layer=nn.LayerNorm):
        super().__init__()
        self.dim = dim * 2
        self.dim_scale = dim_scale
        self.expand = nn.Linear(self.dim, dim_scale * self.dim, bias=False)
        self.norm = norm_layer(self.dim // dim_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(_pixel_shuffle_last(self.expand(x), self.dim_scale))


class FinalPatchExpand2D(nn.Module):
    """The last 4x expansion: linear dim -> 4dim, 4x4 shuffle to dim / 4 channels, norm."""

    def __init__(self, dim: int, dim_scale: int = 4, norm_layer=nn.LayerNorm):
        super().__init__()
        self.dim = dim
        self.dim_scale = dim_scale
        self.expand = nn.Linear(dim, dim_scale * dim, bias=False)
        self.norm = norm_layer(dim // dim_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(_pixel_shuffle_last(self.expand(x), self.dim_scale))


class VSSLayerUp(nn.Module):
    """A decoder stage: ``PatchExpand2D`` if ``upsample``, then ``depth`` VSS blocks."""

    def __init__(self, dim: int, depth: int, drop_path: Sequence[float], norm_layer=nn.LayerNorm, d_state: int = 16,
                 upsample: bool = False, attn_drop: float = 0.0, backend: Optional[str] = None):
        super().__init__()
        self.dim = dim
        self.blocks = nn.ModuleList(VSSBlock(dim, drop_path[i], norm_layer, attn_drop, d_state, backend=backend)
                                    for i in range(depth))
        self.upsample = PatchExpand2D(dim, norm_layer=norm_layer) if upsample else None

    def forward(self, x):
        if self.upsample is not None:
            x = self.upsample(x)
        for blk in self.blocks:
            x = blk(x)
        return x


class VMUNetBackbone(nn.Module):
    """VM-UNet's ``VSSM``: patch embedding, encoder, decoder with additive skips, final expansion and conv."""

    def __init__(self, patch_size: int = 4, in_chans: int = 3, num_classes: int = 1,
                 depths: Sequence[int] = (2, 2, 9, 2), depths_decoder: Sequence[int] = (2, 9, 2, 2),
                 dims: Sequence[int] = (96, 192, 384, 768), dims_decoder: Sequence[int] = (768, 384, 192, 96),
                 d_state: Optional[int] = 16, drop_rate: float = 0.0, attn_drop_rate: float = 0.0,
                 drop_path_rate: float = 0.1, norm_layer=nn.LayerNorm, patch_norm: bool = True,
                 backend: Optional[str] = None):
        super().__init__()
        n = len(depths)
        if isinstance(dims, int):
            dims = [int(dims * 2 ** i) for i in range(n)]
        self.num_classes, self.num_layers, self.dims = num_classes, n, list(dims)
        self.patch_size = patch_size
        d_state = math.ceil(dims[0] / 6) if d_state is None else d_state
        self.patch_embed = PatchEmbed2D(patch_size, in_chans, dims[0], norm_layer if patch_norm else None)
        self.pos_drop = nn.Dropout(p=drop_rate)
        dpr = drop_path_rates(depths, drop_path_rate)
        # the decoder's rates: linspace over its blocks, reversed, split per stage
        flat = [v.item() for v in torch.linspace(0, drop_path_rate, sum(depths_decoder), device="cpu")][::-1]
        dpr_dec = [flat[sum(depths_decoder[:i]):sum(depths_decoder[:i + 1])] for i in range(n)]
        self.layers = nn.ModuleList(
            VSSLayer(dims[i], depths[i], dpr[i], norm_layer, d_state, downsample=i < n - 1, attn_drop=attn_drop_rate,
                     backend=backend) for i in range(n))
        self.layers_up = nn.ModuleList(
            VSSLayerUp(dims_decoder[i], depths_decoder[i], dpr_dec[i], norm_layer, d_state, upsample=i != 0,
                       attn_drop=attn_drop_rate, backend=backend) for i in range(n))
        self.final_up = FinalPatchExpand2D(dims_decoder[-1], dim_scale=4, norm_layer=norm_layer)
        self.final_conv = nn.Conv2d(dims_decoder[-1] // 4, num_classes, 1)
        self.apply(vmamba_init_weights)

    def forward_features(self, x):
        skips = []
        x = self.pos_drop(self.patch_embed(x))
        for layer in self.layers:
            skips.append(x)
            x = layer(x)
        return x, skips

    def forward_features_up(self, x, skips):
        for i, layer_up in enumerate(self.layers_up):
            x = layer_up(x if i == 0 else x + skips[-i])
        return x

    def forward_final(self, x):
        return self.final_conv(self.final_up(x).permute(0, 3, 1, 2))

    def forward(self, x):
        x, skips = self.forward_features(x)
        return self.forward_final(self.forward_features_up(x, skips))


class VMUNet(nn.Module):
    """VM-UNet from plain kwargs (the original ``VMUNet``'s, plus the backbone's widths and state size)."""

    def __init__(self, input_channels: int = 3, num_classes: int = 1, depths: Sequence[int] = (2, 2, 9, 2),
                 depths_decoder: Sequence[int] = (2, 9, 2, 2), drop_path_rate: float = 0.2,
                 load_ckpt_path: Optional[str] = None, *, dims: Sequence[int] = (96, 192, 384, 768),
                 dims_decoder: Optional[Sequence[int]] = None, d_state: Optional[int] = 16,
                 sigmoid_single_class: bool = True, backend: Optional[str] = None):
        super().__init__()
        self.load_ckpt_path = load_ckpt_path
        self.num_classes = num_classes
        self.input_channels = input_channels
        self.sigmoid_single_class = sigmoid_single_class
        dims = list(dims)
        self.vmunet = VMUNetBackbone(in_chans=input_channels, num_classes=num_classes, depths=depths,
                                     depths_decoder=depths_decoder, dims=dims,
                                     dims_decoder=dims[::-1] if dims_decoder is None else dims_decoder,
                                     d_state=d_state, drop_path_rate=drop_path_rate, backend=backend)
        self.total_stride = self.vmunet.patch_size * 2 ** (len(depths) - 1)  # 32 in every published configuration

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1 and self.input_channels != 1:
            x = x.repeat(1, 3, 1, 1)
        size = x.shape[2:]
        pad = [(-s) % self.total_stride for s in size]
        if any(pad):
            x = F.pad(x, (0, pad[1], 0, pad[0]))
        logits = self.vmunet(x)
        if any(pad):
            logits = logits[..., : size[0], : size[1]]
        return torch.sigmoid(logits) if self.num_classes == 1 and self.sigmoid_single_class else logits

    def load_from(self, ckpt_path: Optional[str] = None) -> dict:
        """Load a VMamba ImageNet checkpoint (``{'model': state_dict}``) as the original ``load_from`` does:
        matching keys into the backbone, then encoder stage ``layers.i`` again into ``layers_up.{3-i}``.
        Returns the numbers of keys loaded in each pass."""
        path = ckpt_path or self.load_ckpt_path
        if path is None:
            return {}
        pretrained = torch.load(path, map_location="cpu", weights_only=False)["model"]
        own = self.vmunet.state_dict()
        enc = {k: v for k, v in pretrained.items() if k in own}
        own.update(enc)
        self.vmunet.load_state_dict(own)
        renamed = {}
        for k, v in pretrained.items():
            for i in range(4):
                if f"layers.{i}" in k:
                    renamed[k.replace(f"layers.{i}", f"layers_up.{3 - i}")] = v
                    break
        own = self.vmunet.state_dict()
        dec = {k: v for k, v in renamed.items() if k in own}
        own.update(dec)
        self.vmunet.load_state_dict(own)
        return {"encoder": len(enc), "decoder": len(dec)}

    def compute_conv_feature_map_size(self, input_size: Sequence[int]) -> np.int64:
        """Rough training activations per sample (nnU-Net planner units), at the padded size."""
        h, w = [s + (-s) % self.total_stride for s in input_size]
        net = self.vmunet
        p = net.patch_size
        tokens = (h // p) * (w // p)
        total = self.input_channels * h * w + 2 * net.dims[0] * tokens
        for i, layer in enumerate(net.layers):
            t = tokens // 4 ** i
            total += sum(b.activation_elements(t) for b in layer.blocks)
            if layer.downsample is not None:  # concatenation, its norm, the reduction
                total += (4 + 4 + 2) * layer.dim * t // 4
        for i, layer in enumerate(net.layers_up):
            t = tokens // 4 ** (net.num_layers - 1 - i)
            total += sum(b.activation_elements(t) for b in layer.blocks) + 3 * layer.dim * t
        total += 4 * net.dims[0] * tokens + 2 * net.dims[0] // 4 * h * w + net.num_classes * h * w
        return np.int64(total)


def vmunet_from_plans(arch_kwargs: dict, input_channels: int, num_classes: int, deep_supervision: bool,
                      depths: Sequence[int] = (2, 2, 2, 2), depths_decoder: Sequence[int] = (2, 2, 2, 1),
                      drop_path_rate: float = 0.2, gray_to_rgb: bool = True, backend: Optional[str] = None,
                      **options) -> VMUNet:
    """VM-UNet in the paper's configuration (``configs/config_setting*.py``: depths 2,2,2,2, decoder 2,2,2,1,
    widths 96..768, stochastic depth 0.2) for a 2D nnU-Net configuration; only the channels come from the dataset.

    The plans' widths, kernels and strides are not used (the original has one fixed architecture). One output,
    logits (no deep supervision: the trainer has to turn nnU-Net's off). ``gray_to_rgb``: a one-channel dataset
    gets the paper's three-channel patch embedding fed with the repeated channel (Synapse CT in the paper), which
    keeps the ImageNet checkpoint's shapes."""
    conv_op = arch_kwargs.get("conv_op")
    if conv_op is not None and conv_op is not nn.Conv2d:
        raise ValueError("VM-UNet is a 2D network: use a 2d configuration")
    channels = 3 if (gray_to_rgb and input_channels == 1) else input_channels
    return VMUNet(channels, num_classes, depths=depths, depths_decoder=depths_decoder, drop_path_rate=drop_path_rate,
                  sigmoid_single_class=False, backend=backend, **options)
