"""AMOS 2022 conversion: CT + MRI, training + validation lists, CT-only / MRI-only subsets, bad input."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_mamba.dataset_conversion.amos import amos_modality, convert_amos
from nnunet_mamba.dataset_conversion.checks import DatasetError

ORGANS = ["spleen", "right kidney", "left kidney", "gall bladder", "esophagus", "liver", "stomach", "aorta",
          "postcava", "pancreas", "right adrenal gland", "left adrenal gland", "duodenum", "bladder",
          "prostate/uterus"]


def _write(arr, path: Path, spacing=(0.8, 0.8, 2.5)):
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(spacing)
    sitk.WriteImage(img, str(path))


def make_amos(root: Path) -> Path:
    rng = np.random.default_rng(0)
    task = root / "amos22"
    for sub in ("imagesTr", "labelsTr", "imagesVa", "labelsVa", "imagesTs"):
        (task / sub).mkdir(parents=True)
    split = {"training": [1, 2, 540], "validation": [7, 589], "test": [15]}
    meta = {"name": "AMOS", "modality": {"0": "CT"}, "labels": {"0": "background", **{str(i + 1): o for i, o in
                                                                                       enumerate(ORGANS)}},
            "training": [], "validation": [], "test": []}
    for key, ids in split.items():
        img_dir, lab_dir = {"training": ("imagesTr", "labelsTr"), "validation": ("imagesVa", "labelsVa"),
                            "test": ("imagesTs", None)}[key]
        for i in ids:
            cid = f"amos_{i:04d}"
            lo = -1000 if i <= 500 else 0
            _write(rng.integers(lo, 1500, (6, 9, 8)).astype(np.int16), task / img_dir / f"{cid}.nii.gz")
            if lab_dir:
                _write(rng.integers(0, 16, (6, 9, 8)).astype(np.uint8), task / lab_dir / f"{cid}.nii.gz")
                meta[key].append({"image": f"./{img_dir}/{cid}.nii.gz", "label": f"./{lab_dir}/{cid}.nii.gz"})
            else:
                meta[key].append(f"./{img_dir}/{cid}.nii.gz")
    (task / "dataset.json").write_text(json.dumps(meta))
    return task


def test_modality_from_case_id():
    assert amos_modality("amos_0500") == "CT" and amos_modality("amos_0501") == "MRI"
    with pytest.raises(ValueError):
        amos_modality("case_1")


@pytest.mark.parametrize("modality, expected, channel", [
    ("all", ["amos_0001", "amos_0002", "amos_0007", "amos_0540", "amos_0589"], "CT_MRI"),
    ("ct", ["amos_0001", "amos_0002", "amos_0007"], "CT"),
    ("mri", ["amos_0540", "amos_0589"], "MRI"),
])
def test_subsets_training_plus_validation(tmp_path, modality, expected, channel):
    task = make_amos(tmp_path)
    out = convert_amos(task, 218, tmp_path / "raw", modality=modality)
    ds = json.loads((out / "dataset.json").read_text())
    assert sorted(p.name[: -len(".nii.gz")] for p in (out / "labelsTr").iterdir()) == expected
    assert ds["numTraining"] == len(expected) and ds["channel_names"] == {"0": channel}
    assert ds["labels"]["liver"] == 6 and len(ds["labels"]) == 16
    lab = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "labelsTr" / f"{expected[0]}.nii.gz")))
    src = sitk.GetArrayFromImage(sitk.ReadImage(str(next(task.glob(f"labels*/{expected[0]}.nii.gz")))))
    assert np.array_equal(lab, src)
    test_cases = sorted(p.name for p in (out / "imagesTs").iterdir())
    assert test_cases == (["amos_0015_0000.nii.gz"] if modality != "mri" else [])


def test_bad_input_reported_nothing_written(tmp_path):
    task = make_amos(tmp_path)
    _write(np.full((6, 9, 8), 20, np.uint8), task / "labelsVa" / "amos_0007.nii.gz")  # organ 20 does not exist
    _write(np.zeros((6, 9, 8), np.int16), task / "imagesVa" / "amos_0999.nii.gz")  # not listed
    (task / "labelsTr" / "amos_0002.nii.gz").unlink()
    with pytest.raises(DatasetError) as e:
        convert_amos(task, 218, tmp_path / "raw")
    msg = str(e.value)
    assert "labelsVa/amos_0007.nii.gz: label values [20] are not declared" in msg
    assert "imagesVa/amos_0999.nii.gz: image in imagesVa/ is not listed" in msg
    assert "label of case amos_0002 is missing" in msg
    assert not (tmp_path / "raw" / "Dataset218_AMOS2022").exists()


def test_cli(tmp_path):
    task = make_amos(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "nnunet_mamba.cli.main", "convert", "amos", str(task), "-o",
                           str(tmp_path / "raw"), "--modality", "ct"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "raw" / "Dataset218_AMOS2022_CT" / "dataset.json").is_file()
