"""Bisect the Mamba restorer's NaN loss (fp16 AMP, H100) over scan backend x precision, on one GPU.

    python benchmarks/restoration_nan_bisect.py [--dataset 604] [--random] [--budget-s 150] [--out $OUT]
    python benchmarks/restoration_nan_bisect.py --cpu-smoke --random      # tiny, reference scan, CPU (pipeline check)
    python benchmarks/restoration_nan_bisect.py --replay $OUT/scan_inputs_*.pt   # rerun a saved scan, both backends

The network, loss, optimiser (AdamW, the trainer's lr and weight decay, gradient clipping at 12) and batches are the
trainer's: ``MambaRestorationTrainer`` on ``$nnUNet_preprocessed/Dataset<ID>_*`` (nnU-Net's augmenting loader,
``_pair``: degraded/clean divided by the case scale), or, with ``--random``, the network built from the committed
Hippocampus plans (``benchmarks/results/plans/hippocampus``) fed with random Rician-noisy smooth volumes.

Phase A trains ``triton`` x {fp16 + GradScaler (nnU-Net's AMP; the mixer runs in bf16 inside it), bf16, fp32} from
the same initial weights. Every step checks the loss; the first non-finite loss (or, without a scaler, gradient) is
replayed on the same weights and batch with hooks on every module: the first module whose output (forward) or output
gradient (backward) is non-finite is reported, the inputs of every scan call of that replay are saved to
``$OUT/scan_inputs_<setting>.pt`` (for ``--replay``), and the same weights + batch are run through all six settings
({triton, reference} x {fp16, bf16, fp32}: which of them fail on it?). Phase B trains the ``reference`` backend in the
three precisions with the remaining time, starting from the fp16 run's last finite snapshot (weights + optimiser,
taken every 25 steps). Max |activation| per mixer (output) and max |u|, |delta| of its scan are tracked on the device.
Prints a compact table and writes ``$OUT/nan_bisect.json``.
"""
from __future__ import annotations

import argparse
import contextvars
import copy
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from nnunet_mamba.kernels import scan_options

REPO = Path(__file__).resolve().parents[1]
PLANS = REPO / "benchmarks" / "results" / "plans" / "hippocampus" / "nnUNetMambaPlans_mamba_resenc_8G.json"
PRECISIONS = ("fp16", "bf16", "fp32")
_current_mixer = contextvars.ContextVar("mixer", default="?")


# --------------------------------------------------------------------------------------------- network and data
def trainer_and_batches(args, device):
    """(trainer class, network factory, batch iterator yielding (x, y) normalised pairs on the CPU)."""
    from nnunet_mamba.trainers import restoration as R
    cls = R.MambaRestorationTrainer_ci if args.cpu_smoke else R.MambaRestorationTrainer
    if args.random:
        from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
        pm = PlansManager(json.loads(PLANS.read_text()))
        cm = pm.get_configuration("3d_fullres")
        patch = args.patch or cm.patch_size
        rng = np.random.default_rng(0)

        def batches():
            from scipy.ndimage import gaussian_filter
            while True:
                clean = np.stack([gaussian_filter(rng.random(patch), 2) for _ in range(args.batch)]).astype(np.float32)
                clean = (clean - clean.min()) / (np.ptp(clean) + 1e-8)
                s = 0.05
                noisy = np.sqrt((clean + rng.normal(0, s, clean.shape)) ** 2 + rng.normal(0, s, clean.shape) ** 2)
                yield torch.from_numpy(noisy.astype(np.float32))[:, None], torch.from_numpy(clean)[:, None]
        return cls, (lambda: cls.build_network_architecture(pm, cm, 1, 1)), batches(), f"random, patch {list(patch)}"
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
    from nnunetv2.paths import nnUNet_preprocessed
    name = maybe_convert_to_dataset_name(args.dataset)
    folder = os.path.join(nnUNet_preprocessed, name)
    plans = load_json(os.path.join(folder, "nnUNetPlans.json"))
    plans["continue_training"] = False  # nnU-Net 2.8 run_training sets this before building a trainer
    trainer = cls(plans, "3d_fullres", 0, load_json(os.path.join(folder, "dataset.json")), device)
    trainer.initialize()
    if args.batch:
        trainer.batch_size = args.batch
    dl_train, _ = trainer.get_dataloaders()

    def batches():
        while True:
            yield trainer._pair(next(dl_train))

    def factory():
        return cls.build_network_architecture(trainer.plans_manager, trainer.configuration_manager, 1, 1)
    return cls, factory, batches(), (f"{name}, patch {list(trainer.configuration_manager.patch_size)}, "
                                     f"batch {trainer.batch_size}")


