"""``nnunet-mamba compare``: train several trainers at an equal budget on the same folds (and seeds) through the
stock ``nnUNetv2_train``, then tabulate nnU-Net's own validation metrics with paired differences against a
baseline. Resumable: finished runs are kept, interrupted ones continue from their checkpoint (``--c``), so a
comparison can be built up over several sittings."""
from __future__ import annotations

import json
import math
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional

from .stock_commands import dataset_name, run_logged, stock_command


def add_parser(sub) -> None:
    p = sub.add_parser("compare", help="train trainers side by side and compare their validation metrics",
                       description=__doc__)
    p.add_argument("-d", "--dataset", required=True, help="dataset ID or name (preprocessed with each arm's plans)")
    p.add_argument("-c", "--configuration", required=True, help="e.g. 3d_fullres, 2d")
    p.add_argument("-tr", "--trainers", nargs="+", required=True,
                   help="Trainer or Trainer@Plans, e.g. nnUNetTrainer_50epochs@nnUNetResEncUNetMPlans")
    p.add_argument("--baseline", default=None, help="the arm the others are compared with (default: the first)")
    p.add_argument("-f", "--folds", nargs="+", default=None,
                   help="default: every fold of the dataset (5; leave-one-out with fewer than 5 training cases)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("-o", "--out", default=None, help="folder for the runs and the report "
                   "(default: compare_<dataset>_<configuration>)")
    p.add_argument("-device", "--device", default=None, choices=("cuda", "cpu", "mps"),
                   help="default: cuda when available")
    p.add_argument("-j", "--jobs", type=int, default=1,
                   help="runs trained at the same time (on one GPU: small networks leave it mostly idle)")
    p.add_argument("--report-only", action="store_true", help="train nothing: tabulate the finished runs")
    p.add_argument("--dry-run", action="store_true", help="print what would run, and stop")
    p.set_defaults(func=run)


def _dataset_name(dataset: str) -> str:
    try:
        return dataset_name(dataset)
    except (RuntimeError, KeyError) as e:
        raise ValueError(f"dataset {dataset!r}: {e}") from None


def _check_plans(dataset: str, arms, configuration: str) -> None:
    pre = os.environ.get("nnUNet_preprocessed")
    if not pre:
        raise ValueError("nnUNet_preprocessed is not set: plan and preprocess the dataset first")
    for arm in arms:
        plans = Path(pre) / dataset / f"{arm.plans}.json"
        if not plans.is_file():
            raise FileNotFoundError(f"{plans}: missing; run nnUNetv2_plan_and_preprocess for {arm.label}")
        if configuration not in json.loads(plans.read_text()).get("configurations", {}):
            raise ValueError(f"{plans}: has no configuration {configuration!r}")


def _folds(dataset: str, asked, training: bool) -> list[str]:
    """The folds asked for, else all of the dataset's; before training, a dataset of fewer than 5 cases gets a
    leave-one-out split (nnU-Net cannot make its 5 folds)."""
    from nnunet_mamba.comparison.splits import NNUNET_FOLDS, fold_count
    pre = os.environ.get("nnUNet_preprocessed")
    folder = Path(pre) / dataset if pre else None
    if folder is None or not folder.is_dir() or (not training and not (folder / "splits_final.json").is_file()):
        return asked or [str(f) for f in range(NNUNET_FOLDS)]
    n, source = fold_count(folder)
    folds = asked or [str(f) for f in range(n)]
    beyond = [f for f in folds if f != "all" and (not f.isdigit() or int(f) >= n)]
    if beyond:
        raise ValueError(f"fold(s) {' '.join(beyond)} beyond the dataset's {n} ({source}); "
                         "nnU-Net would train them on a random 80:20 split")
    print(f"folds {' '.join(folds)} of {n}: {source}", flush=True)
    return folds


TRAINED_WITH = "trained_with.json"  # per run folder: the card and versions it was trained with


def _environment(device: str) -> dict:
    """The card and software versions of this machine."""
    import nnunetv2
    import torch
    from importlib.metadata import version
    card = torch.cuda.get_device_name(0) if device == "cuda" and torch.cuda.is_available() else "CPU"
    return {"device": card, "nnunet-mamba": version("nnunet-mamba"),
            "nnunetv2": getattr(nnunetv2, "__version__", None) or version("nnunetv2"), "torch": torch.__version__}


def _provenance(dataset: str, configuration: str, folds, seeds, run_folders) -> dict:
    """What the table is made of: the runs' own cards and versions (as recorded when compare trained them)."""
    recorded = [json.loads((f / TRAINED_WITH).read_text()) for f in run_folders if (f / TRAINED_WITH).is_file()]
    env = {k: ", ".join(sorted({str(r.get(k)) for r in recorded})) or "not recorded"
           for k in ("device", "nnunet-mamba", "nnunetv2", "torch")}
    return {"dataset": dataset, "configuration": configuration, "folds": " ".join(folds),
            "seeds": " ".join(map(str, seeds)), **env, "date": time.strftime("%Y-%m-%d")}


