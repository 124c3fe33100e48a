"""The published networks equal the authors' code: same state-dict keys and shapes, same outputs.

Fixtures in tests/fixtures/originals were recorded once by running the original code on CPU
(benchmarks/originals/record_*.py): seeded, perturbed weights (float16-exact), an input, and the
outputs; also per-tensor statistics of the original's freshly initialised weights, and parameter
counts at the papers' configurations.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from nnunet_mamba.networks import build_network, resolve_arch_kwargs

FIXTURES = Path(__file__).parent / "fixtures" / "originals"
UMAMBA = ["umamba_bot_3d", "umamba_enc_3d", "umamba_bot_2d", "umamba_enc_2d"]
ALL = sorted(p.stem for p in FIXTURES.glob("*.pt"))  # every recorded original
CLASSES = ("conv_op", "norm_op", "dropout_op", "nonlin")


def load(name: str) -> dict:
    return torch.load(FIXTURES / f"{name}.pt", weights_only=True)


def build_from_fixture(network: str, init_kwargs: dict) -> torch.nn.Module:
    """Our registry network for a recorded original's constructor kwargs."""
    kw = dict(init_kwargs)
    if network.startswith("segmamba"):
        return build_network("segmamba", {"conv_op": torch.nn.Conv3d}, kw["in_chans"], kw["out_chans"],
                             deep_supervision=False, depths=kw["depths"], feat_size=kw["feat_size"],
                             hidden_size=kw["hidden_size"])
    patch = kw.pop("input_size", None)
    arch = resolve_arch_kwargs({k: v for k, v in kw.items()
                                if k not in ("input_channels", "num_classes", "deep_supervision")}, CLASSES)
    return build_network(network.rsplit("_", 1)[0], arch, kw["input_channels"], kw["num_classes"],
                         kw["deep_supervision"], patch_size=patch)


def relative_error(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return float((ours.double() - ref.double()).norm() / ref.double().norm())


@pytest.mark.parametrize("name", ALL)
def test_same_state_dict_and_outputs_as_the_original(name):
    fx = load(name)
    net = fixture_network(name, fx["init_kwargs"])
    theirs = {k: v.float() if v.is_floating_point() else v for k, v in fx["state_dict"].items()}
    ours = net.state_dict()
    # the same keys in the same order: parameters are registered as in the original, so that an optimizer
    # state saved by the original's trainer lines up too
    assert list(ours) == list(theirs), "state-dict keys differ from the original's"
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in theirs.items()}
    net.load_state_dict(theirs, strict=True)
    assert sum(p.numel() for p in net.parameters()) == fx["param_count"]
    net.eval()
    with torch.no_grad():
        out = net(fx["input"])
    out = out if isinstance(out, (list, tuple)) else [out]
    assert len(out) == len(fx["outputs"])
    for o, ref in zip(out, fx["outputs"]):
        assert o.shape == ref.shape
        assert relative_error(o, ref) <= 1e-5


@pytest.mark.parametrize("name", ALL)
def test_initialisation_follows_the_original(name):
    """Per tensor: the same init rule (constants exactly, random draws with the same spread)."""
    fx = load(name)
    torch.manual_seed(0)
    net = fixture_network(name, fx["init_kwargs"])
    if hasattr(net, "initialize"):  # what our trainers apply after building (U-Mamba's He init)
        net.apply(net.initialize)
    for key, value in net.state_dict().items():
        if not value.is_floating_point():
            assert key.endswith("num_batches_tracked"), key
            continue
        mean, std, lo, hi = fx["init_stats"][key]
        v = value.double()
        if std == 0:  # a constant (norm weights, D, biases at zero, BatchNorm statistics)
            assert torch.all(v == mean), key
        elif re.search(r"A(_[bs])?_logs?$", key):  # S4D-real: log(1..N), deterministic
            assert v.min().item() == pytest.approx(lo) and v.max().item() == pytest.approx(hi), key
            assert v.mean().item() == pytest.approx(mean), key
        elif v.numel() >= 48:  # a random draw: the same mean and spread within 5 standard errors of two samples
            n = v.numel()
            assert v.mean().item() == pytest.approx(mean, abs=5 * std * (2 / n) ** 0.5), key
            assert v.std(correction=0).item() == pytest.approx(std, rel=5 / n ** 0.5), key
            # bounded draws stay within their bounds; normal draws (std 0.02 linear layers) within 6 std
            assert v.abs().max().item() <= max(1.5 * max(abs(lo), abs(hi)), abs(mean) + 6 * std), key


def _param_counts() -> dict:
    counts = {}
    for f in ("umamba_param_counts.json", "segmamba_param_counts.json"):  # the other families test their own
        counts.update(json.loads((FIXTURES / f).read_text()))
    return counts


def fixture_network(name: str, init_kwargs: dict) -> torch.nn.Module:
    """Our network for any recorded fixture: the registry for U-Mamba and SegMamba, the network class for the
    families whose fixtures record our constructor's arguments."""
    from nnunet_mamba.networks.lightmunet import LightMUNet
    from nnunet_mamba.networks.medmamba import MedMamba
    from nnunet_mamba.networks.nnmamba import NnMambaCls, NnMambaSeg
    from nnunet_mamba.networks.swin_umamba import SwinUMamba
    from nnunet_mamba.networks.vmunet import VMUNet
    classes = {"lightmunet": LightMUNet, "nnmamba_seg": NnMambaSeg, "nnmamba_cls": NnMambaCls, "vmunet": VMUNet,
               "swin_umamba": SwinUMamba, "medmamba": MedMamba}
    family = name.rsplit("_", 1)[0]
    if family in classes:
        return classes[family](**init_kwargs)
    return build_from_fixture(name, init_kwargs)


@pytest.mark.parametrize("entry", sorted(_param_counts()))
def test_parameter_count_at_the_papers_configuration(entry):
    rec = _param_counts()[entry]
    with torch.device("meta"):
        net = build_from_fixture(rec["network"], rec["init_kwargs"])
    assert sum(p.numel() for p in net.parameters()) == rec["params"]
