"""``nnunet-mamba demo``: the whole pipeline on the shipped MSD Hippocampus subset, through the
stock nnU-Net commands: convert -> plan and preprocess -> train a Mamba network from scratch ->
predict the held-out cases -> evaluate (Dice per label) -> pictures of the segmentations.

The trainer and configuration are ones a user can pick for their own data: ``MambaTrainer_cpu`` on the
2d configuration without a GPU (seeded: the same Dice on every run), ``MambaTrainer_10epochs`` on the 2d
configuration with one."""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from .stock_commands import run_logged, stock_command

DATASET_ID = 904
DATASET_NAME = "HippocampusDemo"
CONFIG = "2d"
TRAINER = {"cpu": "MambaTrainer_cpu", "cuda": "MambaTrainer_10epochs"}
SEED = "0"
LABEL_COLOURS = ((1.0, 0.2, 0.2), (0.2, 0.6, 1.0), (1.0, 0.85, 0.1), (0.3, 0.9, 0.3))


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="run the full pipeline on the shipped Hippocampus subset")
    p.add_argument("--workdir", default="nnunet_mamba_demo", help="folder for nnUNet_raw/preprocessed/results")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--trainer", default=None, help="default: MambaTrainer_cpu on CPU, MambaTrainer_10epochs on a GPU")
    p.add_argument("--fold", default="0")
    p.set_defaults(func=run)


def _step(title: str, cmd: list[str], env: dict, log: Path) -> float:
    print(f"\n=== {title}\n$ {' '.join(cmd)}", flush=True)
    t0 = time.time()
    rc = run_logged(cmd, env, log, echo=str.strip)
    if rc != 0:
        raise RuntimeError(f"step '{title}' failed with exit code {rc}; full log: {log}")
    dt = time.time() - t0
    print(f"--- {title}: {dt:.0f} s", flush=True)
    return dt


def run(args) -> int:
    import torch
    from nnunet_mamba._autoload import register
    from nnunet_mamba.data import HIPPOCAMPUS_DEMO
    from nnunet_mamba.dataset_conversion.msd import convert_msd

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    trainer = args.trainer or TRAINER[device]
    work = Path(args.workdir).resolve()
    raw, pre, res = work / "nnUNet_raw", work / "nnUNet_preprocessed", work / "nnUNet_results"
    for d in (raw, pre, res):
        d.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(res / f"Dataset{DATASET_ID}_{DATASET_NAME}", ignore_errors=True)
    log = work / "demo.log"
    log.write_text("")
    register()  # the .pth start-up hook normally did this already; harmless if so
    env = dict(os.environ, nnUNet_raw=str(raw), nnUNet_preprocessed=str(pre), nnUNet_results=str(res),
               PYTHONUNBUFFERED="1")
    train_env = dict(env, NNUNET_MAMBA_SEED=os.environ.get("NNUNET_MAMBA_SEED", SEED))
    if device == "cpu":  # 2-core friendly and deterministic: augmentation in the training process, one export worker
        train_env.setdefault("nnUNet_n_proc_DA", "0")  # (the planner needs >= 1: training only)
        train_env.setdefault("nnUNet_def_n_proc", "1")
    times = {}
    t_start = time.time()

    print(f"=== convert the shipped MSD subset ({HIPPOCAMPUS_DEMO}) on {device}", flush=True)
    t0 = time.time()
    ds = convert_msd(HIPPOCAMPUS_DEMO, DATASET_ID, raw, DATASET_NAME, overwrite=True)
    times["convert"] = time.time() - t0
    print(f"--- wrote {ds} ({times['convert']:.0f} s)")

    times["plan+preprocess"] = _step("plan and preprocess", [
        stock_command("nnUNetv2_plan_and_preprocess"), "-d", str(DATASET_ID), "-c", CONFIG, "-np", "2", "-npfp", "2",
        "--verify_dataset_integrity"], env, log)
    times["train"] = _step(f"train {trainer}", [
        stock_command("nnUNetv2_train"), str(DATASET_ID), CONFIG, args.fold, "-tr", trainer, "-device", device],
        train_env, log)
    pred = work / "predictions"
    shutil.rmtree(pred, ignore_errors=True)
    times["predict"] = _step("predict the held-out cases", [
        stock_command("nnUNetv2_predict"), "-i", str(ds / "imagesTs"), "-o", str(pred), "-d", str(DATASET_ID),
        "-c", CONFIG, "-f", args.fold, "-tr", trainer, "-device", device, "-npp", "1", "-nps", "1"], env, log)

    t0 = time.time()
    labels = label_names(ds / "dataset.json")
    summary = evaluate(ds / "labelsTs", pred, work / "evaluation.json", list(labels))
    times["evaluate"] = time.time() - t0
    picture = work / "segmentations.png"
    render_overlays(ds / "imagesTs", ds / "labelsTs", pred, picture, labels)
    fold_dir = res / f"Dataset{DATASET_ID}_{DATASET_NAME}" / f"{trainer}__nnUNetPlans__{CONFIG}" / f"fold_{args.fold}"
    total = time.time() - t_start

    dice = {name: summary["mean"][str(label)]["Dice"] for label, name in labels.items()}
    print("\n=== Dice per label on the held-out cases (nnU-Net's evaluation)")
    for label, name in labels.items():
        print(f"  label {label} ({name}): Dice {dice[name]:.4f}")
    print(f"  foreground mean: Dice {summary['foreground_mean']['Dice']:.4f}")
    print("\n=== time per step: " + ", ".join(f"{k} {v:.0f} s" for k, v in times.items()) + f"; total {total:.0f} s")
    print(f"pictures: {picture} (segmentations), {fold_dir / 'progress.png'} (training curves)")
    (work / "demo_summary.json").write_text(json.dumps({
        "device": device, "trainer": trainer, "configuration": CONFIG, "seconds": times, "total_seconds": total,
        "mean_dice": summary["foreground_mean"]["Dice"], "dice_per_label": dice}, indent=2))
    print("\n=== the full-schedule model on your own data (nnU-Net raw format, dataset ID D):")
    print("  nnUNetv2_plan_and_preprocess -d D --verify_dataset_integrity && "
          "nnUNetv2_train D 3d_fullres 0 -tr MambaTrainer")
    return 0