def _progress_line(line: str) -> bool:
    """The training output lines worth echoing: epochs, validation figures, errors."""
    return any(w in line for w in ("Epoch ", "Pseudo dice", "val_auc", "Mean Validation", "Error", "error"))


def _train(todo, out: Path, jobs: int, environment: dict) -> list[str]:
    """Train the runs, ``jobs`` at a time (each with its share of the data-augmentation workers unless
    ``nnUNet_n_proc_DA`` is set); returns the tags of the failed ones."""
    env = dict(os.environ)
    if jobs > 1 and "nnUNet_n_proc_DA" not in env:
        env["nnUNet_n_proc_DA"] = str(max(1, (os.cpu_count() or 1) // jobs - 1))

    def train(item) -> Optional[str]:
        i, tag, r, cmd, folder = item
        log = out / "logs" / f"{r.arm.label.replace('@', '__')}_fold{r.fold}_seed{r.seed}.log"
        print(f"{tag}: training; log {log}", flush=True)
        t0 = time.time()
        rc = run_logged(cmd, r.env(out, env), log, echo=_progress_line, prefix=f"    [{i}] " if jobs > 1 else "    ")
        if rc != 0:
            print(f"{tag}: failed (exit code {rc}); log: {log}", flush=True)
            return tag
        seconds = time.time() - t0
        if folder.is_dir():
            record = dict(environment, seconds=round(seconds), date=time.strftime("%Y-%m-%d"))
            (folder / TRAINED_WITH).write_text(json.dumps(record, indent=1))
        print(f"{tag}: finished in {seconds:.0f} s", flush=True)
        return None

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        return [tag for tag in pool.map(train, todo) if tag]


def run(args) -> int:
    import torch
    from nnunet_mamba.comparison.metrics import METRICS, kind_of, observations_of, read_summary
    from nnunet_mamba.comparison.report import build_report, markdown, write
    from nnunet_mamba.comparison.runs import Arm, all_runs

    arms = [Arm.parse(t) for t in args.trainers]
    labels = [a.label for a in arms]
    if len(set(labels)) != len(labels):
        raise ValueError(f"an arm is named twice: {labels}")
    if args.jobs < 1:
        raise ValueError(f"--jobs must be 1 or more, got {args.jobs}")
    baseline = args.baseline or labels[0]
    if baseline not in labels:
        raise ValueError(f"--baseline {baseline!r} is not one of {labels}")
    dataset = _dataset_name(args.dataset)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    out = Path(args.out or f"compare_{dataset}_{args.configuration}").resolve()
    if not args.report_only:
        _check_plans(dataset, arms, args.configuration)
    args.folds = _folds(dataset, args.folds, training=not args.report_only)
    runs = all_runs(arms, args.folds, args.seeds)
    todo = []
    for i, r in enumerate(runs, 1):
        state = r.state(out, dataset, args.configuration)
        tag = f"[{i}/{len(runs)}] {r.arm.label} fold {r.fold} seed {r.seed}"
        if state == "done" or args.report_only:
            print(f"{tag}: {state}", flush=True)
            continue
        cmd = r.command(stock_command("nnUNetv2_train"), dataset, args.configuration, device, state)
        print(f"{tag}: {'resuming' if state == 'resume' else 'to train'}\n  $ {' '.join(cmd)}", flush=True)
        todo.append((i, tag, r, cmd, r.folder(out, dataset, args.configuration)))
    if args.dry_run:
        return 0
    failed = _train(todo, out, args.jobs, _environment(device))

    observations, run_means, kind, finished = {}, {}, None, []
    for r in runs:
        if not r.finished(out, dataset, args.configuration):
            continue
        finished.append(r.folder(out, dataset, args.configuration))
        path = finished[-1] / "validation" / "summary.json"
        summary = read_summary(path)
        this = kind_of(summary)
        if kind and this != kind:
            raise ValueError(f"{path}: a {this} summary among {kind} ones")
        kind = this
        obs = observations_of(summary, kind, r.seed, r.fold)
        observations.setdefault(r.arm.label, {}).update(obs)
        for m in METRICS[kind]:
            values = [o[m] for o in obs.values() if not math.isnan(o[m])]
            run_means.setdefault(m, {}).setdefault(r.arm.label, []).append(
                float(sum(values) / len(values)) if values else math.nan)
    if not observations:
        print("no finished runs to compare yet", flush=True)
        return 1 if failed else 0
    metrics = list(METRICS[kind])
    title = (f"{dataset} {args.configuration}: validation {metrics[0]}, {len(args.folds)} fold(s) x "
             f"{len(args.seeds)} seed(s)")
    reports = []
    for m in metrics:
        reports.append(build_report(observations, run_means[m], m, baseline,
                                    title if m == metrics[0] else f"{dataset}: {m}"))
    provenance = _provenance(dataset, args.configuration, args.folds, args.seeds, finished)
    files = write(reports, observations, provenance, out)
    print("\n" + "\n".join(markdown(r, provenance) for r in reports))
    print("wrote " + ", ".join(str(f) for f in files))
    if failed:
        print(f"{len(failed)} run(s) failed: " + "; ".join(failed), file=sys.stderr)
        return 1
    return 0
