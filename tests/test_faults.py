"""Numerical faults in training: a non-finite step is skipped and logged; repeated ones stop training clearly.

The trainer's own ``train_step`` runs on a real (tiny) Mamba network on CPU; the trainer object is
created without nnU-Net's dataset machinery, which these steps do not touch.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nnunet_mamba.layers import MultiDirMamba
from nnunet_mamba.trainers import MambaTrainer

pytestmark = pytest.mark.faults


class TinyNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv3d(1, 8, 3, padding=1)
        self.mixer = MultiDirMamba(8, 3, directions=2, expand=1.0, residual=False)
        self.head = torch.nn.Conv3d(8, 2, 1)

    def forward(self, x):
        return self.head(self.mixer(self.conv(x)))


def make_trainer(max_in_a_row=3):
    torch.manual_seed(0)
    tr = object.__new__(MambaTrainer)
    tr.network = TinyNet()
    tr.device = torch.device("cpu")
    tr.grad_scaler = None
    tr.optimizer = torch.optim.SGD(tr.network.parameters(), lr=0.1)
    tr.loss = lambda out, target: F.cross_entropy(out, target[:, 0].long())
    tr.current_epoch = 0
    tr.max_consecutive_nonfinite_steps = max_in_a_row
    tr.log = []
    tr.print_to_log_file = lambda *a, **k: tr.log.append(" ".join(map(str, a)))
    return tr


def batch(corrupt=False):
    g = torch.Generator().manual_seed(1)
    data = torch.randn(2, 1, 5, 6, 7, generator=g)
    if corrupt:
        data[0, 0, 2, 3, 4] = float("nan")
    return {"data": data, "target": torch.randint(0, 2, (2, 1, 5, 6, 7), generator=g)}


def params(tr):
    return [p.detach().clone() for p in tr.network.parameters()]


def test_corrupted_batch_is_skipped_logged_and_training_goes_on():
    tr = make_trainer()
    before = params(tr)
    out = tr.train_step(batch(corrupt=True))
    assert np.isnan(out["loss"])
    assert all(torch.equal(a, b) for a, b in zip(before, params(tr))), "a skipped step must not change weights"
    assert all(torch.isfinite(p).all() for p in tr.network.parameters())
    assert tr.log and "skipped a training step: non-finite loss" in tr.log[-1]
    out = tr.train_step(batch())
    assert np.isfinite(out["loss"])
    assert any(not torch.equal(a, b) for a, b in zip(before, params(tr))), "a good step must update weights"
    assert tr._nonfinite_in_a_row == 0


def test_nonfinite_gradient_with_finite_loss_is_skipped():
    tr = make_trainer()
    tr.network.head.bias.register_hook(lambda g: g * float("inf"))  # finite loss, overflowing gradient
    before = params(tr)
    out = tr.train_step(batch())
    assert np.isnan(out["loss"]) and "non-finite gradient" in tr.log[-1]
    assert all(torch.equal(a, b) for a, b in zip(before, params(tr)))


def test_repeated_failures_stop_with_a_clear_message():
    tr = make_trainer(max_in_a_row=3)
    tr.train_step(batch(corrupt=True))
    tr.train_step(batch(corrupt=True))
    with pytest.raises(RuntimeError, match=r"3 training steps in a row had a non-finite loss .*stopped instead of "
                                           r"training on NaNs.*--c"):
        tr.train_step(batch(corrupt=True))


def fp16_cuda_trainer(monkeypatch, bf16: bool):
    """A trainer that believes it trains on CUDA under fp16 AMP (only the precision checks read the device;
    steps are recorded directly, no CUDA needed)."""
    tr = make_trainer(max_in_a_row=3)
    tr.device = torch.device("cuda")
    tr.grad_scaler = object()
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    return tr


@pytest.mark.parametrize("bf16", [True, False])
def test_fp16_overflow_moves_training_to_a_wider_autocast(monkeypatch, bf16):
    from nnunetv2.utilities.helpers import dummy_context
    tr = fp16_cuda_trainer(monkeypatch, bf16)
    nan = torch.tensor(float("nan"))
    assert tr.amp_dtype is None and tr._training_in_fp16()
    tr._record_step(False, "loss", nan)
    assert tr.amp_dtype is None and tr.grad_scaler is not None  # one overflow: still fp16
    tr._record_step(False, "loss", nan)
    wider = torch.bfloat16 if bf16 else torch.float32
    assert tr.amp_dtype == wider and tr.grad_scaler is None and tr._nonfinite_in_a_row == 0
    assert f"training goes on under {str(wider)[6:]}" in tr.log[-1]
    assert isinstance(tr.autocast(), dummy_context) == (not bf16)  # float32: no autocast at all
    tr._record_step(False, "loss", nan)
    tr._record_step(False, "loss", nan)
    with pytest.raises(RuntimeError, match="3 training steps in a row"):  # the wider run may still stop
        tr._record_step(False, "loss", nan)


def test_no_precision_fallback_for_gradients_cpu_or_bf16(monkeypatch):
    nan = torch.tensor(float("nan"))
    tr = fp16_cuda_trainer(monkeypatch, True)
    tr._record_step(False, "gradient", nan)
    tr._record_step(False, "gradient", nan)
    assert tr.amp_dtype is None  # inf gradients under fp16 are the GradScaler's business
    cpu = make_trainer(max_in_a_row=3)
    cpu._record_step(False, "loss", nan)
    cpu._record_step(False, "loss", nan)
    assert cpu.amp_dtype is None and cpu._nonfinite_in_a_row == 2


def test_epoch_loss_ignores_skipped_steps(monkeypatch):
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    seen = {}
    monkeypatch.setattr(nnUNetTrainer, "on_train_epoch_end", lambda self, outs: seen.setdefault("outs", outs))
    tr = make_trainer()
    tr.on_train_epoch_end([{"loss": np.array(0.5)}, {"loss": np.array(np.nan)}, {"loss": np.array(0.7)}])
    assert [float(o["loss"]) for o in seen["outs"]] == [0.5, 0.7]


def test_single_output_deep_supervision_has_a_finite_loss():
    """nnU-Net's own weights are 0/0 for a plan with one deep-supervision output; ours give a finite loss."""
    from types import SimpleNamespace
    tr = object.__new__(MambaTrainer)
    tr.label_manager = SimpleNamespace(has_regions=False, ignore_label=None)
    tr.configuration_manager = SimpleNamespace(batch_dice=False)
    tr.is_ddp = False
    tr.enable_deep_supervision = True
    tr._do_i_compile = lambda: False
    tr._get_deep_supervision_scales = lambda: [[1.0, 1.0, 1.0]]
    loss = tr._build_loss()
    assert loss.weight_factors == (1.0,)
    g = torch.Generator().manual_seed(0)
    value = loss([torch.randn(2, 3, 4, 5, 6, generator=g)], [torch.randint(0, 3, (2, 1, 4, 5, 6), generator=g)])
    assert torch.isfinite(value)


