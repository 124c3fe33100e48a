"""Training step of the published Mamba networks: their authors' code against our re-implementation, side by side on
one GPU (a benchmark, not a test).

Rows are (network, plan) pairs: U-Mamba Bot and Enc, SegMamba, LightM-UNet, nnMamba, VM-UNet and Swin-UMamba at the
plans of ``train.py`` whose dimensionality they exist in (3D: ``hippocampus_resenc_m``, ``brats_like_128``; 2D:
``brats_like_2d``). Each row has two sides, each timed in its own subprocess (a failure or an OOM of one cannot spoil
the other, and peak memory is per side), alternately, ``--repeats`` pairs per row:

* ``original``: the network class of the authors' snapshot (``--originals DIR``) at the configuration our network
  equals (``originals/authors_networks.py`` lists the constructor arguments), with the real mamba-ssm kernels of
  ``--mamba-site DIR`` (and causal-conv1d where built there); without that folder or without CUDA, mamba-ssm's
  PyTorch reference (the CPU stubs of the record scripts). Each row records which Mamba path ran;
* ``ours``: ``build_network`` at the same plan, the scan backend picked automatically (Triton on CUDA).

Both sides run ``train.py``'s ``measure`` (forward, deep-supervision loss, backward, SGD step under AMP, optionally
torch.compile; median step time after warm-up, ``torch.cuda.max_memory_allocated``) with the same batch and patch.
The patch is the plan's, rounded up where the original cannot take it (multiples of its total stride; SegMamba's
fixed slice counts must divide each stage's tokens); ours then runs the same patch. Each side keeps its lowest median
step time and its highest peak memory. ``--check-outputs``: per row, in one more subprocess, the original's freshly
initialised state dict is loaded unchanged into ours (the identity key mapping of the faithful tests) and both
forward one small batch-1 input in float32 (TF32 off; ``authors_networks.check_patch``: a size on which both compute
the same function): the largest relative error (Frobenius, as in ``tests/test_faithful_*.py``) over the outputs.
``--cpu``: the plumbing on CPU, batch 2, patch 16^3 / 32^2 (rounded up per network), float32, one timed step (no
warm-up) of the same training step (CPU wall time, peak process RSS).

Writes ``results/originals_<card>.json`` and ``.md`` (``--out``), after every row: per row both sides' step time
and peak memory, ours / original, first-step time (compile time with ``--compile``), the Mamba path, the output
check; card, torch / CUDA / Triton / mamba-ssm / causal-conv1d versions and our commit.

On a GPU machine with no network
--------------------------------
Prepare here (git and network):

    bash benchmarks/prepare_gpu_carry.sh scan          # .whl_own/ (our wheel), .whl/ (mamba-ssm 2.3.2.post1's sdist)
    python3 -m pip download -q --no-deps --no-binary :all: --no-build-isolation causal-conv1d==1.7.0 -d .whl
    python benchmarks/originals.py --pack .originals/carry     # the snapshot parts the networks import, and du

The parts (``authors_networks.SNAPSHOT_PATHS``; ``mamba/mamba_ssm`` only for the CPU reference):
``U-Mamba/umamba/nnunetv2/nets``, ``SegMamba/{model_segmamba/segmamba.py, mamba/mamba_ssm, causal-conv1d, monai}``
(its vendored MONAI is most of the 7.6 MB), ``LightM-UNet/lightm-unet/nnunetv2/nets/LightMUNet.py``,
``nnMamba/nnMamba.py``, ``VM-UNet/models/vmunet``, ``Swin-UMamba/swin_umamba/nnunetv2/nets/SwinUMamba.py``,
``mamba/mamba_ssm``. Carry ``.whl_own .whl .whl_nn .whl_fa .originals/carry`` (about 34 MB): nnunetv2 2.8.1 and
its dependencies in ``.whl_nn`` (U-Mamba and Swin-UMamba import nnunetv2; SimpleITK is
not needed: an empty module stands in for it where it is missing),
dynamic-network-architectures and MONAI in ``.whl_fa``. There (the image has torch, Triton, nvcc, timm, einops):

    python3 -m pip install -q --no-index --no-deps --no-compile .whl_nn/*.whl .whl_fa/*.whl
    bash benchmarks/gpu_scan.sh setup                  # our wheel, and its commit for the result
    python3 benchmarks/scan.py --build-mamba .whl/mamba_ssm-2.3.2.post1.tar.gz --build-only \\
        --mamba-target /tmp/mamba_site
    python3 benchmarks/originals/build_causal_conv1d.py .originals/carry/SegMamba/causal-conv1d \\
        --target /tmp/mamba_site/segmamba
    python3 benchmarks/originals/build_causal_conv1d.py .whl/causal_conv1d-1.7.0.tar.gz --target /tmp/mamba_site
    python3 benchmarks/originals.py --originals .originals/carry --mamba-site /tmp/mamba_site --check-outputs \\
        --commit $(cat .whl_own/COMMIT) --plans hippocampus_resenc_m --tag hippocampus --out $OUT

(one plan per run, each with its own ``--tag``, keeps a run short; every run writes its own file).

causal-conv1d: SegMamba runs only with its vendored copy built (its fused Mamba calls the four-argument
``causal_conv1d_fwd`` of version 1.0.0); U-Mamba, LightM-UNet and nnMamba run mamba-ssm's fused ``mamba_inner_fn``
with upstream causal-conv1d (1.7.0 has the ``cpp_functions`` mamba-ssm 2.3 imports) and, without it, their ``Mamba``'s
slow path (``nn.Conv1d`` and the CUDA ``selective_scan_fn``); VM-UNet and Swin-UMamba never use it. Each row records
the path that ran.

    python benchmarks/originals.py --cpu --check-outputs --out /tmp/originals_cpu     # the plumbing, here
"""
from __future__ import annotations

