"""Generic folder conversion: mixed formats, real DICOM series, multi-channel, real broken cases."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_mamba.data import HIPPOCAMPUS_DEMO
from nnunet_mamba.dataset_conversion.checks import DatasetError
from nnunet_mamba.dataset_conversion.folder import convert_folder

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
LABELS = {"background": 0, "anterior": 1, "posterior": 2}


def demo_cases(n):
    meta = json.loads((HIPPOCAMPUS_DEMO / "dataset.json").read_text())
    return [(Path(e["image"]).name[: -len(".nii.gz")], HIPPOCAMPUS_DEMO / e["image"], HIPPOCAMPUS_DEMO / e["label"])
            for e in meta["training"][:n]]


def test_mixed_formats_round_trip_values_and_geometry(tmp_path):
    """NIfTI, NRRD and MetaImage inputs (and a nnU-Net-style _0000 name) -> identical voxels and geometry."""
    img_dir, lab_dir = tmp_path / "img", tmp_path / "lab"
    img_dir.mkdir()
    lab_dir.mkdir()
    originals = {}
    for (cid, img, lab), ext in zip(demo_cases(4), (".nrrd", ".mha", ".nii.gz", ".nii")):
        name = f"{cid}_0000{ext}" if ext == ".nii" else f"{cid}{ext}"
        sitk.WriteImage(sitk.ReadImage(str(img)), str(img_dir / name))
        sitk.WriteImage(sitk.ReadImage(str(lab)), str(lab_dir / f"{cid}{ext}"))
        originals[cid] = (sitk.ReadImage(str(img)), sitk.ReadImage(str(lab)))
    out = convert_folder(img_dir, 950, "Mixed", ["MRI"], lab_dir, LABELS, output_root=tmp_path / "raw")
    ds = json.loads((out / "dataset.json").read_text())
    assert ds["numTraining"] == 4 and ds["labels"] == LABELS and ds["channel_names"] == {"0": "MRI"}
    for cid, (img, lab) in originals.items():
        got = sitk.ReadImage(str(out / "imagesTr" / f"{cid}_0000.nii.gz"))
        gl = sitk.ReadImage(str(out / "labelsTr" / f"{cid}.nii.gz"))
        assert np.array_equal(sitk.GetArrayFromImage(got), sitk.GetArrayFromImage(img))
        assert np.array_equal(sitk.GetArrayFromImage(gl), np.round(sitk.GetArrayFromImage(lab)))
        assert np.allclose(got.GetOrigin(), img.GetOrigin()) and np.allclose(got.GetSpacing(), img.GetSpacing())


@pytest.mark.skipif(not (SHARED / "hippocrop_dicom_tcia").is_dir(), reason="../shared/data not available")
def test_real_dicom_series_become_test_images(tmp_path):
    src = tmp_path / "dicom"
    for study in sorted((SHARED / "hippocrop_dicom_tcia").glob("Study*")):
        series = next(study.iterdir())
        shutil.copytree(series, src / f"{study.name}_{series.name}")
    out = convert_folder(src, 951, "HippoCrop", ["MRI"], output_root=tmp_path / "raw")
    got = sorted(p.name for p in (out / "imagesTs").iterdir())
    assert got == ["Study1_13_HCropVolume_0000.nii.gz", "Study2_14_HCropVolume_0000.nii.gz",
                   "Study3_11_HCropVolume_0000.nii.gz"]
    img = sitk.ReadImage(str(out / "imagesTs" / got[0]))
    assert img.GetSize()[2] == 32 and sorted(img.GetSize()[:2]) == [35, 51]  # 32 slices of 51 x 35 (SOURCE.md)
    reader = sitk.ImageSeriesReader()
    d = src / "Study1_13_HCropVolume"
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(d)))
    assert np.array_equal(sitk.GetArrayFromImage(img), sitk.GetArrayFromImage(reader.Execute()))


def test_multichannel_pattern_and_missing_channel(tmp_path):
    img_dir, lab_dir = tmp_path / "img", tmp_path / "lab"
    img_dir.mkdir()
    lab_dir.mkdir()
    for cid, img, lab in demo_cases(2):
        for c in range(2):
            sitk.WriteImage(sitk.ReadImage(str(img)), str(img_dir / f"{cid}_{c:04d}.nii.gz"))
        shutil.copy(lab, lab_dir / f"{cid}.nii.gz")
    out = convert_folder(img_dir, 952, "TwoChannel", ["T1", "T2"], lab_dir, LABELS, output_root=tmp_path / "raw")
    assert len(list((out / "imagesTr").iterdir())) == 4
    first = sorted(img_dir.iterdir())[1]
    first.unlink()
    with pytest.raises(DatasetError, match=r"lacks channel\(s\) \[1\] of 2"):
        convert_folder(img_dir, 953, "TwoChannel", ["T1", "T2"], lab_dir, LABELS, output_root=tmp_path / "raw")


@pytest.mark.skipif(not (SHARED / "hippocampus_udacity_extras").is_dir(), reason="../shared/data not available")
def test_real_broken_cases_all_reported_nothing_written(tmp_path):
    """The Udacity copy's outliers: an image without label, labels without images (one 512x512x94)."""
    extras = SHARED / "hippocampus_udacity_extras"
    img_dir, lab_dir = tmp_path / "img", tmp_path / "lab"
    shutil.copytree(extras / "images", img_dir)
    shutil.copytree(extras / "labels", lab_dir)
    cid, img, lab = demo_cases(1)[0]
    shutil.copy(img, img_dir / f"{cid}.nii.gz")
    bad = sitk.GetArrayFromImage(sitk.ReadImage(str(lab))).astype(np.uint8)
    bad[0, 0, 0] = 7
    out_lab = sitk.GetImageFromArray(bad)
    out_lab.CopyInformation(sitk.ReadImage(str(lab)))
    sitk.WriteImage(out_lab, str(lab_dir / f"{cid}.nii.gz"))
    (img_dir / "notes.txt").write_text("x")
    with pytest.raises(DatasetError) as e:
        convert_folder(img_dir, 954, "Broken", ["MRI"], lab_dir, LABELS, output_root=tmp_path / "raw")
    msg = str(e.value)
    assert "hippocampus_118.nii.gz: image of case hippocampus_118 has no label" in msg
    assert "hippocampus_010.nii.gz: label of case hippocampus_010 has no image" in msg
    assert "hippocampus_281.nii.gz: label of case hippocampus_281 has no image" in msg
    assert f"{cid}.nii.gz: label values [7] are not declared" in msg
    assert "notes.txt: not an image file" in msg
    assert not (tmp_path / "raw" / "Dataset954_Broken").exists()