def test_checkpoint_of_another_network_gives_one_clear_message(tmp_path):
    from nnunet_mamba.trainers.base import checkpoint_mismatch
    other = torch.nn.Sequential(torch.nn.Conv3d(1, 8, 3))
    path = tmp_path / "checkpoint_final.pth"
    torch.save({"network_weights": other.state_dict(), "trainer_name": "NoMambaTrainer"}, path)
    tr = make_trainer()
    tr.was_initialized = True
    tr.is_ddp = False
    with pytest.raises(RuntimeError) as e:
        tr.load_checkpoint(str(path))
    msg = str(e.value)
    assert msg.startswith(f"{path}: written by NoMambaTrainer, whose network does not fit MambaTrainer's")
    assert "-tr NoMambaTrainer" in msg and "missing" in msg
    assert checkpoint_mismatch({"network_weights": tr.network.state_dict()}, tr.network, "MambaTrainer") is None
    (tmp_path / "broken.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match=r"broken.pth: cannot be read as a checkpoint"):
        tr.load_checkpoint(str(tmp_path / "broken.pth"))


def test_amp_dtype_selects_the_autocast_and_drops_the_grad_scaler_for_bf16():
    from nnunet_mamba.trainers import MambaRestorationTrainer
    tr = object.__new__(MambaTrainer)
    tr.device, tr.amp_dtype = torch.device("cpu"), None
    assert not isinstance(tr.autocast(), torch.autocast)  # CPU: no autocast, as nnU-Net
    tr.device = torch.device("cuda")
    assert tr.autocast().fast_dtype == torch.float16  # nnU-Net's CUDA default
    tr.amp_dtype = torch.bfloat16
    assert tr.autocast().fast_dtype == torch.bfloat16
    assert MambaRestorationTrainer.amp_dtype == torch.bfloat16 and MambaTrainer.amp_dtype is None