import argparse
import json
import math
import resource
import shutil
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

import torch

import ab  # benchmarks/ab.py (this script's folder is on sys.path)
sys.path.insert(0, str(Path(__file__).resolve().parent / "originals"))
from authors_networks import (CPU_REFERENCE_PATHS, NETWORKS, SEGMAMBA_CONV_SUBDIR, SNAPSHOT_PATHS,  # noqa: E402
                              accepted_patch, check_patch, prepare_original, site_versions)

SIDES = ("original", "ours")
PLANS = ("hippocampus_resenc_m", "brats_like_128", "brats_like_2d")
SMOKE_PATCH = {3: (16, 16, 16), 2: (32, 32)}
SMOKE_BATCH = 2  # nnMamba's batch norms after global pooling need two samples in training
# Networks whose original state dict loads unchanged into ours (same keys in the same order, strict):
# tests/test_faithful_networks.py::test_same_state_dict_and_outputs_as_the_original checks it for every fixture
STATE_DICT_MAPPED = frozenset(NETWORKS)


# ----------------------------------------------------------------------------------------------
# one side in a child process
# ----------------------------------------------------------------------------------------------
def row_plan(network: str, plan_name: str, cpu: bool) -> dict:
    """The plan of ``train.py`` (tiny on CPU) with the patch rounded up to one the original takes."""
    import train
    p = dict(train.PLANS[plan_name])
    if cpu:
        p.update(patch=SMOKE_PATCH[len(p["patch"])], batch=SMOKE_BATCH)
    return dict(p, plan_patch=list(p["patch"]), patch=accepted_patch(network, p["arch"], p["patch"]))


def measure_cpu(network: str, p: dict, amp: str, compile_: bool, steps: int, warmup: int) -> dict:
    """``train.measure``'s training step on CPU: wall time per step, peak RSS of this process."""
    import train
    torch.manual_seed(0)
    net = train.make_network(network, p)
    opt = torch.optim.SGD(net.parameters(), lr=1e-2, momentum=0.99, nesterov=True)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[amp]
    model = torch.compile(net) if compile_ else net
    x, y = train.make_batch(p, "cpu")
    times, losses, start = [], [], time.time()
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            loss = train.ds_loss(model(x), y, p["regions"])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 12)
        opt.step()
        if i == 0:
            first = time.time() - start
        if i >= warmup:
            times.append(1e3 * (time.perf_counter() - t0))
        losses.append(loss.item())
    return {"network": network, "amp": amp, "compile": compile_, "batch": p["batch"], "patch": list(p["patch"]),
            "median_step_ms": statistics.median(times), "peak_mem_gb": resource.getrusage(
                resource.RUSAGE_SELF).ru_maxrss / 2 ** 20, "first_step_s": first,
            "losses_finite": all(math.isfinite(v) for v in losses),
            "params_m": sum(q.numel() for q in net.parameters()) / 1e6}


def describe_error(e: BaseException) -> str:
    """The exception and the line of code it came from (the last frame), short enough for a table cell."""
    frame = traceback.extract_tb(e.__traceback__)[-1] if e.__traceback__ else None
    where = f" (at {Path(frame.filename).name}:{frame.lineno})" if frame else ""
    return f"{type(e).__name__}: {str(e).splitlines()[0][:240] if str(e) else ''}{where}"


