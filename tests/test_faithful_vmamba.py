"""The VMamba-family networks equal the authors' code: same state-dict keys and shapes, same outputs, same
initialisation rules and parameter counts (VM-UNet, Swin-UMamba, MedMamba).

Fixtures in tests/fixtures/originals were recorded once by running the original code on CPU
(benchmarks/originals/record_vmamba_family.py).
"""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from test_faithful_networks import FIXTURES, load, relative_error

from nnunet_mamba.layers.ss2d import SS2D, SS2D_DIRECTIONS
from nnunet_mamba.networks.medmamba import MEDMAMBA_CONFIGS, MedMamba, medmamba
from nnunet_mamba.networks.swin_umamba import SwinUMamba, swin_umamba_from_plans, vmamba_checkpoint_key
from nnunet_mamba.networks.vmunet import VMUNet, vmunet_from_plans


def _build(network: str, init_kwargs: dict) -> nn.Module:
    kw = dict(init_kwargs)
    if network == "vmunet_2d":
        return VMUNet(**kw)
    if network == "swin_umamba_2d":
        return SwinUMamba(**kw)
    if network == "medmamba_2d":
        return MedMamba(**kw)
    raise KeyError(network)


NETWORKS = ["vmunet_2d", "swin_umamba_2d", "medmamba_2d"]


def _counts() -> dict:
    path = FIXTURES / "vmamba_family_param_counts.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _float_state_dict(fx: dict) -> dict:
    return {k: v.float() if v.is_floating_point() else v for k, v in fx["state_dict"].items()}




def test_vmunet_repeats_a_gray_input_as_the_original():
    fx = load("vmunet_2d")
    net = _build("vmunet_2d", fx["init_kwargs"])
    net.load_state_dict(_float_state_dict(fx), strict=True)
    net.eval()
    with torch.no_grad():
        out = net(fx["gray_input"])
    assert relative_error(out, fx["gray_output"]) <= 1e-5




@pytest.mark.parametrize("entry", sorted(_counts()))
def test_parameter_count_at_the_papers_configuration(entry):
    rec = _counts()[entry]
    with torch.device("meta"):
        net = _build(rec["network"], rec["init_kwargs"])
    assert sum(p.numel() for p in net.parameters()) == rec["params"]


def _training_step(net: nn.Module, x: torch.Tensor, target_of) -> None:
    net.train()
    out = net(x)
    outs = list(out) if isinstance(out, (list, tuple)) else [out]
    loss = sum(target_of(o) for o in outs)
    loss.backward()
    assert torch.isfinite(loss)
    for name, p in net.named_parameters():
        assert p.grad is not None, f"{name} gets no gradient"
        assert torch.isfinite(p.grad).all(), name


def _seg_loss(o: torch.Tensor) -> torch.Tensor:
    target = torch.zeros(o.shape[0], *o.shape[2:], dtype=torch.long)
    return nn.functional.cross_entropy(o, target)


def test_vmunet_training_step_and_odd_sizes():
    """One CPU training step from plans (padding 56x40 to 64x64, cropping back); gradients finite everywhere."""
    torch.manual_seed(0)
    net = vmunet_from_plans({"conv_op": nn.Conv2d}, 1, 3, deep_supervision=True, dims=(8, 16, 32, 64),
                            depths=(1, 1, 1, 1), depths_decoder=(1, 1, 1, 1))
    assert net.vmunet.patch_embed.proj.in_channels == 3  # grayscale repeated, as the paper feeds Synapse CT
    x = torch.randn(2, 1, 56, 40)
    _training_step(net, x, _seg_loss)
    assert net(x).shape == (2, 3, 56, 40)
    assert int(net.compute_conv_feature_map_size((56, 40))) > 0
    with pytest.raises(ValueError):
        vmunet_from_plans({"conv_op": nn.Conv3d}, 1, 3, False)


