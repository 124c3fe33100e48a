"""Swin-UMamba (Liu et al., "Swin-UMamba: Mamba-based UNet with ImageNet-based pretraining", MICCAI 2024), as
the authors' code builds it: ``JiarunLiu/Swin-UMamba`` at commit 2c1f72e1975cef6621f239117efdc954237c6952
(``swin_umamba/nnunetv2/nets/SwinUMamba.py``: ``SwinUMamba``, ``VSSMEncoder``, ``get_swin_umamba_from_plans``),
module for module, so its state dicts load unchanged.

* ``stem``: 7x7 stride-2 conv to ``feat_size[0]`` (48) + affine InstanceNorm;
* ``vssm_encoder``: VMamba-Tiny on the stem output - 2x2 patch embedding to 96 channels + LayerNorm, four stages
  of VSS blocks (:class:`~nnunet_mamba.layers.ss2d.VSSBlock`; depths 2, 2, 9, 2; widths 96..768) with a
  ``PatchMerging2D`` between stages (``downsamples``); it returns the stem output and every stage's output
  (1/2 .. 1/32);
* MONAI's UNETR blocks (instance norm, residual): ``encoder1`` on the raw input, ``encoder2`` .. ``encoder5`` on the
  encoder outputs (widths 48 -> 96, 96 -> 192, 192 -> 384, 384 -> 768), transposed-conv up-blocks ``decoder6`` ..
  ``decoder2`` from the 1/32 map (768) up to full resolution, a last residual block ``decoder1``;
* ``out_layers``: four 1x1 heads (``UnetOutBlock``) on the full, 1/2, 1/4 and 1/8 resolution decoder maps; with
  ``deep_supervision`` all four (highest resolution first), else the first;
* initialisation: VMamba's in the encoder (:func:`~nnunet_mamba.layers.ss2d.vmamba_init_weights`), PyTorch's and
  MONAI's defaults elsewhere; stochastic depth 0 -> 0.2 over the encoder blocks.

``get_swin_umamba_from_plans`` takes only the input channels and the number of segmentation heads from the plans;
widths and depths are fixed (``feat_size=[48, 96, 192, 384, 768]``, ``hidden_size=768``). Its trainer
(``nnUNetTrainerSwinUMamba``) uses deep supervision at the fixed scales 1, 1/2, 1/4, 1/8, AdamW (lr 1e-4, weight
decay 0.05), a cosine schedule, and freezes the encoder except its patch embedding for the first 10 epochs
(:meth:`SwinUMamba.freeze_encoder`) when it starts from ImageNet weights.

Pretrained weights: ``load_pretrained_ckpt`` loads VMamba-Tiny's ImageNet checkpoint
(``vmamba_tiny_e292.pth``, release #20240218) into ``vssm_encoder``: key ``k`` -> ``vssm_encoder.k``, with
``layers.{i}.downsample.*`` -> ``downsamples.{i}.*``; it skips ``norm.*``, ``head.*`` and ``patch_embed.proj.*`` /
``patch_embed.norm.weight`` (the stem output differs from RGB at 4x4; ``patch_embed.norm.bias`` is loaded).
:func:`load_pretrained_ckpt` here does the same.

Where ours generalises the original:

* sizes not divisible by 32: the input is zero-padded (bottom/right) to a multiple of 32 and every output cropped
  back, the deep-supervision outputs to nnU-Net's target sizes ``round(size / 2**i)`` (the original's skip
  concatenations fail);
* the encoder's widths are ``feat_size[1:]`` and its depths a constructor argument (the original always builds
  VMamba-Tiny's 96..768, so it runs only with ``feat_size[1:]`` equal to those);
* the selective scan is the fused four-direction scan of :mod:`nnunet_mamba.kernels` (Triton on CUDA).

Swin-UMamba-dagger (``SwinUMambaD.py``: the same encoder with a VMamba decoder) is not reproduced here.
"""
from __future__ import annotations

import re
from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F
from monai.networks.blocks.dynunet_block import UnetOutBlock

from nnunet_mamba.layers.ss2d import PatchEmbed2D, PatchMerging2D, VSSLayer, drop_path_rates, vmamba_init_weights
from .unetr import unetr_basic, unetr_up


