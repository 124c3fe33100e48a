"""Registry of segmentation networks (timm-style): ``build_network(name, ...)``.

Every entry is built from resolved nnU-Net plans kwargs (:mod:`.plans`) plus
input channels, output channels and the deep-supervision flag, for 2D or 3D.

| name         | network                                                                                            |
|--------------|----------------------------------------------------------------------------------------------------|
| mamba_resenc | ResEnc U-Net + residual multi-directional Mamba mixers on the 2 lowest-resolution stages (default) |
| nomamba      | the same network without mixers (the ablation)                                                     |
| umamba_bot   | U-Mamba Bot (Ma et al. 2024), as bowang-lab/U-Mamba builds it                                      |
| umamba_enc   | U-Mamba Enc (Ma et al. 2024), as bowang-lab/U-Mamba builds it                                      |
| segmamba     | SegMamba (Xing et al. 2024), as ge-xing/SegMamba builds it (3D)                                    |
| lightmunet   | LightM-UNet (Liao et al. 2024), as MrBlankness/LightM-UNet builds it                               |
| nnmamba      | nnMamba (Gong et al. 2024), as lhaof/nnMamba builds it (3D)                                        |
| vmunet       | VM-UNet (Ruan and Xiang 2024), as JCruan519/VM-UNet builds it (2D)                                 |
| swin_umamba  | Swin-UMamba (Liu et al. 2024), as JiarunLiu/Swin-UMamba builds it (2D)                             |

Entries that need the patch size (U-Mamba Enc's channel-token mode) are registered with
``needs_patch_size=True`` and get it from :func:`build_network`.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

from torch import nn

from nnunet_mamba.layers import MultiDirMamba
from .hybrid_unet import HybridResEncUNet
from .lightmunet import lightmunet_from_plans
from .nnmamba import nnmamba_from_plans
from .segmamba import SegMamba
from .swin_umamba import swin_umamba_from_plans
from .umamba import UMamba
from .vmunet import vmunet_from_plans

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
_NEEDS_PATCH_SIZE: set[str] = set()
_DIMS: dict[str, tuple[int, ...]] = {}
_SOURCES: dict[str, Optional[str]] = {}


def register_network(name: str, needs_patch_size: bool = False, dims: tuple[int, ...] = (2, 3),
                     source: Optional[str] = None):
    """``source``: the paper and code a network reproduces (None: a network of this package)."""
    def deco(fn):
        if name in _REGISTRY:
            raise KeyError(f"network {name!r} registered twice")
        _REGISTRY[name] = fn
        _DIMS[name] = dims
        _SOURCES[name] = source
        if needs_patch_size:
            _NEEDS_PATCH_SIZE.add(name)
        return fn
    return deco


def network_source(name: str) -> Optional[str]:
    """The paper and repository (at a commit) that ``name`` is proven equal to, or None for our own networks."""
    return _SOURCES[name]


def network_dims(name: str) -> tuple[int, ...]:
    """The spatial dimensionalities (2, 3) the network ``name`` exists in."""
    return _DIMS[name]


def list_networks() -> list[str]:
    return sorted(_REGISTRY)


def build_network(name: str, arch_kwargs: dict, input_channels: int, num_classes: int,
                  deep_supervision: bool = True, patch_size: Optional[Sequence[int]] = None,
                  **options) -> nn.Module:
    """Build a registered network from resolved plans kwargs; ``options`` override its defaults.
    ``patch_size`` (the plans' patch) is passed to the entries whose architecture depends on it."""
    if name not in _REGISTRY:
        raise KeyError(f"unknown network {name!r}; available: {', '.join(list_networks())}")
    if name in _NEEDS_PATCH_SIZE:
        if patch_size is None:
            raise ValueError(f"network {name!r} is built for a patch size: pass patch_size")
        options["patch_size"] = [int(p) for p in patch_size]
    return _REGISTRY[name](arch_kwargs=dict(arch_kwargs), input_channels=input_channels, num_classes=num_classes,
                           deep_supervision=deep_supervision, **options)


def _resenc_kwargs(arch_kwargs: dict) -> dict:
    return {k: v for k, v in arch_kwargs.items() if k != "n_conv_per_stage"}


@register_network("mamba_resenc")
def mamba_resenc(arch_kwargs, input_channels, num_classes, deep_supervision, mixer_stages=(-2, -1),
                 directions=None, d_state=16, expand=1.0, backend=None):
    """``directions``: scan directions per mixer, one int for all, or one per entry of ``mixer_stages``
    (None: every axis order both ways, 6 in 3D / 4 in 2D, the default). ``[2, None]`` (raster both ways at
    stage n-2) is ``MambaTrainerFast``: a shorter step for fewer directions (benchmarks/NETWORK_NOTES.md has the
    measurements)."""
    n = arch_kwargs["n_stages"]
    per_stage = directions if isinstance(directions, (list, tuple)) else [directions] * len(mixer_stages)
    if len(per_stage) != len(mixer_stages):
        raise ValueError(f"directions {directions!r}: need one per mixer stage {tuple(mixer_stages)}")
    k_of = {s % n: k for s, k in zip(mixer_stages, per_stage)}

    def factory(stage, channels, ndim):
        k = k_of[stage] or 2 * ndim
        return MultiDirMamba(channels, ndim, directions=k, d_state=d_state, expand=expand, backend=backend)
    return HybridResEncUNet(input_channels=input_channels, num_classes=num_classes, deep_supervision=deep_supervision,
                            mixer_stages=mixer_stages, mixer_factory=factory, **_resenc_kwargs(arch_kwargs))


@register_network("nomamba")
def nomamba(arch_kwargs, input_channels, num_classes, deep_supervision):
    return HybridResEncUNet(input_channels=input_channels, num_classes=num_classes, deep_supervision=deep_supervision,
                            mixer_stages=(), **_resenc_kwargs(arch_kwargs))


def _umamba(variant: str, arch_kwargs: dict, input_channels: int, num_classes: int, deep_supervision: bool,
            patch_size=None, d_state: int = 16, backend=None) -> UMamba:
    """U-Mamba from the plans as its trainer reads them: widths, kernels, strides and the encoder's and decoder's
    convolutions per stage (``n_conv_per_stage``, ``n_conv_per_stage_decoder``); conv bias, affine InstanceNorm
    (eps 1e-5) and LeakyReLU are fixed, as in U-Mamba's ``get_umamba_*_from_plans``. Plans without
    ``n_conv_per_stage`` (ResEnc plans, which U-Mamba's code cannot read) get the stock plans' 2 per stage."""
    kw = arch_kwargs
    n = kw["n_stages"]
    ndim = {nn.Conv2d: 2, nn.Conv3d: 3}[kw["conv_op"]]
    stock = "n_conv_per_stage" in kw
    encoder_blocks = kw["n_conv_per_stage"] if stock else [2] * n
    decoder_blocks = kw["n_conv_per_stage_decoder"] if stock else [2] * (n - 1)
    return UMamba(variant, input_channels, n, kw["features_per_stage"], kw["conv_op"],
                  kw["kernel_sizes"], kw["strides"], list(encoder_blocks), num_classes, list(decoder_blocks),
                  conv_bias=True,
                  norm_op={2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}[ndim],
                  norm_op_kwargs={"eps": 1e-5, "affine": True}, nonlin=nn.LeakyReLU, nonlin_kwargs={"inplace": True},
                  deep_supervision=deep_supervision, patch_size=patch_size, d_state=d_state, backend=backend)


UMAMBA = "U-Mamba (Ma, Li, Wang 2024), bowang-lab/U-Mamba@28459e3"


@register_network("umamba_bot", source=UMAMBA)
def umamba_bot(arch_kwargs, input_channels, num_classes, deep_supervision, **options):
    return _umamba("bot", arch_kwargs, input_channels, num_classes, deep_supervision, **options)


@register_network("umamba_enc", needs_patch_size=True, source=UMAMBA)
def umamba_enc(arch_kwargs, input_channels, num_classes, deep_supervision, **options):
    return _umamba("enc", arch_kwargs, input_channels, num_classes, deep_supervision, **options)


@register_network("segmamba", dims=(3,), source="SegMamba (Xing et al., MICCAI 2024), ge-xing/SegMamba@cff3597")
def segmamba(arch_kwargs, input_channels, num_classes, deep_supervision, depths=(2, 2, 2, 2),
             feat_size=(48, 96, 192, 384), hidden_size=768, backend=None):
    """SegMamba with its paper's widths and depths; channels in and out from the dataset. One output: the
    network has no deep supervision (its trainer turns nnU-Net's off)."""
    if arch_kwargs["conv_op"] is not nn.Conv3d:
        raise ValueError("SegMamba is a 3D network: use a 3d configuration (3d_fullres)")
    return SegMamba(in_chans=input_channels, out_chans=num_classes, depths=depths, feat_size=feat_size,
                    hidden_size=hidden_size, backend=backend)


register_network("lightmunet", source="LightM-UNet (Liao et al. 2024), MrBlankness/LightM-UNet@6b72e27")(
    lightmunet_from_plans)
register_network("nnmamba", dims=(3,), source="nnMamba (Gong et al. 2024), lhaof/nnMamba@6fb35a3")(
    nnmamba_from_plans)
register_network("vmunet", dims=(2,), source="VM-UNet (Ruan and Xiang 2024), JCruan519/VM-UNet@43c495b")(
    vmunet_from_plans)
register_network("swin_umamba", dims=(2,), source="Swin-UMamba (Liu et al., MICCAI 2024), "
                 "JiarunLiu/Swin-UMamba@2c1f72e")(swin_umamba_from_plans)