def label_names(dataset_json: Path) -> dict[int, str]:
    """Foreground labels of an nnU-Net dataset.json: {value: name}."""
    labels = json.loads(dataset_json.read_text())["labels"]
    return {int(v): k for k, v in labels.items() if int(v) != 0}


def evaluate(gt_dir: Path, pred_dir: Path, out_json: Path, labels: list[int]) -> dict:
    """nnU-Net's own metric code on a folder pair; returns its summary dict."""
    from nnunetv2.evaluation.evaluate_predictions import compute_metrics_on_folder_simple
    compute_metrics_on_folder_simple(str(gt_dir), str(pred_dir), labels, str(out_json), num_processes=1,
                                     chill=False)
    return json.loads(out_json.read_text())


def render_overlays(img_dir: Path, gt_dir: Path, pred_dir: Path, out_png: Path, labels: dict[int, str],
                    n_cases: int = 4) -> None:
    """The slice with the most ground-truth foreground of a few cases: image, ground truth, prediction, with a
    legend of the label names and colours."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.patches
    import numpy as np
    import SimpleITK as sitk
    cases = sorted(p.name for p in gt_dir.glob("*.nii.gz"))[:n_cases]
    fig, axes = plt.subplots(len(cases), 3, figsize=(7.5, 2.6 * len(cases)), squeeze=False)
    if len(labels) > len(LABEL_COLOURS):
        raise ValueError(f"render_overlays colours up to {len(LABEL_COLOURS)} labels, got {len(labels)}")
    top = max(labels)
    colours = [(0, 0, 0, 0)] * (top + 1)
    for (label, _), rgb in zip(sorted(labels.items()), LABEL_COLOURS):
        colours[label] = (*rgb, 0.55)
    cmap = matplotlib.colors.ListedColormap(colours)
    for row, case in zip(axes, cases):
        img = sitk.GetArrayFromImage(sitk.ReadImage(str(img_dir / case.replace(".nii.gz", "_0000.nii.gz"))))
        gt = sitk.GetArrayFromImage(sitk.ReadImage(str(gt_dir / case)))
        pr = sitk.GetArrayFromImage(sitk.ReadImage(str(pred_dir / case)))
        z = int(np.argmax((gt > 0).sum((1, 2))))
        for ax, seg, title in zip(row, (None, gt, pr), ("image", "ground truth", "prediction")):
            ax.imshow(img[z], cmap="gray")
            if seg is not None:
                ax.imshow(seg[z], cmap=cmap, vmin=-0.5, vmax=top + 0.5, interpolation="nearest")
            ax.set_title(f"{case[:-7]} {title}", fontsize=8)
            ax.axis("off")
    handles = [matplotlib.patches.Patch(color=colours[label][:3], label=f"{label}: {name}")
               for label, name in sorted(labels.items())]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
