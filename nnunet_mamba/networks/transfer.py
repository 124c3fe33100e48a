"""Moving a shared backbone between task networks (segmentation <-> classification).

Every network here keeps its backbone as ``encoder``, so transfer copies the ``encoder.*`` tensors (and their
``decoder.encoder.*`` aliases in segmentation networks) and keeps the target's own head (freshly initialised).
The result holds every key of the target network, which is what nnU-Net's ``-pretrained_weights`` loader
demands.
"""
from __future__ import annotations

from typing import Mapping

import torch
from torch import nn


def _clean(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in state.items():
        for prefix in ("module.", "_orig_mod."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        out[k] = v
    return out


def transfer_encoder(source_state: Mapping[str, torch.Tensor], target: nn.Module) -> tuple[dict, int]:
    """(target state dict with the source's encoder tensors, number of tensors copied)."""
    src = _clean(source_state)
    tgt = target.state_dict()
    keys = [k for k in tgt if k.startswith("encoder.")]
    if not keys:
        raise ValueError("the target network has no 'encoder' submodule; it is not an nnunet-mamba task network")
    if not any(k.startswith("encoder.") for k in src):
        raise ValueError("the source weights have no 'encoder.*' tensors; they do not come from an nnunet-mamba "
                         "network")
    missing = [k for k in keys if k not in src]
    extra = [k for k in src if k.startswith("encoder.") and k not in tgt]
    shapes = [k for k in keys if k in src and tuple(src[k].shape) != tuple(tgt[k].shape)]
    if missing or extra or shapes:
        first = (shapes or missing or extra)[0]
        detail = (f"{first!r} has shape {tuple(src[first].shape)} in the source, {tuple(tgt[first].shape)} in the "
                  "target" if shapes else f"first: {first!r}")
        raise ValueError(f"the backbones differ: {len(missing)} encoder tensor(s) missing from the source, "
                         f"{len(extra)} unexpected, {len(shapes)} of another shape ({detail}). Transfer needs the "
                         "same backbone, width, plans (stages, kernels, strides) and input channels")
    merged = dict(tgt)
    for k in tgt:  # the segmentation decoder keeps the encoder too (decoder.encoder.*): same tensors
        name = k[len("decoder."):] if k.startswith("decoder.encoder.") else k
        if name.startswith("encoder."):
            merged[k] = src[name].detach().clone().to(tgt[k].dtype)
    return merged, len(keys)