def test_cli_label_names_and_errors(tmp_path):
    img_dir, lab_dir = tmp_path / "img", tmp_path / "lab"
    img_dir.mkdir()
    lab_dir.mkdir()
    for cid, img, lab in demo_cases(2):
        shutil.copy(img, img_dir / f"{cid}.nii.gz")
        shutil.copy(lab, lab_dir / f"{cid}.nii.gz")
    base = [sys.executable, "-m", "nnunet_mamba.cli.main", "convert", "folder", "--images", str(img_dir),
            "--labels", str(lab_dir), "-d", "955", "--name", "Cli", "-o", str(tmp_path / "raw")]
    ok = subprocess.run(base + ["--label-names", "background=0", "anterior=1", "posterior=2"], capture_output=True,
                        text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert (tmp_path / "raw" / "Dataset955_Cli" / "labelsTr").is_dir()
    bad = subprocess.run(base + ["--label-names", "background=zero"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "is not NAME=INTEGER" in bad.stderr


@pytest.mark.skipif(not (SHARED / "Dataset501_MSLesionLesjakMNI").is_dir(), reason="../shared/data not available")
def test_real_four_channel_ms_lesion_data(tmp_path):
    """3 MS patients, FLAIR/T1/T1POST/T2 (real MRI): channels grouped by name, voxels and geometry kept."""
    src = SHARED / "Dataset501_MSLesionLesjakMNI"
    meta = json.loads((src / "dataset.json").read_text())
    channels = [meta["channel_names"][str(i)] for i in range(4)]
    out = convert_folder(src / "imagesTr", 956, "MSLesion", channels, src / "labelsTr", meta["labels"],
                         output_root=tmp_path / "raw")
    ds = json.loads((out / "dataset.json").read_text())
    assert ds["numTraining"] == 3 and ds["channel_names"] == meta["channel_names"]
    for case in ("ms_patient07", "ms_patient19", "ms_patient26"):
        for c in range(4):
            a = sitk.ReadImage(str(src / "imagesTr" / f"{case}_{c:04d}.nii.gz"))
            b = sitk.ReadImage(str(out / "imagesTr" / f"{case}_{c:04d}.nii.gz"))
            assert np.array_equal(sitk.GetArrayFromImage(a), sitk.GetArrayFromImage(b))
            assert np.allclose(a.GetOrigin(), b.GetOrigin()) and np.allclose(a.GetDirection(), b.GetDirection())
        lab = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "labelsTr" / f"{case}.nii.gz")))
        ref = sitk.GetArrayFromImage(sitk.ReadImage(str(src / "labelsTr" / f"{case}.nii.gz")))
        assert np.array_equal(lab, ref) and lab.max() == 1


def test_nibabel_only_format_keeps_voxels_and_physical_geometry(tmp_path):
    """FreeSurfer .mgz (nibabel, RAS) in, NIfTI (ITK, LPS) out: same voxels, same geometry as SimpleITK's NIfTI read."""
    import nibabel as nib
    img_dir, lab_dir = tmp_path / "img", tmp_path / "lab"
    img_dir.mkdir()
    lab_dir.mkdir()
    (cid, img, lab), = demo_cases(1)
    for src, dst in ((img, img_dir / f"{cid}.mgz"), (lab, lab_dir / f"{cid}.mgz")):
        n = nib.load(str(src))
        data = np.asanyarray(n.dataobj).astype(np.float32 if src == img else np.uint8)
        nib.save(nib.MGHImage(data, n.affine), str(dst))
    out = convert_folder(img_dir, 957, "Mgz", ["MRI"], lab_dir, LABELS, output_root=tmp_path / "raw")
    got = sitk.ReadImage(str(out / "imagesTr" / f"{cid}_0000.nii.gz"))
    ref = sitk.ReadImage(str(img))
    assert np.array_equal(sitk.GetArrayFromImage(got), sitk.GetArrayFromImage(ref).astype(np.float32))
    assert np.allclose(got.GetSpacing(), ref.GetSpacing(), atol=1e-5)
    assert np.allclose(got.GetOrigin(), ref.GetOrigin(), atol=1e-4)
    assert np.allclose(got.GetDirection(), ref.GetDirection(), atol=1e-6)
