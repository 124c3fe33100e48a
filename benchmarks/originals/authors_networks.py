"""The published networks as their authors' code builds them, at the configuration our registry network takes from a
training plan, with the selective scan of a real mamba-ssm build (CUDA) or of mamba-ssm's PyTorch reference (CPU).

Per network (registry name), the constructor arguments mirror our ``build_network`` entry for the same plan:

* ``umamba_bot`` / ``umamba_enc``: ``UMamba{Bot,Enc}_{2,3}d.UMamba{Bot,Enc}`` with the plan's widths, kernels and
  strides, two convolutions per encoder and decoder stage where the plan has no ``n_conv_per_stage`` (ResEnc plans),
  ``input_size`` = the patch (Enc), then ``InitWeights_He(1e-2)`` as ``get_umamba_*_from_plans`` applies it;
* ``segmamba``: ``SegMamba(in, out, depths=[2, 2, 2, 2], feat_size=[48, 96, 192, 384], hidden_size=768)``;
* ``lightmunet``: what ``nnUNetTrainerLightMUNet`` passes (``init_filters=32``, ``blocks_down=[1, 2, 2, 4]``,
  ``blocks_up=[1, 1, 1]``);
* ``nnmamba``: ``nnMambaSeg(in, channels=32, blocks=3, number_classes=out)``;
* ``vmunet``: the paper's ``VMUNet`` (depths 2,2,2,2 / 2,2,2,1, drop path 0.2), three input channels for a gray plan;
* ``swin_umamba``: ``SwinUMamba`` as ``get_swin_umamba_from_plans`` builds it (no pretrained checkpoint).

The originals need patch sizes our networks pad to: :func:`accepted_patch` gives the smallest patch at least the
plan's that the original takes, for both sides of a comparison.

Mamba: with a built mamba-ssm folder (``scan.py --build-mamba ... --mamba-target DIR``) and CUDA, the real
``mamba_ssm`` (upstream networks; its fused path where causal-conv1d is installed in the same folder) or, for
SegMamba, its vendored Python with the ``selective_scan_cuda`` of that build and the ``causal_conv1d_cuda`` of its
vendored causal-conv1d built into ``DIR/segmamba`` (``build_causal_conv1d.py``). Otherwise the CPU reference of the
record scripts (``install_cpu_mamba_ssm``, ``record_segmamba.load_original``), its scan stepped by ``unbind``
(:func:`selective_scan_stepwise`, checked against ``selective_scan_ref`` at every import) so that a training step's
backward stays linear in the sequence length.
"""
from __future__ import annotations

import contextlib
import copy
import glob
import importlib.util
import io
import itertools
import math
import os
import sys
import types
from importlib.metadata import distributions
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import record_lightmunet  # noqa: E402
import record_nnmamba  # noqa: E402
import record_segmamba  # noqa: E402
import record_umamba  # noqa: E402
import record_vmamba_family  # noqa: E402

NETWORKS = ("umamba_bot", "umamba_enc", "segmamba", "lightmunet", "nnmamba", "vmunet", "swin_umamba")

# The parts of the snapshots folder each network imports (SegMamba: also its vendored causal-conv1d's sources, which
# build_causal_conv1d.py builds); CPU_REFERENCE_PATHS: mamba-ssm's Python for the CPU reference.
SNAPSHOT_PATHS = {
    "umamba_bot": ["U-Mamba/umamba/nnunetv2/nets"],
    "umamba_enc": ["U-Mamba/umamba/nnunetv2/nets"],
    "segmamba": ["SegMamba/model_segmamba/segmamba.py", "SegMamba/mamba/mamba_ssm", "SegMamba/causal-conv1d",
                 "SegMamba/monai"],
    "lightmunet": ["LightM-UNet/lightm-unet/nnunetv2/nets/LightMUNet.py"],
    "nnmamba": ["nnMamba/nnMamba.py"],
    "vmunet": ["VM-UNet/models/vmunet"],
    "swin_umamba": ["Swin-UMamba/swin_umamba/nnunetv2/nets/SwinUMamba.py"],
}
CPU_REFERENCE_PATHS = ["mamba/mamba_ssm"]
SEGMAMBA_CONV_SUBDIR = "segmamba"  # under the mamba-ssm folder: the build of SegMamba's vendored causal-conv1d
SEGMAMBA_NSLICES = (64, 32, 16, 8)  # hard-coded in SegMamba's MambaEncoder
CPU_PATH = "CPU reference: mamba-ssm's selective_scan_ref math, stepped by unbind (selective_scan_stepwise)"


