"""SegMamba (Xing et al., MICCAI 2024), as the authors' code builds it (``ge-xing/SegMamba``,
``model_segmamba/segmamba.py``), module for module, so its state dicts load unchanged.

* ``vit``: the Mamba encoder. A k7 stride-2 stem conv, then per stage (widths 48, 96, 192, 384 at
  1/2 .. 1/16): downsampling (InstanceNorm + k2 s2 conv; the stem for stage 0), a gated spatial
  convolution (GSC; the released code adds its two branches), ``depths[i]`` tri-orientated Mamba
  layers (LayerNorm + :class:`~nnunet_mamba.layers.TriOrientedMamba` + residual), and an output
  InstanceNorm + 1x1-conv MLP;
* MONAI's UNETR blocks: a residual block on the raw input (``encoder1``) and on each encoder output
  (``encoder2`` .. ``encoder5``, the last widening 384 to 768), four transposed-conv up-blocks, a last
  residual block and a 1x1 output conv. One output (no deep supervision); PyTorch's default
  initialisation everywhere.

Where the original cannot run (it needs every spatial size divisible by 16, and fixes the inter-slice
scan's slice count for a 128^3 patch) this version pads the input to a multiple of 16, crops the
output back, and takes the slice count from each map.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn
import torch.nn.functional as F
from monai.networks.blocks.dynunet_block import UnetOutBlock

from nnunet_mamba.layers import TriOrientedMamba
from nnunet_mamba.layers.mixer import fp16_safe_precision
from .unetr import unetr_basic, unetr_up

TOTAL_STRIDE = 16


class MambaLayer(nn.Module):
    """``x + mamba(norm(x))`` over the voxel tokens of a 3D map."""

    def __init__(self, dim: int, d_state: int = 16, d_conv: int = 4, expand: int = 2, backend: Optional[str] = None):
        super().__init__()
        self.dim = dim
        self.norm = nn.LayerNorm(dim)
        self.mamba = TriOrientedMamba(dim, d_state=d_state, d_conv=d_conv, expand=expand, backend=backend)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        Bsz, C, *grid = x.shape
        context, inp = fp16_safe_precision(x)  # float16 autocast: run the layer with fp32's exponent range
        with context:
            out = self.mamba(self.norm(inp.reshape(Bsz, C, -1).transpose(1, 2)), grid)
        return out.transpose(1, 2).reshape(x.shape).to(x.dtype) + x


class MlpChannel(nn.Module):
    def __init__(self, hidden_size: int, mlp_dim: int):
        super().__init__()
        self.fc1 = nn.Conv3d(hidden_size, mlp_dim, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv3d(mlp_dim, hidden_size, 1)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class GSC(nn.Module):
    """Gated spatial convolution as released: ``relu(in(conv1(cbr3(cbr3(x)) + cbr1(x)))) + x``."""

    def __init__(self, in_channels: int):
        super().__init__()
        for i, k in ((1, 3), (2, 3), (3, 1), (4, 1)):
            tag = "" if i == 1 else str(i)
            setattr(self, f"proj{tag}", nn.Conv3d(in_channels, in_channels, k, 1, k // 2))
            setattr(self, f"norm{tag}", nn.InstanceNorm3d(in_channels))
            setattr(self, f"nonliner{tag}", nn.ReLU())

    def forward(self, x):
        x1 = self.nonliner(self.norm(self.proj(x)))
        x1 = self.nonliner2(self.norm2(self.proj2(x1)))
        x2 = self.nonliner3(self.norm3(self.proj3(x)))
        return self.nonliner4(self.norm4(self.proj4(x1 + x2))) + x


class MambaEncoder(nn.Module):
    """Four stages of downsampling, GSC and tri-orientated Mamba layers; returns each stage's MLP output."""

    def __init__(self, in_chans: int = 1, depths: Sequence[int] = (2, 2, 2, 2),
                 dims: Sequence[int] = (48, 96, 192, 384), backend: Optional[str] = None):
        super().__init__()
        self.downsample_layers = nn.ModuleList([nn.Sequential(nn.Conv3d(in_chans, dims[0], 7, stride=2, padding=3))])
        for i in range(3):
            self.downsample_layers.append(nn.Sequential(nn.InstanceNorm3d(dims[i]),
                                                        nn.Conv3d(dims[i], dims[i + 1], kernel_size=2, stride=2)))
        self.stages = nn.ModuleList(nn.Sequential(*[MambaLayer(dims[i], backend=backend) for _ in range(depths[i])])
                                    for i in range(4))
        self.gscs = nn.ModuleList(GSC(dims[i]) for i in range(4))
        for i in range(4):
            self.add_module(f"norm{i}", nn.InstanceNorm3d(dims[i]))
        self.mlps = nn.ModuleList(MlpChannel(dims[i], 2 * dims[i]) for i in range(4))
        self.output_channels = list(dims)
        self.strides = [[2, 2, 2]] * 4

    def forward(self, x):
        outs = []
        for i in range(4):
            x = self.stages[i](self.gscs[i](self.downsample_layers[i](x)))
            outs.append(self.mlps[i](getattr(self, f"norm{i}")(x)))
        return tuple(outs)


