"""End to end through the stock nnU-Net CLI (subprocesses), on CPU, on real MSD Hippocampus cases.

convert -> nnUNetv2_plan_and_preprocess -> nnUNetv2_train -tr MambaTrainer_ci (killed after its first
checkpoint) -> --c resume -> --val --npz -> nnUNetv2_predict -> evaluation -> find_best_configuration ->
export to zip -> install from zip -> predict from the installed model.
No nnUNet_extTrainer is set: the trainers are found through the installed start-up hook.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from nnunet_mamba.dataset_conversion.msd import convert_msd
from test_msd_conversion import small_task

pytestmark = pytest.mark.slow
DS, CFG, TR = 905, "3d_fullres", "MambaTrainer_ci"


def cli(name: str) -> str:
    exe = Path(sys.executable).with_name(name)
    assert exe.exists(), f"{exe} missing: is nnunetv2 installed in this environment?"
    return str(exe)


def run(cmd, env, timeout=900):
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{' '.join(cmd)}\nSTDOUT:\n{out.stdout[-4000:]}\nSTDERR:\n{out.stderr[-4000:]}"
    return out.stdout


def dice(a: np.ndarray, b: np.ndarray, label: int) -> float:
    x, y = a == label, b == label
    denom = x.sum() + y.sum()
    return float(2 * (x & y).sum() / denom) if denom else float("nan")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    env = {k: v for k, v in os.environ.items() if k != "nnUNet_extTrainer"}
    env.update(nnUNet_raw=str(root / "raw"), nnUNet_preprocessed=str(root / "pre"),
               nnUNet_results=str(root / "res"), nnUNet_def_n_proc="1", PYTHONUNBUFFERED="1")
    task = small_task(root / "msd", n_train=8, n_test=2)
    ds = convert_msd(task, DS, root / "raw", "HippoE2E")
    return root, env, ds


@pytest.fixture(scope="module")
def trained(workspace):
    root, env, ds = workspace
    run([cli("nnUNetv2_plan_and_preprocess"), "-d", str(DS), "-c", CFG, "-np", "1", "-npfp", "1",
         "--verify_dataset_integrity"], env)
    plans = json.loads((root / "pre" / ds.name / "nnUNetPlans.json").read_text())
    assert CFG in plans["configurations"]
    train_env = dict(env, nnUNet_n_proc_DA="0")
    fold = root / "res" / ds.name / f"{TR}__nnUNetPlans__{CFG}" / "fold_0"
    # first run: killed as soon as its first checkpoint exists
    proc = subprocess.Popen([cli("nnUNetv2_train"), str(DS), CFG, "0", "-tr", TR, "-device", "cpu"], env=train_env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 600
    while not (fold / "checkpoint_latest.pth").exists():
        assert proc.poll() is None, proc.stdout.read()[-4000:]
        assert time.time() < deadline, "no checkpoint within 10 minutes"
        time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (fold / "checkpoint_final.pth").exists()
    interrupted = torch.load(fold / "checkpoint_latest.pth", map_location="cpu", weights_only=False)
    assert interrupted["trainer_name"] == TR and interrupted["current_epoch"] >= 1
    log = run([cli("nnUNetv2_train"), str(DS), CFG, "0", "-tr", TR, "-device", "cpu", "--c"], train_env)
    assert "Using trainer 'MambaTrainer_ci'" in log or f"Epoch {interrupted['current_epoch']}" in log
    return root, env, ds, fold, interrupted


def test_training_resumes_from_the_last_checkpoint(trained):
    root, env, ds, fold, interrupted = trained
    final = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert final["trainer_name"] == TR and final["current_epoch"] == 3
    losses = final["logging"]["train_losses"]
    assert len(losses) == 3 and all(np.isfinite(losses))
    assert losses[:interrupted["current_epoch"]] == interrupted["logging"]["train_losses"]
    assert not (fold / "checkpoint_latest.pth").exists() and not list(fold.glob("*.partial"))
    summary = json.loads((fold / "validation" / "summary.json").read_text())
    assert set(summary["mean"]) == {"1", "2"}
    assert (fold / "progress.png").stat().st_size > 0
    # the network really is the Mamba hybrid, loaded by nnU-Net
    keys = final["network_weights"].keys()
    assert any(".mixer.ssm.A_log" in k for k in keys)


def test_validation_with_npz(trained):
    root, env, ds, fold, _ = trained
    run([cli("nnUNetv2_train"), str(DS), CFG, "0", "-tr", TR, "-device", "cpu", "--val", "--npz"], env)
    npz = sorted((fold / "validation").glob("*.npz"))
    assert npz
    probs = np.load(npz[0])["probabilities"]
    assert probs.shape[0] == 3 and np.allclose(probs.sum(0), 1, atol=1e-3)


def _check_predictions(pred: Path, images: Path, labels: Path) -> dict:
    scores = {}
    for lab_file in sorted(labels.glob("*.nii.gz")):
        p = sitk.ReadImage(str(pred / lab_file.name))
        img = sitk.ReadImage(str(images / lab_file.name.replace(".nii.gz", "_0000.nii.gz")))
        assert p.GetSize() == img.GetSize()
        assert np.allclose(p.GetSpacing(), img.GetSpacing()) and np.allclose(p.GetOrigin(), img.GetOrigin())
        assert np.allclose(p.GetDirection(), img.GetDirection())
        arr, gt = sitk.GetArrayFromImage(p), sitk.GetArrayFromImage(sitk.ReadImage(str(lab_file)))
        assert set(np.unique(arr).tolist()) <= {0, 1, 2}
        scores[lab_file.name] = [dice(arr, gt, 1), dice(arr, gt, 2)]
    return scores


def test_predict_and_evaluate_held_out_cases(trained):
    root, env, ds, fold, _ = trained
    pred = root / "pred"
    run([cli("nnUNetv2_predict"), "-i", str(ds / "imagesTs"), "-o", str(pred), "-d", str(DS), "-c", CFG, "-f", "0",
         "-tr", TR, "-device", "cpu", "-npp", "0", "-nps", "0"], env)
    ours = _check_predictions(pred, ds / "imagesTs", ds / "labelsTs")
    assert len(ours) == 2
    run([cli("nnUNetv2_evaluate_simple"), str(ds / "labelsTs"), str(pred), "-l", "1", "2", "-o",
         str(root / "eval.json"), "-np", "1"], env)
    ev = json.loads((root / "eval.json").read_text())
    for case in ev["metric_per_case"]:
        name = Path(case["reference_file"]).name
        for label, mine in zip(("1", "2"), ours[name]):
            theirs = case["metrics"][label]["Dice"]
            assert (np.isnan(mine) and np.isnan(theirs)) or abs(mine - theirs) < 1e-6
            assert 0.0 <= theirs <= 1.0


def test_find_best_configuration_and_model_zip_round_trip(trained, tmp_path):
    root, env, ds, fold, _ = trained
    run([cli("nnUNetv2_find_best_configuration"), str(DS), "-c", CFG, "-tr", TR, "-f", "0", "-np", "1",
         "--disable_ensembling"], env)
    info = json.loads((root / "res" / ds.name / "inference_information.json").read_text())
    assert info["best_model_or_ensemble"]["selected_model_or_models"][0]["trainer"] == TR
    zip_path = tmp_path / "model.zip"
    run([cli("nnUNetv2_export_model_to_zip"), "-d", str(DS), "-o", str(zip_path), "-c", CFG, "-tr", TR, "-f", "0"],
        env)
    other = dict(env, nnUNet_results=str(tmp_path / "results2"))
    run([cli("nnUNetv2_install_pretrained_model_from_zip"), str(zip_path)], other)
    model_dir = tmp_path / "results2" / ds.name / f"{TR}__nnUNetPlans__{CFG}"
    pred2 = tmp_path / "pred2"
    run([cli("nnUNetv2_predict_from_modelfolder"), "-i", str(ds / "imagesTs"), "-o", str(pred2), "-m",
         str(model_dir), "-f", "0", "-device", "cpu", "-npp", "1", "-nps", "1"], other)  # (no sequential mode here)
    pred1 = root / "pred"
    if pred1.exists():  # same model, same inputs: identical segmentations
        for f in sorted(pred1.glob("*.nii.gz")):
            a = sitk.GetArrayFromImage(sitk.ReadImage(str(f)))
            b = sitk.GetArrayFromImage(sitk.ReadImage(str(pred2 / f.name)))
            assert np.array_equal(a, b)
    else:
        _check_predictions(pred2, ds / "imagesTs", ds / "labelsTs")
    shutil.rmtree(tmp_path / "results2")


def test_pretrained_weights_and_continue_prediction(trained, tmp_path):
    """-pretrained_weights from fold 0 into a fold-1 run; --continue_prediction keeps finished cases."""
    root, env, ds, fold, _ = trained
    train_env = dict(env, nnUNet_n_proc_DA="0")
    log = run([cli("nnUNetv2_train"), str(DS), CFG, "1", "-tr", TR, "-device", "cpu", "-pretrained_weights",
               str(fold / "checkpoint_final.pth")], train_env)
    assert "Loading pretrained weights" in log or "pretrained" in log.lower()
    fold1 = fold.parent / "fold_1"
    ckpt = torch.load(fold1 / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert ckpt["current_epoch"] == 3 and all(np.isfinite(ckpt["logging"]["train_losses"]))
    pred = tmp_path / "pred_continue"
    args = [cli("nnUNetv2_predict"), "-i", str(ds / "imagesTs"), "-o", str(pred), "-d", str(DS), "-c", CFG, "-f",
            "1", "-tr", TR, "-device", "cpu", "-npp", "0", "-nps", "0"]
    run(args, env)
    first = sorted(pred.glob("*.nii.gz"))
    stamps = {f.name: f.stat().st_mtime_ns for f in first}
    first[0].unlink()  # an interrupted run: one case missing
    run(args + ["--continue_prediction"], env)
    again = sorted(pred.glob("*.nii.gz"))
    assert [f.name for f in again] == sorted(stamps)
    kept = [f for f in again if f.name != first[0].name]
    assert all(f.stat().st_mtime_ns == stamps[f.name] for f in kept), "finished cases must not be redone"


def test_2d_configuration_trains_and_predicts(workspace, tmp_path):
    root, env, ds = workspace
    run([cli("nnUNetv2_plan_and_preprocess"), "-d", str(DS), "-c", "2d", "-np", "1", "-npfp", "1"], env)
    run([cli("nnUNetv2_train"), str(DS), "2d", "0", "-tr", TR, "-device", "cpu"], dict(env, nnUNet_n_proc_DA="0"))
    fold = root / "res" / ds.name / f"{TR}__nnUNetPlans__2d" / "fold_0"
    ckpt = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert any(".mixer.ssm.A_log" in k for k in ckpt["network_weights"])
    assert ckpt["network_weights"][next(k for k in ckpt["network_weights"] if k.endswith("mixer.ssm.A_log"))
                                   ].shape[0] == 4  # 4 scan directions in 2D
    pred = tmp_path / "pred2d"
    run([cli("nnUNetv2_predict"), "-i", str(ds / "imagesTs"), "-o", str(pred), "-d", str(DS), "-c", "2d", "-f", "0",
         "-tr", TR, "-device", "cpu", "-npp", "0", "-nps", "0"], env)
    _check_predictions(pred, ds / "imagesTs", ds / "labelsTs")


def test_seeded_cpu_runs_give_identical_losses(trained):
    """NNUNET_MAMBA_SEED + augmentation in the main process: two runs of the same fold, identical losses."""
    root, env, ds, fold, _ = trained
    seeded = dict(env, nnUNet_n_proc_DA="0", NNUNET_MAMBA_SEED="1234")
    fold2 = fold.parent / "fold_2"
    losses = []
    for _ in range(2):
        run([cli("nnUNetv2_train"), str(DS), CFG, "2", "-tr", TR, "-device", "cpu"], seeded)
        ckpt = torch.load(fold2 / "checkpoint_final.pth", map_location="cpu", weights_only=False)
        losses.append((ckpt["logging"]["train_losses"], ckpt["logging"]["val_losses"]))
    assert all(np.isfinite(losses[0][0]))
    assert losses[0] == losses[1]
