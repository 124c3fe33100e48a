"""Inference under float16 autocast without overflow: an output that is not finite is recomputed wider.

nnU-Net's predictor runs every network under ``torch.autocast("cuda")``, i.e. float16, whose range ends at
65504. A network whose activations grow past that (measured: a Mamba restorer's decoder convolution at 65344,
``benchmarks/results/2026-11-27_h100_bc3355e/fp16_bisect/``) returns inf/NaN there, while bf16 and float32 give finite
results on the same weights. Training has its own fallback (``MambaTrainerBase.fp16_fallback_after``); this hook
covers inference, which nnU-Net controls: in eval mode under float16 autocast, a forward whose output is not
finite runs once more under bf16 autocast (float32 where the GPU has no bf16). Finite outputs cost one
``isfinite`` check per window; training-mode calls are left alone.
"""
from __future__ import annotations

import warnings

import torch
from torch import nn

from ..layers.mixer import wider_than_fp16


def _all_finite(output) -> bool:
    outputs = output if isinstance(output, (list, tuple)) else [output]
    return all(bool(torch.isfinite(o).all()) for o in outputs)


def _recompute_wider_on_fp16_overflow(module: nn.Module, args: tuple, output):
    if module.training or not args or not torch.is_tensor(args[0]):
        return None
    wider = wider_than_fp16(args[0].device)  # None unless float16 autocast is on; the mixers' own rule
    if wider is None or _all_finite(output):
        return None
    warnings.warn(f"{type(module).__name__}: non-finite output under float16 autocast (overflow); recomputed "
                  "under bf16 autocast (float32 without bf16)", RuntimeWarning, stacklevel=2)
    # cache off: the enclosing float16 autocast has cached its casts of the weights
    with torch.autocast(args[0].device.type, dtype=wider, enabled=wider != torch.float32, cache_enabled=False):
        return module.forward(*args)


def guard_fp16_inference(network: nn.Module) -> nn.Module:
    """Attach the float16-overflow recompute hook to ``network`` (returned for chaining)."""
    network.register_forward_hook(_recompute_wider_on_fp16_overflow)
    return network
