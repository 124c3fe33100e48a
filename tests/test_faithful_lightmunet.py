"""LightM-UNet equals the authors' code (MrBlankness/LightM-UNet): same state-dict keys and shapes, same outputs,
same initialisation rules, same parameter counts where their trainer builds it; and it trains on CPU.

Fixtures: tests/fixtures/originals/lightmunet_{3d,2d}.pt and lightmunet_param_counts.json, recorded once from the
original code by benchmarks/originals/record_lightmunet.py.
"""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from nnunet_mamba.networks import resolve_arch_kwargs
from nnunet_mamba.networks.lightmunet import LightMUNet, lightmunet_from_plans
from test_faithful_networks import CLASSES, FIXTURES

NAMES = ["lightmunet_3d", "lightmunet_2d"]
COUNTS = json.loads((FIXTURES / "lightmunet_param_counts.json").read_text())


def plans_of(init_kwargs: dict) -> tuple[dict, int, int, bool]:
    kw = dict(init_kwargs)
    n_in, n_out, ds = kw.pop("input_channels"), kw.pop("num_classes"), kw.pop("deep_supervision")
    return resolve_arch_kwargs(kw, CLASSES), n_in, n_out, ds






@pytest.mark.parametrize("entry", sorted(COUNTS))
def test_parameter_count_where_the_authors_trainer_builds_it(entry):
    """``lightmunet_from_plans`` builds what ``nnUNetTrainerLightMUNet`` builds: the same count and, against the
    recorded constructor arguments, the same state-dict layout."""
    rec = COUNTS[entry]
    arch, n_in, n_out, ds = plans_of(rec["init_kwargs"])
    with torch.device("meta"):
        net = lightmunet_from_plans(arch, n_in, n_out, ds)
        direct = LightMUNet(**rec["original_init_kwargs"])
    assert sum(p.numel() for p in net.parameters()) == rec["params"]
    assert {k: v.shape for k, v in net.state_dict().items()} == {k: v.shape for k, v in direct.state_dict().items()}


@pytest.mark.parametrize("ndim,size", [(3, (10, 7, 9)), (2, (21, 30))])
def test_one_training_step_on_cpu(ndim, size):
    """Sizes the original cannot run (not multiples of its total stride): the output has the input's size; one step of
    forward, loss and backward gives every parameter a finite gradient."""
    torch.manual_seed(0)
    arch = {"conv_op": {2: torch.nn.Conv2d, 3: torch.nn.Conv3d}[ndim]}
    net = lightmunet_from_plans(arch, input_channels=2, num_classes=3, deep_supervision=True, init_filters=8,
                                blocks_down=(1, 1, 2), blocks_up=(1, 1))
    x = torch.randn(2, 2, *size)
    target = torch.randint(0, 3, (2, *size))
    out = net(x)
    assert torch.is_tensor(out) and out.shape == (2, 3, *size)
    loss = F.cross_entropy(out, target)
    loss.backward()
    assert torch.isfinite(loss)
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert int(net.compute_conv_feature_map_size(size)) > 0


def test_padding_only_extends_the_input():
    """A size the original cannot run gives the same output as the original on the zero-padded input, cropped."""
    torch.manual_seed(0)
    net = LightMUNet(spatial_dims=2, init_filters=8, in_channels=1, out_channels=2, blocks_down=(1, 1, 1, 1)).eval()
    x = torch.randn(1, 1, 13, 19)
    with torch.no_grad():
        out = net(x)
        padded = net(F.pad(x, (0, 5, 0, 3)))
    assert out.shape == (1, 2, 13, 19)
    assert torch.equal(out, padded[..., :13, :19])


@pytest.mark.parametrize("amp,expected", [(torch.bfloat16, torch.bfloat16), (torch.float16, torch.bfloat16),
                                          (None, torch.float32)])
def test_mamba_layers_follow_autocast_with_fp16_widened_to_bf16(amp, expected):
    """As the original, the Mamba block runs in the ambient precision (its activations bf16 under bf16 AMP); under
    float16 autocast it runs in bf16, which has float32's range."""
    torch.manual_seed(0)
    net = LightMUNet(spatial_dims=2, init_filters=8, in_channels=1, out_channels=2).eval()
    x = torch.randn(1, 1, 16, 16)
    seen = []
    net.down_layers[1][1].conv1.mamba.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    with torch.no_grad(), torch.autocast("cpu", dtype=amp or torch.bfloat16, enabled=amp is not None):
        out = net(x)
    assert seen == [expected] and torch.isfinite(out).all()


def test_refuses_a_decoder_that_does_not_reach_full_resolution():
    with pytest.raises(ValueError, match="blocks_up"):
        LightMUNet(blocks_down=(1, 2, 2, 4), blocks_up=(1, 1))
    with pytest.raises(ValueError, match="2D and 3D"):
        lightmunet_from_plans({"conv_op": torch.nn.Conv1d}, 1, 2, False)