class SegMamba(nn.Module):
    """SegMamba from plain kwargs (the release's defaults: depths 2,2,2,2, widths 48..384, hidden 768)."""

    def __init__(self, in_chans: int = 1, out_chans: int = 13, depths: Sequence[int] = (2, 2, 2, 2),
                 feat_size: Sequence[int] = (48, 96, 192, 384), hidden_size: int = 768, norm_name: str = "instance",
                 res_block: bool = True, backend: Optional[str] = None):
        super().__init__()
        self.in_chans, self.out_chans = in_chans, out_chans
        self.vit = MambaEncoder(in_chans, depths=depths, dims=feat_size, backend=backend)

        def basic(c_in, c_out):
            return unetr_basic(3, c_in, c_out, norm_name, res_block)

        def up(c_in, c_out):
            return unetr_up(3, c_in, c_out, norm_name, res_block)
        self.encoder1 = basic(in_chans, feat_size[0])
        self.encoder2 = basic(feat_size[0], feat_size[1])
        self.encoder3 = basic(feat_size[1], feat_size[2])
        self.encoder4 = basic(feat_size[2], feat_size[3])
        self.encoder5 = basic(feat_size[3], hidden_size)
        self.decoder5 = up(hidden_size, feat_size[3])
        self.decoder4 = up(feat_size[3], feat_size[2])
        self.decoder3 = up(feat_size[2], feat_size[1])
        self.decoder2 = up(feat_size[1], feat_size[0])
        self.decoder1 = basic(feat_size[0], feat_size[0])
        # the release hard-codes in_channels=48 here, which is feat_size[0] in its configuration
        self.out = UnetOutBlock(spatial_dims=3, in_channels=feat_size[0], out_channels=out_chans)

    def forward(self, x_in: torch.Tensor) -> torch.Tensor:
        size = x_in.shape[2:]
        pad = [(-s) % TOTAL_STRIDE for s in size]
        if any(pad):
            x_in = F.pad(x_in, [p for p_axis in reversed(pad) for p in (0, p_axis)])
        outs = self.vit(x_in)
        enc1 = self.encoder1(x_in)
        enc2 = self.encoder2(outs[0])
        enc3 = self.encoder3(outs[1])
        enc4 = self.encoder4(outs[2])
        enc_hidden = self.encoder5(outs[3])
        dec3 = self.decoder5(enc_hidden, enc4)
        dec2 = self.decoder4(dec3, enc3)
        dec1 = self.decoder3(dec2, enc2)
        dec0 = self.decoder2(dec1, enc1)
        out = self.out(self.decoder1(dec0))
        return out[(..., *[slice(0, s) for s in size])] if any(pad) else out

    @property
    def encoder(self) -> MambaEncoder:
        return self.vit

    def compute_conv_feature_map_size(self, input_size) -> int:
        """nnU-Net-style activation count per sample: the UNETR path's maps plus the Mamba layers'."""
        import numpy as np
        full = int(np.prod([s + (-s) % TOTAL_STRIDE for s in input_size]))
        total = 4 * self.in_chans * full
        widths = [self.encoder1.layer.conv1.conv.out_channels] + list(self.vit.output_channels)
        for level, c in enumerate(widths):
            voxels = full // 8 ** level
            total += 12 * c * voxels  # residual blocks (x3 maps each), up-blocks, GSC, MLP
            if level:
                total += sum(int(9 * m.mamba.d_inner * voxels) for m in self.vit.stages[level - 1])
        return np.int64(total)
