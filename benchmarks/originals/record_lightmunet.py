"""Record reference fixtures from the ORIGINAL LightM-UNet network (run once, on CPU).

What it records
---------------
``LightMUNet`` of MrBlankness/LightM-UNet at commit 6b72e27ba70c499ba8f6f341843de75262086fa5
(``lightm-unet/nnunetv2/nets/LightMUNet.py``), one ``torch.save`` dict per reduced configuration:

* ``<out>/lightmunet_3d.pt``: ``LightMUNet(spatial_dims=3, init_filters=4, in_channels=2, out_channels=3,
  norm=["GROUP", {"num_groups": 4}], blocks_down=[1, 2, 2, 4], blocks_up=[1, 1, 1])`` (the trainer's block
  layout at an eighth of its width; GroupNorm needs widths divisible by its group count) on a seeded
  ``randn(2, 2, 8, 16, 24)``;
* ``<out>/lightmunet_2d.pt``: ``LightMUNet(spatial_dims=2, init_filters=8, in_channels=2, out_channels=3,
  blocks_down=[1, 2, 3], blocks_up=[2, 1])`` (three levels, two up-blocks at the deepest) on a seeded
  ``randn(2, 2, 32, 24)``.

Each holds ``init_stats`` ({state_dict key: [mean, std (correction=0), min, max]} of the default PyTorch
initialisation after ``torch.manual_seed(0)``: the trainer applies no other), ``state_dict`` (every float
tensor perturbed, ``p += 0.05 * (|p|.mean() + 1e-2) * randn`` with a seeded generator in state-dict order, then
rounded to float16-representable values and stored as float16, exact; a draw that makes a tensor equal to an
earlier one of its shape, which happens to the one-element ``skip_scale`` parameters, is drawn again), ``input``,
``outputs`` (the one output of an eval-mode float32 forward under ``no_grad``), ``param_count``, ``init_kwargs`` (the
constructor's), ``source``, ``mamba_ssm``, versions.

``<out>/lightmunet_param_counts.json``: parameter counts of the network ``nnUNetTrainerLightMUNet`` builds,
``LightMUNet(spatial_dims=len(patch_size), init_filters=32, in_channels=<input channels>,
out_channels=<segmentation heads>, blocks_down=[1, 2, 2, 4], blocks_up=[1, 1, 1])``, for a Hippocampus-like 3D
and 2D plan (1 channel in, 3 heads), the paper's LiTS (3D CT, 1 in, 3 heads) and its lung X-ray (2D, 1 in,
2 heads) datasets. Its ``init_kwargs`` are the nnU-Net plans' network kwargs plus ``input_channels``,
``num_classes`` and ``deep_supervision`` (what our ``lightmunet_from_plans`` reads);
``original_init_kwargs`` are the exact arguments the trainer passes to ``LightMUNet``. The count does not
depend on the plan beyond its dimensionality: the trainer reads nothing else from it.

How it runs on CPU
------------------
``LightMUNet.py`` imports MONAI's blocks and ``from mamba_ssm import Mamba``. mamba_ssm comes from a
state-spaces/mamba snapshot through ``install_cpu_mamba_ssm`` of ``record_umamba.py``: no CUDA extensions,
``Mamba(use_fast_path=False)``, so each Mamba block runs mamba-ssm's own slow path (``nn.Conv1d`` causal conv +
SiLU, ``selective_scan_ref``). Before recording, that path is checked against mamba-ssm's ``mamba_inner_ref``
(the reference math of the fused CUDA path the original runs on GPU), with a ``causal_conv1d_fn`` made from
``F.conv1d``: the maximum difference is printed and must stay below 1e-5.

The fork pins MONAI 1.3.0; this runs with the installed MONAI. The blocks it uses
(``networks/blocks/segresnet_block.py``, ``convolutions.py``, ``upsample.py``, ``layers/utils.py``) were compared
with MONAI 1.3.0's: ``segresnet_block.py`` and ``convolutions.py`` are identical; the others differ only in an
optional ``post_conv`` of ``UpSample`` (unused) and functions it does not call.

Getting the snapshots
---------------------
    git clone https://github.com/MrBlankness/LightM-UNet .originals/LightM-UNet
    git -C .originals/LightM-UNet checkout 6b72e27ba70c499ba8f6f341843de75262086fa5
    (mamba_ssm: see record_umamba.py)

(``.originals/`` is git-ignored; none of the original code is copied into this repository.)

Run
---
    .venv/bin/python benchmarks/originals/record_lightmunet.py --lightmunet .originals/LightM-UNet \
        --mamba .originals/mamba --out tests/fixtures/originals
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from record_umamba import MAMBA_COMMIT, MAMBA_REPO, install_cpu_mamba_ssm  # noqa: E402

REPOSITORY = "https://github.com/MrBlankness/LightM-UNet"
COMMIT = "6b72e27ba70c499ba8f6f341843de75262086fa5"
FILE = "lightm-unet/nnunetv2/nets/LightMUNet.py"
TRAINER_FILE = "lightm-unet/nnunetv2/training/nnUNetTrainer/nnUNetTrainerLightMUNet.py"
CLASS = "LightMUNet"

SMALL = [
    ("lightmunet_3d", dict(spatial_dims=3, init_filters=4, in_channels=2, out_channels=3,
                           norm=["GROUP", {"num_groups": 4}], blocks_down=[1, 2, 2, 4], blocks_up=[1, 1, 1]),
     (2, 2, 8, 16, 24)),
    ("lightmunet_2d", dict(spatial_dims=2, init_filters=8, in_channels=2, out_channels=3,
                           blocks_down=[1, 2, 3], blocks_up=[2, 1]), (2, 2, 32, 24)),
]


def plans_kwargs(ndim: int, n_stages: int, features, kernel_sizes, strides) -> dict:
    """nnU-Net default-plans network kwargs (classes as dotted names)."""
    return {
        "n_stages": n_stages, "features_per_stage": list(features),
        "conv_op": f"torch.nn.Conv{ndim}d", "kernel_sizes": kernel_sizes, "strides": strides,
        "n_conv_per_stage": [2] * n_stages, "n_conv_per_stage_decoder": [2] * (n_stages - 1), "conv_bias": True,
        "norm_op": f"torch.nn.InstanceNorm{ndim}d", "norm_op_kwargs": {"eps": 1e-5, "affine": True},
        "dropout_op": None, "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU",
        "nonlin_kwargs": {"inplace": True},
    }


def full_configs():
    """(key, plans kwargs, input channels, segmentation heads) of the trainer's configurations."""
    hip3 = plans_kwargs(3, 4, [32, 64, 128, 256], [[3, 3, 3]] * 4, [[1, 1, 1]] + [[2, 2, 2]] * 3)
    hip2 = plans_kwargs(2, 4, [32, 64, 128, 256], [[3, 3]] * 4, [[1, 1]] + [[2, 2]] * 3)
    lits = plans_kwargs(3, 6, [32, 64, 128, 256, 320, 320], [[1, 3, 3]] + [[3, 3, 3]] * 5,
                        [[1, 1, 1], [1, 2, 2]] + [[2, 2, 2]] * 4)
    xray = plans_kwargs(2, 7, [32, 64, 128, 256, 512, 512, 512], [[3, 3]] * 7, [[1, 1]] + [[2, 2]] * 6)
    return [("lightmunet_3d/hippocampus", hip3, 1, 3), ("lightmunet_2d/hippocampus", hip2, 1, 3),
            ("lightmunet_3d/lits", lits, 1, 3), ("lightmunet_2d/lung_xray", xray, 1, 2)]


