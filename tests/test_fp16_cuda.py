"""float16 AMP on a real GPU: nnU-Net's autocast and GradScaler, forced overflows, training and inference.

Skipped without CUDA (CI has none); run on a GPU machine with ``pytest tests/test_fp16_cuda.py``. The CPU tests
(test_faults.py, test_fp16_inference_guard.py) cover the same decisions without CUDA's autocast and scaler.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from test_faults import batch, make_trainer, params
from test_networks import plans_kwargs

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def overflow_in_fp16(module, args, output):
    return output * 1e5  # float16 ends at 65504: inf under float16 autocast, finite in bf16 / float32


def test_fp16_overflow_switches_a_real_cuda_run_to_bf16_and_training_goes_on():
    tr = make_trainer(max_in_a_row=3)
    tr.device = torch.device("cuda")
    tr.network = tr.network.cuda()
    tr.optimizer = torch.optim.SGD(tr.network.parameters(), lr=1e-6)
    tr.grad_scaler = torch.amp.GradScaler("cuda")
    tr.network.conv.register_forward_hook(overflow_in_fp16)
    before = params(tr)
    assert tr.autocast().fast_dtype == torch.float16  # nnU-Net's CUDA default
    for _ in range(2):
        assert np.isnan(tr.train_step(batch())["loss"])
    assert all(torch.equal(a, b) for a, b in zip(before, params(tr))), "overflowing steps must not move weights"
    wider = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    assert tr.amp_dtype == wider and tr.grad_scaler is None
    assert "training goes on under" in tr.log[-1]
    losses = [float(tr.train_step(batch())["loss"]) for _ in range(3)]
    assert all(np.isfinite(losses)), losses
    assert any(not torch.equal(a, b) for a, b in zip(before, params(tr)))
    assert all(torch.isfinite(p).all() for p in tr.network.parameters())


@pytest.mark.parametrize("compiled", [False, True])
def test_predictor_style_fp16_inference_of_a_trainer_network_survives_overflow(monkeypatch, compiled):
    """As nnU-Net's predictor runs it: eval, inference mode, ``torch.autocast("cuda")`` (float16)."""
    from nnunet_mamba.trainers import MambaTrainer
    monkeypatch.setattr(MambaTrainer, "arch_kwargs", classmethod(lambda c, cm: plans_kwargs(3, 3)))
    net = MambaTrainer.build_network_architecture(None, None, 1, 2, True).cuda().eval()
    net.decoder.seg_layers[0].register_forward_hook(overflow_in_fp16)  # the first (highest-resolution) head
    run = torch.compile(net) if compiled else net
    x = torch.randn(2, 1, 16, 20, 12, device="cuda")
    with torch.inference_mode(), torch.autocast("cuda"), pytest.warns(RuntimeWarning, match="overflow"):
        out = run(x)
    assert isinstance(out, list) and all(torch.isfinite(o).all() for o in out)
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
        ref = net(x)
    assert all(((o.float() - r.float()).abs().max() <= 0.02 * r.float().abs().max()) for o, r in zip(out, ref))
