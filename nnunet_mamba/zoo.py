"""Every registry network for one plan: size, compute, a memory estimate, and what it reproduces.

Counted on fake tensors (no memory, no weights): parameters; multiply-accumulates of one forward pass per
sample, split into the Mamba layers' projections and everything else (convolutions, norms' neighbours,
decoders); the selective scans' state updates (tokens x channels x state size per direction); nnU-Net's
activation estimate (``compute_conv_feature_map_size``) times the batch in bytes, the number nnU-Net's
planner sizes patch and batch with (about 4.9 bytes per unit under mixed precision, measured for these
networks), not a measurement.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import nn

from nnunet_mamba.networks import build_network, list_networks, network_dims, network_source

BYTES_PER_ESTIMATE_UNIT = 4.9
#: modules whose inner projections count as Mamba compute
_MAMBA_TYPES = ("Mamba", "TriOrientedMamba", "MultiDirMamba", "SS2D")

#: example plans: nnU-Net 2.8's stock 3d_fullres plans of MSD Hippocampus and a BraTS-like 128^3 plan
EXAMPLE_PLANS = {
    "hippocampus": dict(n_stages=4, features=[32, 64, 128, 256], patch=(40, 56, 40), in_ch=1, out_ch=3, batch=9),
    "brats": dict(n_stages=6, features=[32, 64, 128, 256, 320, 320], patch=(128, 128, 128), in_ch=4, out_ch=3,
                  batch=2),
}


def example_arch_kwargs(name: str) -> tuple[dict, tuple, int, int, int]:
    """(arch kwargs, patch, input channels, output channels, batch) of an example stock 3D plan."""
    from nnunet_mamba.networks import resolve_arch_kwargs

    p = EXAMPLE_PLANS[name]
    n = p["n_stages"]
    kw = {"n_stages": n, "features_per_stage": p["features"], "conv_op": "torch.nn.modules.conv.Conv3d",
          "kernel_sizes": [[3, 3, 3]] * n, "strides": [[1, 1, 1]] + [[2, 2, 2]] * (n - 1),
          "n_conv_per_stage": [2] * n, "n_conv_per_stage_decoder": [2] * (n - 1), "conv_bias": True,
          "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d", "norm_op_kwargs": {"eps": 1e-5, "affine": True},
          "dropout_op": None, "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU",
          "nonlin_kwargs": {"inplace": True}}
    arch = resolve_arch_kwargs(kw, ["conv_op", "norm_op", "dropout_op", "nonlin"])
    return arch, p["patch"], p["in_ch"], p["out_ch"], p["batch"]


def _scan_updates(net: nn.Module, patch: Sequence[int]) -> dict:
    """Records, per Mamba layer call, tokens x d_inner x d_state x directions (filled by forward hooks)."""
    counts = {"updates": 0}

    def hook(module, args, output):
        x = args[0]
        tokens = x.shape[0] * x.shape[1] if x.dim() == 3 else x.shape[0] * math.prod(x.shape[2:])
        directions = len(getattr(module, "directions", ())) or getattr(module, "n_directions", None) \
            or (3 if type(module).__name__ == "TriOrientedMamba" else 1)
        counts["updates"] += int(tokens) * module.d_inner * getattr(module, "d_state", 16) * directions

    for m in net.modules():
        if type(m).__name__ in _MAMBA_TYPES and hasattr(m, "d_inner"):
            m.register_forward_hook(hook)
    return counts


def network_card(name: str, arch_kwargs: dict, input_channels: int, num_classes: int, patch: Sequence[int],
                 batch: int = 1) -> dict:
    """One row of the zoo: parameters, GMAC per sample (Mamba projections / rest), scan state updates per sample
    (G), nnU-Net's memory estimate for ``batch`` (GB), and the source the network is proven equal to."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.utils.flop_counter import FlopCounterMode

    ndim = len(patch)
    row = {"network": name, "source": network_source(name) or "nnunet-mamba"}
    if ndim not in network_dims(name):
        return {**row, "error": f"no {ndim}D form"}
    with FakeTensorMode():
        net = build_network(name, arch_kwargs, input_channels, num_classes, True, patch_size=patch)
        row["params_m"] = sum(p.numel() for p in net.parameters()) / 1e6
        scans = _scan_updates(net, patch)
        with FlopCounterMode(display=False) as counter:
            net(torch.empty(1, input_channels, *patch))
    per_module = counter.get_flop_counts()
    mamba_flops = sum(sum(per_module.get(path, {}).values()) for path in _mamba_paths(net))
    total = counter.get_total_flops()
    row["gmac_mamba"] = mamba_flops / 2e9
    row["gmac_other"] = (total - mamba_flops) / 2e9
    row["scan_updates_g"] = scans["updates"] / 1e9
    estimate = int(net.compute_conv_feature_map_size(list(patch)))
    row["memory_estimate_gb"] = batch * estimate * BYTES_PER_ESTIMATE_UNIT / 1e9
    return row


def _mamba_paths(net: nn.Module) -> list[str]:
    """FlopCounterMode's names ('<RootClass>.<attribute path>') of the outermost Mamba modules."""
    paths = [name for name, m in net.named_modules() if name and type(m).__name__ in _MAMBA_TYPES]
    outer = [p for p in paths if not any(p.startswith(q + ".") for q in paths)]
    return [f"{type(net).__name__}.{p}" for p in outer]


def zoo(arch_kwargs: dict, input_channels: int, num_classes: int, patch: Sequence[int], batch: int = 1,
        names: Optional[Sequence[str]] = None) -> list[dict]:
    return [network_card(n, arch_kwargs, input_channels, num_classes, patch, batch) for n in (names or list_networks())]


def markdown(rows: list[dict], title: str) -> str:
    lines = [f"### {title}", "", "| network | params (M) | GMAC Mamba | GMAC other | scan updates (G) | "
             "memory estimate (GB) | reproduces |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['network']} | {r['error']} | | | | | {r['source']} |")
            continue
        lines.append(f"| {r['network']} | {r['params_m']:.2f} | {r['gmac_mamba']:.1f} | {r['gmac_other']:.1f} | "
                     f"{r['scan_updates_g']:.2f} | {r['memory_estimate_gb']:.1f} | {r['source']} |")
    return "\n".join(lines)