def trainer_kwargs(ndim: int, in_channels: int, heads: int) -> dict:
    """What ``nnUNetTrainerLightMUNet.build_network_architecture`` passes to ``LightMUNet``."""
    return dict(spatial_dims=ndim, init_filters=32, in_channels=in_channels, out_channels=heads,
                blocks_down=[1, 2, 2, 4], blocks_up=[1, 1, 1])


def load_original(lightmunet_dir: Path):
    path = lightmunet_dir / FILE
    if not path.is_file():
        raise SystemExit(f"{lightmunet_dir} is not a LightM-UNet checkout (no {FILE})")
    spec = importlib.util.spec_from_file_location("_original_lightmunet", path)
    mod = importlib.util.module_from_spec(spec)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        spec.loader.exec_module(mod)
    return mod


def check_slow_path(ms) -> float:
    """mamba-ssm's slow path (what runs here) against its ``mamba_inner_ref`` (the fused path's reference)."""
    ssi = sys.modules["mamba_ssm.ops.selective_scan_interface"]

    def causal_conv1d_fn(x, weight, bias=None, activation=None):  # causal_conv1d's reference semantics
        out = F.conv1d(x, weight.unsqueeze(1), bias, padding=weight.shape[-1] - 1, groups=x.shape[1])
        out = out[..., : x.shape[-1]]
        return F.silu(out) if activation in ("silu", "swish") else out

    torch.manual_seed(123)
    m = ms.Mamba(d_model=24, d_state=16, d_conv=4, expand=2)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x = torch.randn(2, 37, 24)
    saved = ssi.causal_conv1d_fn, ssi.selective_scan_fn
    try:
        ssi.causal_conv1d_fn, ssi.selective_scan_fn = causal_conv1d_fn, ssi.selective_scan_ref
        with torch.no_grad():
            ref = ssi.mamba_inner_ref(m.in_proj(x).transpose(1, 2), m.conv1d.weight, m.conv1d.bias,
                                      m.x_proj.weight, m.dt_proj.weight, m.out_proj.weight, m.out_proj.bias,
                                      -torch.exp(m.A_log.float()), None, None, m.D.float(),
                                      delta_bias=m.dt_proj.bias.float(), delta_softplus=True)
            got = m(x)
    finally:
        ssi.causal_conv1d_fn, ssi.selective_scan_fn = saved
    diff = (got - ref).abs().max().item()
    if not diff <= 1e-5 * max(1.0, ref.abs().max().item()):
        raise SystemExit(f"mamba-ssm's slow path disagrees with mamba_inner_ref: {diff}")
    return diff


