"""``nnunet-mamba demo`` end to end on CPU with a few-iteration trainer: the stock commands on the shipped data,
the Dice per named label, the picture with its legend, the summary file and the closing command."""
import json
import os

import numpy as np
import pytest

from test_e2e_cli import cli, run

pytestmark = pytest.mark.slow


def test_demo_runs_the_pipeline_and_reports(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("nnUNet_")}
    work = tmp_path / "demo"
    out = run([cli("nnunet-mamba"), "demo", "--workdir", str(work), "--device", "cpu", "--trainer", "MambaTrainer_ci"],
              env)
    summary = json.loads((work / "demo_summary.json").read_text())
    assert summary["trainer"] == "MambaTrainer_ci" and summary["configuration"] == "2d"
    assert set(summary["dice_per_label"]) == {"Anterior", "Posterior"}
    assert 0 <= summary["mean_dice"] <= 1
    assert summary["mean_dice"] == pytest.approx(np.mean(list(summary["dice_per_label"].values())), abs=1e-6)
    for name, value in summary["dice_per_label"].items():
        assert f"({name}): Dice {value:.4f}" in out
    assert out.rstrip().splitlines()[-1].strip().endswith("nnUNetv2_train D 3d_fullres 0 -tr MambaTrainer")
    assert (work / "segmentations.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    evaluation = json.loads((work / "evaluation.json").read_text())
    assert len(evaluation["metric_per_case"]) == 12  # every held-out case predicted and scored


def test_demo_trainer_is_seeded_by_default():
    """The demo passes a seed unless the user set one (its Dice is repeatable)."""
    from nnunet_mamba.cli import demo
    assert demo.SEED.isdigit() and demo.TRAINER["cpu"] == "MambaTrainer_cpu"
    from nnunet_mamba.trainers import MambaTrainer, MambaTrainer_cpu, NoMambaTrainer_cpu
    assert issubclass(MambaTrainer_cpu, MambaTrainer) and MambaTrainer_cpu.network_options == {"mixer_stages": (-1,)}
    assert NoMambaTrainer_cpu.schedule == MambaTrainer_cpu.schedule
    assert NoMambaTrainer_cpu.width_multiplier == MambaTrainer_cpu.width_multiplier
