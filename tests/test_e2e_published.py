"""The faithful published networks end to end through the stock nnU-Net CLI (subprocesses), on CPU.

convert a few MSD Hippocampus cases -> nnUNetv2_plan_and_preprocess (stock nnUNetPlans, the plans U-Mamba was
published with) -> nnUNetv2_train -tr <published network>Trainer_ci (a few iterations) -> nnUNetv2_predict. The
checkpoints must carry the original authors' state-dict names, so that their released weights and ours are
interchangeable. No nnUNet_extTrainer is set: the trainers are found through the installed start-up hook.
"""
import json
import os

import numpy as np
import pytest
import torch

from nnunet_mamba.dataset_conversion.msd import convert_msd
from test_e2e_cli import _check_predictions, cli, run
from test_msd_conversion import small_task

pytestmark = pytest.mark.slow
DS = 906
CASES = [("UMambaBotTrainer_ci", "3d_fullres"), ("UMambaEncTrainer_ci", "3d_fullres"),
         ("UMambaBotTrainer_ci", "2d"), ("UMambaEncTrainer_ci", "2d"), ("SegMambaTrainer_ci", "3d_fullres"),
         ("LightMUNetTrainer_ci", "3d_fullres"), ("LightMUNetTrainer_ci", "2d"), ("NnMambaTrainer_ci", "3d_fullres"),
         ("VMUNetTrainer_ci", "2d"), ("SwinUMambaTrainer_ci", "2d")]


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e_published")
    env = {k: v for k, v in os.environ.items() if k != "nnUNet_extTrainer"}
    env.update(nnUNet_raw=str(root / "raw"), nnUNet_preprocessed=str(root / "pre"),
               nnUNet_results=str(root / "res"), nnUNet_def_n_proc="1", PYTHONUNBUFFERED="1")
    task = small_task(root / "msd", n_train=6, n_test=1)
    ds = convert_msd(task, DS, root / "raw", "HippoPublished")
    run([cli("nnUNetv2_plan_and_preprocess"), "-d", str(DS), "-c", "3d_fullres", "2d", "-np", "1", "-npfp", "1"],
        env)
    plans = json.loads((root / "pre" / ds.name / "nnUNetPlans.json").read_text())
    assert {"3d_fullres", "2d"} <= set(plans["configurations"])
    return root, env, ds, plans


def _check_original_names(trainer: str, cfg: str, keys: set, plans: dict):
    """The state-dict names of the authors' own code (mamba-ssm's Mamba inside their modules)."""
    if trainer.startswith("UMambaBot"):
        assert "mamba_layer.mamba.A_log" in keys
        assert {"mamba_layer.norm.weight", "mamba_layer.mamba.in_proj.weight", "mamba_layer.mamba.out_proj.weight",
                "mamba_layer.mamba.conv1d.weight", "mamba_layer.mamba.x_proj.weight",
                "mamba_layer.mamba.dt_proj.weight", "mamba_layer.mamba.D"} <= keys
        assert not any(k.startswith("encoder.mamba_layers.") for k in keys)
    elif trainer.startswith("UMambaEnc"):
        n_stages = plans["configurations"][cfg]["architecture"]["arch_kwargs"]["n_stages"]
        stages = sorted(int(k.split(".")[2]) for k in keys
                        if k.startswith("encoder.mamba_layers.") and k.endswith(".mamba.A_log"))
        if cfg == "3d_fullres":  # one Mamba layer after every encoder stage
            assert stages == list(range(n_stages))
        else:  # 2D: on alternate stages, ending with the last (nn.Identity on the others)
            assert stages == list(range(n_stages - 1, -1, -2))[::-1]
        assert not any(k.startswith("mamba_layer.") for k in keys)
    elif trainer.startswith("SegMamba"):  # tri-orientated Mamba (the fork's A_b_log / A_s_log), UNETR blocks
        assert {"vit.stages.0.0.mamba.A_log", "vit.stages.0.0.mamba.A_b_log", "vit.stages.0.0.mamba.A_s_log"} <= keys
        assert any(k.startswith("encoder5.") for k in keys) and any(k.startswith("decoder5.") for k in keys)
        assert any(k.startswith("out.") for k in keys)
    elif trainer.startswith(("VMUNet", "SwinUMamba")):  # VMamba's SS2D: four directions' parameters stacked
        assert any(k.endswith(".A_logs") for k in keys) and any(k.endswith(".x_proj_weight") for k in keys)
    else:  # mamba-ssm's Mamba inside the authors' modules
        assert any(k.endswith(".mamba.A_log") for k in keys) and any(k.endswith(".mamba.dt_proj.bias") for k in keys)


@pytest.mark.parametrize("trainer,cfg", CASES, ids=[f"{t[:-10]}-{c}" for t, c in CASES])
def test_published_network_trains_and_predicts(planned, trainer, cfg, tmp_path):
    root, env, ds, plans = planned
    run([cli("nnUNetv2_train"), str(DS), cfg, "0", "-tr", trainer, "-device", "cpu"], dict(env, nnUNet_n_proc_DA="0"))
    fold = root / "res" / ds.name / f"{trainer}__nnUNetPlans__{cfg}" / "fold_0"
    assert (fold / "checkpoint_final.pth").exists()
    ckpt = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert ckpt["trainer_name"] == trainer
    losses = ckpt["logging"]["train_losses"]
    assert len(losses) == ckpt["current_epoch"] > 0 and all(np.isfinite(losses))
    keys = set(ckpt["network_weights"])
    _check_original_names(trainer, cfg, keys, plans)
    pred = tmp_path / "pred"
    run([cli("nnUNetv2_predict"), "-i", str(ds / "imagesTs"), "-o", str(pred), "-d", str(DS), "-c", cfg, "-f", "0",
         "-tr", trainer, "-device", "cpu", "-npp", "0", "-nps", "0"], env)
    scores = _check_predictions(pred, ds / "imagesTs", ds / "labelsTs")
    assert len(scores) == 1