class VSSMEncoder(nn.Module):
    """Swin-UMamba's ``VSSMEncoder``: patch embedding, VSS stages and patch mergings on a channels-first map;
    returns ``[input, stage 0, ..., stage 3]`` (stages channels-first)."""

    def __init__(self, patch_size: int = 4, in_chans: int = 3, depths: Sequence[int] = (2, 2, 9, 2),
                 dims: Sequence[int] | int = (96, 192, 384, 768), d_state: int = 16, drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0, drop_path_rate: float = 0.2, norm_layer=nn.LayerNorm,
                 patch_norm: bool = True, backend: Optional[str] = None):
        super().__init__()
        n = len(depths)
        if isinstance(dims, int):
            dims = [int(dims * 2 ** i) for i in range(n)]
        self.num_layers, self.dims = n, list(dims)
        self.embed_dim, self.num_features = dims[0], dims[-1]
        self.patch_embed = PatchEmbed2D(patch_size, in_chans, dims[0], norm_layer if patch_norm else None)
        self.pos_drop = nn.Dropout(p=drop_rate)
        dpr = drop_path_rates(depths, drop_path_rate)
        self.layers = nn.ModuleList(VSSLayer(dims[i], depths[i], dpr[i], norm_layer, d_state, downsample=False,
                                             attn_drop=attn_drop_rate, backend=backend) for i in range(n))
        self.downsamples = nn.ModuleList(PatchMerging2D(dims[i], norm_layer) for i in range(n - 1))
        self.apply(vmamba_init_weights)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = [x]
        x = self.pos_drop(self.patch_embed(x))
        for s, layer in enumerate(self.layers):
            x = layer(x)
            outs.append(x.permute(0, 3, 1, 2))
            if s < len(self.downsamples):
                x = self.downsamples[s](x)
        return outs


