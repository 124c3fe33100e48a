"""Bad input to the stock nnU-Net commands gives one clear message naming the file, and writes nothing;
a training run killed in the middle of a checkpoint write resumes from the last complete checkpoint.

Real subprocesses on CPU, on 6 shipped MSD Hippocampus cases; the model folder is made by our trainer
in-process (initialised, not trained: these tests are about messages, not predictions).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from nnunet_mamba.dataset_conversion.msd import convert_msd
from nnunet_mamba.input_checks import InputError, case_problems, check_prediction_inputs
from test_msd_conversion import small_task

pytestmark = pytest.mark.faults
DS, CFG, TR = 907, "3d_fullres", "MambaTrainer_ci"


def cli(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    env = {k: v for k, v in os.environ.items() if k not in ("nnUNet_extTrainer", "NNUNET_MAMBA_TRACEBACK")}
    env.update(nnUNet_raw=str(root / "raw"), nnUNet_preprocessed=str(root / "pre"), nnUNet_results=str(root / "res"),
               nnUNet_def_n_proc="1", PYTHONUNBUFFERED="1", TMPDIR=str(root))
    ds = convert_msd(small_task(root / "msd", n_train=6, n_test=2), DS, root / "raw", "HippoBad")
    out = subprocess.run([cli("nnUNetv2_plan_and_preprocess"), "-d", str(DS), "-c", CFG, "-np", "1", "-npfp", "1"],
                         env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    # a model folder as nnU-Net's training leaves it, from an untrained MambaTrainer_ci
    code = textwrap.dedent(f"""
        import json, shutil, torch
        from nnunet_mamba.trainers import {TR}
        pre = "{root}/pre/{ds.name}"
        plans = json.load(open(pre + "/nnUNetPlans.json")); plans["continue_training"] = False
        tr = {TR}(plans, "{CFG}", 0, json.load(open(pre + "/dataset.json")), device=torch.device("cpu"))
        tr.initialize()
        tr.save_checkpoint(tr.output_folder + "/checkpoint_final.pth")
        shutil.copy(pre + "/nnUNetPlans.json", tr.output_folder_base + "/plans.json")
        shutil.copy(pre + "/dataset.json", tr.output_folder_base + "/dataset.json")
    """)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    model = root / "res" / ds.name / f"{TR}__nnUNetPlans__{CFG}"
    assert (model / "fold_0" / "checkpoint_final.pth").is_file()
    return root, env, ds, model


def fails_clearly(cmd, env, *expected: str) -> str:
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode != 0, out.stdout[-2000:]
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    message = out.stderr[out.stderr.index(f"{Path(cmd[0]).name}: error:"):]
    for e in expected:
        assert e in message, f"{e!r} not in:\n{message}"
    log = message.split("(full traceback: ")[1].split(";")[0]
    assert "Traceback" in Path(log).read_text()  # nothing is lost: the traceback is kept in a file
    return message


def predict(ws, inputs, out, *extra):
    root, env, ds, model = ws
    return [cli("nnUNetv2_predict"), "-i", str(inputs), "-o", str(out), "-d", str(DS), "-c", CFG, "-tr", TR,
            "-device", "cpu", "-npp", "1", "-nps", "1", "-f", "0", *extra]


def inputs_copy(ws, tmp_path) -> Path:
    root, env, ds, model = ws
    folder = tmp_path / "in"
    shutil.copytree(ds / "imagesTs", folder)
    return folder


def assert_nothing_written(out: Path):
    assert not out.exists() or not any(out.iterdir()), sorted(p.name for p in out.iterdir())


def test_wrong_dataset_id(ws):
    fails_clearly([cli("nnUNetv2_train"), "999", CFG, "0", "-tr", TR, "-device", "cpu"], ws[1],
                  "Could not find a dataset with the ID 999")


def test_missing_plans_names_the_file_and_the_plans_there(ws):
    fails_clearly([cli("nnUNetv2_train"), str(DS), CFG, "0", "-tr", TR, "-device", "cpu", "-p", "NoSuchPlans"],
                  ws[1], "NoSuchPlans.json: no such plans file", "Plans of this dataset: nnUNetPlans")


def test_configuration_the_plans_lack(ws):
    fails_clearly([cli("nnUNetv2_train"), str(DS), "3d_lowres", "0", "-tr", TR, "-device", "cpu"], ws[1],
                  "3d_lowres not found in plans", "3d_fullres")


def test_misspelt_trainer_gets_suggestions(ws):
    fails_clearly([cli("nnUNetv2_train"), str(DS), CFG, "0", "-tr", "MambaTrainr", "-device", "cpu"], ws[1],
                  "no trainer class named 'MambaTrainr'", "Did you mean MambaTrainer")


def test_image_with_the_wrong_number_of_channels(ws, tmp_path):
    folder = inputs_copy(ws, tmp_path)
    first = sorted(folder.iterdir())[0]
    shutil.copy(first, folder / first.name.replace("_0000", "_0001"))
    out = tmp_path / "out"
    msg = fails_clearly(predict(ws, folder, out), ws[1], first.name.replace("_0000.nii.gz", ""),
                        "_0000, _0001", "needs exactly 1", "Nothing was predicted")
    assert msg.count("  - ") == 1  # only the bad case is reported
    assert_nothing_written(out)


def test_truncated_image_is_caught_not_silently_predicted(ws, tmp_path):
    folder = inputs_copy(ws, tmp_path)
    victim = sorted(folder.iterdir())[1]
    victim.write_bytes(victim.read_bytes()[:3000])  # ITK alone reads this without complaint
    out = tmp_path / "out"
    fails_clearly(predict(ws, folder, out), ws[1], str(victim), "damaged gzip data")
    assert_nothing_written(out)


def _replace_first(folder: Path, arr: np.ndarray) -> Path:
    victim = sorted(folder.iterdir())[0]
    sitk.WriteImage(sitk.GetImageFromArray(arr), str(victim), useCompression=True)
    return victim


def test_4d_image_is_reported_by_check_input_and_predict(ws, tmp_path):
    """A 4D NIfTI used to pass check-input and then kill nnU-Net's prediction workers."""
    root, env, ds, model = ws
    import nibabel as nib
    folder = inputs_copy(ws, tmp_path)
    victim = sorted(folder.iterdir())[0]
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((30, 40, 30, 2)).astype(np.float32), np.eye(4)),
             str(victim))  # four channels in one file, as MSD ships BraTS
    out = subprocess.run([cli("nnunet-mamba"), "check-input", "-i", str(folder), "-m", str(model)], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and str(victim) in out.stderr and "4D image" in out.stderr
    fails_clearly(predict(ws, folder, tmp_path / "out"), env, str(victim), "4D image")
    assert_nothing_written(tmp_path / "out")


def test_2d_image_for_a_3d_model(ws, tmp_path):
    folder = inputs_copy(ws, tmp_path)
    victim = _replace_first(folder, np.random.default_rng(0).random((40, 30)).astype(np.float32))
    fails_clearly(predict(ws, folder, tmp_path / "out"), ws[1], str(victim), "is a 2D image",
                  "trained on 3D volumes")
    assert_nothing_written(tmp_path / "out")


def test_all_nan_image_gets_no_segmentation(ws, tmp_path):
    folder = inputs_copy(ws, tmp_path)
    victim = sorted(folder.iterdir())[0]
    ref = sitk.ReadImage(str(victim))
    nan = sitk.GetImageFromArray(np.full(sitk.GetArrayViewFromImage(ref).shape, np.nan, np.float32))
    nan.CopyInformation(ref)
    sitk.WriteImage(nan, str(victim), useCompression=True)
    fails_clearly(predict(ws, folder, tmp_path / "out"), ws[1], str(victim), "every voxel is NaN or Inf")
    assert_nothing_written(tmp_path / "out")


def test_uncompressed_file_among_compressed_ones_is_not_skipped_silently(ws, tmp_path):
    import gzip
    folder = inputs_copy(ws, tmp_path)
    victim = sorted(folder.iterdir())[0]
    plain = victim.with_name(victim.name[:-3])
    plain.write_bytes(gzip.decompress(victim.read_bytes()))
    victim.unlink()
    fails_clearly(predict(ws, folder, tmp_path / "out"), ws[1], str(plain), "nnU-Net would skip this one")
    assert_nothing_written(tmp_path / "out")


def test_corrupted_checkpoint_is_named(ws, tmp_path):
    root, env, ds, model = ws
    copy = tmp_path / "res" / ds.name / model.name
    shutil.copytree(model, copy)
    ckpt = copy / "fold_0" / "checkpoint_final.pth"
    ckpt.write_bytes(ckpt.read_bytes()[:5000])
    out = tmp_path / "out"
    fails_clearly(predict(ws, inputs_copy(ws, tmp_path), out), dict(env, nnUNet_results=str(tmp_path / "res")),
                  str(ckpt), "cannot be read as a checkpoint")
    assert_nothing_written(out)


def test_failed_prediction_leaves_no_empty_output_folder(ws, tmp_path):
    folder = inputs_copy(ws, tmp_path)
    victim = sorted(folder.iterdir())[0]
    victim.write_bytes(victim.read_bytes()[:3000])
    out = tmp_path / "never_made"
    fails_clearly(predict(ws, folder, out), ws[1], "Nothing was predicted")
    assert not out.exists()


def test_configuration_not_preprocessed_says_how_to_preprocess(ws):
    fails_clearly([cli("nnUNetv2_train"), str(DS), "2d", "0", "-tr", TR, "-device", "cpu"], ws[1],
                  "not preprocessed for 2d", f"nnUNetv2_plan_and_preprocess -d {DS} -c 2d")


def test_no_gpu_hint(ws):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    fails_clearly([cli("nnUNetv2_train"), str(DS), CFG, "0", "-tr", TR], ws[1], "add -device cpu")


def test_unreadable_image(ws, tmp_path):
    folder = inputs_copy(ws, tmp_path)
    victim = sorted(folder.iterdir())[0]
    victim.write_bytes(b"this is not an image")
    fails_clearly(predict(ws, folder, tmp_path / "out"), ws[1], str(victim))


def test_model_folder_of_another_trainer(ws, tmp_path):
    cmd = predict(ws, inputs_copy(ws, tmp_path), tmp_path / "out")
    cmd[cmd.index("-tr") + 1] = "NoMambaTrainer_ci"
    fails_clearly(cmd, ws[1], "NoMambaTrainer_ci__nnUNetPlans__3d_fullres: no trained model there",
                  f"{TR}__nnUNetPlans__{CFG}")


def test_fold_without_checkpoint(ws, tmp_path):
    fails_clearly(predict(ws, inputs_copy(ws, tmp_path), tmp_path / "out", "-f", "3"), ws[1],
                  "fold_3/checkpoint_final.pth: no such checkpoint", "fold_0")


def test_checkpoint_from_an_incompatible_version(ws, tmp_path):
    root, env, ds, model = ws
    ckpt = torch.load(model / "fold_0" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    weights = ckpt["network_weights"]
    key = next(k for k in weights if k.endswith("weight") and weights[k].ndim > 1)
    weights[key] = torch.zeros(weights[key].shape[0] + 1, *weights[key].shape[1:])
    (model / "fold_4").mkdir(exist_ok=True)
    torch.save(ckpt, model / "fold_4" / "checkpoint_final.pth")
    out = tmp_path / "out"
    try:
        fails_clearly(predict(ws, inputs_copy(ws, tmp_path), out, "-f", "4"), env,
                      str(model / "fold_4" / "checkpoint_final.pth"), "do not fit", "1 of another shape", key)
    finally:
        shutil.rmtree(model / "fold_4")
    assert_nothing_written(out)


def test_check_input_command_lists_every_problem(ws, tmp_path):
    root, env, ds, model = ws
    folder = inputs_copy(ws, tmp_path)
    a, b = sorted(folder.iterdir())
    b.write_bytes(b.read_bytes()[:2000])
    shutil.copy(a, folder / a.name.replace("_0000", "_0003"))
    out = subprocess.run([cli("nnunet-mamba"), "check-input", "-i", str(folder), "-m", str(model)], env=env,
                         capture_output=True, text=True)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "2 problem(s)" in out.stderr and str(b) in out.stderr and "_0000, _0003" in out.stderr
    ok = subprocess.run([cli("nnunet-mamba"), "check-input", "-i", str(ds / "imagesTs"), "-m", str(model)], env=env,
                        capture_output=True, text=True)
    assert ok.returncode == 0 and "\nok: inputs in" in ok.stdout, ok.stderr[-2000:]


def test_channels_on_different_grids_are_reported(tmp_path):
    arr = np.zeros((5, 6, 7), np.float32)
    for c, spacing in enumerate([(1, 1, 1), (1, 1, 2.5)]):
        img = sitk.GetImageFromArray(arr)
        img.SetSpacing(spacing)
        sitk.WriteImage(img, str(tmp_path / f"case_{c:04d}.nii.gz"))
    files = sorted(str(p) for p in tmp_path.iterdir())
    problems = case_problems(files, 2, ".nii.gz")
    assert len(problems) == 1 and "case_0001.nii.gz: spacing" in problems[0]
    with pytest.raises(InputError, match="1 problem"):
        check_prediction_inputs(str(tmp_path), {"file_ending": ".nii.gz", "channel_names": {"0": "a", "1": "b"}})
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((1, 1, 1))
    sitk.WriteImage(img, files[1])  # same grid now: no problem left
    check_prediction_inputs(str(tmp_path), {"file_ending": ".nii.gz", "channel_names": {"0": "a", "1": "b"}})


# --- kill -9 in the middle of a checkpoint write ---------------------------------------------------------

_HALF_WRITE = """
import io, os, sys, time, torch
marker, nth = sys.argv[1], int(sys.argv[2])
calls, save = [0], torch.save
def half_then_hang(obj, f, *a, **k):
    calls[0] += 1
    if calls[0] == nth and isinstance(f, str):
        buf = io.BytesIO(); save(obj, buf, *a, **k); data = buf.getvalue()
        with open(f, "wb") as fh:
            fh.write(data[: len(data) // 2]); fh.flush(); os.fsync(fh.fileno())
        open(marker, "w").write(f)
        time.sleep(3600)
    return save(obj, f, *a, **k)
torch.save = half_then_hang
sys.argv = ["nnUNetv2_train"] + sys.argv[3:]
from nnunetv2.run.run_training import run_training_entry
run_training_entry()
"""


def test_kill_during_checkpoint_write_resumes_from_last_complete_checkpoint(ws, tmp_path):
    root, env, ds, _ = ws
    env = dict(env, nnUNet_n_proc_DA="0", NNUNET_MAMBA_SEED="0")
    fold = root / "res" / ds.name / f"{TR}__nnUNetPlans__{CFG}" / "fold_1"
    marker = tmp_path / "writing"
    proc = subprocess.Popen([sys.executable, "-c", _HALF_WRITE, str(marker), "2", str(DS), CFG, "1", "-tr", TR,
                             "-device", "cpu"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 600
    while not marker.exists():
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        assert time.time() < deadline
        time.sleep(0.2)
    time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    half = Path(marker.read_text())
    assert half.name.endswith(".partial") and half.exists()
    with pytest.raises(Exception):
        torch.load(half, map_location="cpu", weights_only=False)  # the torn write is really torn
    done = {p.name for p in fold.glob("checkpoint_*.pth")}
    assert "checkpoint_final.pth" not in done and "checkpoint_latest.pth" in done
    last = torch.load(fold / "checkpoint_latest.pth", map_location="cpu", weights_only=False)  # complete
    out = subprocess.run([cli("nnUNetv2_train"), str(DS), CFG, "1", "-tr", TR, "-device", "cpu", "--c"], env=env,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    final = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert final["current_epoch"] == 3 and last["current_epoch"] >= 1
    losses = final["logging"]["train_losses"]
    assert len(losses) == 3 and all(np.isfinite(losses))
    assert (fold / "validation" / "summary.json").is_file()
    assert json.loads((fold / "validation" / "summary.json").read_text())["foreground_mean"]["Dice"] >= 0


def test_continue_prediction_redoes_an_output_torn_by_a_kill(ws, tmp_path):
    root, env, ds, model = ws
    folder, out = inputs_copy(ws, tmp_path), tmp_path / "out"
    first = subprocess.run(predict(ws, folder, out), env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    outputs = sorted(out.glob("*.nii.gz"))
    assert len(outputs) == 2
    want = sitk.GetArrayFromImage(sitk.ReadImage(str(outputs[0])))
    torn = outputs[0].read_bytes()
    outputs[0].write_bytes(torn[: len(torn) // 2])  # what a kill -9 during the export leaves
    untouched = outputs[1].stat().st_mtime_ns
    again = subprocess.run(predict(ws, folder, out, "--continue_prediction"), env=env, capture_output=True,
                           text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"removed {outputs[0]}: damaged" in again.stderr
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(outputs[0]))), want)
    assert outputs[1].stat().st_mtime_ns == untouched  # the complete case was kept, not predicted again


def test_random_damage_to_prediction_inputs_is_named_or_harmless(ws, tmp_path):
    """check-input on images with random damage (changed bytes or a cut): either one problem naming the damaged
    file, or it passes and the image's voxels are exactly the clean ones (damage in a gzip header field)."""
    from hypothesis import HealthCheck, given, settings, strategies as st
    from test_fault_injection import damage
    root, env, ds, model = ws
    clean = inputs_copy(ws, tmp_path / "clean")

    @settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(seed=st.integers(0, 2 ** 32 - 1))
    def check(seed):
        rng = np.random.default_rng(seed)
        folder = tmp_path / "damaged"
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(clean, folder)
        victim = sorted(folder.iterdir())[int(rng.integers(2))]
        damage(victim, rng)
        out = subprocess.run([cli("nnunet-mamba"), "check-input", "-i", str(folder), "-m", str(model)], env=env,
                             capture_output=True, text=True, timeout=300)
        if out.returncode == 0:
            same = sitk.GetArrayFromImage(sitk.ReadImage(str(victim)))
            assert np.array_equal(same, sitk.GetArrayFromImage(sitk.ReadImage(str(clean / victim.name))))
        else:
            assert out.returncode == 2 and str(victim) in out.stderr and "Traceback" not in out.stderr, out.stderr
    check()