def autocast(device, precision):
    if precision == "fp32":
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=torch.float16 if precision == "fp16" else torch.bfloat16)


# --------------------------------------------------------------------------------------------- instrumentation
class Probe:
    """Device-side running max |activation| per mixer; on replay, first non-finite module (fwd/bwd) and scan inputs."""

    def __init__(self, net):
        from nnunet_mamba.layers import mixer as M
        self.net, self.maxes, self.replay, self.events, self.scans = net, {}, False, [], []
        self.mixer_names = {m: n for n, m in net.named_modules() if isinstance(m, M.MultiDirMamba)}
        for m, n in self.mixer_names.items():
            m.register_forward_pre_hook(lambda mod, inp, n=n: _current_mixer.set(n) and None)
            m.register_forward_hook(lambda mod, inp, out, n=n: self._track(f"{n}:out", out))
        for n, m in net.named_modules():
            if len(list(m.children())) == 0 or m in self.mixer_names:
                m.register_forward_hook(lambda mod, inp, out, n=n: self._replay_hook(n, inp, out))

    def _track(self, key, t):
        v = t.detach().abs().amax().float()
        self.maxes[key] = torch.maximum(self.maxes[key], v) if key in self.maxes else v

    def _replay_hook(self, name, inp, out):
        if not self.replay or not isinstance(out, torch.Tensor):
            return
        ins_ok = all(bool(torch.isfinite(i).all()) for i in inp
                     if isinstance(i, torch.Tensor) and i.is_floating_point())
        if not bool(torch.isfinite(out).all()):
            self.events.append(("forward", name, ins_ok, float(out.detach().float().abs().nan_to_num(0, 0, 0).max())))
        if out.requires_grad:
            out.register_hook(lambda g, name=name: self.events.append(("backward", name, None, None))
                              if not bool(torch.isfinite(g).all()) else None)

    def scan(self, fn):
        def wrapped(u, delta, A, B, C, D=None, z=None, delta_bias=None, **kw):
            name = _current_mixer.get()
            self._track(f"{name}:|u|", u)
            self._track(f"{name}:|delta|", delta)
            out = fn(u, delta, A, B, C, D, z, delta_bias, **kw)
            if self.replay:
                args = dict(u=u, delta=delta, A=A, B=B, C=C, D=D, z=z, delta_bias=delta_bias)
                self.scans.append({"mixer": name, "grid": list(kw["grid"]),
                                   "directions": [(d.order, d.reverse) for d in kw["directions"]],
                                   "out_finite": bool(torch.isfinite(out).all()),
                                   "inputs_finite": {k: bool(torch.isfinite(v).all()) for k, v in args.items()
                                                     if v is not None},
                                   "tensors": {k: v.detach().cpu() for k, v in args.items() if v is not None}})
            return out
        return wrapped

    def summary(self):
        return {k: round(float(v), 3) for k, v in sorted(self.maxes.items())}


def step(net, opt, scaler, loss_fn, x, y, device, precision, clip=12.0):
    """One trainer-like training step. Returns (loss finite, grad finite, loss value, stepped)."""
    opt.zero_grad(set_to_none=True)
    with autocast(device, precision):
        loss = loss_fn(net(x), y)
    loss_ok = bool(torch.isfinite(loss.detach()))
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        norm = torch.nn.utils.clip_grad_norm_(net.parameters(), clip)
        scale = scaler.get_scale()
        scaler.step(opt)
        scaler.update()
        return loss_ok, bool(torch.isfinite(norm)), float(loss.detach()), scaler.get_scale() >= scale
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(net.parameters(), clip)
    grad_ok = bool(torch.isfinite(norm))
    if loss_ok and grad_ok:
        opt.step()
    return loss_ok, grad_ok, float(loss.detach()), loss_ok and grad_ok


