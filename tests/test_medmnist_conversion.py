"""MedMNIST conversion (real npz files): classes, official split as fold 0, nnU-Net accepts the dataset."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_mamba.dataset_conversion.medmnist import convert_medmnist, load_npz, read_classes

MEDMNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "medmnist"
pytestmark = pytest.mark.skipif(not MEDMNIST.is_dir(), reason="../shared/data/medmnist not available")


def test_breastmnist_2d_all_cases(tmp_path):
    src = load_npz(MEDMNIST / "breastmnist.npz")
    out = convert_medmnist(MEDMNIST / "breastmnist.npz", 960, "BreastMNIST", ["malignant", "normal_benign"],
                           tmp_path / "raw")
    ds = json.loads((out / "dataset.json").read_text())
    assert ds["numTraining"] == 546 + 78
    assert ds["classification"]["classes"] == {"0": "malignant", "1": "normal_benign"}
    classes = read_classes(out)
    assert [classes[f"train_{i:05d}"] for i in range(546)] == src["train"][1].tolist()
    assert [classes[f"val_{i:05d}"] for i in range(78)] == src["val"][1].tolist()
    img = sitk.ReadImage(str(out / "imagesTr" / "val_00005_0000.nii.gz"))
    assert img.GetSize() == (28, 28, 1) and img.GetSpacing()[2] == 999.0
    assert np.array_equal(sitk.GetArrayFromImage(img)[0], src["val"][0][5].astype(np.float32))
    splits = json.loads((out / "splits_final.json").read_text())
    assert len(splits) == 1 and len(splits[0]["train"]) == 546 and len(splits[0]["val"]) == 78
    with open(out / "classes.csv") as f:
        assert next(csv.reader(f)) == ["case", "class", "split"]


def test_adrenal3d_subset_is_accepted_by_nnunet(tmp_path):
    """A 3D subset through nnU-Net's own plan_and_preprocess --verify_dataset_integrity, fold 0 = official split."""
    raw = tmp_path / "raw"
    out = convert_medmnist(MEDMNIST / "adrenalmnist3d.npz", 961, "Adrenal", ["normal", "hyperplasia"], raw,
                           max_per_split=6)
    img = sitk.ReadImage(str(out / "imagesTr" / "train_00000_0000.nii.gz"))
    assert img.GetSize() == (28, 28, 28)
    env = dict(os.environ, nnUNet_raw=str(raw), nnUNet_preprocessed=str(tmp_path / "pre"),
               nnUNet_results=str(tmp_path / "res"))
    exe = str(Path(sys.executable).with_name("nnUNetv2_plan_and_preprocess"))
    proc = subprocess.run([exe, "-d", "961", "-c", "3d_fullres", "-np", "1", "-npfp", "1",
                           "--verify_dataset_integrity"], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    splits = json.loads((tmp_path / "pre" / out.name / "splits_final.json").read_text())
    assert splits[0]["val"] == [f"val_{i:05d}" for i in range(6)]


def test_bad_npz_and_class_names(tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, train_images=np.zeros((3, 8, 8), np.uint8), train_labels=np.zeros((2, 1), np.uint8))
    with pytest.raises(ValueError, match=r"bad.npz: 3 train_images but 2 train_labels"):
        convert_medmnist(bad, 962, "Bad", output_root=tmp_path / "raw")
    with pytest.raises(ValueError, match=r"labels go up to 1 but only 1 class names"):
        convert_medmnist(MEDMNIST / "breastmnist.npz", 962, "B", ["one"], tmp_path / "raw")
    assert not (tmp_path / "raw" / "Dataset962_B").exists()
    proc = subprocess.run([sys.executable, "-m", "nnunet_mamba.cli.main", "convert", "medmnist",
                           str(tmp_path / "missing.npz"), "-d", "963", "--name", "X", "-o", str(tmp_path / "raw")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "missing.npz: no such file" in proc.stderr