def param_count(model: torch.nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def record(args) -> None:
    ms, mamba_version = install_cpu_mamba_ssm(args.mamba.resolve())
    original = load_original(args.lightmunet)
    assert original.Mamba is ms.Mamba
    import monai

    torch.use_deterministic_algorithms(True)
    print(f"slow path vs mamba_inner_ref: max |diff| = {check_slow_path(ms):.3g}")
    args.out.mkdir(parents=True, exist_ok=True)
    summary = []

    for name, kwargs, in_shape in SMALL:
        torch.manual_seed(0)
        model = original.LightMUNet(**kwargs).float()
        assert all(m.use_fast_path is False for m in model.modules() if isinstance(m, ms.Mamba))
        sd = model.state_dict()
        init_stats = {k: [float(t.double().mean()), float(t.double().std(correction=0)), float(t.min()),
                          float(t.max())] for k, t in sd.items() if t.is_floating_point()}
        gen = torch.Generator().manual_seed(1)
        done = []
        with torch.no_grad():
            for t in sd.values():  # state_dict tensors share storage with the parameters
                if not t.is_floating_point():
                    continue
                base = t.clone()
                while True:  # redraw while equal to an earlier tensor (the scalar skip_scales can collide)
                    t.copy_(base + 0.05 * (base.abs().mean() + 1e-2) * torch.randn(t.shape, generator=gen))
                    t.copy_(t.half().float())
                    if not any(d.shape == t.shape and torch.equal(d, t) for d in done):
                        break
                done.append(t)
        floats = [(k, t.flatten()) for k, t in sd.items() if t.is_floating_point()]
        for i, (ka, a) in enumerate(floats):  # no two tensors equal by construction
            for kb, b in floats[i + 1:]:
                assert a.shape != b.shape or not torch.equal(a, b), (ka, kb)

        x = torch.randn(in_shape, generator=torch.Generator().manual_seed(2))
        model.eval()
        with torch.no_grad():
            y = model(x.clone()).float().contiguous()
        assert torch.isfinite(y).all() and y.shape == (in_shape[0], kwargs["out_channels"], *in_shape[2:])
        rec = {
            "network": name,
            "source": {"repository": REPOSITORY, "commit": COMMIT, "file": FILE, "class": CLASS},
            "mamba_ssm": {"repository": MAMBA_REPO, "commit": MAMBA_COMMIT, "version": mamba_version,
                          "path": "selective_scan_ref (use_fast_path=False, causal_conv1d_fn=None)"},
            "init_kwargs": kwargs,
            "input": x,
            "outputs": [y],
            "state_dict": {k: (t.half() if t.is_floating_point() else t).clone() for k, t in sd.items()},
            "param_count": param_count(model),
            "init_stats": init_stats,
            "torch_version": str(torch.__version__),
            "monai_version": monai.__version__,
        }
        json.dumps(rec["init_kwargs"])
        path = args.out / f"{name}.pt"
        torch.save(rec, path)
        summary.append(f"{name}: params {rec['param_count']:,}, output {tuple(y.shape)}, "
                       f"{path.stat().st_size:,} bytes")

    counts = {}
    for key, plans, n_in, heads in full_configs():
        ndim = int(plans["conv_op"][-2])
        kw = trainer_kwargs(ndim, n_in, heads)
        with torch.device("meta"):
            model = original.LightMUNet(**kw)
        counts[key] = {"network": key.split("/")[0],
                       "init_kwargs": dict(plans, input_channels=n_in, num_classes=heads, deep_supervision=False),
                       "original_init_kwargs": kw, "trainer": TRAINER_FILE, "params": param_count(model)}
        summary.append(f"{key}: params {counts[key]['params']:,}")
    (args.out / "lightmunet_param_counts.json").write_text(json.dumps(counts, indent=1) + "\n")
    print("\n".join(summary))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--lightmunet", type=Path, required=True, help="checkout of MrBlankness/LightM-UNet at " + COMMIT)
    p.add_argument("--mamba", type=Path, required=True, help="checkout of state-spaces/mamba at " + MAMBA_COMMIT)
    p.add_argument("--out", type=Path, default=Path("tests/fixtures/originals"))
    record(p.parse_args())


if __name__ == "__main__":
    main()
