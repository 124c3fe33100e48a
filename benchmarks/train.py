"""Training-step time, peak memory and inference time of the networks on one GPU (a benchmark, not a test).

For each network and plan: forward + deep-supervision loss + backward + SGD step, under AMP
(bf16 or fp16 with a GradScaler, as nnU-Net uses it), with or without torch.compile (nnU-Net's
default on CUDA), median over timed steps after warm-up; peak memory from
torch.cuda.max_memory_allocated. Every row runs in its own subprocess (a failure or a CUDA error
in one network cannot spoil the others, and peak memory is per network).
The loss is cross-entropy (labels) or BCE (regions) on every deep-supervision output with
nnU-Net's weights (nnU-Net adds a soft Dice term, which costs little next to the network).

Networks: every name of our registry (optionally ``name:{json options}``) and ``resenc_m``, which is
nnU-Net's own ``ResidualEncoderUNet`` (dynamic-network-architectures) as ``nnUNetTrainer`` builds it
from ``nnUNetResEncUNetMPlans``.

Plans: (a) ``hippocampus_resenc_m``: the 3d_fullres configuration of ``nnUNetResEncUNetMPlans`` that
nnU-Net 2.8.1 makes for MSD Hippocampus (all 208 cases), (b) ``brats_like_128``: 4 channels, 3 region
outputs, patch 128^3, batch 2, the 6-stage ResEnc M layout, (c) ``brats_like_2d``: the same in 2D (192x160
slices, batch 12), for the 2D-only networks.

    python benchmarks/train.py [--networks resenc_m mamba_resenc ...] [--amp bf16] [--compile]
Writes benchmarks/results/train_<card>.json and .md (after every row).

A/B between commits (``--base REF``, REF a wheel or a git commit; see ``ab.py``): every row runs alternately with
the base and with the current install, each time in its own subprocess (base, current, base, current, ...
``--repeats`` pairs per row; each side keeps its lowest median step time); writes train_ab_<base>_<current>.json
and .md (step time and peak memory of both, current / base). Where git exists, build the base's wheel:

    python benchmarks/scan.py --base HEAD~1 --prepare-only        # prints .whl_base/<commit>/nnunet_mamba-*.whl

then, on the GPU machine (the current wheel installed, ``.whl_base/`` carried along):

    python benchmarks/train.py --base .whl_base/<commit>/nnunet_mamba-*.whl --compile --plans hippocampus_resenc_m
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import ab  # benchmarks/ab.py (this script's folder is on sys.path)
from nnunet_mamba.networks import build_network, resolve_arch_kwargs

IMPORTS = ["conv_op", "norm_op", "dropout_op", "nonlin"]


def plan(n_stages, features, patch, in_ch, out_ch, batch, blocks, kernel_sizes=None, strides=None, regions=False):
    nd = len(patch)
    kw = {"n_stages": n_stages, "features_per_stage": features, "conv_op": f"torch.nn.modules.conv.Conv{nd}d",
          "kernel_sizes": kernel_sizes or [[3] * nd] * n_stages,
          "strides": strides or [[1] * nd] + [[2] * nd] * (n_stages - 1),
          "n_blocks_per_stage": blocks, "n_conv_per_stage_decoder": [1] * (n_stages - 1), "conv_bias": True,
          "norm_op": f"torch.nn.modules.instancenorm.InstanceNorm{nd}d",
          "norm_op_kwargs": {"eps": 1e-5, "affine": True},
          "dropout_op": None, "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU",
          "nonlin_kwargs": {"inplace": True}}
    return dict(arch=resolve_arch_kwargs(kw, IMPORTS), patch=patch, in_ch=in_ch, out_ch=out_ch, batch=batch,
                regions=regions)


PLANS = {
    # nnUNetv2_plan_and_preprocess -d 4 -pl nnUNetPlannerResEncM (nnU-Net 2.8.1, 208 MSD Hippocampus cases)
    "hippocampus_resenc_m": plan(4, [32, 64, 128, 256], (40, 56, 40), 1, 3, 58, [1, 3, 4, 6],
                                 kernel_sizes=[[3, 3, 3]] * 4, strides=[[1, 1, 1]] + [[2, 2, 2]] * 3),
    "brats_like_128": plan(6, [32, 64, 128, 256, 320, 320], (128, 128, 128), 4, 3, 2, [1, 3, 4, 6, 6, 6],
                           regions=True),
    # a 2D ResEnc M layout for the 2D-only networks: 4 channels, 3 regions, 192x160 slices, batch 12
    "brats_like_2d": plan(6, [32, 64, 128, 256, 512, 512], (192, 160), 4, 3, 12, [1, 3, 4, 6, 6, 6], regions=True),
    # classification (one class per case, cross-entropy): AdrenalMNIST3D at 64^3 and a 2D 224x224 image set,
    # batch 32; the baseline ``resenc_m`` is then the NoMamba encoder + pooling head of our classifier
    "adrenal_64_cls": {**plan(5, [32, 64, 128, 256, 320], (64, 64, 64), 1, 2, 32, [1, 3, 4, 6, 6]),
                       "classify": True},
    "image_224_cls": {**plan(6, [32, 64, 128, 256, 512, 512], (224, 224), 1, 2, 32, [1, 3, 4, 6, 6, 6]),
                      "classify": True},
}


def plan_from_file(path, configuration="3d_fullres"):
    """A plan entry from nnU-Net plans (dataset.json read from the same folder): arch, patch, batch."""
    plans = json.load(open(path))
    ds = json.load(open(os.path.join(os.path.dirname(path), "dataset.json")))
    c = plans["configurations"][configuration]
    while "inherits_from" in c and "architecture" not in c:
        c = {**plans["configurations"][c["inherits_from"]], **c}
    arch = c["architecture"]
    labels = ds["labels"]
    regions = any(isinstance(v, (list, tuple)) for v in labels.values())
    out_ch = len([k for k in labels if k != "background"]) if regions else len(labels)
    return dict(arch=resolve_arch_kwargs(arch["arch_kwargs"], arch["_kw_requires_import"]),
                patch=tuple(c["patch_size"]), in_ch=len(ds["channel_names"]), out_ch=out_ch,
                batch=int(c["batch_size"]), regions=regions)


def ds_loss(outputs, target, regions, classify=False):
    if classify:
        return F.cross_entropy(outputs.float(), target)
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]  # networks without deep supervision
    weights = [1 / 2 ** i for i in range(len(outputs))]
    weights[-1] = 0 if len(weights) > 1 else 1
    total = sum(weights)
    loss = 0
    for w, o in zip(weights, outputs):
        if not w:
            continue
        t = F.interpolate(target.float(), size=o.shape[2:], mode="nearest")
        if regions:
            loss = loss + w / total * F.binary_cross_entropy_with_logits(o.float(), t)
        else:
            loss = loss + w / total * F.cross_entropy(o.float(), t[:, 0].long())
    return loss


def make_network(spec, p):
    name, _, opts = spec.partition(":")
    options = json.loads(opts) if opts else {}
    if p.get("classify"):
        return make_classifier(name, p, options)
    if name == "resenc_m":
        from dynamic_network_architectures.architectures.unet import ResidualEncoderUNet
        net = ResidualEncoderUNet(p["in_ch"], num_classes=p["out_ch"], deep_supervision=True, **p["arch"])
        from dynamic_network_architectures.initialization.weight_init import InitWeights_He
        net.apply(InitWeights_He(1e-2))
        return net
    net = build_network(name, p["arch"], p["in_ch"], p["out_ch"], True, patch_size=p["patch"], **options)
    if hasattr(net, "initialize"):
        net.apply(net.initialize)
    return net


def make_classifier(name, p, options):
    """The published classifiers as their trainers build them, or our encoder + pooling head."""
    from nnunet_mamba.networks import EncoderClassifier, build_encoder
    if name == "medmamba":
        from nnunet_mamba.networks.medmamba import medmamba
        return medmamba("t", p["in_ch"], p["out_ch"], **options)
    if name == "nnmamba_cls":
        from nnunet_mamba.networks.nnmamba import NnMambaCls
        return NnMambaCls(in_ch=p["in_ch"], number_classes=p["out_ch"], **options)
    encoder = build_encoder("nomamba" if name == "resenc_m" else name, p["arch"], p["in_ch"], **options)
    return EncoderClassifier(encoder, p["out_ch"], (-2, -1), 0.0)


def make_batch(p, device):
    """A random input batch of plan ``p`` and its target: class indices per case (classification), region masks
    (regions) or a label map."""
    x = torch.randn(p["batch"], p["in_ch"], *p["patch"], device=device)
    if p.get("classify"):
        y = torch.randint(0, p["out_ch"], (p["batch"],), device=device)
    elif p["regions"]:
        y = (torch.rand(p["batch"], p["out_ch"], *p["patch"], device=device) > 0.7).float()
    else:
        y = torch.randint(0, p["out_ch"], (p["batch"], 1, *p["patch"]), device=device)
    return x, y


def measure(spec, p, amp, compile_, steps, warmup, device, profile=False, channels_last=False):
    torch.manual_seed(0)
    net = make_network(spec, p).to(device)
    fmt = (torch.channels_last_3d if len(p["patch"]) == 3 else torch.channels_last) if channels_last else None
    if fmt is not None:  # weights channels-last: cuDNN's convolutions then read and write that layout directly
        net = net.to(memory_format=fmt)
    opt = torch.optim.SGD(net.parameters(), lr=1e-2, momentum=0.99, nesterov=True)
    scaler = torch.amp.GradScaler("cuda", enabled=amp == "fp16")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[amp]
    model = torch.compile(net) if compile_ else net
    x, y = make_batch(p, device)
    if fmt is not None:
        x = x.contiguous(memory_format=fmt)
    torch.cuda.reset_peak_memory_stats()
    times, losses = [], []
    t_first = time.time()

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=dtype, enabled=dtype is not None):
            loss = ds_loss(model(x), y, p["regions"], p.get("classify", False))
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(net.parameters(), 12)
        scaler.step(opt)
        scaler.update()
        return loss

    for i in range(warmup + steps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        loss = step()
        end.record()
        torch.cuda.synchronize()
        if i == 0:
            first = time.time() - t_first
        if i >= warmup:
            times.append(start.elapsed_time(end))
        losses.append(loss.item())
    row = {"network": spec, "amp": amp, "compile": compile_, "channels_last": channels_last, "batch": p["batch"],
           "patch": list(p["patch"]),
           "median_step_ms": statistics.median(times), "peak_mem_gb": torch.cuda.max_memory_allocated() / 2 ** 30,
           "first_step_s": first, "losses_finite": all(v == v and abs(v) != float("inf") for v in losses),
           "params_m": sum(q.numel() for q in net.parameters()) / 1e6}
    if profile:
        from torch.profiler import ProfilerActivity, profile as prof
        with prof(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as pr:
            for _ in range(3):
                step()
            torch.cuda.synchronize()
        row["profile_top"] = pr.key_averages().table(sort_by="self_cuda_time_total", row_limit=25)
        print(row["profile_top"], flush=True)
    return row


def run_one(args):
    """Child process: one (network, plan, amp) row, printed as JSON on the last line with the file of the
    ``nnunet_mamba`` it imported."""
    import nnunet_mamba
    device = torch.device("cuda")
    spec, plan_name, amp = args.one
    plan = plan_from_file(plan_name) if plan_name.endswith(".json") else PLANS[plan_name]
    if spec == "planned":  # the network recorded by `nnunet-mamba plan` in the plans file
        spec = json.load(open(plan_name))["nnunet_mamba"]["network"]
    try:
        r = measure(spec, plan, amp, args.compile, args.steps, args.warmup, device, args.profile,
                    args.channels_last)
    except torch.OutOfMemoryError as e:
        r = {"network": spec, "amp": amp, "error": f"OOM: {str(e)[:120]}"}
    r["plan"] = os.path.basename(plan_name)
    r["nnunet_mamba_file"] = nnunet_mamba.__file__
    if plan_name.endswith(".json"):
        rec = json.load(open(plan_name)).get("nnunet_mamba", {})
        r["gpu_memory_target_gb"] = rec.get("gpu_memory_target_in_gb")
        r["planned_for"] = rec.get("network")
    print("ROW " + json.dumps(r), flush=True)


def measure_row(args, spec, plan_name, amp, target=None) -> dict:
    """One row in its own subprocess; ``target``: the A/B base's install, first on the child's path."""
    cmd = [sys.executable, __file__, "--one", spec, plan_name, amp, "--steps", str(args.steps),
           "--warmup", str(args.warmup)] + (["--compile"] if args.compile else []) \
        + (["--channels-last"] if args.channels_last else []) \
        + (["--profile"] if args.profile else [])
    r = ab.run_row(cmd, target, args.timeout, echo=args.profile)
    if "error" in r and "network" not in r:
        r.update(network=spec, amp=amp, plan=plan_name)
    r.pop("profile_top", None)
    return r


def ab_row(args, base, spec, plan_name, amp) -> dict:
    """One row of the A/B: ``--repeats`` pairs of subprocesses (base, then current); each side keeps its lowest
    median step time and its peak memory."""
    row = {"network": spec, "plan": os.path.basename(plan_name), "amp": amp}
    for _ in range(args.repeats):
        for side, target in ab.sides(base):
            r = measure_row(args, spec, plan_name, amp, target)
            if "error" in r:
                row["error"] = f"{side}: {r['error']}"
                return row
            row.setdefault(f"{side}_step_runs_ms", []).append(r["median_step_ms"])
            row[f"{side}_peak_mem_gb"] = r["peak_mem_gb"]
            row["batch"], row["patch"] = r["batch"], r["patch"]
    for side, _ in ab.sides(base):
        row[f"{side}_step_ms"] = min(row[f"{side}_step_runs_ms"])
    row["ratio_step"] = row["current_step_ms"] / row["base_step_ms"]
    row["ratio_peak_mem"] = row["current_peak_mem_gb"] / row["base_peak_mem_gb"]
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--networks", nargs="+", default=["resenc_m", "nomamba", "mamba_resenc", "umamba_bot",
                                                      "umamba_enc", "segmamba"])
    ap.add_argument("--plans", nargs="+", default=list(PLANS), help="names of PLANS or nnU-Net plans .json files")
    ap.add_argument("--amp", nargs="+", default=["bf16"])
    ap.add_argument("--compile", action="store_true", help="torch.compile the network (nnU-Net's CUDA default)")
    ap.add_argument("--channels-last", action="store_true",
                    help="network weights and input in the channels-last layout (NDHWC / NHWC)")
    ap.add_argument("--profile", action="store_true", help="print the torch.profiler kernel table per row")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--timeout", type=int, default=900, help="seconds per row")
    ap.add_argument("--tag", default="")
    ap.add_argument("--repeats", type=int, default=2, help="A/B: base / current pairs per row")
    ap.add_argument("--commit", default=None, help="the current install's commit (default: git, else the stamps)")
    ab.add_arguments(ap)
    ap.add_argument("--one", nargs=3, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    if args.one:
        return run_one(args)
    base = ab.prepare(args)
    card = torch.cuda.get_device_name(0)
    rows = []
    for plan_name in args.plans:
        for amp in args.amp:
            for spec in args.networks:
                if base is None:
                    rows.append(measure_row(args, spec, plan_name, amp))
                    table = write_results(args, card, rows)  # after every row: a crash keeps what was measured
                else:
                    rows.append(ab_row(args, base, spec, plan_name, amp))
                    table = write_ab(args, card, base, rows)
                print(json.dumps(rows[-1]), flush=True)
    print("\n".join(table))


def run_meta(args, card) -> dict:
    """Card, versions, commit and scan options of this run."""
    from scan import scan_options_in_force  # benchmarks/scan.py
    meta = {"card": card, "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
            "commit": ab.current_commit(args.commit), "compile": args.compile,
            "channels_last": getattr(args, "channels_last", False),  # originals.py passes its own arguments
            "scan_options": scan_options_in_force()}
    try:
        import triton
        meta["triton"] = triton.__version__
    except ImportError:
        pass
    return meta


def write_ab(args, card, base, rows) -> list:
    """The side-by-side table of the A/B: per row step time and peak memory of base and current, current / base."""
    meta = dict(run_meta(args, card), base_commit=base.commit, base_wheel=base.wheel, repeats=args.repeats,
                notes=f"per row {args.repeats} pairs of subprocesses, base then current; each side keeps its lowest "
                      f"median step time over {args.steps} steps after {args.warmup} warm-up steps")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = f"train_ab_{base.commit}_{meta['commit']}" + (f"_{args.tag}" if args.tag else "")
    (out / f"{name}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    lines = [f"# Training step A/B on {card}: {base.commit} (base) vs {meta['commit']} (current)", "",
             f"torch {meta['torch']}, CUDA {meta['cuda']}, triton {meta.get('triton')}, torch.compile {args.compile}, "
             f"channels-last {args.channels_last}, "
             f"scan options (current) {meta['scan_options']}; base wheel {base.wheel}; {meta['notes']}", "",
             "| plan | network | AMP | batch x patch | step ms base | step ms current | current / base "
             "| peak GB base | peak GB current | current / base |", "|" + "---|" * 10]
    for r in rows:
        cells = [r["plan"], r["network"], r["amp"]]
        if "error" in r:
            cells += ["", r["error"]] + [""] * 5
        else:
            cells += [f"{r['batch']} x {'x'.join(map(str, r['patch']))}", f"{r['base_step_ms']:.1f}",
                      f"{r['current_step_ms']:.1f}", f"{r['ratio_step']:.3f}", f"{r['base_peak_mem_gb']:.2f}",
                      f"{r['current_peak_mem_gb']:.2f}", f"{r['ratio_peak_mem']:.3f}"]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    lines += ["", "Step time: " + ab.ratio_note([r["ratio_step"] for r in rows if "error" not in r]) + "."]
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    return lines


def write_results(args, card, rows):
    meta = run_meta(args, card)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = card.lower().replace(" ", "_") + (f"_{args.tag}" if args.tag else "")
    (out / f"train_{tag}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    lines = [f"# Training step on {card}", "", f"torch {meta['torch']}, CUDA {meta['cuda']}, triton "
             f"{meta.get('triton')}, commit {meta['commit']}, torch.compile {args.compile}, "
             f"channels-last {args.channels_last}, "
             f"scan options {meta['scan_options']}", "",
             "| plan | network | AMP | batch x patch | step ms (median) | x resenc_m | peak GB | x resenc_m "
             "| target GB | params M | first step s | finite |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    base = {(r["plan"], r["amp"]): r for r in rows if r["network"] == "resenc_m" and "error" not in r}
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['plan']} | {r['network']} | {r['amp']} | | {r['error']} | | | | | | | |")
            continue
        b = base.get((r["plan"], r["amp"]))
        rt = f"{r['median_step_ms'] / b['median_step_ms']:.2f}" if b else "-"
        rm = f"{r['peak_mem_gb'] / b['peak_mem_gb']:.2f}" if b else "-"
        bp = f"{r['batch']} x {'x'.join(map(str, r['patch']))}"
        tgt = r.get("gpu_memory_target_gb") or "-"
        lines.append(f"| {r['plan']} | {r['network']} | {r['amp']} | {bp} | {r['median_step_ms']:.1f} | {rt} | "
                     f"{r['peak_mem_gb']:.2f} | {rm} | {tgt} | {r['params_m']:.1f} | {r['first_step_s']:.1f} | "
                     f"{r['losses_finite']} |")
    (out / f"train_{tag}.md").write_text("\n".join(lines) + "\n")
    return lines


if __name__ == "__main__":
    sys.exit(main())