def report(row: dict) -> None:
    """The child's result: one ``ROW {json}`` line with the file of the ``nnunet_mamba`` it imported."""
    import nnunet_mamba
    row["nnunet_mamba_file"] = nnunet_mamba.__file__
    print("ROW " + json.dumps(row, default=str), flush=True)


def mamba_site_of(args):
    return None if args.cpu else args.mamba_site


def time_one_side(args) -> None:
    """Child process: one side of one row."""
    side, network, plan_name = args.one
    row = {"side": side, "network": network, "plan": plan_name}
    try:
        if side == "original":  # before anything imports monai or mamba_ssm
            build, info = prepare_original(network, args.originals, mamba_site_of(args))
            row.update(info)
        import train
        p = row_plan(network, plan_name, args.cpu)
        if side == "original":  # train.measure builds its network through train.make_network
            train.make_network = lambda spec, plan: build(plan)
        if args.cpu:
            r = measure_cpu(network, p, args.amp, args.compile, args.steps, args.warmup)
        else:
            r = train.measure(network, p, args.amp, args.compile, args.steps, args.warmup, torch.device("cuda"))
        row.update(r, plan_patch=p["plan_patch"])
    except torch.OutOfMemoryError as e:
        row["error"] = f"OOM: {str(e)[:160]}"
    except (Exception, SystemExit) as e:  # noqa: BLE001 - any failure of one side becomes that side's cell
        row["error"] = describe_error(e)
    report(row)


