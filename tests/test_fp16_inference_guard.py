"""Inference under float16 autocast (nnU-Net's predictor on CUDA): an overflowing forward is recomputed wider.

CPU autocast supports float16 and bf16 like CUDA's, so the hook runs here on real overflows: inputs beyond
float16's 65504 become inf when the first convolution casts them.
"""
from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from nnunet_mamba.networks import guard_fp16_inference
from test_networks import plans_kwargs


class TwoHeads(nn.Module):
    """A deep-supervision-like list output whose second head overflows in float16 for large inputs."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv3d(1, 2, 1)
        self.b = nn.Conv3d(1, 2, 1)
        nn.init.constant_(self.b.weight, 1000.0)

    def forward(self, x):
        return [self.a(x), self.b(x)]


def run(net, x, dtype=torch.float16):
    with torch.no_grad(), torch.autocast("cpu", dtype=dtype), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = net(x)
    return out, [w for w in caught if issubclass(w.category, RuntimeWarning)]


def test_overflowing_window_is_recomputed_in_bf16_with_a_warning():
    torch.manual_seed(0)
    net = TwoHeads().eval()
    x = torch.rand(1, 1, 3, 4, 5) * 100 + 50  # head b: >= 50,000 x 1000 -> inf in float16
    raw, _ = run(net, x)
    assert not torch.isfinite(raw[1]).all()
    guard_fp16_inference(net)
    out, warned = run(net, x)
    ref, _ = run(net, x, torch.bfloat16)
    assert all(o.dtype == torch.bfloat16 and torch.isfinite(o).all() for o in out)
    assert all(torch.equal(o, r) for o, r in zip(out, ref))
    assert len(warned) == 1 and "overflow" in str(warned[0].message)


def test_finite_outputs_training_and_other_precisions_are_left_alone():
    torch.manual_seed(0)
    net = guard_fp16_inference(TwoHeads()).eval()
    small = torch.rand(1, 1, 3, 4, 5)
    out, warned = run(net, small)
    assert out[1].dtype == torch.float16 and torch.isfinite(out[1]).all() and not warned
    big = torch.rand(1, 1, 3, 4, 5) * 100 + 50
    out, warned = run(net.train(), big)  # training: the trainer's own fp16 fallback decides
    assert not torch.isfinite(out[1]).all() and not warned
    with torch.no_grad():
        out = net.eval()(big)  # no autocast: float32, finite, untouched
    assert out[1].dtype == torch.float32 and torch.isfinite(out[1]).all()


@pytest.mark.parametrize("trainer", ["MambaTrainer", "MambaRestorationTrainer", "MambaClassifierTrainer"])
def test_trainers_build_guarded_networks(monkeypatch, trainer):
    """What nnU-Net's predictor builds from the trainer class survives a float16 overflow."""
    import nnunet_mamba.trainers as trainers
    cls = getattr(trainers, trainer)
    monkeypatch.setattr(cls, "arch_kwargs", classmethod(lambda c, cm: plans_kwargs(3, 3)))
    net = cls.build_network_architecture(None, None, 1, 2, False).eval()
    x = torch.full((1, 1, 16, 16, 16), 1e5)  # beyond float16: inf at the first convolution's cast
    x[..., :8] = -1e5
    out, warned = run(net, x)
    out = out[0] if isinstance(out, (list, tuple)) else out
    assert torch.isfinite(out).all() and out.dtype in (torch.bfloat16, torch.float32) and len(warned) == 1
