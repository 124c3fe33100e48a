"""The runs of a comparison: one per (trainer and plans, fold, seed); where each lives, whether it is done, and
the stock ``nnUNetv2_train`` command that trains or resumes it.

Every seed has its own nnU-Net results folder (``<out>/runs/seed_<s>``), so the same trainer, fold and
configuration can be trained with several seeds; ``NNUNET_MAMBA_SEED`` seeds this package's trainers (nnU-Net's
own trainers are not seeded by it: their repeated runs differ by chance).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DEFAULT_PLANS = "nnUNetPlans"


@dataclass(frozen=True)
class Arm:
    """One side of the comparison: a trainer class name and the plans it trains with."""
    trainer: str
    plans: str = DEFAULT_PLANS

    @classmethod
    def parse(cls, text: str) -> "Arm":
        """``Trainer`` or ``Trainer@Plans`` (e.g. ``nnUNetTrainer@nnUNetResEncUNetMPlans``)."""
        trainer, _, plans = text.partition("@")
        if not trainer or (_ and not plans) or any(c in text for c in "/\\ "):
            raise ValueError(f"{text!r}: expected Trainer or Trainer@Plans")
        return cls(trainer, plans or DEFAULT_PLANS)

    @property
    def label(self) -> str:
        return self.trainer if self.plans == DEFAULT_PLANS else f"{self.trainer}@{self.plans}"


@dataclass(frozen=True)
class Run:
    arm: Arm
    fold: str
    seed: int

    def results_root(self, out: Path) -> Path:
        return out / "runs" / f"seed_{self.seed}"

    def folder(self, out: Path, dataset: str, configuration: str) -> Path:
        return (self.results_root(out) / dataset / f"{self.arm.trainer}__{self.arm.plans}__{configuration}"
                / f"fold_{self.fold}")

    def state(self, out: Path, dataset: str, configuration: str) -> str:
        """``done`` (final checkpoint and validation summary), ``resume`` (a checkpoint to continue from) or
        ``new``."""
        f = self.folder(out, dataset, configuration)
        if (f / "checkpoint_final.pth").is_file() and (f / "validation" / "summary.json").is_file():
            return "done"
        if (f / "checkpoint_final.pth").is_file() or (f / "checkpoint_latest.pth").is_file():
            return "resume"
        return "new"

    def finished(self, out: Path, dataset: str, configuration: str) -> bool:
        """Whether the validation summary exists: nnU-Net writes it after the final checkpoint, so a run copied
        without its weights still counts for the report."""
        return (self.folder(out, dataset, configuration) / "validation" / "summary.json").is_file()

    def command(self, train_exe: str, dataset: str, configuration: str, device: str, state: str) -> list[str]:
        cmd = [train_exe, dataset, configuration, self.fold, "-tr", self.arm.trainer, "-p", self.arm.plans,
               "-device", device]
        return cmd + ["--c"] if state == "resume" else cmd

    def env(self, out: Path, base: dict) -> dict:
        return dict(base, nnUNet_results=str(self.results_root(out)), NNUNET_MAMBA_SEED=str(self.seed),
                    PYTHONUNBUFFERED="1")


def all_runs(arms: list[Arm], folds: list[str], seeds: list[int]) -> list[Run]:
    """Fold-major, then seed, then arm: an interrupted comparison has every arm on the same folds so far."""
    return [Run(arm, fold, seed) for fold in folds for seed in seeds for arm in arms]
