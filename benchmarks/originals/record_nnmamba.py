"""Record CPU reference fixtures from the ORIGINAL nnMamba networks (segmentation and classification).

What it records
---------------
From lhaof/nnMamba at commit 6fb35a3d7e9352f7b3cc83a035ef3ae0d0e8fa28 (Gong et al., "nnMamba: 3D Biomedical
Image Segmentation, Classification and Landmark Detection with State Space Model", ISBI 2025):

* ``<out>/nnmamba_seg_3d.pt``: ``nnMambaSeg`` of ``nnMamba.py`` (the file the README names for segmentation;
  MICCSS Mamba layers), reduced to ``nnMambaSeg(in_ch=2, channels=4, blocks=3, number_classes=2)``, run on a
  seeded ``randn(2, 2, 16, 32, 16)`` (every size a multiple of the total stride 16, which the original needs);
* ``<out>/nnmamba_cls_3d.pt``: ``nnMambaEncoder`` of ``nnMamba4cls.py`` (the file the README names for
  classification; identical to ``classification/networks/ssm_nnMamba.py`` up to line endings), reduced to
  ``nnMambaEncoder(in_ch=1, channels=4, blocks=3, number_classes=2)``, run on ``randn(2, 1, 28, 24, 20)``
  (AdrenalMNIST3D's 28 on the first axis; global pooling takes any size);
* ``<out>/nnmamba_param_counts.json``: parameter counts at the repository's configurations (the constructors'
  defaults, which its scripts use, and the channel counts of its nnU-Net and ADNI runs).

Each ``.pt`` is a ``torch.save`` dict: network, source{repository, commit, file, class}, mamba_ssm{...},
init_kwargs, input, outputs (list of float32 tensors), state_dict (float16), param_count, init_stats
{key: [mean, std(correction=0), min, max]} of the fresh default initialisation (``torch.manual_seed(0)``).

State dict: the BatchNorm running statistics are first set to the batch statistics of one train-mode forward
of the fixture's input (see ``calibrate_batchnorm``); then every distinct floating tensor (parameters AND
BatchNorm running stats; running variances kept >= 1e-3 by ``abs`` and a clamp) is perturbed
(``p += 0.05 * (|p|.mean() + 1e-2) * randn``, seeded) and rounded to float16-representable values, so no two
tensors are equal by construction. The original passes ONE ``MambaLayer`` instance to blocks 1..blocks-1 of each
residual stage, so its state dict holds that layer under several keys (same storage): each distinct tensor is
perturbed once and aliases are stored as the same tensor. The forward runs in eval mode (BatchNorm uses the
perturbed running statistics, dropout is off) in float32.

How it runs the original without CUDA
-------------------------------------
Both files do ``from mamba_ssm import Mamba``. ``install_cpu_mamba_ssm`` (``record_umamba.py``) imports
upstream mamba-ssm (state-spaces/mamba e9594ce1c732d97440f0332fdc43170a2294dbfa) from its checkout with the
CUDA extensions blocked and the slow path forced (``use_fast_path=False``, checked on every instance):
``nn.Conv1d`` for the causal conv and ``selective_scan_ref``, mamba-ssm's own pure-PyTorch reference of its
CUDA scan. No other import of the two files needs stubbing.

Getting the snapshots (``.originals/`` is git-ignored; no original code is copied into this repository)
----------------------------------------------------------------------------------------------------
    git clone https://github.com/lhaof/nnMamba .originals/nnMamba
    git -C .originals/nnMamba checkout 6fb35a3d7e9352f7b3cc83a035ef3ae0d0e8fa28
    git clone https://github.com/state-spaces/mamba .originals/mamba
    git -C .originals/mamba checkout e9594ce1c732d97440f0332fdc43170a2294dbfa

Run
---
    .venv/bin/python benchmarks/originals/record_nnmamba.py --nnmamba .originals/nnMamba \
        --mamba .originals/mamba --out tests/fixtures/originals
"""
from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from record_umamba import MAMBA_COMMIT, MAMBA_REPO, install_cpu_mamba_ssm  # noqa: E402