def replay(net, probe, loss_fn, x, y, device, precision):
    """Forward + backward (unscaled: no GradScaler overflow) of one batch with every hook armed: the first
    non-finite module output / output gradient, the scan calls' inputs."""
    probe.replay, probe.events, probe.scans = True, [], []
    net.zero_grad(set_to_none=True)
    with autocast(device, precision):
        loss = loss_fn(net(x), y)
    loss.backward()
    probe.replay = False
    bad_params = [n for n, q in net.named_parameters() if q.grad is not None and not bool(torch.isfinite(q.grad).all())]
    fwd = [e for e in probe.events if e[0] == "forward"]
    bwd = [e for e in probe.events if e[0] == "backward"]
    net.zero_grad(set_to_none=True)
    return {"loss": float(loss.detach()), "reproduced": not bool(torch.isfinite(loss.detach())),
            "first_forward": fwd[0] if fwd else None, "first_backward": bwd[0] if bwd else None,
            "nonfinite_param_grads": bad_params[:8], "n_nonfinite_param_grads": len(bad_params),
            "scans": [{k: v for k, v in s.items() if k != "tensors"} for s in probe.scans]}


# --------------------------------------------------------------------------------------------- runs
def train_setting(tag, backend, precision, *rest, **kw):
    """One setting's training loop with its scan backend (``scan_options(backend=...)``)."""
    with scan_options(backend=backend):
        return _train_setting(tag, backend, precision, *rest, **kw)


def _train_setting(tag, backend, precision, factory, batches, loss_fn, lr, wd, device, args, deadline, start=None):
    from nnunet_mamba.layers import mixer as M
    torch.manual_seed(0)
    net = factory().to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=wd)
    if start is not None:
        net.load_state_dict(start["net"])
        opt.load_state_dict(start["opt"])
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" and device.type == "cuda" else None
    probe = Probe(net)
    orig = M.multidir_selective_scan
    M.multidir_selective_scan = probe.scan(orig)
    row = {"setting": tag, "backend": backend, "precision": precision, "steps": 0, "first_nonfinite_step": None,
           "nonfinite_loss_steps": 0, "nonfinite_grad_steps": 0, "scaler_backoffs": 0, "loss_first": None,
           "loss_last": None, "replay": None, "from_snapshot": start is not None}
    snapshot, event = None, None
    t0 = time.time()
    try:
        for i in range(args.steps):
            if time.time() > deadline:
                break
            x, y = next(batches)
            x, y = x.to(device), y.to(device)
            if i == args.inject_nan_step:  # smoke test of the replay path: a NaN in the input
                x = x.clone()
                x.view(-1)[0] = float("nan")
            if i % 25 == 0 and event is None:
                snapshot = {"net": copy.deepcopy(net.state_dict()), "opt": copy.deepcopy(opt.state_dict()), "step": i}
            before = {k: v.detach().clone() for k, v in net.state_dict().items()} if event is None else None
            loss_ok, grad_ok, loss, stepped = step(net, opt, scaler, loss_fn, x, y, device, precision)
            row["steps"] = i + 1
            row["loss_first"] = row["loss_first"] if row["loss_first"] is not None else round(loss, 5)
            row["loss_last"] = round(loss, 5) if loss_ok else row["loss_last"]
            row["nonfinite_loss_steps"] += not loss_ok
            row["nonfinite_grad_steps"] += loss_ok and not grad_ok
            row["scaler_backoffs"] += scaler is not None and not stepped
            bad = not loss_ok or (scaler is None and not grad_ok)
            if bad and event is None:
                row["first_nonfinite_step"] = i
                after = {k: v.detach().clone() for k, v in net.state_dict().items()}
                net.load_state_dict(before)  # replay on the weights that failed (the step was skipped anyway)
                row["replay"] = replay(net, probe, loss_fn, x, y, device, precision)
                torch.save({"setting": tag, "step": i, "scans": probe.scans}, Path(args.out) / f"scan_inputs_{tag}.pt")
                event = {"weights": before, "x": x.cpu(), "y": y.cpu(), "setting": tag, "step": i}
                net.load_state_dict(after)
                print(f"  {tag}: non-finite at step {i}: "
                      f"{row['replay']['first_forward'] or row['replay']['first_backward']}", flush=True)
            if row["nonfinite_loss_steps"] >= args.max_nonfinite:
                break
            if args.progress and (i + 1) % args.progress == 0:
                print(f"  {tag} step {i + 1}: loss {loss:.4f} ({time.time() - t0:.0f} s)", flush=True)
    finally:
        M.multidir_selective_scan = orig
    if device.type == "cuda":
        torch.cuda.synchronize()
    row["seconds"] = round(time.time() - t0, 1)
    row["s_per_step"] = round(row["seconds"] / max(1, row["steps"]), 3)
    row["max_abs"] = probe.summary()
    return row, event, snapshot