def test_swin_umamba_training_step_and_odd_sizes():
    """From plans at 56x40 (padded to 64x64): four deep-supervision outputs at nnU-Net's target sizes, one CPU
    training step with finite gradients everywhere; freezing keeps the patch embedding trainable."""
    torch.manual_seed(0)
    net = swin_umamba_from_plans({"conv_op": nn.Conv2d}, 2, 3, deep_supervision=True, feat_size=(4, 4, 8, 16, 32),
                                 hidden_size=32, depths=(1, 1, 1, 1))
    x = torch.randn(2, 2, 56, 40)
    _training_step(net, x, _seg_loss)
    assert [tuple(o.shape[2:]) for o in net(x)] == [(56, 40), (28, 20), (14, 10), (7, 5)]
    net.deep_supervision = False
    assert net(x).shape == (2, 3, 56, 40)
    assert int(net.compute_conv_feature_map_size((56, 40))) > 0
    net.freeze_encoder()
    trainable = {n for n, p in net.vssm_encoder.named_parameters() if p.requires_grad}
    assert trainable == {"patch_embed.proj.weight", "patch_embed.proj.bias", "patch_embed.norm.weight",
                         "patch_embed.norm.bias"}
    net.unfreeze_encoder()
    assert all(p.requires_grad for p in net.parameters())
    with pytest.raises(ValueError):
        swin_umamba_from_plans({"conv_op": nn.Conv3d}, 1, 3, True)


def test_swin_umamba_pretrained_key_map():
    """VMamba-Tiny checkpoint keys land where the original load_pretrained_ckpt puts them."""
    net = SwinUMamba(**load("swin_umamba_2d")["init_kwargs"])
    own = net.state_dict()
    assert vmamba_checkpoint_key("patch_embed.proj.weight") is None and vmamba_checkpoint_key("head.bias") is None
    assert vmamba_checkpoint_key("patch_embed.norm.bias") in own  # the original's skip list names .weight twice
    key = vmamba_checkpoint_key("layers.1.downsample.reduction.weight")
    assert key == "vssm_encoder.downsamples.1.reduction.weight" and key in own
    assert vmamba_checkpoint_key("layers.2.blocks.1.self_attention.A_logs") in own


def test_medmamba_backbone_equals_the_original():
    """The last-stage map of the same forward (72x100 input: odd maps truncated at the last two mergings)."""
    fx = load("medmamba_2d")
    net = _build("medmamba_2d", fx["init_kwargs"])
    net.load_state_dict(_float_state_dict(fx), strict=True)
    net.eval()
    with torch.no_grad():
        out = net.forward_backbone(fx["input"])
    assert out.shape == fx["backbone_output"].shape
    assert relative_error(out, fx["backbone_output"]) <= 1e-5


@pytest.mark.parametrize("size", [(28, 28), (64, 48)])
def test_medmamba_training_step(size):
    """One CPU training step on a 1-channel image (MedMNIST's 28x28 is padded to 32); finite gradients everywhere."""
    torch.manual_seed(0)
    net = medmamba("t", 1, 2, depths=(1, 1, 1, 1), dims=(8, 16, 32, 64))
    x = torch.randn(2, 1, *size)
    _training_step(net, x, lambda o: nn.functional.cross_entropy(o, torch.tensor([0, 1])))
    assert net(x).shape == (2, 2) and net.features(x).shape == (2, 64)
    assert MEDMAMBA_CONFIGS["t"]["depths"] == [2, 2, 4, 2]


def test_vmunet_single_class_gives_sigmoid_unless_asked_for_logits():
    torch.manual_seed(0)
    kw = dict(input_channels=3, num_classes=1, depths=(1, 1, 1, 1), depths_decoder=(1, 1, 1, 1), dims=(8, 16, 32, 64))
    net, logits_net = VMUNet(**kw).eval(), VMUNet(**kw, sigmoid_single_class=False).eval()
    logits_net.load_state_dict(net.state_dict())
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(net(x), torch.sigmoid(logits_net(x)))


def test_ss2d_directions_are_vmamba_order():
    """Direction k of the stacked SS2D tensors: row-major, column-major, and both reversed."""
    assert [(d.order, d.reverse) for d in SS2D_DIRECTIONS] == [((0, 1), False), ((1, 0), False), ((0, 1), True),
                                                                ((1, 0), True)]
    layer = SS2D(8, d_state=4)
    assert layer.x_proj_weight.shape == (4, 1 + 8, 16) and layer.A_logs.shape == (64, 4) and layer.Ds.shape == (64,)