def relative_error(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return float((ours.double() - ref.double()).norm() / ref.double().norm())


def as_list(out) -> list:
    return list(out) if isinstance(out, (list, tuple)) else [out]


def check_outputs(args) -> None:
    """Child process: the original's state dict loaded into ours, one float32 forward of both."""
    network, plan_name = args.one_check
    row = {}
    try:
        build, info = prepare_original(network, args.originals, mamba_site_of(args))
        import train
        p = row_plan(network, plan_name, args.cpu)
        device = torch.device("cpu" if args.cpu else "cuda")
        torch.backends.cuda.matmul.allow_tf32 = False  # compare the scans, not TF32 convolutions
        torch.backends.cudnn.allow_tf32 = False
        torch.manual_seed(0)
        original = build(p)
        ours = train.make_network(network, p)
        ours.load_state_dict(original.state_dict(), strict=True)
        size = check_patch(network, p["arch"], p["patch"], SMOKE_PATCH[len(p["patch"])])
        x = torch.randn(1, p["in_ch"], *size, generator=torch.Generator().manual_seed(2)).to(device)
        outs = []
        for net in (original, ours):
            with torch.no_grad():
                outs.append([o.float().cpu() for o in as_list(net.to(device).eval()(x))])
            net.cpu()
        if len(outs[0]) != len(outs[1]):
            raise RuntimeError(f"{len(outs[0])} outputs from the original, {len(outs[1])} from ours")
        row = {"check_rel_err": max(relative_error(b, a) for a, b in zip(*outs)), "check_outputs": len(outs[0]),
               "check_input": list(x.shape), "check_mamba_path": info["mamba_path_short"]}
    except (Exception, SystemExit) as e:  # noqa: BLE001
        row = {"check_error": describe_error(e)}
    report(row)


# ----------------------------------------------------------------------------------------------
# the table (parent process)
# ----------------------------------------------------------------------------------------------
def child_command(args, *one) -> list:
    cmd = [sys.executable, __file__, *one, "--originals", str(args.originals), "--amp", args.amp,
           "--steps", str(args.steps), "--warmup", str(args.warmup)]
    cmd += ["--mamba-site", str(args.mamba_site)] if args.mamba_site else []
    return cmd + (["--compile"] if args.compile else []) + (["--cpu"] if args.cpu else [])


def rows_to_time(args) -> list:
    """(network, plan) for every network at every plan whose dimensionality it exists in."""
    import train
    from nnunet_mamba.networks.registry import network_dims
    return [(n, plan) for plan in args.plans for n in args.networks
            if len(train.PLANS[plan]["patch"]) in network_dims(n)]


def add_side(row: dict, side: str, r: dict) -> None:
    """One run of one side into the row: its median step time, the highest peak memory and first step."""
    if "error" in r:
        row[f"{side}_error"] = r["error"]
        return
    row.setdefault(f"{side}_step_runs_ms", []).append(r["median_step_ms"])
    for key in ("peak_mem_gb", "first_step_s"):
        row[f"{side}_{key}"] = max(row.get(f"{side}_{key}", 0.0), r[key])
    row[f"{side}_params_m"], row[f"{side}_losses_finite"] = r["params_m"], r["losses_finite"]
    row["batch"], row["patch"], row["plan_patch"] = r["batch"], r["patch"], r["plan_patch"]
    if side == "original":
        for key in ("mamba_path", "mamba_path_short", "mamba_ssm", "causal_conv1d"):
            row[f"original_{key}"] = r.get(key)


def time_row(args, network: str, plan: str) -> dict:
    """``--repeats`` pairs of subprocesses (original, then ours); each side keeps its lowest median step time."""
    row = {"network": network, "plan": plan}
    for _ in range(args.repeats):
        for side in SIDES:
            if f"{side}_error" not in row:
                add_side(row, side, ab.run_row(child_command(args, "--one", side, network, plan), None,
                                               args.timeout))
    for side in SIDES:
        if f"{side}_step_runs_ms" in row and f"{side}_error" not in row:
            row[f"{side}_step_ms"] = min(row[f"{side}_step_runs_ms"])
    if all(f"{side}_step_ms" in row for side in SIDES):
        row["ratio_step"] = row["ours_step_ms"] / row["original_step_ms"]
        row["ratio_peak_mem"] = row["ours_peak_mem_gb"] / row["original_peak_mem_gb"]
    if args.check_outputs:
        row.update(check_row(args, network, plan))
    return row


def check_row(args, network: str, plan: str) -> dict:
    if network not in STATE_DICT_MAPPED:
        return {"check_error": "skipped: no faithful test maps the original's state dict onto ours"}
    r = ab.run_row(child_command(args, "--one-check", network, plan), None, args.timeout)
    return {k: v for k, v in r.items() if k.startswith("check_")} or {"check_error": r.get("error", "no result")}


def run_meta(args, card: str) -> dict:
    """Card, versions (torch, CUDA, Triton, mamba-ssm and causal-conv1d of the built folder), commit, settings."""
    import train
    meta = dict(train.run_meta(args, card), amp=args.amp, steps=args.steps, warmup=args.warmup,
                repeats=args.repeats, originals=str(args.originals), mamba_site=mamba_site_of(args),
                device="cpu" if args.cpu else "cuda")
    site = mamba_site_of(args)
    meta["mamba_site_packages"] = site_versions(site)
    meta["segmamba_causal_conv1d"] = site_versions(Path(site) / SEGMAMBA_CONV_SUBDIR) if site else {}
    pairs = f"{args.repeats} pair{'s' if args.repeats != 1 else ''}"
    meta["notes"] = (f"per row {pairs} of subprocesses, original then ours; each side keeps its lowest "
                     f"median step time over {args.steps} steps after {args.warmup} warm-up steps and its highest "
                     "peak memory" + ("; CPU: wall time per step, peak process RSS" if args.cpu else ""))
    return meta


def fmt(value, spec: str) -> str:
    return "" if value is None else format(value, spec)


def table_line(r: dict) -> str:
    errors = "; ".join(f"{s}: {r[f'{s}_error']}" for s in SIDES if f"{s}_error" in r)
    patch = "x".join(map(str, r.get("patch", [])))
    if r.get("patch") and r.get("plan_patch") and list(r["patch"]) != list(r["plan_patch"]):
        patch += " *"
    check = fmt(r.get("check_rel_err"), ".1e") or r.get("check_error", "")
    cells = [r["plan"], r["network"], f"{r['batch']} x {patch}" if "batch" in r else "",
             fmt(r.get("original_step_ms"), ".1f"), fmt(r.get("ours_step_ms"), ".1f"), fmt(r.get("ratio_step"), ".3f"),
             fmt(r.get("original_peak_mem_gb"), ".2f"), fmt(r.get("ours_peak_mem_gb"), ".2f"),
             fmt(r.get("ratio_peak_mem"), ".3f"),
             f"{fmt(r.get('original_first_step_s'), '.1f')} / {fmt(r.get('ours_first_step_s'), '.1f')}",
             r.get("original_mamba_path_short") or "", check, errors]
    return "| " + " | ".join(map(str, cells)) + " |"


def geometric_mean_note(rows: list) -> str:
    ratios = [r["ratio_step"] for r in rows if "ratio_step" in r]
    if not ratios:
        return "No row was timed on both sides."
    mean = math.exp(sum(math.log(v) for v in ratios) / len(ratios))
    return f"Step time, ours / original: geometric mean {mean:.3f} over {len(ratios)} rows."


def write_results(args, card: str, rows: list) -> list:
    meta = run_meta(args, card)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = "originals_" + card.lower().replace(" ", "_") + (f"_{args.tag}" if args.tag else "")
    (out / f"{name}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2, default=str))
    site = meta["mamba_site_packages"]
    lines = [f"# The authors' code vs ours: training step on {card}", "",
             f"torch {meta['torch']}, CUDA {meta['cuda']}, triton {meta.get('triton')}, mamba-ssm "
             f"{site.get('mamba_ssm', '-')}, causal-conv1d {site.get('causal_conv1d', '-')} (SegMamba's: "
             f"{meta['segmamba_causal_conv1d'].get('causal_conv1d', '-')}), commit {meta['commit']}, AMP {args.amp}, "
             f"torch.compile {args.compile}, scan options {meta['scan_options']}; {meta['notes']}.", "",
             "| plan | network | batch x patch | step ms original | step ms ours | ours / original | peak GB original "
             "| peak GB ours | ours / original | first step s (original / ours) | original's Mamba | outputs rel. err "
             "| errors |", "|" + "---|" * 13]
    lines += [table_line(r) for r in rows]
    paths = sorted({r["original_mamba_path"] for r in rows if r.get("original_mamba_path")})
    lines += ["", geometric_mean_note(rows), "",
              "`*`: the plan's patch rounded up to one the original takes; both sides run it. "
              "Outputs rel. err: the original's state dict in ours, one small batch-1 float32 forward (TF32 off), "
              "the largest relative error (Frobenius) over the outputs.", "", "Mamba paths of the originals:", ""]
    lines += [f"* {p}" for p in paths]
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    return lines


# ----------------------------------------------------------------------------------------------
# the snapshot parts to carry
# ----------------------------------------------------------------------------------------------
def pack_snapshots(args) -> None:
    """Copy the parts of ``--originals`` that ``--networks`` import (and mamba-ssm's Python) into ``--pack``."""
    src, dest = Path(args.originals), Path(args.pack)
    parts = sorted({p for n in args.networks for p in SNAPSHOT_PATHS[n]} | set(CPU_REFERENCE_PATHS))
    for part in parts:
        target = dest / part
        target.parent.mkdir(parents=True, exist_ok=True)
        if (src / part).is_dir():
            shutil.copytree(src / part, target, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
        else:
            shutil.copy2(src / part, target)
    print("\n".join(parts))
    print(subprocess.run(["du", "-sh", str(dest)], capture_output=True, text=True).stdout.strip())


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--networks", nargs="+", default=list(NETWORKS), choices=NETWORKS)
    ap.add_argument("--plans", nargs="+", default=list(PLANS))
    ap.add_argument("--amp", default=None, choices=["bf16", "fp16", "fp32"], help="default bf16; --cpu fp32")
    ap.add_argument("--compile", action="store_true", help="torch.compile both sides (first step s: compile time)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps (default 10; --cpu 1)")
    ap.add_argument("--warmup", type=int, default=None, help="warm-up steps (default 3; --cpu 0)")
    ap.add_argument("--repeats", type=int, default=None, help="original / ours pairs per row (default 2; --cpu 1)")
    ap.add_argument("--timeout", type=int, default=900, help="seconds per subprocess")
    ap.add_argument("--originals", type=Path, default=Path(".originals"), help="the authors' snapshots")
    ap.add_argument("--mamba-site", default=None, help="folder with a built mamba-ssm (put first on sys.path)")
    ap.add_argument("--check-outputs", action="store_true", help="per row: same weights, compare the outputs")
    ap.add_argument("--cpu", action="store_true", help="the plumbing on CPU: tiny shapes, one step")
    ap.add_argument("--pack", default=None, metavar="DEST", help="copy the snapshot parts to carry into DEST, exit")
    ap.add_argument("--tag", default="")
    ap.add_argument("--commit", default=None, help="our commit (default: git, else the stamps)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    ap.add_argument("--one", nargs=3, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--one-check", nargs=2, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    for key, gpu, cpu in (("amp", "bf16", "fp32"), ("steps", 10, 1), ("warmup", 3, 0), ("repeats", 2, 1)):
        if getattr(args, key) is None:
            setattr(args, key, cpu if args.cpu else gpu)
    args.originals = args.originals.resolve()
    return args


def main() -> None:
    args = parse_args()
    if args.one:
        return time_one_side(args)
    if args.one_check:
        return check_outputs(args)
    if args.pack:
        return pack_snapshots(args)
    if not args.cpu and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: --cpu runs the plumbing on CPU")
    card = "cpu" if args.cpu else torch.cuda.get_device_name(0)
    rows, lines = [], []
    for network, plan in rows_to_time(args):
        rows.append(time_row(args, network, plan))
        lines = write_results(args, card, rows)  # after every row: a crash keeps what was measured
        print(json.dumps(rows[-1], default=str), flush=True)
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
