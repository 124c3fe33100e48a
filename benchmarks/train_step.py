"""Training-step time and peak memory of the registered networks on one GPU (a benchmark, not a test).

For each network and plan: forward + deep-supervision loss + backward + SGD step, under AMP
(bf16 or fp16 with a GradScaler, as nnU-Net uses it) and torch.compile (nnU-Net's default on CUDA),
median over timed steps after warm-up; peak memory from torch.cuda.max_memory_allocated.
The loss is cross-entropy on every deep-supervision output with nnU-Net's weights (nnU-Net adds a
soft Dice term, which costs little next to the network).

Plans: (a) MSD Hippocampus 3d_fullres default plan (patch 40x56x40, batch 9, 4 stages 32..256),
(b) a BraTS-like plan (4 channels, 3 outputs, patch 128^3, batch 2, 6 stages 32..320).

    python benchmarks/train_step.py [--networks mamba_resenc nomamba] [--amp bf16] [--no-compile]
Writes benchmarks/results/train_step_<card>.json and .md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from nnunet_mamba.networks import build_network, resolve_arch_kwargs

IMPORTS = ["conv_op", "norm_op", "dropout_op", "nonlin"]


def plan(n_stages, features, patch, in_ch, out_ch, batch, blocks):
    kw = {"n_stages": n_stages, "features_per_stage": features, "conv_op": "torch.nn.modules.conv.Conv3d",
          "kernel_sizes": [[3, 3, 3]] * n_stages, "strides": [[1, 1, 1]] + [[2, 2, 2]] * (n_stages - 1),
          "n_blocks_per_stage": blocks, "n_conv_per_stage_decoder": [1] * (n_stages - 1), "conv_bias": True,
          "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d", "norm_op_kwargs": {"eps": 1e-5, "affine": True},
          "dropout_op": None, "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU",
          "nonlin_kwargs": {"inplace": True}}
    return dict(arch=resolve_arch_kwargs(kw, IMPORTS), patch=patch, in_ch=in_ch, out_ch=out_ch, batch=batch)


PLANS = {
    "hippocampus_3d_fullres": plan(4, [32, 64, 128, 256], (40, 56, 40), 1, 3, 9, [1, 3, 4, 6]),
    "brats_like_128": plan(6, [32, 64, 128, 256, 320, 320], (128, 128, 128), 4, 3, 2, [1, 3, 4, 6, 6, 6]),
}


def ds_loss(outputs, target):
    weights = [1 / 2 ** i for i in range(len(outputs))]
    weights[-1] = 0
    total = sum(weights)
    loss = 0
    for w, o in zip(weights, outputs):
        if w:
            t = F.interpolate(target[:, None].float(), size=o.shape[2:], mode="nearest")[:, 0].long()
            loss = loss + w / total * F.cross_entropy(o.float(), t)
    return loss


def measure(name, p, amp, compile_, steps, warmup, device):
    torch.manual_seed(0)
    net = build_network(name, p["arch"], p["in_ch"], p["out_ch"], True).to(device)
    net.apply(net.initialize)
    opt = torch.optim.SGD(net.parameters(), lr=1e-2, momentum=0.99, nesterov=True)
    scaler = torch.amp.GradScaler("cuda", enabled=amp == "fp16")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[amp]
    model = torch.compile(net) if compile_ else net
    x = torch.randn(p["batch"], p["in_ch"], *p["patch"], device=device)
    y = torch.randint(0, p["out_ch"], (p["batch"], *p["patch"]), device=device)
    torch.cuda.reset_peak_memory_stats()
    times, losses = [], []
    t_first = time.time()
    for i in range(warmup + steps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=dtype, enabled=dtype is not None):
            loss = ds_loss(model(x), y)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(net.parameters(), 12)
        scaler.step(opt)
        scaler.update()
        end.record()
        torch.cuda.synchronize()
        if i == 0:
            first = time.time() - t_first
        if i >= warmup:
            times.append(start.elapsed_time(end))
        losses.append(loss.item())
    return {"network": name, "amp": amp, "compile": compile_, "median_step_ms": statistics.median(times),
            "peak_mem_gb": torch.cuda.max_memory_allocated() / 2 ** 30, "first_step_s": first,
            "losses_finite": all(map(lambda v: v == v and abs(v) != float("inf"), losses)),
            "params_m": sum(q.numel() for q in net.parameters()) / 1e6}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--networks", nargs="+", default=["mamba_resenc", "nomamba", "umamba_bot"])
    ap.add_argument("--plans", nargs="+", default=list(PLANS))
    ap.add_argument("--amp", nargs="+", default=["bf16"])
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    device = torch.device("cuda")
    card = torch.cuda.get_device_name(0)
    rows = []
    for plan_name in args.plans:
        for amp in args.amp:
            for name in args.networks:
                try:
                    r = measure(name, PLANS[plan_name], amp, not args.no_compile, args.steps, args.warmup, device)
                except torch.OutOfMemoryError as e:
                    r = {"network": name, "amp": amp, "error": f"OOM: {str(e)[:120]}"}
                except RuntimeError as e:  # record and go on: one failing network must not lose the other rows
                    r = {"network": name, "amp": amp, "error": f"{type(e).__name__}: {str(e)[:160]}"}
                r["plan"] = plan_name
                rows.append(r)
                print(json.dumps(r), flush=True)
                table = write_results(args, card, rows)  # after every row: a crash keeps what was measured
                torch.cuda.empty_cache()
    print("\n".join(table))


def write_results(args, card, rows):
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = "unknown"
    meta = {"card": card, "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
            "commit": commit or os.environ.get("NNUNET_MAMBA_COMMIT", "unknown"),
            "scan_backend_env": os.environ.get("NNUNET_MAMBA_SCAN_BACKEND", "auto")}
    try:
        import triton
        meta["triton"] = triton.__version__
    except ImportError:
        pass
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = card.lower().replace(" ", "_")
    (out / f"train_step_{tag}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    lines = [f"# Training step on {card}", "", f"torch {meta['torch']}, CUDA {meta['cuda']}, triton "
             f"{meta.get('triton')}, commit {meta['commit']}, compile {not args.no_compile}", "",
             "| plan | network | AMP | step ms (median) | peak GB | params M | first step s | finite |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['plan']} | {r['network']} | {r['amp']} | {r['error']} | | | | |")
        else:
            lines.append(f"| {r['plan']} | {r['network']} | {r['amp']} | {r['median_step_ms']:.1f} | "
                         f"{r['peak_mem_gb']:.2f} | {r['params_m']:.1f} | {r['first_step_s']:.1f} | "
                         f"{r['losses_finite']} |")
    (out / f"train_step_{tag}.md").write_text("\n".join(lines) + "\n")
    return lines


if __name__ == "__main__":
    sys.exit(main())
