"""Peak memory of one training step per network on the CPU, A/B between commits (a benchmark, not a test): where a
GPU is not at hand, what a memory change does to the activations.

One step of ``train.py`` (forward, deep-supervision loss, backward) at a plan of ``train.py`` with batch 1, under
bf16 autocast on the CPU, inside torch.profiler with memory profiling: the allocations and frees of the CPU
allocator, replayed in time order, give the peak of the bytes allocated during the step (the analogue of
``torch.cuda.max_memory_allocated`` after a reset; weights and optimizer state, allocated before, are not in it).
The scan runs on the PyTorch reference, whose own buffers differ from the Triton kernels'; the rest of the network
allocates what it allocates on a GPU. Each network and side runs in its own process (``ab.run_row``; ``--base REF``
as in ``train.py``).

    python benchmarks/step_memory_cpu.py --base 587125d [--networks lightmunet segmamba ...] [--plan PLAN]
Writes step_memory_cpu_<base>_<current>.json and .md into ``--out``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

import ab  # benchmarks/ab.py
import train  # benchmarks/train.py

DEFAULT_NETWORKS = ("umamba_bot", "umamba_enc", "segmamba", "lightmunet", "nnmamba", "mamba_resenc")


def peak_bytes(step) -> int:
    """The highest sum of the CPU allocator's allocations minus its frees during ``step()``."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = sorted((e for e in prof.events() if e.self_cpu_memory_usage), key=lambda e: e.time_range.start)
    current = peak = 0
    for e in events:
        current += e.self_cpu_memory_usage
        peak = max(peak, current)
    return peak


def child(spec: str, plan_name: str) -> dict:
    import nnunet_mamba
    p = dict(train.PLANS[plan_name], batch=1)
    torch.manual_seed(0)
    net = train.make_network(spec, p)
    x, y = train.make_batch(p, "cpu")

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = train.ds_loss(net(x), y, p["regions"])
        loss.backward()
    start = time.perf_counter()
    peak = peak_bytes(step)
    return {"network": spec, "plan": plan_name, "patch": list(p["patch"]), "peak_bytes": peak,
            "seconds": round(time.perf_counter() - start, 1), "nnunet_mamba_file": nnunet_mamba.__file__}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--networks", nargs="+", default=list(DEFAULT_NETWORKS))
    ap.add_argument("--plan", default="hippocampus_resenc_m", choices=list(train.PLANS))
    ap.add_argument("--commit", default=None)
    ap.add_argument("--timeout", type=int, default=1200, help="seconds per process")
    ab.add_arguments(ap)
    ap.add_argument("--one", nargs=2, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    a = ap.parse_args()
    if a.one:
        print("ROW " + json.dumps(child(*a.one)), flush=True)
        return
    base = ab.prepare(a)
    if base is None:
        raise SystemExit("--base REF is needed: this benchmark compares two commits")
    current = ab.current_commit(a.commit)
    rows = []
    for spec in a.networks:
        row = {"network": spec}
        for side, target in ab.sides(base):
            r = ab.run_row([sys.executable, __file__, "--one", spec, a.plan], target=target, timeout=a.timeout)
            row[side] = r.get("peak_bytes") or r.get("error")
        rows.append(row)
        print(json.dumps(row), flush=True)
    meta = {"base": base.commit, "current": current, "plan": a.plan, "batch": 1, "amp": "bf16 (CPU autocast)",
            "torch": torch.__version__, "date": time.strftime("%Y-%m-%d")}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"step_memory_cpu_{base.commit}_{current}"
    stem.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    lines = [f"# Peak memory of one training step on the CPU: {current} against {base.commit}", "",
             f"Plan {a.plan}, batch 1, bf16 CPU autocast, forward + deep-supervision loss + backward; peak of the CPU "
             f"allocator's bytes during the step (torch.profiler); torch {meta['torch']}, {meta['date']} "
             "(`benchmarks/step_memory_cpu.py`).", "",
             f"| network | {base.commit}, MB | {current}, MB | {current} / {base.commit} |", "|---|---|---|---|"]
    for r in rows:
        b, c = r["base"], r["current"]
        if isinstance(b, int) and isinstance(c, int):
            lines.append(f"| {r['network']} | {b / 1e6:.0f} | {c / 1e6:.0f} | {c / b:.2f}x |")
        else:
            mb = lambda v: f"{v / 1e6:.0f}" if isinstance(v, int) else v  # noqa: E731
            lines.append(f"| {r['network']} | {mb(b)} | {mb(c)} | |")
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
