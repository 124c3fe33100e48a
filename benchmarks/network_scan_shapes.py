"""The selective-scan problems that the shipped networks pose at the benchmark plans: every network of the registry
is built on the ``meta`` device (no memory, no computation) and run forward once, with the scan replaced by a
recorder of its sizes. ``check_scan_gpu.py --networks`` checks the Triton kernels at exactly these sizes.

    python benchmarks/network_scan_shapes.py [--plans hippocampus_resenc_m brats_like_128 brats_like_2d]
prints one line per distinct problem: batch, channels, grid, directions, states, and the networks that pose it.
"""
from __future__ import annotations

import argparse
import contextlib
import math
from typing import NamedTuple, Optional

import torch

from nnunet_mamba.networks import list_networks, network_dims
from train import PLANS, make_network  # benchmarks/train.py (this script's folder is on sys.path)

SCAN_USERS = ("nnunet_mamba.layers.mamba", "nnunet_mamba.layers.ss2d", "nnunet_mamba.layers.mixer")
DEFAULT_PLANS = ("hippocampus_resenc_m", "brats_like_128", "brats_like_2d")


@contextlib.contextmanager
def recording(found: list):
    """Replace ``multidir_selective_scan`` where the layers call it by a recorder that returns an empty output (and
    ``torch.autocast``, which the meta device does not support, by a no-op)."""
    import importlib
    modules = [importlib.import_module(m) for m in SCAN_USERS]
    saved = [m.multidir_selective_scan for m in modules]
    autocast = torch.autocast, torch.amp.autocast, torch.is_autocast_enabled
    torch.autocast = torch.amp.autocast = lambda *a, **k: contextlib.nullcontext()
    torch.is_autocast_enabled = lambda *a: False

    def record(u, delta, A, B, C, D=None, z=None, delta_bias=None, *, grid, directions, delta_softplus=False, **_):
        found.append(ScanCall(u.shape[0], tuple(int(g) for g in grid), u.shape[2], tuple(directions), A.shape[-1],
                              D is not None, z is not None, delta_bias is not None, bool(delta_softplus)))
        return torch.empty_like(u)

    for m in modules:
        m.multidir_selective_scan = record
    try:
        yield found
    finally:
        for m, fn in zip(modules, saved):
            m.multidir_selective_scan = fn
        torch.autocast, torch.amp.autocast, torch.is_autocast_enabled = autocast


class ScanCall(NamedTuple):
    """One scan call of a network's forward: its sizes and the optional inputs it passes."""
    batch: int
    grid: tuple
    channels: int
    directions: tuple
    states: int
    has_D: bool
    has_z: bool
    has_delta_bias: bool
    delta_softplus: bool


def network_calls(name: str, plan_name: str) -> Optional[list]:
    """The scan calls of one forward of network ``name`` at plan ``plan_name``, in order (None: it does not build
    or run for that plan; the reason is printed)."""
    p = PLANS[plan_name]
    with torch.device("meta"):
        try:
            net = make_network(name, p)
        except Exception as e:  # a network that cannot take this plan
            print(f"# {name}@{plan_name}: not built ({type(e).__name__}: {str(e)[:80]})")
            return None
        x = torch.empty((p["batch"], p["in_ch"], *p["patch"]))
        found: list = []
        try:
            with recording(found), torch.no_grad():
                net(x)
        except Exception as e:
            print(f"# {name}@{plan_name}: forward on meta failed ({type(e).__name__}: {str(e)[:80]})")
            return None
    return found


def problems(plan_names=DEFAULT_PLANS) -> dict:
    """{(batch, grid, channels, directions, states): [network@plan, ...]} over every registered network that
    builds for the plan's dimensionality."""
    out: dict = {}
    for plan_name in plan_names:
        ndim = len(PLANS[plan_name]["patch"])
        for name in list_networks():
            if ndim not in network_dims(name):
                continue
            for c in network_calls(name, plan_name) or []:
                key = (c.batch, c.grid, c.channels, len(c.directions), c.states)
                out.setdefault(key, []).append(f"{name}@{plan_name}")
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--plans", nargs="+", default=list(DEFAULT_PLANS))
    a = ap.parse_args()
    for (Bsz, grid, D, K, N), users in sorted(problems(a.plans).items(), key=lambda kv: -math.prod(kv[0][1])):
        print(f"B={Bsz} D={D} grid={'x'.join(map(str, grid))} K={K} N={N}  {' '.join(sorted(set(users)))}")


if __name__ == "__main__":
    main()