REPOSITORY = "https://github.com/lhaof/nnMamba"
COMMIT = "6fb35a3d7e9352f7b3cc83a035ef3ae0d0e8fa28"

SMALL = [
    # (fixture name, file, class, reduced kwargs, input shape)
    ("nnmamba_seg_3d", "nnMamba.py", "nnMambaSeg",
     dict(in_ch=2, channels=4, blocks=3, number_classes=2), (2, 2, 16, 32, 16)),
    ("nnmamba_cls_3d", "nnMamba4cls.py", "nnMambaEncoder",
     dict(in_ch=1, channels=4, blocks=3, number_classes=2), (2, 1, 28, 24, 20)),
]
FULL = [
    # nnMamba.py's defaults (its __main__ builds nnMambaSeg())
    ("nnmamba_seg_3d/default", "nnMamba.py", "nnMambaSeg", dict(in_ch=1, channels=32, blocks=3, number_classes=6)),
    # the repository's nnU-Net trainers build nnMambaSeg(in_ch=num_input_channels, number_classes=num_classes):
    # BraTS 2023 (4 modalities, 4 labels incl. background), AMOS 2022 (1 channel, 16 labels incl. background)
    ("nnmamba_seg_3d/brats2023", "nnMamba.py", "nnMambaSeg", dict(in_ch=4, channels=32, blocks=3, number_classes=4)),
    ("nnmamba_seg_3d/amos2022", "nnMamba.py", "nnMambaSeg", dict(in_ch=1, channels=32, blocks=3, number_classes=16)),
    # classification/train_model.py builds nnMambaEncoder() (one logit, BCEWithLogitsLoss)
    ("nnmamba_cls_3d/adni", "nnMamba4cls.py", "nnMambaEncoder",
     dict(in_ch=1, channels=32, blocks=3, number_classes=1)),
    ("nnmamba_cls_3d/two_classes", "nnMamba4cls.py", "nnMambaEncoder",
     dict(in_ch=1, channels=32, blocks=3, number_classes=2)),
]


