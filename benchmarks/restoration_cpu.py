"""Train and validate the restorers on CPU when no GPU is at hand (a benchmark run, not a test).

The full-width networks of ``MambaRestorationTrainer`` / ``NoMambaRestorationTrainer`` (the plans' widths, as on
GPU) with a CPU-sized schedule: ``--batch`` cases per iteration, ``--epochs`` x ``--iterations``. The subclasses
live here, not in the package: they are a measurement setting, not a product trainer. Training goes through
nnU-Net's own ``run_training`` loop and the trainers' final validation (every validation case, sliding windows
with test-time mirroring), so the results have the GPU runs' layout; packed as ``<trainer>_val.tgz`` (and
``<trainer>_unseen.tgz`` after ``nnunet-mamba restore``) for ``restoration_report.py report --gpu``.

    nnUNet_raw=... nnUNet_preprocessed=... nnUNet_results=... \\
    python benchmarks/restoration_cpu.py -d 607 --trainers Mamba NoMamba --epochs 4 --iterations 100 --batch 4 \\
        --unseen .gpu_data/restoration_unseen10 --out /tmp/res_cpu
"""
from __future__ import annotations

import argparse
import sys
import tarfile
import time
from pathlib import Path

import torch


def make_trainer_class(kind: str, epochs: int, iterations: int, batch: int):
    from nnunet_mamba.trainers.restoration import MambaRestorationTrainer, NoMambaRestorationTrainer
    import nnunet_mamba.trainers as trainers
    base = {"Mamba": MambaRestorationTrainer, "NoMamba": NoMambaRestorationTrainer}[kind]
    name = f"{base.__name__}_cpu{epochs}x{iterations}b{batch}"
    cls = type(name, (base,), {"schedule": {**base.schedule, "num_epochs": epochs,
                                            "num_iterations_per_epoch": iterations,
                                            "num_val_iterations_per_epoch": max(5, iterations // 10)},
                               "batch_size_override": batch, "__module__": __name__})
    setattr(trainers, name, cls)  # so that `restore` (run in this process) finds the checkpoint's trainer
    return cls


def train_one(cls, dataset: str, fold: int) -> Path:
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.paths import nnUNet_preprocessed
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
    name = maybe_convert_to_dataset_name(dataset)
    pre = Path(nnUNet_preprocessed) / name
    plans = {**load_json(pre / "nnUNetPlans.json"), "continue_training": False}  # as nnU-Net's run_training
    trainer = cls(plans, "3d_fullres", fold, load_json(pre / "dataset.json"), device=torch.device("cpu"))
    t0 = time.time()
    trainer.run_training()
    trainer.print_to_log_file(f"training wall time {time.time() - t0:.0f} s on {torch.get_num_threads()} threads",
                              also_print_to_console=True)
    trainer.perform_actual_validation()
    return Path(trainer.output_folder_base)


def pack(model: Path, fold: int, out: Path, unseen: Path | None) -> None:
    name = model.name.split("__")[0]
    fold_dir = model / f"fold_{fold}"
    if unseen is not None:
        from nnunet_mamba.cli.main import main as cli
        if cli(["restore", "-i", str(unseen), "-o", str(fold_dir / "unseen"), "-m", str(model), "-f", str(fold),
                "-device", "cpu", "--disable-mirroring"]):
            raise RuntimeError(f"restoring {unseen} with {model} failed")
    with tarfile.open(out / f"{name}_val.tgz", "w:gz") as tar:
        tar.add(fold_dir / "validation", f"{name}/validation")
        for f in fold_dir.glob("training_log_*.txt"):
            tar.add(f, f"{name}/{f.name}")
        if (fold_dir / "progress.png").is_file():
            tar.add(fold_dir / "progress.png", f"{name}/progress.png")
    if unseen is not None:
        with tarfile.open(out / f"{name}_unseen.tgz", "w:gz") as tar:
            tar.add(fold_dir / "unseen", f"{name}/unseen")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-d", "--dataset", required=True)
    p.add_argument("-f", "--fold", type=int, default=0)
    p.add_argument("--trainers", nargs="+", default=["Mamba", "NoMamba"], choices=["Mamba", "NoMamba"])
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--iterations", type=int, default=100)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--unseen", type=Path, default=None, help="degraded unseen inputs to restore afterwards")
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    for kind in a.trainers:
        cls = make_trainer_class(kind, a.epochs, a.iterations, a.batch)
        print(f"== {cls.__name__}", flush=True)
        pack(train_one(cls, a.dataset, a.fold), a.fold, a.out, a.unseen)
    print(f"packed into {a.out}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