def cross_check(event, factory, loss_fn, device, settings):
    """The failing weights + batch through every setting: loss finite? gradient finite?"""
    out = {}
    x, y = event["x"].to(device), event["y"].to(device)
    for backend, precision in settings:
        net = factory().to(device)
        net.load_state_dict(event["weights"])
        net.zero_grad(set_to_none=True)
        with scan_options(backend=backend), autocast(device, precision):
            loss = loss_fn(net(x), y)
        loss.backward()
        gfin = all(bool(torch.isfinite(p.grad).all()) for p in net.parameters() if p.grad is not None)
        out[f"{backend}:{precision}"] = {"loss": float(loss.detach()), "loss_finite": bool(torch.isfinite(loss)),
                                         "grad_finite": gfin}
    return out


def replay_file(path):
    """Rerun saved scan calls with every available backend, fp32 and their own dtype: finite? max difference?"""
    from nnunet_mamba.kernels import multidir_selective_scan, ScanDirection
    saved = torch.load(path, weights_only=False)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    backends = ["reference"] + (["triton"] if device.type == "cuda" else [])
    for i, s in enumerate(saved["scans"]):
        t = {k: v.to(device) for k, v in s["tensors"].items()}
        dirs = [ScanDirection(tuple(a), bool(r)) for a, r in s["directions"]]
        res = {}
        for b in backends:
            o = multidir_selective_scan(t["u"], t["delta"], t["A"], t["B"], t["C"], t.get("D"), t.get("z"),
                                        t.get("delta_bias"), grid=s["grid"], directions=dirs, backend=b)
            res[b] = o.float()
        line = {b: bool(torch.isfinite(o).all()) for b, o in res.items()}
        if len(res) == 2:
            line["max_abs_diff"] = float((res["triton"] - res["reference"]).abs().nan_to_num(float("inf")).max())
        print(f"{saved['setting']} step {saved['step']} scan {i} ({s['mixer']}, grid {s['grid']}): "
              f"inputs finite {s['inputs_finite']}, recorded out finite {s['out_finite']}; rerun {line}")


