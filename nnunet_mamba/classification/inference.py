"""Whole-image classifier inference on nnU-Net-preprocessed data (shared by validation and predict-class).

Training sees every case padded (centred, zeros) to one patch; inference pads each case the same way, or, for a
case larger than the patch, to the next multiple of the encoder's total stride (global pooling takes any size).
With mirror axes, the logits are averaged over every combination of flips along them (as nnU-Net's predictor
averages its test-time mirrors).
"""
from __future__ import annotations

import itertools
from typing import Iterable, Optional, Sequence

import numpy as np
import torch
from torch import nn


def network_input(data: np.ndarray, patch_size: Sequence[int], total_stride: Sequence[int]) -> np.ndarray:
    """nnU-Net-preprocessed case (C, Z, Y, X) -> network input (C, *spatial); 2D patches need one slice."""
    data = np.asarray(data, dtype=np.float32)
    if len(patch_size) == 2:
        if data.shape[1] != 1:
            raise ValueError(f"a 2D classifier needs single-slice images; this case has {data.shape[1]} slices")
        data = data[:, 0]
    spatial = data.shape[1:]
    stride = list(total_stride) or [1] * len(spatial)
    target = [max(int(p), -(-s // t) * t) for s, p, t in zip(spatial, patch_size, stride)]
    pad = [(0, 0)] + [((t - s) // 2, t - s - (t - s) // 2) for s, t in zip(spatial, target)]
    return np.pad(data, pad)


def mirror_flips(mirror_axes: Optional[Sequence[int]]) -> list[tuple[int, ...]]:
    """Tensor dims (batch, channel first) to flip for each test-time mirror; ``()`` is the unflipped input."""
    dims = [int(a) + 2 for a in (mirror_axes or ())]
    return [c for r in range(len(dims) + 1) for c in itertools.combinations(dims, r)]


def _mirrored_logits(network: nn.Module, x: torch.Tensor, flips: list[tuple[int, ...]]) -> torch.Tensor:
    total = 0
    for dims in flips:
        total = total + network(torch.flip(x, dims) if dims else x).float()
    return total / len(flips)


@torch.no_grad()
def predict_logits(network: nn.Module, inputs: Iterable[np.ndarray], device: torch.device,
                   batch_size: int = 16, mirror_axes: Optional[Sequence[int]] = None) -> np.ndarray:
    """Logits (N, classes) of network inputs (from :func:`network_input`); equal shapes share a batch.
    ``mirror_axes`` (spatial axes, nnU-Net's ``inference_allowed_mirroring_axes``): mean logits over all flips."""
    flips = mirror_flips(mirror_axes)
    inputs = list(inputs)
    out: list = [None] * len(inputs)
    by_shape: dict[tuple, list[int]] = {}
    for i, x in enumerate(inputs):
        by_shape.setdefault(x.shape, []).append(i)
    was_training = network.training
    network.eval()
    try:
        for idx in by_shape.values():
            for start in range(0, len(idx), batch_size):
                chunk = idx[start:start + batch_size]
                x = torch.from_numpy(np.stack([inputs[i] for i in chunk])).to(device)
                with torch.autocast(device.type, enabled=device.type == "cuda"):
                    logits = _mirrored_logits(network, x, flips).cpu().numpy()
                for i, row in zip(chunk, logits):
                    out[i] = row
    finally:
        network.train(was_training)
    return np.stack(out) if out else np.zeros((0, 0), np.float32)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def whole_image_patch(shapes: Sequence[Sequence[int]], plans_patch: Sequence[int], total_stride: Sequence[int],
                      plans_batch: int) -> tuple[list[int], bool]:
    """(patch, whole) for preprocessed case shapes (Z, Y, X): the smallest stride-divisible patch holding every
    case, if a batch of 2 such patches fits the plans' budget (batch x patch voxels); else the plans' patch."""
    shapes = np.asarray(shapes)[:, -len(plans_patch):]
    need = [max(int(m), 1) for m in shapes.max(0)]
    patch = [-(-n // t) * t for n, t in zip(need, total_stride)]
    if 2 * np.prod(patch) <= plans_batch * np.prod(plans_patch):
        return patch, True
    return [int(p) for p in plans_patch], False
