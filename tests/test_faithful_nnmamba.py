"""nnMamba equals the authors' code (lhaof/nnMamba): the segmentation network (``nnMamba.py``, MICCSS layers) and
the classifier (``nnMamba4cls.py``) have the same state-dict keys (in the same order) and shapes, the same outputs,
the same initialisation rules and the same parameter counts; both train on CPU.

Fixtures: tests/fixtures/originals/nnmamba_{seg,cls}_3d.pt and nnmamba_param_counts.json, recorded once from the
original code by benchmarks/originals/record_nnmamba.py.
"""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from nnunet_mamba.networks import resolve_arch_kwargs
from nnunet_mamba.networks.nnmamba import NnMambaCls, NnMambaSeg, nnmamba_from_plans
from test_faithful_networks import CLASSES, FIXTURES, load, relative_error

NETWORKS = {"nnmamba_seg_3d": NnMambaSeg, "nnmamba_cls_3d": NnMambaCls}
COUNTS = json.loads((FIXTURES / "nnmamba_param_counts.json").read_text())


def _fixture_network(name: str) -> tuple[dict, torch.nn.Module]:
    fx = load(name)
    net = NETWORKS[name](**fx["init_kwargs"])
    net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in fx["state_dict"].items()},
                        strict=True)
    return fx, net.eval()




def test_each_stage_shares_one_miccss_layer_as_the_original():
    """The original passes one MambaLayer to blocks 2..blocks of a stage: one set of parameters, several keys."""
    fx, net = _fixture_network("nnmamba_seg_3d")
    blocks = fx["init_kwargs"]["blocks"]
    for stage in (net.layer1, net.layer2, net.layer3):
        assert stage[0].mamba_layer is None
        assert all(stage[b].mamba_layer is stage[1].mamba_layer for b in range(2, blocks))
    assert fx["shared_keys"] and all(k in net.state_dict() for k in fx["shared_keys"])


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_the_fixture_exercises_the_mamba_layers(name):
    """The recorded output depends on the Mamba path far above the 1e-5 tolerance (BatchNorm statistics were
    calibrated on the input when recording): without the flips, or without the scan, the output moves by >1e-3."""
    fx, net = _fixture_network(name)
    ref = fx["outputs"][0]
    layers = [m for m in net.modules() if m.__class__.__name__ == "MambaLayer"]
    with torch.no_grad():
        for layer in layers:
            layer.siamese = not layer.siamese  # MICCSS <-> a single forward Mamba
        assert relative_error(net(fx["input"]), ref) > 1e-3
        for layer in layers:
            layer.siamese = not layer.siamese
            layer.mamba.out_proj.weight.zero_()
        assert relative_error(net(fx["input"]), ref) > 1e-3




@pytest.mark.parametrize("entry", sorted(COUNTS))
def test_parameter_count_at_the_repositorys_configuration(entry):
    rec = COUNTS[entry]
    with torch.device("meta"):
        net = NETWORKS[rec["network"]](**rec["init_kwargs"])
    assert sum(p.numel() for p in net.parameters()) == rec["params"]


def _plans_3d() -> dict:
    return resolve_arch_kwargs({"n_stages": 4, "features_per_stage": [32, 64, 128, 256],
                                "conv_op": "torch.nn.Conv3d", "kernel_sizes": [[3, 3, 3]] * 4,
                                "strides": [[1, 1, 1]] + [[2, 2, 2]] * 3, "n_conv_per_stage": [2] * 4,
                                "n_conv_per_stage_decoder": [2] * 3}, CLASSES)


def test_from_plans_takes_channels_from_the_dataset_and_keeps_the_topology():
    with torch.device("meta"):
        net = nnmamba_from_plans(_plans_3d(), input_channels=4, num_classes=3, deep_supervision=True)
        direct = NnMambaSeg(in_ch=4, number_classes=3)
    assert {k: v.shape for k, v in net.state_dict().items()} == {k: v.shape for k, v in direct.state_dict().items()}
    with pytest.raises(ValueError, match="3D"):
        nnmamba_from_plans({"conv_op": torch.nn.Conv2d}, 1, 2, False)
    sizes = [net.compute_conv_feature_map_size(s) for s in ((16, 16, 16), (40, 56, 40), (128, 128, 128))]
    assert 0 < sizes[0] < sizes[1] < sizes[2]
    assert sizes[2] == pytest.approx(8 ** 3 * sizes[0], rel=0.01)


def test_padding_only_extends_the_input():
    """A size the original cannot run gives the original's output on the zero-padded input, cropped."""
    torch.manual_seed(0)
    net = NnMambaSeg(in_ch=1, channels=4, blocks=2, number_classes=2).eval()
    x = torch.randn(1, 1, 13, 20, 17)
    with torch.no_grad():
        out = net(x)
        padded = net(F.pad(x, (0, 15, 0, 12, 0, 3)))
    assert out.shape == (1, 2, 13, 20, 17)
    assert torch.equal(out, padded[..., :13, :20, :17])


def _assert_finite_gradients(net: torch.nn.Module) -> None:
    for key, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), key
    assert any(p.grad.abs().sum() > 0 for k, p in net.named_parameters() if ".mamba." in k)


def test_segmentation_training_step_on_cpu():
    """Input size not a multiple of 16 (padded and cropped back); every parameter gets a finite gradient."""
    torch.manual_seed(0)
    net = nnmamba_from_plans({"conv_op": torch.nn.Conv3d}, input_channels=2, num_classes=3, deep_supervision=False,
                             channels=16, blocks=3)
    size = (20, 24, 12)
    x = torch.randn(2, 2, *size)
    target = torch.randint(0, 3, (2, *size))
    out = net(x)
    assert out.shape == (2, 3, *size)
    loss = F.cross_entropy(out, target)
    loss.backward()
    assert torch.isfinite(loss)
    _assert_finite_gradients(net)


@pytest.mark.parametrize("size", [(28, 28, 28), (64, 64, 64)])
def test_classifier_on_adrenalmnist3d_sizes(size):
    """1 channel, 2 classes, MedMNIST-3D's 28^3 and 64^3 (any size works: global pooling); a training step at
    batch 2 gives every parameter a finite gradient, eval mode works at batch 1."""
    torch.manual_seed(0)
    net = NnMambaCls(in_ch=1, channels=8, blocks=2, number_classes=2)
    assert net.total_stride == (16, 16, 16)
    x = torch.randn(2, 1, *size)
    logits = net(x)
    assert logits.shape == (2, 2)
    loss = F.cross_entropy(logits, torch.tensor([0, 1]))
    loss.backward()
    _assert_finite_gradients(net)
    with torch.no_grad():
        assert net.eval()(x[:1]).shape == (1, 2)


def test_float16_autocast_runs_the_mamba_layers_wider():
    """Under float16 autocast (nnU-Net's inference) the MICCSS layers run in bf16 here (float32 on a GPU without
    it): the output stays finite and close to float32's."""
    torch.manual_seed(0)
    net = NnMambaSeg(in_ch=1, channels=8, blocks=2, number_classes=2).eval()
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        ref = net(x)
        with torch.autocast("cpu", dtype=torch.float16):
            out = net(x)
    assert torch.isfinite(out).all() and relative_error(out.float(), ref) < 1e-2
