"""BraTS conversion (2021 and 2023+ naming), validation, nnU-Net integrity check and submission round trip."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_mamba.dataset_conversion.brats import NAMINGS, convert_brats, from_brats_labels, to_brats_labels
from nnunet_mamba.dataset_conversion.checks import DatasetError
from nnunet_mamba.dataset_conversion.submission import submit_brats

SHAPE = (20, 24, 22)  # z, y, x: large enough for a 3-stage plan (2-stage plans make nnU-Net's DS weights 0/0)
SHORT = (20, 24, 21)


def _write(arr, path: Path, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0)):
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    sitk.WriteImage(img, str(path))


def make_case(root: Path, cid: str, naming: str, rng, seg=True, origin=(3.0, -2.0, 1.5)) -> np.ndarray:
    spec = NAMINGS[naming]
    d = root / cid
    d.mkdir(parents=True)
    for key in spec["channels"]:
        _write((rng.random(SHAPE) * 1000).astype(np.float32), d / f"{cid}{spec['sep']}{key}.nii.gz", origin=origin)
    lab = rng.choice(np.array(spec["labels"], np.uint8), size=SHAPE, p=[0.55, 0.15, 0.15, 0.15])
    if seg:
        _write(lab, d / f"{cid}{spec['sep']}seg.nii.gz", origin=origin)
    return lab


@pytest.fixture
def brats2021(tmp_path):
    rng = np.random.default_rng(0)
    src = tmp_path / "BraTS2021_Training"
    labs = {cid: make_case(src, cid, "2021", rng) for cid in ("BraTS2021_00000", "BraTS2021_00002")}
    make_case(src, "BraTS2021_00005", "2021", rng, seg=False)
    return src, labs


@pytest.fixture
def brats2023(tmp_path):
    rng = np.random.default_rng(1)
    src = tmp_path / "ASNR-MICCAI-BraTS2023-GLI"
    labs = {cid: make_case(src, cid, "2023", rng) for cid in ("BraTS-GLI-00000-000", "BraTS-GLI-00003-001",
                                                              "BraTS-GLI-00011-000")}
    return src, labs


def test_label_maps_are_inverse():
    for naming, spec in NAMINGS.items():
        arr = np.array(spec["labels"], np.uint8)
        assert np.array_equal(to_brats_labels(from_brats_labels(arr, naming), naming), arr)
        assert sorted(from_brats_labels(arr, naming).tolist()) == [0, 1, 2, 3]


def test_convert_2021_regions_labels_channels_and_test_cases(brats2021, tmp_path):
    src, labs = brats2021
    before = sorted((p, p.stat().st_mtime_ns) for p in src.rglob("*"))
    out = convert_brats(src, 137, tmp_path / "raw", name="BraTS2021")
    ds = json.loads((out / "dataset.json").read_text())
    assert ds["labels"] == {"background": 0, "whole_tumor": [1, 2, 3], "tumor_core": [2, 3], "enhancing_tumor": [3]}
    assert ds["regions_class_order"] == [1, 2, 3] and ds["numTraining"] == 2
    assert ds["channel_names"] == {"0": "T1", "1": "T1ce", "2": "T2", "3": "FLAIR"}
    assert ds["nnunet_mamba"]["naming"] == "2021"
    for cid, lab in labs.items():
        got = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "labelsTr" / f"{cid}.nii.gz")))
        assert np.array_equal(got == 1, lab == 2) and np.array_equal(got == 2, lab == 1)  # edema / necrosis
        assert np.array_equal(got == 3, lab == 4)
        flair = sitk.ReadImage(str(out / "imagesTr" / f"{cid}_0003.nii.gz"))
        orig = sitk.ReadImage(str(src / cid / f"{cid}_flair.nii.gz"))
        assert np.array_equal(sitk.GetArrayFromImage(flair), sitk.GetArrayFromImage(orig))
        assert flair.GetOrigin() == orig.GetOrigin()
    assert sorted(p.name for p in (out / "imagesTs").iterdir()) == [f"BraTS2021_00005_000{c}.nii.gz" for c in range(4)]
    assert sorted((p, p.stat().st_mtime_ns) for p in src.rglob("*")) == before  # input untouched


def test_convert_2023_other_subchallenge_prefix(tmp_path):
    rng = np.random.default_rng(2)
    src = tmp_path / "MEN"
    lab = make_case(src, "BraTS-MEN-00004-000", "2023", rng)
    out = convert_brats(src, 501, tmp_path / "raw", name="BraTSMEN")
    got = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "labelsTr" / "BraTS-MEN-00004-000.nii.gz")))
    assert np.array_equal(got == 3, lab == 3) and np.array_equal(got == 2, lab == 1)


def test_every_problem_reported_and_nothing_written(brats2021, tmp_path):
    src, _ = brats2021
    rng = np.random.default_rng(3)
    (src / "BraTS2021_00002" / "BraTS2021_00002_t2.nii.gz").unlink()  # missing channel
    _write((rng.random(SHORT) * 5).astype(np.float32),  # wrong shape
           src / "BraTS2021_00000" / "BraTS2021_00000_t1ce.nii.gz")
    seg = sitk.GetArrayFromImage(sitk.ReadImage(str(src / "BraTS2021_00005" / "BraTS2021_00005_t1.nii.gz")))
    _write(np.full(SHAPE, 3, np.uint8), src / "BraTS2021_00005" / "BraTS2021_00005_seg.nii.gz",
           origin=(3.0, -2.0, 1.5))  # label 3 is not a 2021 label
    (src / "BraTS2021_00005" / "notes.txt").write_text("x")
    assert seg.shape == SHAPE
    with pytest.raises(DatasetError) as e:
        convert_brats(src, 137, tmp_path / "raw")
    msg = str(e.value)
    assert "BraTS2021_00002_t2.nii.gz: missing t2 image" in msg
    assert "BraTS2021_00000_t1ce.nii.gz: size" in msg
    assert "BraTS2021_00005_seg.nii.gz: label values [3] are not BraTS 2021 labels" in msg
    assert "notes.txt: unexpected file" in msg
    assert not (tmp_path / "raw").exists() or not any((tmp_path / "raw").iterdir())


def test_mixed_namings_are_refused(brats2021, tmp_path):
    src, _ = brats2021
    make_case(src, "BraTS-GLI-00001-000", "2023", np.random.default_rng(4))
    with pytest.raises(DatasetError, match="mixes BraTS namings"):
        convert_brats(src, 137, tmp_path / "raw")


@pytest.mark.slow
def test_round_trip_nnunet_integrity_and_submission(brats2023, tmp_path):
    """convert -> nnU-Net plan_and_preprocess --verify_dataset_integrity -> predictions -> submit -> original labels."""
    src, labs = brats2023
    raw = tmp_path / "raw"
    out = convert_brats(src, 993, raw, name="BraTSGLI")
    env = dict(os.environ, nnUNet_raw=str(raw), nnUNet_preprocessed=str(tmp_path / "pre"),
               nnUNet_results=str(tmp_path / "res"))
    exe = str(Path(sys.executable).with_name("nnUNetv2_plan_and_preprocess"))
    proc = subprocess.run([exe, "-d", "993", "-c", "3d_fullres", "-np", "1",
                           "--verify_dataset_integrity"], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    # perfect "predictions" in nnU-Net's label convention, as nnU-Net writes them after regions_class_order
    preds = tmp_path / "preds"
    preds.mkdir()
    for cid in labs:
        lab = sitk.ReadImage(str(out / "labelsTr" / f"{cid}.nii.gz"))
        sitk.WriteImage(lab, str(preds / f"{cid}.nii.gz"))
    sub = tmp_path / "submission"
    proc = subprocess.run([sys.executable, "-m", "nnunet_mamba.cli.main", "submit", "brats", "-i", str(preds),
                           "--images", str(out / "imagesTr"), "-d", str(out / "dataset.json"), "-o", str(sub)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = json.loads((sub / "manifest.json").read_text())
    assert manifest["naming"] == "2023" and sorted(manifest["files"]) == sorted(f"{c}.nii.gz" for c in labs)
    for cid, lab in labs.items():
        path = sub / f"{cid}.nii.gz"
        got = sitk.ReadImage(str(path))
        orig = sitk.ReadImage(str(src / cid / f"{cid}-seg.nii.gz"))
        assert np.array_equal(sitk.GetArrayFromImage(got), lab)
        for attr in ("GetSize", "GetSpacing", "GetOrigin", "GetDirection"):
            assert getattr(got, attr)() == getattr(orig, attr)()
        assert manifest["files"][path.name]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    with zipfile.ZipFile(tmp_path / "submission.zip") as z:
        assert sorted(z.namelist()) == sorted([f"{c}.nii.gz" for c in labs] + ["manifest.json"])

    # a tiny region-based MambaTrainer model, then `submit -m MODEL` predicts and converts in one step
    train = [str(Path(sys.executable).with_name("nnUNetv2_train")), "993", "3d_fullres", "all", "-tr",
             "MambaTrainer_ci", "-device", "cpu"]
    proc = subprocess.run(train, capture_output=True, text=True, env=dict(env, nnUNet_n_proc_DA="0"), timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    model = tmp_path / "res" / out.name / "MambaTrainer_ci__nnUNetPlans__3d_fullres"
    sub2 = tmp_path / "submission_model"
    proc = subprocess.run([sys.executable, "-m", "nnunet_mamba.cli.main", "submit", "brats", "-m", str(model), "-f",
                           "all", "--images", str(out / "imagesTr"), "-d", str(out / "dataset.json"), "-o", str(sub2),
                           "-device", "cpu"], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for cid in labs:
        got = sitk.ReadImage(str(sub2 / f"{cid}.nii.gz"))
        orig = sitk.ReadImage(str(src / cid / f"{cid}-seg.nii.gz"))
        assert got.GetSize() == orig.GetSize() and got.GetOrigin() == orig.GetOrigin()
        assert set(np.unique(sitk.GetArrayFromImage(got)).tolist()) <= {0, 1, 2, 3}
    # the same from an exported model zip (what a challenge team receives)
    zip_path = tmp_path / "model.zip"
    proc = subprocess.run([str(Path(sys.executable).with_name("nnUNetv2_export_model_to_zip")), "-d", "993", "-o",
                           str(zip_path), "-c", "3d_fullres", "-tr", "MambaTrainer_ci", "-f", "all"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    sub3 = tmp_path / "submission_zip"
    proc = subprocess.run([sys.executable, "-m", "nnunet_mamba.cli.main", "submit", "brats", "-m", str(zip_path), "-f",
                           "all", "--images", str(out / "imagesTr"), "-d", str(out / "dataset.json"), "-o", str(sub3),
                           "-device", "cpu"], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for cid in labs:
        a = sitk.GetArrayFromImage(sitk.ReadImage(str(sub2 / f"{cid}.nii.gz")))
        b = sitk.GetArrayFromImage(sitk.ReadImage(str(sub3 / f"{cid}.nii.gz")))
        assert np.array_equal(a, b)


def test_submission_rejects_bad_predictions(brats2023, tmp_path):
    src, labs = brats2023
    out = convert_brats(src, 994, tmp_path / "raw")
    preds = tmp_path / "preds"
    preds.mkdir()
    cid = next(iter(labs))
    _write(np.full(SHAPE, 5, np.uint8), preds / f"{cid}.nii.gz", origin=(3.0, -2.0, 1.5))  # bad label value
    _write(np.zeros(SHORT, np.uint8), preds / "BraTS-GLI-00003-001.nii.gz", origin=(3.0, -2.0, 1.5))  # shape
    _write(np.zeros(SHAPE, np.uint8), preds / "case_7.nii.gz")  # not a BraTS name
    with pytest.raises(DatasetError) as e:
        submit_brats(preds, tmp_path / "sub", out / "dataset.json", out / "imagesTr")
    msg = str(e.value)
    assert f"{cid}.nii.gz: label values [5]" in msg and "BraTS-GLI-00003-001.nii.gz: size" in msg
    assert "case_7.nii.gz: is not named like a BraTS 2023 case" in msg
    assert not (tmp_path / "sub").exists() and not (tmp_path / "sub.zip").exists()
    with pytest.raises(ValueError, match="not a dataset made by `nnunet-mamba convert brats`"):
        ds = tmp_path / "plain.json"
        ds.write_text(json.dumps({"labels": {"background": 0}}))
        submit_brats(preds, tmp_path / "sub", ds)
