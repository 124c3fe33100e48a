"""Networks built from nnU-Net plans: deep-supervision contract, 2D/3D, channels, plan flavours."""
import pytest
import torch
from torch import nn

from nnunet_mamba.layers import Mamba, MultiDirMamba, TriOrientedMamba
from nnunet_mamba.networks import build_network, mixers, resolve_arch_kwargs

# the networks with nnU-Net's deep-supervision contract (one output per decoder stage); the others are tested
# against their authors' code in tests/test_faithful_*.py
DEEP_SUPERVISED = ["mamba_resenc", "nomamba", "umamba_bot", "umamba_enc"]


def plans_kwargs(ndim: int, n_stages: int = 4, flavour: str = "resenc") -> dict:
    conv = {2: "torch.nn.modules.conv.Conv2d", 3: "torch.nn.modules.conv.Conv3d"}[ndim]
    norm = {2: "torch.nn.modules.instancenorm.InstanceNorm2d", 3: "torch.nn.modules.instancenorm.InstanceNorm3d"}[ndim]
    kw = {"n_stages": n_stages, "features_per_stage": [8 * 2 ** i for i in range(n_stages)], "conv_op": conv,
          "kernel_sizes": [[3] * ndim] * n_stages, "strides": [[1] * ndim] + [[2] * ndim] * (n_stages - 1),
          "n_conv_per_stage_decoder": [1] * (n_stages - 1), "conv_bias": True, "norm_op": norm,
          "norm_op_kwargs": {"eps": 1e-5, "affine": True}, "dropout_op": None, "dropout_op_kwargs": None,
          "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True}}
    if flavour == "resenc":
        kw["n_blocks_per_stage"] = [1, 2, 2, 2, 2][:n_stages]
    else:
        kw["n_conv_per_stage"] = [2] * n_stages
    return resolve_arch_kwargs(kw, ["conv_op", "norm_op", "dropout_op", "nonlin"])


@pytest.mark.parametrize("name", DEEP_SUPERVISED)
@pytest.mark.parametrize("ndim,shape", [(3, (19, 24, 17)), (2, (36, 27))])
def test_deep_supervision_contract(name, ndim, shape):
    kw = plans_kwargs(ndim)
    pad = [((s + 7) // 8) * 8 for s in shape]  # nnU-Net patches are divisible by the total stride
    net = build_network(name, kw, input_channels=3, num_classes=4, deep_supervision=True, patch_size=pad)
    net.apply(net.initialize)
    x = torch.randn(2, 3, *pad)
    outs = net(x)
    assert isinstance(outs, (list, tuple)) and len(outs) == kw["n_stages"] - 1
    for i, o in enumerate(outs):  # highest resolution first, halving each time
        assert o.shape == (2, 4, *[p // 2 ** i for p in pad])
    sum(o.sum() for o in outs).backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)
    net.decoder.deep_supervision = False
    single = net(x)
    assert torch.is_tensor(single) and single.shape == (2, 4, *pad)
    assert net.compute_conv_feature_map_size(pad) > 0
    inference = build_network(name, kw, input_channels=3, num_classes=4, deep_supervision=False, patch_size=pad)
    assert inference.state_dict().keys() == net.state_dict().keys()  # the predictor loads strictly


def test_default_network_has_real_multidirectional_mamba_mixers():
    net = build_network("mamba_resenc", plans_kwargs(3), 1, 3)
    ms = mixers(net)
    assert len(ms) == 2 and all(isinstance(m, MultiDirMamba) for m in ms)
    assert [len(m.directions) for m in ms] == [6, 6]  # every axis order, both ways
    assert not mixers(build_network("nomamba", plans_kwargs(3), 1, 3))


def test_published_networks_place_their_mamba_layers_as_the_papers_do():
    def mambas(net, kind=Mamba):
        return [m for m in net.modules() if isinstance(m, kind)]
    assert len(mambas(build_network("umamba_bot", plans_kwargs(3), 1, 3))) == 1  # bottleneck only
    enc3 = build_network("umamba_enc", plans_kwargs(3), 1, 3, patch_size=(16, 16, 16))
    # after every stage; the 2x2x2 bottleneck (8 voxels <= 64 channels) mixes over channels
    assert [m.channel_token for m in enc3.encoder.mamba_layers] == [False, False, False, True]
    assert enc3.encoder.mamba_layers[-1].dim == 8
    enc2 = build_network("umamba_enc", plans_kwargs(2, n_stages=5), 1, 3, patch_size=(64, 64))
    assert [isinstance(m, nn.Identity) for m in enc2.encoder.mamba_layers] == [False, True, False, True, False]
    assert len(mambas(build_network("segmamba", plans_kwargs(3), 1, 3), TriOrientedMamba)) == 8  # 2 per stage
    with pytest.raises(ValueError, match="3D network"):
        build_network("segmamba", plans_kwargs(2), 1, 3)
    with pytest.raises(ValueError, match="patch_size"):
        build_network("umamba_enc", plans_kwargs(3), 1, 3)


@pytest.mark.parametrize("shape", [(40, 56, 40), (32, 32, 32), (19, 24, 17)])
def test_segmamba_runs_any_patch_size(shape):
    """The original needs sizes divisible by 16; this one pads and crops, and trains."""
    net = build_network("segmamba", plans_kwargs(3), 2, 3, depths=(1, 1, 1, 1), feat_size=(8, 8, 16, 16),
                        hidden_size=16)
    x = torch.randn(1, 2, *shape)
    y = net(x)
    assert y.shape == (1, 3, *shape)
    y.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


def test_u_mamba_channel_token_layer_rejects_another_patch_size():
    net = build_network("umamba_enc", plans_kwargs(3), 1, 3, patch_size=(16, 16, 16))
    with pytest.raises(ValueError, match="patch size"):
        net(torch.randn(1, 1, 32, 32, 32))


def test_mixer_depends_on_scan_order_and_trains():
    torch.manual_seed(0)
    m = MultiDirMamba(8, ndim=3, directions=3)
    x = torch.randn(2, 8, 5, 4, 3)
    assert torch.equal(m(x), x)  # zero-initialised output projection: the residual mixer starts as identity
    nn.init.normal_(m.out_proj.weight, std=0.1)
    y = m(x)
    assert y.shape == x.shape and not torch.allclose(y, x)
    y.square().mean().backward()
    for p in (m.ssm.A_log, m.ssm.dt_bias, m.ssm.D, m.ssm.x_proj_weight, m.ssm.dt_proj_weight):
        assert p.grad is not None and p.grad.abs().sum() > 0
    # a causal scan: permuting the input along the scan changes the output beyond the permutation
    xp = x.flip(2)
    assert not torch.allclose(m(xp).flip(2), y, atol=1e-5)


def test_default_plans_without_blocks_get_resenc_block_counts():
    kw = plans_kwargs(3, n_stages=5, flavour="default")
    assert kw["n_blocks_per_stage"] == [1, 3, 4, 6, 6]
    net = build_network("mamba_resenc", kw, 1, 2)
    assert net(torch.randn(1, 1, 32, 32, 32))[0].shape == (1, 2, 32, 32, 32)


def test_unknown_network_and_bad_plans_give_clear_errors():
    with pytest.raises(KeyError, match="unknown network"):
        build_network("nope", plans_kwargs(3), 1, 2)
    with pytest.raises(ImportError, match="conv_op"):
        resolve_arch_kwargs({"n_stages": 2, "conv_op": "torch.nn.NoSuchConv", "n_blocks_per_stage": [1, 1]},
                            ["conv_op"])


def test_directions_per_mixer_stage():
    net = build_network("mamba_resenc", plans_kwargs(3), 1, 3, directions=[2, 6])
    assert [len(m.directions) for m in mixers(net)] == [2, 6]  # stage n-2 cheap, bottleneck all orders
    assert [len(m.directions) for m in mixers(build_network("mamba_resenc", plans_kwargs(2), 1, 3,
                                                            directions=[2, None]))] == [2, 4]
    assert [len(m.directions) for m in mixers(build_network("mamba_resenc", plans_kwargs(3), 1, 3,
                                                            mixer_stages=(-1,)))] == [6]
    with pytest.raises(ValueError, match="one per mixer stage"):
        build_network("mamba_resenc", plans_kwargs(3), 1, 3, directions=[2, 6, 6])


@pytest.mark.parametrize("amp,scan_dtype", [(None, torch.float32), (torch.bfloat16, torch.bfloat16),
                                            (torch.float16, torch.bfloat16)])
def test_mixer_never_scans_in_fp16(monkeypatch, amp, scan_dtype):
    """Under fp16 autocast (nnU-Net's CUDA default) the mixer computes in bf16: fp32's exponent range."""
    import nnunet_mamba.layers.mixer as mixer_module
    seen = []
    real = mixer_module.multidir_selective_scan

    def spy(u, delta, *args, **kwargs):
        seen.append((u.dtype, delta.dtype))
        return real(u, delta, *args, **kwargs)

    monkeypatch.setattr(mixer_module, "multidir_selective_scan", spy)
    m = MultiDirMamba(8, 3, directions=2, expand=1.0)
    x = torch.randn(2, 8, 3, 4, 5)
    with torch.autocast("cpu", dtype=amp or torch.bfloat16, enabled=amp is not None):
        y = m(x)
    assert seen == [(scan_dtype, scan_dtype)]
    assert y.dtype == x.dtype and torch.isfinite(y).all()
    y.float().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())
