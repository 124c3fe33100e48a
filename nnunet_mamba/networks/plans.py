"""Reading nnU-Net plans (``arch_kwargs``) into keyword arguments for our networks.

Accepts both ResEnc plans (``n_blocks_per_stage``) and default plans (``n_conv_per_stage``, kept for
the networks that read it, such as U-Mamba); for the latter the ResEnc-based networks get nnU-Net
ResEnc's block counts (1, 3, 4, 6, 6, ...).
"""
from __future__ import annotations

import pydoc
from typing import Any

RESENC_BLOCKS = (1, 3, 4, 6, 6, 6, 6, 6, 6, 6)
_KEEP = ("n_stages", "features_per_stage", "conv_op", "kernel_sizes", "strides", "n_blocks_per_stage",
         "n_conv_per_stage", "n_conv_per_stage_decoder", "conv_bias", "norm_op", "norm_op_kwargs", "dropout_op",
         "dropout_op_kwargs", "nonlin", "nonlin_kwargs")


def _locate(value: Any, key: str):
    if value is None or not isinstance(value, str):
        return value
    obj = pydoc.locate(value)
    if obj is None:
        raise ImportError(f"plans arch_kwargs[{key!r}] names {value!r}, which cannot be imported")
    return obj


def resolve_arch_kwargs(arch_kwargs: dict, requires_import: tuple | list = ()) -> dict:
    """Plans ``arch_kwargs`` -> kwargs for :class:`~nnunet_mamba.networks.hybrid_unet.HybridResEncUNet`."""
    kw = dict(arch_kwargs)
    for key in requires_import:
        kw[key] = _locate(kw.get(key), key)
    n = int(kw["n_stages"])
    if "n_blocks_per_stage" not in kw:
        if "n_conv_per_stage" not in kw:
            raise KeyError("plans arch_kwargs have neither 'n_blocks_per_stage' (ResEnc plans) nor "
                           "'n_conv_per_stage' (default plans)")
        kw["n_blocks_per_stage"] = list(RESENC_BLOCKS[:n]) + [RESENC_BLOCKS[-1]] * max(0, n - len(RESENC_BLOCKS))
    if "n_conv_per_stage_decoder" not in kw:
        kw["n_conv_per_stage_decoder"] = [1] * (n - 1)
    return {k: kw[k] for k in _KEEP if k in kw}


def from_configuration(configuration_manager) -> dict:
    """Resolved kwargs from an nnU-Net ``ConfigurationManager``."""
    return resolve_arch_kwargs(configuration_manager.network_arch_init_kwargs,
                               configuration_manager.network_arch_init_kwargs_req_import)