# ----------------------------------------------------------------------------------------------
# patch sizes the originals accept
# ----------------------------------------------------------------------------------------------
def total_stride(network: str, arch: dict, ndim: int) -> list[int]:
    """Per axis, the factor every input size must be a multiple of for the original's skip connections."""
    if network in ("umamba_bot", "umamba_enc"):
        return [math.prod(s[axis] for s in arch["strides"]) for axis in range(ndim)]
    return [{"segmamba": 16, "nnmamba": 16, "lightmunet": 8, "vmunet": 32, "swin_umamba": 32}[network]] * ndim


def segmamba_slices_fit(patch) -> bool:
    """SegMamba splits each stage's tokens into its fixed slice count with ``chunk``: the count must divide them."""
    return all(math.prod(s // 2 ** (i + 1) for s in patch) % n == 0 for i, n in enumerate(SEGMAMBA_NSLICES))


def accepted_patch(network: str, arch: dict, patch) -> tuple[int, ...]:
    """The smallest patch (fewest voxels, then lexicographic) at least ``patch`` per axis that the original takes:
    multiples of its total stride, two voxels or more in the deepest map (instance norms need them), and for SegMamba
    slice counts that divide the tokens."""
    strides = total_stride(network, arch, len(patch))
    axes = [[math.ceil(p / s) * s + k * s for k in range(6)] for p, s in zip(patch, strides)]

    def fits(c):
        deep_enough = math.prod(n // s for n, s in zip(c, strides)) >= 2
        return deep_enough and (network != "segmamba" or segmamba_slices_fit(c))
    return min((c for c in itertools.product(*axes) if fits(c)), key=lambda c: (math.prod(c), c))


def check_patch(network: str, arch: dict, patch, small) -> tuple[int, ...]:
    """The input size on which the original and ours compute the same function: U-Mamba Enc only at the patch it was
    built for (its channel-token layers take the token count as width), SegMamba only where the first axis is 128
    (its slice counts are fixed for it, ours come from the map), the others at ``small`` rounded up."""
    if network == "umamba_enc":
        return tuple(patch)
    if network == "segmamba":
        return (SEGMAMBA_NSLICES[0] * 2,) + tuple(math.ceil(s / 16) * 16 for s in small[1:])
    return accepted_patch(network, arch, small)


# ----------------------------------------------------------------------------------------------
# mamba-ssm: the real build or the CPU reference
# ----------------------------------------------------------------------------------------------
def site_versions(folder) -> dict:
    """{distribution name: version} of the packages pip installed into ``folder``."""
    if not folder or not os.path.isdir(folder):
        return {}
    return {d.metadata["Name"].lower().replace("-", "_"): d.version for d in distributions(path=[str(folder)])}


def selective_scan_stepwise(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                            return_last_state=False):
    """mamba-ssm's ``selective_scan_ref`` for a real ``A`` (B, C: (D N), (B N L) or (B G N L)), with every per-step
    slice taken by one ``unbind``: the reference indexes the (B D L N) tensors step by step, and each index's backward
    fills a gradient of the whole tensor, so a training step costs O(L^2) on CPU; here it stays O(L)."""
    dtype_in = u.dtype
    u, delta = u.float(), delta.float()
    if delta_bias is not None:
        delta = delta + delta_bias[..., None].float()
    if delta_softplus:
        delta = torch.nn.functional.softplus(delta)
    dim = A.shape[0]
    B, C = B.float(), C.float()
    if B.dim() == 4:  # groups of channels share B / C
        B = B.repeat_interleave(dim // B.shape[1], dim=1)
    if C.dim() == 4:
        C = C.repeat_interleave(dim // C.shape[1], dim=1)
    steps_a = torch.exp(torch.einsum("bdl,dn->bdln", delta, A)).unbind(2)
    inputs = {2: "bdl,dn,bdl->bdln", 3: "bdl,bnl,bdl->bdln", 4: "bdl,bdnl,bdl->bdln"}[B.dim()]
    steps_bu = torch.einsum(inputs, delta, B, u).unbind(2)
    steps_c = [C] * len(steps_a) if C.dim() == 2 else C.unbind(-1)
    readout = {2: "bdn,dn->bd", 3: "bdn,bn->bd", 4: "bdn,bdn->bd"}[C.dim()]
    x = A.new_zeros((u.shape[0], dim, A.shape[1]), dtype=torch.float32)
    ys = []
    for a, bu, c in zip(steps_a, steps_bu, steps_c):
        x = a * x + bu
        ys.append(torch.einsum(readout, x, c))
    y = torch.stack(ys, dim=2)
    out = y if D is None else y + u * D.float()[:, None]
    if z is not None:
        out = out * torch.nn.functional.silu(z.float())
    out = out.to(dtype=dtype_in)
    return (out, x) if return_last_state else out


def check_stepwise_scan(reference) -> float:
    """``selective_scan_stepwise`` against mamba-ssm's ``selective_scan_ref`` (outputs and input gradients) for every
    B / C layout the originals use; returns the largest difference and stops above 1e-5."""
    g = torch.Generator().manual_seed(123)
    b, d, n, L, groups = 2, 8, 4, 19, 4
    worst = 0.0
    for layout in ((d, n), (b, n, L), (b, groups, n, L)):
        args = [torch.randn(b, d, L, generator=g), torch.randn(b, d, L, generator=g) * 0.5,
                -torch.exp(torch.randn(d, n, generator=g) * 0.5), torch.randn(*layout, generator=g),
                torch.randn(*layout, generator=g), torch.randn(d, generator=g), torch.randn(b, d, L, generator=g),
                torch.randn(d, generator=g) - 2.0]
        grads = []
        for fn in (reference, selective_scan_stepwise):
            leaves = [a.clone().requires_grad_(True) for a in args]
            out = fn(*leaves[:7], delta_bias=leaves[7], delta_softplus=True)
            out.square().sum().backward()
            grads.append([out.detach()] + [leaf.grad for leaf in leaves])
        worst = max(worst, max((x - y).abs().max().item() for x, y in zip(*grads)))
    if worst > 1e-5:
        raise RuntimeError(f"selective_scan_stepwise disagrees with selective_scan_ref: {worst}")
    return worst


def real_kernels(mamba_site) -> bool:
    return bool(mamba_site) and torch.cuda.is_available()


def use_upstream_mamba(originals: Path, mamba_site) -> dict:
    """Make ``import mamba_ssm`` give the real build (CUDA) or the CPU reference; returns what runs."""
    if not real_kernels(mamba_site):
        mamba_simple, version = record_umamba.install_cpu_mamba_ssm(originals / "mamba")
        check_stepwise_scan(sys.modules["mamba_ssm.ops.selective_scan_interface"].selective_scan_ref)
        mamba_simple.selective_scan_fn = selective_scan_stepwise  # what Mamba's slow path calls
        return {"mamba_path": CPU_PATH + " (Mamba(use_fast_path=False))", "mamba_path_short": "CPU reference",
                "mamba_ssm": version, "real": False}
    site = os.path.abspath(mamba_site)
    sys.path.insert(0, site)
    import mamba_ssm
    from mamba_ssm.modules import mamba_simple
    from mamba_ssm.ops import selective_scan_interface as ssi
    if not os.path.abspath(mamba_ssm.__file__).startswith(site + os.sep):
        raise RuntimeError(f"mamba_ssm resolved to {mamba_ssm.__file__}, not to the build in {site}")
    fused = mamba_simple.causal_conv1d_fn is not None and ssi.causal_conv1d_fwd_function is not None
    if mamba_simple.causal_conv1d_fn is not None and not fused:
        mamba_simple.causal_conv1d_fn = None  # a causal-conv1d without cpp_functions cannot serve the fused path
    versions = site_versions(site)
    conv = versions.get("causal_conv1d")
    path = (f"mamba-ssm {mamba_ssm.__version__} CUDA, fused mamba_inner_fn with causal-conv1d {conv}" if fused else
            f"mamba-ssm {mamba_ssm.__version__} CUDA, Mamba's slow path (nn.Conv1d + CUDA selective_scan_fn; "
            "no causal-conv1d)")
    return {"mamba_path": path, "mamba_path_short": "fused + causal-conv1d" if fused else "slow path, no causal-conv1d",
            "mamba_ssm": mamba_ssm.__version__, "causal_conv1d": conv, "real": True}


def load_extension(name: str, folder) -> object:
    """The compiled module ``name`` from ``folder`` (its ``name*.so``), registered in ``sys.modules``."""
    found = sorted(glob.glob(os.path.join(str(folder), f"{name}*.so")))
    if not found:
        raise FileNotFoundError(f"no {name}*.so in {folder}")
    spec = importlib.util.spec_from_file_location(name, found[0])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules[name] = module
    return module


def segmamba_module(originals: Path, mamba_site) -> tuple[object, dict]:
    """SegMamba's module with its vendored mamba_ssm / causal_conv1d / monai, and what runs its scans."""
    root = originals / "SegMamba"
    if not real_kernels(mamba_site):
        module, _, ssi, _, _ = record_segmamba.load_original(str(root))
        check_stepwise_scan(ssi.selective_scan_ref)
        ssi.selective_scan_ref = selective_scan_stepwise  # what the CPU mamba_inner_fn_no_out_proj calls
        return module, {"mamba_path": "CPU reference: SegMamba's mamba_inner_fn_no_out_proj transcribed (F.conv1d), "
                                      "its vendored selective_scan_ref's math stepped by unbind",
                        "mamba_path_short": "CPU reference", "mamba_ssm": "1.0.1 (vendored)", "real": False}
    conv_site = Path(mamba_site) / SEGMAMBA_CONV_SUBDIR
    try:
        extensions = {"selective_scan_cuda": load_extension("selective_scan_cuda", mamba_site),
                      "causal_conv1d_cuda": load_extension("causal_conv1d_cuda", conv_site)}
    except FileNotFoundError as e:
        raise RuntimeError(f"{e}: SegMamba's Mamba needs its vendored causal-conv1d built there "
                           f"(benchmarks/originals/build_causal_conv1d.py {root / 'causal-conv1d'} --target "
                           f"{conv_site})") from None
    module = record_segmamba.load_original(str(root), cuda_extensions=extensions)[0]
    mamba = site_versions(mamba_site).get("mamba_ssm")
    conv = site_versions(conv_site).get("causal_conv1d")
    return module, {"mamba_path": f"CUDA: SegMamba's vendored mamba_ssm 1.0.1 (fused mamba_inner_fn_no_out_proj) with "
                                  f"selective_scan_cuda of mamba-ssm {mamba} and causal_conv1d_cuda of its vendored "
                                  f"causal-conv1d {conv}", "mamba_path_short": "fused, vendored causal-conv1d",
                    "mamba_ssm": f"1.0.1 (vendored; kernels of {mamba})", "causal_conv1d": conv, "real": True}


# ----------------------------------------------------------------------------------------------
# constructor arguments at a plan (p: an entry of benchmarks/train.py's PLANS with the patch to use)
# ----------------------------------------------------------------------------------------------
def umamba_kwargs(p: dict, variant: str) -> dict:
    """What ``get_umamba_*_from_plans`` passes, for the plan our ``_umamba`` reads."""
    arch, ndim = p["arch"], len(p["patch"])
    n = arch["n_stages"]
    stock = "n_conv_per_stage" in arch
    kw = dict(input_channels=p["in_ch"], n_stages=n, features_per_stage=list(arch["features_per_stage"]),
              kernel_sizes=[list(k) for k in arch["kernel_sizes"]], strides=[list(s) for s in arch["strides"]],
              n_conv_per_stage=list(arch["n_conv_per_stage"]) if stock else [2] * n, num_classes=p["out_ch"],
              n_conv_per_stage_decoder=list(arch["n_conv_per_stage_decoder"]) if stock else [2] * (n - 1),
              **record_umamba.common_kwargs(ndim))
    if variant == "Enc":
        kw["input_size"] = list(p["patch"])
    return kw


def stand_in_for_simpleitk() -> None:
    """U-Mamba's network modules import its nnU-Net's plans handling, which imports SimpleITK for image reading that
    building and training a network never calls; where SimpleITK is not installed (a GPU machine without a
    registry), an empty module stands in for it."""
    try:
        import SimpleITK  # noqa: F401
    except ImportError:
        sys.modules["SimpleITK"] = types.ModuleType("SimpleITK")


def build_umamba(variant: str, p: dict, originals: Path) -> nn.Module:
    stand_in_for_simpleitk()
    from nnunetv2.utilities.network_initialization import InitWeights_He
    stem = f"UMamba{variant}_{len(p['patch'])}d"
    module = record_umamba.load_original(originals / "U-Mamba", stem)
    with contextlib.redirect_stdout(io.StringIO()):  # the originals print their stage layout
        model = getattr(module, f"UMamba{variant}")(**copy.deepcopy(umamba_kwargs(p, variant)))
    model.apply(InitWeights_He(1e-2))
    return model


def build_segmamba(p: dict, module) -> nn.Module:
    kw = dict(record_segmamba.RELEASE_KWARGS, in_chans=p["in_ch"], out_chans=p["out_ch"])
    return module.SegMamba(**copy.deepcopy(kw))


def build_lightmunet(p: dict, originals: Path) -> nn.Module:
    module = record_lightmunet.load_original(originals / "LightM-UNet")
    return module.LightMUNet(**record_lightmunet.trainer_kwargs(len(p["patch"]), p["in_ch"], p["out_ch"]))


def build_nnmamba(p: dict, originals: Path) -> nn.Module:
    module = record_nnmamba.load_original(originals / "nnMamba", "nnMamba.py")
    return module.nnMambaSeg(in_ch=p["in_ch"], channels=32, blocks=3, number_classes=p["out_ch"])


def build_vmunet(p: dict, originals: Path, ssi) -> nn.Module:
    vmunet, _ = record_vmamba_family.load_vmunet(originals / "VM-UNet", ssi)
    kw = dict(record_vmamba_family.VMUNET_PAPER["vmunet_2d/synapse"], num_classes=p["out_ch"],
              input_channels=3 if p["in_ch"] == 1 else p["in_ch"])  # a gray input is repeated to three channels
    return vmunet.VMUNet(**kw)


def build_swin_umamba(p: dict, originals: Path, ssi) -> nn.Module:
    module = record_vmamba_family.load_swin_umamba(originals / "Swin-UMamba", ssi)
    return module.SwinUMamba(in_chans=p["in_ch"], out_chans=p["out_ch"], feat_size=[48, 96, 192, 384, 768],
                             deep_supervision=True, hidden_size=768)


def scan_only(info: dict) -> dict:
    """What runs for the VMamba family, which calls ``selective_scan_fn`` itself (its own 2D depthwise conv)."""
    if not info["real"]:
        return dict(info, mamba_path=CPU_PATH)
    return dict(info, mamba_path=f"mamba-ssm {info['mamba_ssm']} CUDA selective_scan_fn",
                mamba_path_short="selective_scan_fn", causal_conv1d=None)


def prepare_original(network: str, originals: Path, mamba_site):
    """Import what the original of ``network`` needs (call before anything imports monai or mamba_ssm); returns
    (build(p) -> nn.Module, a description of the Mamba that runs)."""
    originals = Path(originals).resolve()
    if network == "segmamba":
        module, info = segmamba_module(originals, mamba_site)
        return (lambda p: build_segmamba(p, module)), info
    info = use_upstream_mamba(originals, mamba_site)
    # on CPU the stepwise reference replaces the VMamba family's CUDA selective_scan_fn (the loaders take its
    # ``selective_scan_ref``)
    ssi = None if info["real"] else types.SimpleNamespace(selective_scan_ref=selective_scan_stepwise)
    builders = {
        "umamba_bot": lambda p: build_umamba("Bot", p, originals),
        "umamba_enc": lambda p: build_umamba("Enc", p, originals),
        "lightmunet": lambda p: build_lightmunet(p, originals),
        "nnmamba": lambda p: build_nnmamba(p, originals),
        "vmunet": lambda p: build_vmunet(p, originals, ssi),
        "swin_umamba": lambda p: build_swin_umamba(p, originals, ssi),
    }
    return builders[network], scan_only(info) if network in ("vmunet", "swin_umamba") else info
