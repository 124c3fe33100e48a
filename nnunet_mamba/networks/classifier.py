"""Classification head on a shared backbone: pooled encoder features -> dropout -> linear."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class EncoderClassifier(nn.Module):
    """``linear(dropout(concat(global_avg_pool(encoder(x)[s]) for s in pooled_stages)))`` -> logits (B, classes).

    ``encoder`` returns one feature map per stage (a backbone from :mod:`.backbones`); ``pooled_stages`` picks
    the stages whose globally averaged features are concatenated (default: the two deepest). Global pooling
    makes the head independent of the input size, so validation and prediction can see whole images.
    """

    def __init__(self, encoder: nn.Module, num_classes: int, pooled_stages: Sequence[int] = (-2, -1),
                 dropout: float = 0.2):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"a classifier needs at least 2 classes, got {num_classes}")
        n = len(encoder.output_channels)
        self.pooled_stages = tuple(sorted({s % n for s in pooled_stages}))
        self.encoder = encoder
        features = sum(encoder.output_channels[s] for s in self.pooled_stages)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(features, num_classes)
        nn.init.zeros_(self.head.bias)
        nn.init.normal_(self.head.weight, std=0.01)
        self.num_classes = num_classes

    def features(self, x: torch.Tensor) -> torch.Tensor:
        skips = self.encoder(x)
        return torch.cat([skips[s].flatten(2).mean(-1) for s in self.pooled_stages], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(x)))

    @property
    def total_stride(self) -> tuple[int, ...]:
        """Product of the encoder's strides per axis: inputs padded to a multiple of it pool cleanly."""
        strides = getattr(self.encoder, "strides", None)
        if strides is None:
            return ()
        total = None
        for s in strides:
            s = [int(v) for v in (s if isinstance(s, (list, tuple)) else [s])]
            total = s if total is None else [a * b for a, b in zip(total, s)]
        return tuple(total)