class SwinUMamba(nn.Module):
    """Swin-UMamba from plain kwargs (the original's, plus the encoder's ``depths`` and ``d_state``)."""

    def __init__(self, in_chans: int = 1, out_chans: int = 13, feat_size: Sequence[int] = (48, 96, 192, 384, 768),
                 drop_path_rate: float = 0, layer_scale_init_value: float = 1e-6, hidden_size: int = 768,
                 norm_name="instance", res_block: bool = True, spatial_dims: int = 2, deep_supervision: bool = False,
                 *, depths: Sequence[int] = (2, 2, 9, 2), d_state: int = 16, encoder_drop_path_rate: float = 0.2,
                 backend: Optional[str] = None):
        super().__init__()
        if spatial_dims != 2:
            raise ValueError("Swin-UMamba is a 2D network (its stem and VMamba encoder are 2D)")
        feat_size = list(feat_size)
        self.hidden_size, self.in_chans, self.out_chans = hidden_size, in_chans, out_chans
        self.drop_path_rate = drop_path_rate  # stored, unused, as in the original
        self.feat_size = feat_size
        self.layer_scale_init_value = layer_scale_init_value
        self.spatial_dims = spatial_dims
        self.stem = nn.Sequential(nn.Conv2d(in_chans, feat_size[0], kernel_size=7, stride=2, padding=3),
                                  nn.InstanceNorm2d(feat_size[0], eps=1e-5, affine=True))
        self.vssm_encoder = VSSMEncoder(patch_size=2, in_chans=feat_size[0], depths=depths, dims=feat_size[1:],
                                        d_state=d_state, drop_path_rate=encoder_drop_path_rate, backend=backend)

        def basic(c_in, c_out):
            return unetr_basic(2, c_in, c_out, norm_name, res_block)

        def up(c_in, c_out):
            return unetr_up(2, c_in, c_out, norm_name, res_block)
        self.encoder1 = basic(in_chans, feat_size[0])
        self.encoder2 = basic(feat_size[0], feat_size[1])
        self.encoder3 = basic(feat_size[1], feat_size[2])
        self.encoder4 = basic(feat_size[2], feat_size[3])
        self.encoder5 = basic(feat_size[3], feat_size[4])
        self.decoder6 = up(hidden_size, feat_size[4])
        self.decoder5 = up(hidden_size, feat_size[3])
        self.decoder4 = up(feat_size[3], feat_size[2])
        self.decoder3 = up(feat_size[2], feat_size[1])
        self.decoder2 = up(feat_size[1], feat_size[0])
        self.decoder1 = basic(feat_size[0], feat_size[0])
        self.deep_supervision = deep_supervision
        self.out_layers = nn.ModuleList(UnetOutBlock(spatial_dims=2, in_channels=feat_size[i], out_channels=out_chans)
                                        for i in range(4))
        self.total_stride = 2 * 2 * 2 ** (len(depths) - 1)  # stem, patch embedding, patch mergings: 32

    def forward(self, x_in: torch.Tensor):
        size = x_in.shape[2:]
        pad = [(-s) % self.total_stride for s in size]
        if any(pad):
            x_in = F.pad(x_in, (0, pad[1], 0, pad[0]))
        vss_outs = self.vssm_encoder(self.stem(x_in))
        enc1 = self.encoder1(x_in)
        enc2 = self.encoder2(vss_outs[0])
        enc3 = self.encoder3(vss_outs[1])
        enc4 = self.encoder4(vss_outs[2])
        enc5 = self.encoder5(vss_outs[3])
        dec4 = self.decoder6(vss_outs[4], enc5)
        dec3 = self.decoder5(dec4, enc4)
        dec2 = self.decoder4(dec3, enc3)
        dec1 = self.decoder3(dec2, enc2)
        dec0 = self.decoder2(dec1, enc1)
        dec_out = self.decoder1(dec0)
        if not self.deep_supervision:
            out = self.out_layers[0](dec_out)
            return out[..., : size[0], : size[1]] if any(pad) else out
        outs = [layer(f) for layer, f in zip(self.out_layers, (dec_out, dec1, dec2, dec3))]
        if any(pad):  # nnU-Net's deep-supervision targets are round(size * 0.5 ** i)
            outs = [o[..., : round(size[0] / 2 ** i), : round(size[1] / 2 ** i)] for i, o in enumerate(outs)]
        return outs

    @torch.no_grad()
    def freeze_encoder(self):
        """The original trainer's first epochs with ImageNet weights: the encoder is fixed but its patch embedding."""
        for name, param in self.vssm_encoder.named_parameters():
            if "patch_embed" not in name:
                param.requires_grad = False

    @torch.no_grad()
    def unfreeze_encoder(self):
        for param in self.vssm_encoder.parameters():
            param.requires_grad = True

    def compute_conv_feature_map_size(self, input_size: Sequence[int]) -> np.int64:
        """Rough training activations per sample (nnU-Net planner units), at the padded size."""
        h, w = [s + (-s) % self.total_stride for s in input_size]
        px = [h * w // 4 ** level for level in range(6)]  # full .. 1/32
        widths = self.feat_size + [self.hidden_size]
        total = 2 * self.in_chans * px[0] + 2 * self.feat_size[0] * px[1]  # input, stem
        for level in range(5):  # UNETR encoder/decoder blocks: residual blocks and up-blocks, ~20 maps a level
            total += 20 * widths[level] * px[level]
        enc = self.vssm_encoder
        for i, layer in enumerate(enc.layers):
            t = px[i + 2]
            total += sum(b.activation_elements(t) for b in layer.blocks) + 2 * layer.dim * t
        n_heads = 4 if self.deep_supervision else 1
        total += sum(self.out_chans * px[i] for i in range(n_heads))
        return np.int64(total)


def vmamba_checkpoint_key(key: str) -> Optional[str]:
    """Where ``load_pretrained_ckpt`` puts a VMamba-Tiny ImageNet checkpoint key (None: skipped)."""
    skip = {"norm.weight", "norm.bias", "head.weight", "head.bias", "patch_embed.proj.weight",
            "patch_embed.proj.bias", "patch_embed.norm.weight"}
    if key in skip:
        return None
    m = re.match(r"layers\.(\d+)\.downsample\.(.*)", key)
    return f"vssm_encoder.downsamples.{m.group(1)}.{m.group(2)}" if m else f"vssm_encoder.{key}"


def load_pretrained_ckpt(model: SwinUMamba, ckpt_path: str) -> SwinUMamba:
    """The original ``load_pretrained_ckpt``: VMamba-Tiny ImageNet weights into ``model.vssm_encoder``."""
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    own = model.state_dict()
    for k, v in ckpt["model"].items():
        kr = vmamba_checkpoint_key(k)
        if kr is not None and kr in own:
            if v.shape != own[kr].shape:
                raise ValueError(f"shape mismatch for {kr}: {tuple(v.shape)} vs {tuple(own[kr].shape)}")
            own[kr] = v
    model.load_state_dict(own)
    return model


def swin_umamba_from_plans(arch_kwargs: dict, input_channels: int, num_classes: int, deep_supervision: bool,
                           feat_size: Sequence[int] = (48, 96, 192, 384, 768), hidden_size: int = 768,
                           depths: Sequence[int] = (2, 2, 9, 2), backend: Optional[str] = None,
                           **options) -> SwinUMamba:
    """Swin-UMamba as ``get_swin_umamba_from_plans`` builds it: input channels and segmentation heads from the
    dataset, everything else fixed (the plans' widths, kernels and strides are not used). 2D configurations only.
    With ``deep_supervision`` it returns four outputs at 1, 1/2, 1/4 and 1/8 of the input size, whatever the plans'
    pooling; the trainer has to use those deep-supervision scales (the original trainer's
    ``_get_deep_supervision_scales``)."""
    conv_op = arch_kwargs.get("conv_op")
    if conv_op is not None and conv_op is not nn.Conv2d:
        raise ValueError("Swin-UMamba is a 2D network: use a 2d configuration")
    return SwinUMamba(in_chans=input_channels, out_chans=num_classes, feat_size=feat_size,
                      deep_supervision=deep_supervision, hidden_size=hidden_size, depths=depths, backend=backend,
                      **options)
