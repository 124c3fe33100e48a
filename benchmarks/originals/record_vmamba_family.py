"""Record reference fixtures from the ORIGINAL VMamba-family networks (run once, on CPU).

Networks (each optional on the command line)
--------------------------------------------
* VM-UNet      ``--vmunet DIR``       JCruan519/VM-UNet @ 43c495bfd0cb2bd58fd0147687c60c9c624c4840,
               ``models/vmunet/vmunet.py`` ``VMUNet`` (backbone ``models/vmunet/vmamba.py`` ``VSSM``)
* Swin-UMamba  ``--swin-umamba DIR``  JiarunLiu/Swin-UMamba @ 2c1f72e1975cef6621f239117efdc954237c6952,
               ``swin_umamba/nnunetv2/nets/SwinUMamba.py`` ``SwinUMamba``
* MedMamba     ``--medmamba DIR``     YubiaoYue/MedMamba @ 104beb3d641d67cef6f09b94ac299083d91bc417,
               ``MedMamba.py`` ``VSSM``

What it records
---------------
Per network one ``torch.save`` dict ``<out>/<network>.pt`` (vmunet_2d, swin_umamba_2d, medmamba_2d) at a reduced
configuration: ``network``, ``source`` {repository, commit, file, class}, ``init_kwargs`` (JSON-able),
``input``, ``outputs`` (list of float32 tensors; eval mode, no_grad, float32), ``state_dict`` (float16),
``param_count``, ``init_stats`` {key: [mean, std (correction=0), min, max]} of the freshly built model
(``torch.manual_seed(0)``), ``torch_version``, ``notes``. Before the forward every floating-point
parameter/buffer is perturbed, ``p += 0.05 * (p.abs().mean() + 1e-2) * randn`` (generator seed 1, state_dict
order), and rounded to float16-representable values, so the stored float16 state dict is exactly what ran.
Inputs are drawn with generator seed 2. Also ``<out>/vmamba_family_param_counts.json``:
{"<network>/<config>": {"network", "init_kwargs", "params"}} at the papers' configurations.

Reduced configurations, and how they reach the original constructors
--------------------------------------------------------------------
* VM-UNet: ``VMUNet(input_channels=3, num_classes=3, depths=[2, 2, 2, 1], depths_decoder=[1, 2, 2, 1],
  drop_path_rate=0.2)``. ``VMUNet`` does not forward widths to its ``VSSM``; the module's ``VSSM`` name is
  replaced by ``functools.partial(VSSM, dims=[8, 16, 32, 64], dims_decoder=[64, 32, 16, 8], d_state=8)`` while
  the model is built. Input (1, 3, 64, 96); also a one-channel input of the same size (``gray_input`` /
  ``gray_output``: the original repeats it to three channels).
* Swin-UMamba: ``SwinUMamba`` builds ``VSSMEncoder(patch_size=2, in_chans=feat_size[0])`` with VMamba-Tiny's
  fixed widths 96..768 and depths 2,2,9,2; the module's ``VSSMEncoder`` name is replaced by
  ``functools.partial(VSSMEncoder, dims=feat_size[1:], depths=[1, 1, 2, 1])`` while the reduced model is built
  (``SwinUMamba(in_chans=2, out_chans=3, feat_size=[4, 4, 8, 16, 32], hidden_size=32)``). Deep supervision on
  (four outputs). Input (1, 2, 64, 96).
* MedMamba: ``VSSM(depths=[1, 1, 2, 1], dims=[8, 16, 32, 64], in_chans=3, num_classes=4)``. Input
  (2, 3, 72, 100), whose maps turn odd at the third and fourth stage (the original drops the last row/column);
  BatchNorm layers in eval mode use the (perturbed) running statistics.

How the selective scan runs on CPU, and how that was checked
------------------------------------------------------------
All three call mamba-ssm's CUDA ``selective_scan_fn`` (VM-UNet and MedMamba through a module-level name that
``forward_corev0`` reads at every call, Swin-UMamba through ``self.selective_scan`` set in ``SS2D.__init__``).
``mamba_ssm`` is imported from the state-spaces/mamba snapshot (``--mamba``, commit
e9594ce1c732d97440f0332fdc43170a2294dbfa) without its CUDA extensions (``install_cpu_mamba_ssm`` of
record_umamba.py), and each original module's ``selective_scan_fn`` name is set to mamba-ssm's pure-PyTorch
``selective_scan_ref`` before the model is built. ``selective_scan_ref`` is the reference the CUDA kernel is
tested against upstream (``tests/ops/test_selective_scan.py``, including grouped B/C, ``varBC_groups=2``);
SS2D passes B and C grouped per direction, (B, K, N, L) for K * D channels. Before recording the script checks
(``check_grouped_reference``) that the grouped call equals K separate single-group calls on each direction's
channel block, i.e. that the grouping maps channel block k to direction k's B and C as the kernel does.

The originals' other imports (timm's DropPath/trunc_normal_, einops, MONAI's UNETR blocks, nnunetv2's plans
handler) are the installed packages; MedMamba.py ends with model instances moved to CUDA and a test forward,
so only the source above those lines (``medmamba_t = VSSM(``) is executed.

Pretrained weights are not loaded (no downloads): VM-UNet's ``vmamba_small_e238_ema.pth`` and Swin-UMamba's
``vmamba_tiny_e292.pth`` are VMamba ImageNet checkpoints; which of their keys land where is documented in
``nnunet_mamba/networks/vmunet.py`` and ``nnunet_mamba/networks/swin_umamba.py``.

Getting the snapshots
---------------------
    git clone https://github.com/JCruan519/VM-UNet .originals/VM-UNet            # @ 43c495bf
    git clone https://github.com/JiarunLiu/Swin-UMamba .originals/Swin-UMamba    # @ 2c1f72e1
    git clone https://github.com/YubiaoYue/MedMamba .originals/MedMamba          # @ 104beb3d
    git clone https://github.com/state-spaces/mamba .originals/mamba             # @ e9594ce1

Run
---
    .venv/bin/python benchmarks/originals/record_vmamba_family.py --vmunet .originals/VM-UNet \\
        --swin-umamba .originals/Swin-UMamba --medmamba .originals/MedMamba --out tests/fixtures/originals
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.util
import io
import json
import sys
import types
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from record_umamba import install_cpu_mamba_ssm  # noqa: E402

SOURCES = {
    "vmunet_2d": {"repository": "https://github.com/JCruan519/VM-UNet",
                  "commit": "43c495bfd0cb2bd58fd0147687c60c9c624c4840",
                  "file": "models/vmunet/vmunet.py", "class": "VMUNet"},
    "swin_umamba_2d": {"repository": "https://github.com/JiarunLiu/Swin-UMamba",
                       "commit": "2c1f72e1975cef6621f239117efdc954237c6952",
                       "file": "swin_umamba/nnunetv2/nets/SwinUMamba.py", "class": "SwinUMamba"},
    "medmamba_2d": {"repository": "https://github.com/YubiaoYue/MedMamba",
                    "commit": "104beb3d641d67cef6f09b94ac299083d91bc417",
                    "file": "MedMamba.py", "class": "VSSM"},
}


# ----------------------------------------------------------------------------------------------
# shared helpers
# ----------------------------------------------------------------------------------------------
def check_grouped_reference(ssi) -> float:
    """selective_scan_ref with B, C grouped (B, K, N, L) over K*D channels == K single-group calls."""
    g = torch.Generator().manual_seed(123)
    b, K, d, n, L = 2, 4, 6, 5, 23
    u = torch.randn(b, K * d, L, generator=g)
    delta = torch.randn(b, K * d, L, generator=g) * 0.5
    A = -torch.exp(torch.randn(K * d, n, generator=g) * 0.5)
    Bm = torch.randn(b, K, n, L, generator=g)
    Cm = torch.randn(b, K, n, L, generator=g)
    D = torch.randn(K * d, generator=g)
    bias = torch.randn(K * d, generator=g) - 2.0
    grouped = ssi.selective_scan_ref(u, delta, A, Bm, Cm, D, z=None, delta_bias=bias, delta_softplus=True)
    diff = 0.0
    for k in range(K):
        s = slice(k * d, (k + 1) * d)
        one = ssi.selective_scan_ref(u[:, s], delta[:, s], A[s], Bm[:, k], Cm[:, k], D[s], z=None,
                                     delta_bias=bias[s], delta_softplus=True)
        diff = max(diff, (one - grouped[:, s]).abs().max().item())
    if diff > 1e-6:
        raise SystemExit(f"grouped selective_scan_ref disagrees with per-direction calls: {diff}")
    return diff


def load_module(name: str, path: Path, source: str | None = None) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if source is None:
            spec.loader.exec_module(mod)
        else:
            exec(compile(source, str(path), "exec"), mod.__dict__)
    return mod


def param_count(model: torch.nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def init_stats(model: torch.nn.Module) -> dict:
    out = {}
    for k, t in model.state_dict().items():
        if t.is_floating_point():
            t = t.detach().double()
            out[k] = [float(t.mean()), float(t.std(correction=0)), float(t.min()), float(t.max())]
    return out


def perturb(model: torch.nn.Module) -> dict:
    """Perturb every float tensor of the state dict in place (seed 1), round to float16; return the float16 copy."""
    sd = model.state_dict()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for k, t in sd.items():
            if t.is_floating_point():
                t += 0.05 * (t.abs().mean() + 1e-2) * torch.randn(t.shape, generator=gen, dtype=t.dtype)
                t.copy_(t.half().float())
    floats = [(k, t) for k, t in sd.items() if t.is_floating_point()]
    for i, (ka, a) in enumerate(floats):  # no two tensors equal by construction
        for kb, b in floats[i + 1:]:
            assert a.shape != b.shape or not torch.equal(a, b), (ka, kb)
    return {k: (t.detach().half().clone() if t.is_floating_point() else t.detach().clone()) for k, t in sd.items()}


def run(model: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    model.eval()
    with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):
        out = model(x.clone())
    out = list(out) if isinstance(out, (list, tuple)) else [out]
    out = [o.detach().float().contiguous() for o in out]
    assert all(torch.isfinite(o).all() for o in out)
    return out


def save(out_dir: Path, name: str, record: dict) -> None:
    path = out_dir / f"{name}.pt"
    torch.save(record, path)
    print(f"wrote {path} ({path.stat().st_size:,} bytes), {record['param_count']:,} parameters, "
          f"outputs {[tuple(o.shape) for o in record['outputs']]}")


# ----------------------------------------------------------------------------------------------
# VM-UNet
# ----------------------------------------------------------------------------------------------
VMUNET_SMALL = dict(input_channels=3, num_classes=3, depths=[2, 2, 2, 1], depths_decoder=[1, 2, 2, 1],
                    drop_path_rate=0.2)
VMUNET_SMALL_DIMS = dict(dims=[8, 16, 32, 64], dims_decoder=[64, 32, 16, 8], d_state=8)
# configs/config_setting.py (ISIC 2017/2018) and configs/config_setting_synapse.py
VMUNET_PAPER = {
    "vmunet_2d/isic": dict(input_channels=3, num_classes=1, depths=[2, 2, 2, 2], depths_decoder=[2, 2, 2, 1],
                           drop_path_rate=0.2),
    "vmunet_2d/synapse": dict(input_channels=3, num_classes=9, depths=[2, 2, 2, 2], depths_decoder=[2, 2, 2, 1],
                              drop_path_rate=0.2),
}


def load_vmunet(root: Path, ssi):
    pkg = types.ModuleType("vmunet_original")
    pkg.__path__ = [str(root / "models" / "vmunet")]
    sys.modules["vmunet_original"] = pkg
    vmamba = load_module("vmunet_original.vmamba", root / "models" / "vmunet" / "vmamba.py")
    if ssi is not None:  # None: keep the CUDA selective_scan_fn the module imported
        vmamba.selective_scan_fn = ssi.selective_scan_ref  # read by SS2D.forward_corev0 at every call
    vmunet = load_module("vmunet_original.vmunet", root / "models" / "vmunet" / "vmunet.py")
    assert vmunet.VSSM is vmamba.VSSM
    return vmunet, vmamba


def record_vmunet(root: Path, ssi, out_dir: Path, counts: dict) -> None:
    vmunet, vmamba = load_vmunet(root, ssi)
    for key, kw in VMUNET_PAPER.items():
        torch.manual_seed(0)
        counts[key] = {"network": "vmunet_2d", "init_kwargs": kw, "params": param_count(vmunet.VMUNet(**kw))}
        print(f"{key}: {counts[key]['params']:,} parameters")
    vmunet.VSSM = functools.partial(vmamba.VSSM, **VMUNET_SMALL_DIMS)
    try:
        torch.manual_seed(0)
        model = vmunet.VMUNet(**VMUNET_SMALL).float()
    finally:
        vmunet.VSSM = vmamba.VSSM
    stats = init_stats(model)
    state_dict = perturb(model)
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(2))
    gray = torch.randn(1, 1, 64, 96, generator=torch.Generator().manual_seed(3))
    save(out_dir, "vmunet_2d", {
        "network": "vmunet_2d", "source": SOURCES["vmunet_2d"],
        "init_kwargs": dict(VMUNET_SMALL, **VMUNET_SMALL_DIMS),
        "input": x, "outputs": run(model, x), "gray_input": gray, "gray_output": run(model, gray)[0],
        "state_dict": state_dict, "param_count": param_count(model), "init_stats": stats,
        "torch_version": str(torch.__version__),
        "notes": "VMUNet(**init_kwargs minus dims/dims_decoder/d_state) with its VSSM built with those three; "
                 "float32 CPU eval forward, selective_scan_fn -> mamba-ssm selective_scan_ref; init seed 0, "
                 "perturbation seed 1, input seed 2 (gray input seed 3)",
    })


# ----------------------------------------------------------------------------------------------
# Swin-UMamba
# ----------------------------------------------------------------------------------------------
SWIN_SMALL = dict(in_chans=2, out_chans=3, feat_size=[4, 4, 8, 16, 32], hidden_size=32, deep_supervision=True)
SWIN_SMALL_ENCODER = dict(depths=[1, 1, 2, 1])  # plus dims=feat_size[1:]
# get_swin_umamba_from_plans: feat_size and hidden_size fixed, channels and heads from the dataset.
# AbdomenMR (U-Mamba's Dataset702, the paper's first benchmark): one MR channel, 13 organs + background.
SWIN_PAPER = {
    "swin_umamba_2d/abdomen_mr": dict(in_chans=1, out_chans=14, feat_size=[48, 96, 192, 384, 768],
                                      deep_supervision=True, hidden_size=768),
    "swin_umamba_2d/hippocampus": dict(in_chans=1, out_chans=3, feat_size=[48, 96, 192, 384, 768],
                                       deep_supervision=True, hidden_size=768),
}


def load_swin_umamba(root: Path, ssi):
    mod = load_module("swin_umamba_original", root / "swin_umamba" / "nnunetv2" / "nets" / "SwinUMamba.py")
    if ssi is not None:  # None: keep the CUDA selective_scan_fn the module imported
        mod.selective_scan_fn = ssi.selective_scan_ref  # SS2D.__init__ stores it as self.selective_scan
    return mod


def record_swin_umamba(root: Path, ssi, out_dir: Path, counts: dict) -> None:
    mod = load_swin_umamba(root, ssi)
    for key, kw in SWIN_PAPER.items():
        torch.manual_seed(0)
        counts[key] = {"network": "swin_umamba_2d", "init_kwargs": kw, "params": param_count(mod.SwinUMamba(**kw))}
        print(f"{key}: {counts[key]['params']:,} parameters")
    original_encoder = mod.VSSMEncoder
    mod.VSSMEncoder = functools.partial(original_encoder, dims=SWIN_SMALL["feat_size"][1:], **SWIN_SMALL_ENCODER)
    try:
        torch.manual_seed(0)
        model = mod.SwinUMamba(**SWIN_SMALL).float()
    finally:
        mod.VSSMEncoder = original_encoder
    for m in model.modules():
        if isinstance(m, mod.SS2D):
            assert m.selective_scan is ssi.selective_scan_ref
    stats = init_stats(model)
    state_dict = perturb(model)
    x = torch.randn(1, 2, 64, 96, generator=torch.Generator().manual_seed(2))
    save(out_dir, "swin_umamba_2d", {
        "network": "swin_umamba_2d", "source": SOURCES["swin_umamba_2d"],
        "init_kwargs": dict(SWIN_SMALL, **SWIN_SMALL_ENCODER),
        "input": x, "outputs": run(model, x),
        "state_dict": state_dict, "param_count": param_count(model), "init_stats": stats,
        "torch_version": str(torch.__version__),
        "notes": "SwinUMamba(**init_kwargs minus depths) with its VSSMEncoder built with dims=feat_size[1:] and "
                 "depths; float32 CPU eval forward (deep supervision: 4 outputs, highest resolution first), "
                 "selective_scan_fn -> mamba-ssm selective_scan_ref; MONAI " + _monai_version() + "; init seed 0, "
                 "perturbation seed 1, input seed 2",
    })


def _monai_version() -> str:
    import monai
    return str(monai.__version__)


# ----------------------------------------------------------------------------------------------
# MedMamba
# ----------------------------------------------------------------------------------------------
MEDMAMBA_SMALL = dict(depths=[1, 1, 2, 1], dims=[8, 16, 32, 64], in_chans=3, num_classes=4)
# MedMamba.py's last lines (num_classes=6 there; train.py trains the default, MedMamba-T, at 3x224x224)
MEDMAMBA_PAPER = {
    "medmamba_2d/t": dict(depths=[2, 2, 4, 2], dims=[96, 192, 384, 768], num_classes=6),
    "medmamba_2d/s": dict(depths=[2, 2, 8, 2], dims=[96, 192, 384, 768], num_classes=6),
    "medmamba_2d/b": dict(depths=[2, 2, 12, 2], dims=[128, 256, 512, 1024], num_classes=6),
}
MEDMAMBA_TAIL = "medmamba_t = VSSM("  # from here on the file builds CUDA models and runs them


def load_medmamba(root: Path, ssi):
    path = root / "MedMamba.py"
    text = path.read_text()
    cut = text.index(MEDMAMBA_TAIL)
    mod = load_module("medmamba_original", path, source=text[:cut])
    mod.selective_scan_fn = ssi.selective_scan_ref  # read by SS2D.forward_corev0 at every call
    return mod


class _Backbone(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model.forward_backbone(x)


def record_medmamba(root: Path, ssi, out_dir: Path, counts: dict) -> None:
    mod = load_medmamba(root, ssi)
    for key, kw in MEDMAMBA_PAPER.items():
        torch.manual_seed(0)
        counts[key] = {"network": "medmamba_2d", "init_kwargs": kw, "params": param_count(mod.VSSM(**kw))}
        print(f"{key}: {counts[key]['params']:,} parameters")
    torch.manual_seed(0)
    model = mod.VSSM(**MEDMAMBA_SMALL).float()
    stats = init_stats(model)
    state_dict = perturb(model)
    # 72 x 100: odd maps at the third and fourth stage (18x25 -> 9x12 -> 4x6 -> 2x3), the original's truncation
    x = torch.randn(2, 3, 72, 100, generator=torch.Generator().manual_seed(2))
    save(out_dir, "medmamba_2d", {
        "network": "medmamba_2d", "source": SOURCES["medmamba_2d"], "init_kwargs": MEDMAMBA_SMALL,
        "input": x, "outputs": run(model, x),
        "backbone_output": run(_Backbone(model), x)[0],
        "state_dict": state_dict, "param_count": param_count(model), "init_stats": stats,
        "torch_version": str(torch.__version__),
        "notes": "backbone_output: forward_backbone (channels-last last-stage map) of the same forward; "
                 "MedMamba.py executed up to its module-level CUDA models; VSSM(**init_kwargs); float32 CPU eval "
                 "forward (BatchNorm running statistics perturbed like every float tensor), selective_scan_fn -> "
                 "mamba-ssm selective_scan_ref; init seed 0, perturbation seed 1, input seed 2",
    })


# ----------------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vmunet", type=Path, help="VM-UNet checkout")
    ap.add_argument("--swin-umamba", type=Path, help="Swin-UMamba checkout")
    ap.add_argument("--medmamba", type=Path, help="MedMamba checkout")
    ap.add_argument("--mamba", type=Path, default=Path(".originals/mamba"), help="state-spaces/mamba checkout")
    ap.add_argument("--out", type=Path, default=Path("tests/fixtures/originals"))
    args = ap.parse_args()

    torch.use_deterministic_algorithms(True)
    torch.set_default_dtype(torch.float32)
    install_cpu_mamba_ssm(args.mamba.resolve())
    import mamba_ssm.ops.selective_scan_interface as ssi
    print(f"grouped selective_scan_ref vs per-direction calls: max |diff| = {check_grouped_reference(ssi):.3g}")
    args.out.mkdir(parents=True, exist_ok=True)
    counts_path = args.out / "vmamba_family_param_counts.json"
    counts = json.loads(counts_path.read_text()) if counts_path.exists() else {}
    if args.vmunet:
        record_vmunet(args.vmunet.resolve(), ssi, args.out, counts)
    if args.swin_umamba:
        record_swin_umamba(args.swin_umamba.resolve(), ssi, args.out, counts)
    if args.medmamba:
        record_medmamba(args.medmamba.resolve(), ssi, args.out, counts)
    counts_path.write_text(json.dumps(dict(sorted(counts.items())), indent=2) + "\n")


if __name__ == "__main__":
    main()