def load_original(nnmamba_dir: Path, file: str):
    path = nnmamba_dir / file
    if not path.is_file():
        raise SystemExit(f"{nnmamba_dir} is not an nnMamba checkout (no {file})")
    spec = importlib.util.spec_from_file_location(f"_original_nnmamba_{path.stem}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def build(module, cls_name, kwargs, ms):
    model = getattr(module, cls_name)(**copy.deepcopy(kwargs))
    mambas = [m for m in model.modules() if isinstance(m, ms.Mamba)]
    assert mambas and all(m.use_fast_path is False for m in mambas)
    return model


def param_count(model) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def tensor_stats(t: torch.Tensor) -> list[float]:
    if t.numel() == 0:  # the channel attention's bottleneck has channels // 16 units: none below 16 channels
        return [0.0, 0.0, 0.0, 0.0]
    t = t.detach().double()
    return [float(t.mean()), float(t.std(correction=0)), float(t.min()), float(t.max())]


def calibrate_batchnorm(model: torch.nn.Module, x: torch.Tensor) -> None:
    """Running statistics of every BatchNorm = the batch statistics of one train-mode forward of ``x``
    (cumulative average, so a shared layer applied twice averages both calls). Eval-mode BatchNorm then
    normalises as in a trained network: with the initial statistics (mean 0, var 1) the activations shrink
    through the network and the Mamba layers' share of the output falls below the test's 1e-5 tolerance."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    with torch.no_grad():
        model(x.clone())
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum


def record(args) -> None:
    ms, mamba_version = install_cpu_mamba_ssm(args.mamba.resolve())
    torch.use_deterministic_algorithms(True)
    torch.set_default_dtype(torch.float32)
    args.out.mkdir(parents=True, exist_ok=True)
    modules: dict = {}
    summary = []

    for name, file, cls_name, kwargs, in_shape in SMALL:
        module = modules.setdefault(file, load_original(args.nnmamba, file))
        assert module.Mamba is ms.Mamba
        torch.manual_seed(0)
        model = build(module, cls_name, kwargs, ms).float()
        sd = model.state_dict(keep_vars=False)
        init_stats = {k: tensor_stats(t) for k, t in sd.items() if t.is_floating_point()}
        x = torch.randn(in_shape, generator=torch.Generator().manual_seed(2), dtype=torch.float32)
        calibrate_batchnorm(model, x)

        # shared MambaLayer instances: one storage under several keys; perturb each distinct tensor once
        first_key, aliases = {}, {}
        for k, t in sd.items():
            aliases[k] = first_key.setdefault(t.data_ptr() if t.numel() else k, k)
        shared = sorted({k for k in sd if aliases[k] != k})
        unique = [(k, sd[k]) for k in sd if aliases[k] == k]
        gen = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for k, t in unique:  # state_dict tensors share storage with the parameters/buffers
                if t.is_floating_point() and t.numel():
                    t += 0.05 * (t.abs().mean() + 1e-2) * torch.randn(t.shape, generator=gen, dtype=t.dtype)
                    if k.endswith("running_var"):  # a variance stays positive
                        t.abs_().clamp_(min=1e-3)
                    t.copy_(t.half().float())
        floats = [(k, t) for k, t in unique if t.is_floating_point() and t.numel()]
        for i, (ka, a) in enumerate(floats):
            assert torch.unique(a).numel() > min(1, a.numel() - 1), ka
            for kb, b in floats[i + 1:]:
                assert a.shape != b.shape or not torch.equal(a, b), (ka, kb)
        for k in sd:
            if "running_var" in k:
                assert (sd[k] > 0).all(), k
        stored = {k: (t.detach().half().clone() if t.is_floating_point() else t.detach().clone()) for k, t in unique}
        state_dict = {k: stored[aliases[k]] for k in sd}

        model.eval()
        with torch.no_grad():
            out = model(x.clone())
        outs = [out.detach().float().contiguous()]
        assert all(torch.isfinite(o).all() for o in outs)
        assert outs[0].std() > 0

        rec = {
            "network": name,
            "source": {"repository": REPOSITORY, "commit": COMMIT, "file": file, "class": cls_name},
            "mamba_ssm": {"repository": MAMBA_REPO, "commit": MAMBA_COMMIT, "version": mamba_version,
                          "path": "selective_scan_ref (use_fast_path=False, causal_conv1d_fn=None)"},
            "init_kwargs": dict(kwargs),
            "input": x,
            "outputs": outs,
            "state_dict": state_dict,
            "shared_keys": shared,
            "param_count": param_count(model),
            "init_stats": init_stats,
            "torch_version": str(torch.__version__),
        }
        json.dumps(rec["init_kwargs"])
        path = args.out / f"{name}.pt"
        torch.save(rec, path)
        summary.append(f"{name}: params {rec['param_count']}, output {tuple(outs[0].shape)}, "
                       f"{len(shared)} aliased keys, {path.stat().st_size} bytes")

    counts = {}
    for key, file, cls_name, kwargs in FULL:
        module = modules.setdefault(file, load_original(args.nnmamba, file))
        with torch.device("meta"):
            model = build(module, cls_name, kwargs, ms)
        counts[key] = {"network": key.split("/")[0], "init_kwargs": dict(kwargs), "params": param_count(model)}
        summary.append(f"{key}: params {counts[key]['params']:,}")
        del model
    (args.out / "nnmamba_param_counts.json").write_text(json.dumps(counts, indent=1) + "\n")
    print("\n".join(summary))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--nnmamba", type=Path, required=True, help="checkout of lhaof/nnMamba at " + COMMIT)
    p.add_argument("--mamba", type=Path, required=True, help="checkout of state-spaces/mamba at " + MAMBA_COMMIT)
    p.add_argument("--out", type=Path, default=Path("tests/fixtures/originals"))
    record(p.parse_args())


if __name__ == "__main__":
    main()