def table(rows):
    head = ("setting", "steps", "s/step", "1st bad", "bad loss", "bad grad", "backoffs", "loss 1st->last",
            "first non-finite module", "max|mixer out|")
    lines = [" | ".join(head), "|".join("---" for _ in head)]
    for r in rows:
        rp = r["replay"] or {}
        first = rp.get("first_forward") or rp.get("first_backward")
        if first:
            first = f"{first[0]} {first[1]}" + ("" if rp["reproduced"] else " (replay loss finite)")
        elif rp.get("nonfinite_param_grads"):
            first = f"grad of {rp['nonfinite_param_grads'][0]} (+{rp['n_nonfinite_param_grads'] - 1})"
        else:
            first = "replay found none" if rp else "-"
        outs = [v for k, v in r["max_abs"].items() if k.endswith(":out")]
        lines.append(" | ".join(str(v) for v in (
            r["setting"] + (" (from fp16 snapshot)" if r["from_snapshot"] else ""), r["steps"], r["s_per_step"],
            r["first_nonfinite_step"], r["nonfinite_loss_steps"], r["nonfinite_grad_steps"], r["scaler_backoffs"],
            f"{r['loss_first']} -> {r['loss_last']}", first, max(outs) if outs else "-")))
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="604")
    p.add_argument("--random", action="store_true", help="random volumes, network from the committed plans")
    p.add_argument("--batch", type=int, default=None, help="default: the plans' (random: 7)")
    p.add_argument("--patch", type=int, nargs="+", default=None, help="random mode only")
    p.add_argument("--steps", type=int, default=450, help="most steps per setting")
    p.add_argument("--budget-s", type=float, default=150, help="seconds for all training loops together")
    p.add_argument("--max-nonfinite", type=int, default=20, help="stop a setting after this many NaN losses")
    p.add_argument("--progress", type=int, default=100)
    p.add_argument("--out", default=os.environ.get("OUT", "/tmp/out"))
    p.add_argument("--cpu-smoke", action="store_true", help="CPU, reference scan, _ci trainer, a few steps")
    p.add_argument("--inject-nan-step", type=int, default=-1, help="test the replay path: NaN input at this step")
    p.add_argument("--replay", default=None, help="a scan_inputs_*.pt file to rerun")
    args = p.parse_args(argv)
    if args.replay:
        return replay_file(args.replay)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    if args.cpu_smoke:
        torch.set_num_threads(1)
        device = torch.device("cpu")
        args.batch = args.batch or 2
        args.patch = args.patch or [16, 24, 16]
        args.steps = min(args.steps, 6)
        args.progress = 0
        phase_a = [("reference", "fp32"), ("reference", "bf16")]
        phase_b, checks = [], [("reference", "fp32"), ("reference", "bf16")]
    else:
        if not torch.cuda.is_available():
            sys.exit("needs a CUDA GPU (or --cpu-smoke)")
        device = torch.device("cuda")
        args.batch = args.batch or (7 if args.random else None)
        phase_a = [("triton", pr) for pr in PRECISIONS]
        phase_b = [("reference", pr) for pr in PRECISIONS]
        checks = [(b, pr) for b in ("triton", "reference") for pr in PRECISIONS]
    cls, factory, batches, what = trainer_and_batches(args, device)
    from nnunet_mamba.restoration.losses import RestorationLoss
    loss_fn = RestorationLoss(cls.ssim_weight)
    lr, wd = cls.restoration_lr, 3e-5
    print(f"{cls.__name__} on {what}; {device}; torch {torch.__version__}", flush=True)
    t_start = time.time()
    budget_a = args.budget_s * (0.75 if phase_b else 1.0)
    rows, events, fp16_snapshot = [], [], None
    for i, (backend, precision) in enumerate(phase_a):
        deadline = time.time() + (t_start + budget_a - time.time()) / (len(phase_a) - i)
        row, event, snap = train_setting(f"{backend}:{precision}", backend, precision, factory, batches, loss_fn,
                                         lr, wd, device, args, deadline)
        rows.append(row)
        events += [event] if event else []
        if precision == "fp16":
            fp16_snapshot = snap
        print(f"  done {row['setting']}: {row['steps']} steps, {row['seconds']} s", flush=True)
    for i, (backend, precision) in enumerate(phase_b):
        deadline = time.time() + (t_start + args.budget_s - time.time()) / (len(phase_b) - i)
        row, event, _ = train_setting(f"{backend}:{precision}", backend, precision, factory, batches, loss_fn, lr, wd,
                                      device, args, deadline, start=fp16_snapshot)
        rows.append(row)
        events += [event] if event else []
        print(f"  done {row['setting']}: {row['steps']} steps, {row['seconds']} s", flush=True)
    cross = {e["setting"]: {"step": e["step"], "results": cross_check(e, factory, loss_fn, device, checks)}
             for e in events}
    result = {"what": what, "device": str(torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu"),
              "torch": torch.__version__, "rows": rows, "cross_check_on_failing_weights_and_batch": cross,
              "seconds_total": round(time.time() - t_start, 1)}
    (Path(args.out) / "nan_bisect.json").write_text(json.dumps(result, indent=1, default=str))
    print(table(rows))
    for setting, c in cross.items():
        print(f"failing weights + batch of {setting} (step {c['step']}): " + ", ".join(
            f"{k} loss {'ok' if v['loss_finite'] else 'NaN'} grad {'ok' if v['grad_finite'] else 'bad'}"
            for k, v in c["results"].items()))
    print(f"total {result['seconds_total']} s; wrote {args.out}/nan_bisect.json")


if __name__ == "__main__":
    main()
