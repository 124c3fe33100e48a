"""MSD conversion: the shipped real subset converts correctly; broken input is reported, nothing written."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_mamba.data import HIPPOCAMPUS_DEMO
from nnunet_mamba.dataset_conversion.checks import DatasetError
from nnunet_mamba.dataset_conversion.msd import convert_msd

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def small_task(tmp_path: Path, n_train: int = 4, n_test: int = 1) -> Path:
    """A copy of the first cases of the shipped subset, in MSD layout (with labelsTs)."""
    meta = json.loads((HIPPOCAMPUS_DEMO / "dataset.json").read_text())
    task = tmp_path / "Task04_Hippocampus"
    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (task / sub).mkdir(parents=True)
    train = meta["training"][:n_train]
    test = meta["test"][:n_test]
    for e in train:
        shutil.copy(HIPPOCAMPUS_DEMO / e["image"], task / e["image"])
        shutil.copy(HIPPOCAMPUS_DEMO / e["label"], task / e["label"])
    for t in test:
        shutil.copy(HIPPOCAMPUS_DEMO / t, task / t)
        shutil.copy(HIPPOCAMPUS_DEMO / "labelsTs" / Path(t).name, task / "labelsTs" / Path(t).name)
    meta.update(training=train, test=test, numTraining=len(train), numTest=len(test))
    (task / "dataset.json").write_text(json.dumps(meta))
    return task


def test_shipped_subset_converts_to_nnunet_raw(tmp_path):
    out = convert_msd(HIPPOCAMPUS_DEMO, 904, tmp_path, "HippocampusDemo")
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["labels"] == {"background": 0, "Anterior": 1, "Posterior": 2}
    assert meta["channel_names"] == {"0": "MRI"} and meta["file_ending"] == ".nii.gz"
    assert meta["numTraining"] == 46 == len(list((out / "labelsTr").iterdir()))
    assert len(list((out / "imagesTs").iterdir())) == 12 == len(list((out / "labelsTs").iterdir()))
    # hippocampus_003 has a float32 label in MSD: converted to uint8 with identical values and geometry
    src_lab = sitk.ReadImage(str(HIPPOCAMPUS_DEMO / "labelsTr" / "hippocampus_003.nii.gz"))
    lab = sitk.ReadImage(str(out / "labelsTr" / "hippocampus_003.nii.gz"))
    img = sitk.ReadImage(str(out / "imagesTr" / "hippocampus_003_0000.nii.gz"))
    assert src_lab.GetPixelID() == sitk.sitkFloat32 and lab.GetPixelID() == sitk.sitkUInt8
    assert np.array_equal(sitk.GetArrayFromImage(lab), sitk.GetArrayFromImage(src_lab).astype(np.uint8))
    for a, b in ((lab, img), (img, sitk.ReadImage(str(HIPPOCAMPUS_DEMO / "imagesTr" / "hippocampus_003.nii.gz")))):
        assert a.GetSize() == b.GetSize() and np.allclose(a.GetOrigin(), b.GetOrigin())
        assert np.allclose(a.GetSpacing(), b.GetSpacing()) and np.allclose(a.GetDirection(), b.GetDirection())
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folders left


def test_refuses_to_overwrite_and_replaces_when_asked(tmp_path):
    task = small_task(tmp_path / "in")
    out = convert_msd(task, 5, tmp_path / "raw")
    marker = out / "marker"
    marker.write_text("x")
    with pytest.raises(FileExistsError):
        convert_msd(task, 5, tmp_path / "raw")
    assert marker.exists()
    convert_msd(task, 5, tmp_path / "raw", overwrite=True)
    assert not marker.exists() and (out / "dataset.json").exists()


@pytest.mark.skipif(not (SHARED / "hippocampus_udacity_extras").is_dir(), reason="shared data not present")
def test_real_broken_cases_are_all_reported_and_nothing_is_written(tmp_path):
    task = small_task(tmp_path / "in")
    extras = SHARED / "hippocampus_udacity_extras"
    meta = json.loads((task / "dataset.json").read_text())
    # an image without a label (118), and a foreign 512x512x94 label put next to a real image (281)
    shutil.copy(extras / "images" / "hippocampus_118.nii.gz", task / "imagesTr")
    first = meta["training"][0]
    shutil.copy(extras / "labels" / "hippocampus_281.nii.gz", task / first["label"])
    meta["training"].append({"image": "./imagesTr/hippocampus_118.nii.gz",
                             "label": "./labelsTr/hippocampus_118.nii.gz"})
    (task / "dataset.json").write_text(json.dumps(meta))
    before = sorted(p.relative_to(task) for p in task.rglob("*"))
    with pytest.raises(DatasetError) as err:
        convert_msd(task, 4, tmp_path / "raw")
    text = str(err.value)
    assert "hippocampus_118.nii.gz: label of case hippocampus_118 is missing" in text
    assert "size (512, 512, 94) differs" in text and Path(first["label"]).name in text
    assert not (tmp_path / "raw").exists() or not any((tmp_path / "raw").iterdir())
    assert sorted(p.relative_to(task) for p in task.rglob("*")) == before  # input untouched


def test_synthetic_problems_are_reported_together(tmp_path):
    task = small_task(tmp_path / "in", n_train=3)
    meta = json.loads((task / "dataset.json").read_text())
    img0 = task / meta["training"][0]["image"]
    arr = sitk.GetArrayFromImage(sitk.ReadImage(str(img0))).astype(np.float32)
    arr[0, 0, 0] = np.nan
    bad = sitk.GetImageFromArray(arr)
    bad.CopyInformation(sitk.ReadImage(str(img0)))
    sitk.WriteImage(bad, str(img0))
    lab1 = task / meta["training"][1]["label"]
    lab = sitk.ReadImage(str(lab1))
    la = sitk.GetArrayFromImage(lab)
    la[0, 0, 0] = 7
    nl = sitk.GetImageFromArray(la)
    nl.CopyInformation(lab)
    sitk.WriteImage(nl, str(lab1))
    (task / meta["training"][2]["image"]).write_bytes(b"not a nifti")
    with pytest.raises(DatasetError) as err:
        convert_msd(task, 4, tmp_path / "raw")
    assert len(err.value.problems) == 3
    text = str(err.value)
    assert "NaN/Inf" in text and "label values [7]" in text and "cannot be read" in text
