"""Hostile input through the CLI (subprocesses), built from real MSD Hippocampus cases: damaged files, outputs
that would overwrite their inputs, incomplete submissions. Each is one clear error naming the file, and nothing
is written or lost.
"""
from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from test_brats import brats2021  # noqa: F401  (fixture)
from test_msd_conversion import small_task

pytestmark = pytest.mark.faults


def cli(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nnunet_mamba.cli.main", *map(str, args)], capture_output=True,
                          text=True, timeout=300, env=env)


def truncate(path: Path, fraction: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


def first_label(task: Path) -> Path:
    return sorted((task / "labelsTr").glob("*.nii.gz"))[0]


def test_truncated_gzip_label_is_refused_not_converted(tmp_path):
    task = small_task(tmp_path)
    label = first_label(task)
    truncate(label)
    out = cli("convert", "msd", task, "-o", tmp_path / "raw")
    assert out.returncode == 2
    assert str(label) in out.stderr and "truncated" in out.stderr
    assert not (tmp_path / "raw").exists() or not any((tmp_path / "raw").iterdir())


def test_truncated_uncompressed_nifti_is_refused(tmp_path):
    """A .nii cut short: no gzip check can see it; the header's declared data size does."""
    task = small_task(tmp_path)
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    for src in sorted((task / "imagesTr").glob("*.nii.gz")):
        (images / src.name[:-3]).write_bytes(gzip.decompress(src.read_bytes()))
        lab = task / "labelsTr" / src.name
        (labels / lab.name[:-3]).write_bytes(gzip.decompress(lab.read_bytes()))
    victim = sorted(images.iterdir())[1]
    truncate(victim, 0.7)
    out = cli("convert", "folder", "--images", images, "--labels", labels, "-d", "912", "--name", "Y",
              "--channels", "MRI", "--label-names", "background=0", "Anterior=1", "Posterior=2", "-o", tmp_path / "raw")
    assert out.returncode == 2 and str(victim) in out.stderr and "truncated" in out.stderr
    assert not (tmp_path / "raw" / "Dataset912_Y").exists()


def test_truncated_float_image_and_other_problems_are_all_reported(tmp_path):
    """A float image cut short used to crash the NaN check (EOFError); now it is one problem among the others."""
    task = small_task(tmp_path)
    images = sorted((task / "imagesTr").glob("*.nii.gz"))
    img = sitk.ReadImage(str(images[0]))
    float_img = sitk.Cast(img, sitk.sitkFloat32)
    sitk.WriteImage(float_img, str(images[0]), useCompression=True)
    truncate(images[0])
    labels = sorted((task / "labelsTr").glob("*.nii.gz"))
    bad = sitk.ReadImage(str(labels[1]))
    arr = sitk.GetArrayFromImage(bad)
    arr[0, 0, 0] = 7  # a label value the dataset does not declare
    out_img = sitk.GetImageFromArray(arr)
    out_img.CopyInformation(bad)
    sitk.WriteImage(out_img, str(labels[1]), useCompression=True)
    out = cli("convert", "msd", task, "-o", tmp_path / "raw")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert str(images[0]) in out.stderr and str(labels[1]) in out.stderr and "[7]" in out.stderr


def test_overwrite_never_deletes_the_input(tmp_path):
    task = small_task(tmp_path)
    raw = tmp_path / "raw"
    first = cli("convert", "msd", task, "-d", "911", "--name", "X", "-o", raw)
    assert first.returncode == 0, first.stderr
    ds = raw / "Dataset911_X"
    labels_before = sorted(p.name for p in (ds / "labelsTr").iterdir())
    out = cli("convert", "folder", "--images", ds / "imagesTr", "--labels", ds / "labelsTr", "-d", "911", "--name",
              "X", "--channels", "MRI", "--label-names", "background=0", "Anterior=1", "Posterior=2", "-o", raw,
              "--overwrite")
    assert out.returncode == 2 and "delete the input" in out.stderr
    assert sorted(p.name for p in (ds / "labelsTr").iterdir()) == labels_before


def _converted_brats(tmp_path, src):
    from nnunet_mamba.dataset_conversion.brats import convert_brats
    ds = convert_brats(src, 137, tmp_path / "raw")
    return ds


def _fake_predictions(ds: Path, folder: Path, cases) -> None:
    folder.mkdir()
    for cid in cases:
        ref = sitk.ReadImage(str(ds / "imagesTr" / f"{cid}_0000.nii.gz"))
        pred = sitk.GetImageFromArray(np.zeros(sitk.GetArrayViewFromImage(ref).shape, np.uint8))
        pred.CopyInformation(ref)
        sitk.WriteImage(pred, str(folder / f"{cid}.nii.gz"), useCompression=True)


def test_submission_needs_every_case_or_allow_missing(tmp_path, brats2021):  # noqa: F811
    src, labs = brats2021
    ds = _converted_brats(tmp_path, src)
    cases = sorted(labs)
    pred = tmp_path / "pred"
    _fake_predictions(ds, pred, cases[:1])
    out = cli("submit", "brats", "-i", pred, "--images", ds / "imagesTr", "-d", ds / "dataset.json",
              "-o", tmp_path / "sub")
    assert out.returncode == 2 and cases[1] in out.stderr and "--allow-missing" in out.stderr
    assert not (tmp_path / "sub").exists()
    out = cli("submit", "brats", "-i", pred, "--images", ds / "imagesTr", "-d", ds / "dataset.json",
              "-o", tmp_path / "sub", "--allow-missing")
    assert out.returncode == 0, out.stderr
    manifest = json.loads((tmp_path / "sub" / "manifest.json").read_text())
    assert manifest["missing_cases"] == cases[1:] and len(manifest["files"]) == 1


def test_submission_refuses_a_truncated_prediction(tmp_path, brats2021):  # noqa: F811
    src, labs = brats2021
    ds = _converted_brats(tmp_path, src)
    pred = tmp_path / "pred"
    _fake_predictions(ds, pred, sorted(labs))
    victim = sorted(pred.iterdir())[0]
    truncate(victim)
    out = cli("submit", "brats", "-i", pred, "--images", ds / "imagesTr", "-d", ds / "dataset.json",
              "-o", tmp_path / "sub")
    assert out.returncode == 2 and str(victim) in out.stderr and "truncated" in out.stderr
    assert not (tmp_path / "sub").exists() and not (tmp_path / "sub.zip").exists()


def test_submission_output_inside_the_predictions_is_refused(tmp_path, brats2021):  # noqa: F811
    src, labs = brats2021
    ds = _converted_brats(tmp_path, src)
    pred = tmp_path / "pred"
    _fake_predictions(ds, pred, sorted(labs))
    before = sorted(p.name for p in pred.iterdir())
    out = cli("submit", "brats", "-i", pred, "--images", ds / "imagesTr", "-d", ds / "dataset.json",
              "-o", pred, "--overwrite")
    assert out.returncode == 2 and "input" in out.stderr
    assert sorted(p.name for p in pred.iterdir()) == before
    shutil.rmtree(pred)


def test_dataset_folders_get_the_users_mode_not_0700(tmp_path):
    task = small_task(tmp_path)
    out = subprocess.run(["bash", "-c", f"umask 022 && {sys.executable} -m nnunet_mamba.cli.main convert msd {task} "
                                        f"-o {tmp_path / 'raw'}"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    ds = next((tmp_path / "raw").iterdir())
    assert ds.stat().st_mode & 0o777 == 0o755


@pytest.mark.parametrize("args,expected", [
    (["plan", "-d", "4", "-gpu", "-3"], "from 2 to 10000 GB"),
    (["plan", "-d", "4", "-gpu", "0"], "from 2 to 10000 GB"),
    (["plan", "-d", "-5"], "not a dataset ID"),
    (["convert", "msd", "x", "-d", "1000"], "not a dataset ID"),
])
def test_numeric_arguments_are_validated(args, expected):
    out = cli(*args)
    assert out.returncode == 2 and expected in out.stderr


def test_dataset_names_and_taken_ids_are_refused(tmp_path):
    task = small_task(tmp_path)
    out = cli("convert", "msd", task, "-d", "913", "--name", "a/b", "-o", tmp_path / "raw")
    assert out.returncode == 2 and "dataset name 'a/b'" in out.stderr
    assert cli("convert", "msd", task, "-d", "913", "--name", "First", "-o", tmp_path / "raw").returncode == 0
    out = cli("convert", "msd", task, "-d", "913", "--name", "Second", "-o", tmp_path / "raw")
    assert out.returncode == 2 and "Dataset913_First" in out.stderr and "already used" in out.stderr
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == ["Dataset913_First"]


def test_operating_system_errors_are_one_line_naming_the_path(monkeypatch, capsys):
    import errno
    from nnunet_mamba.cli import main as cli_main
    import nnunet_mamba.dataset_conversion.msd as msd

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", "/mnt/ro/Dataset004_Hippocampus")
    monkeypatch.setattr(msd, "convert_msd", read_only)
    assert cli_main.main(["convert", "msd", "/somewhere/Task04_Hippocampus", "-o", "/mnt/ro"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "nnunet-mamba convert: error: /mnt/ro/Dataset004_Hippocampus: Read-only file system"


def test_a_short_write_is_an_error_not_a_dataset(tmp_path, monkeypatch):
    """On a full disk SimpleITK can leave a short file without raising: what was written is checked."""
    import nnunet_mamba.dataset_conversion.checks as checks
    real = checks.sitk.WriteImage

    def short_write(image, path, *args, **kwargs):
        real(image, path, *args, **kwargs)
        Path(path).write_bytes(Path(path).read_bytes()[:100])
    monkeypatch.setattr(checks.sitk, "WriteImage", short_write)
    from nnunet_mamba.dataset_conversion.msd import convert_msd
    with pytest.raises(OSError, match="disk full"):
        convert_msd(small_task(tmp_path), 914, tmp_path / "raw", "Short")
    assert not (tmp_path / "raw" / "Dataset914_Short").exists()


SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.mark.skipif(not (SHARED / "hippocrop_dicom_tcia").is_dir(), reason="../shared/data not available")
def test_dicom_series_with_a_missing_slice_is_refused(tmp_path):
    """One file of a real 32-slice series removed: ITK stacked 31 slices at 1.0333 mm, misplacing them."""
    src = tmp_path / "dicom"
    series = next((SHARED / "hippocrop_dicom_tcia" / "Study1").iterdir())
    shutil.copytree(series, src / "case1")
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(src / "case1"))
    Path(files[len(files) // 2]).unlink()
    out = cli("convert", "folder", "--images", src, "-d", "915", "--name", "Gap", "--channels", "MRI",
              "-o", tmp_path / "raw")
    assert out.returncode == 2 and str(src / "case1") in out.stderr and "slice spacing is uneven" in out.stderr
    assert not (tmp_path / "raw" / "Dataset915_Gap").exists()


def test_a_missing_channel_is_one_problem_not_also_a_label_without_image(tmp_path):
    task = small_task(tmp_path, n_train=2)
    images, labels = tmp_path / "images", task / "labelsTr"
    images.mkdir()
    for src in sorted((task / "imagesTr").glob("*.nii.gz")):
        for c in range(2):
            shutil.copy(src, images / src.name.replace(".nii.gz", f"_{c:04d}.nii.gz"))
    victim = sorted(images.iterdir())[1]  # the first case's second channel
    victim.unlink()
    out = cli("convert", "folder", "--images", images, "--labels", labels, "-d", "916", "--name", "Ch",
              "--channels", "T1", "T2", "--label-names", "background=0", "Anterior=1", "Posterior=2",
              "-o", tmp_path / "raw")
    assert out.returncode == 2 and "lacks channel(s) [1] of 2" in out.stderr
    assert "has no image" not in out.stderr and out.stderr.count("  - ") == 1


@pytest.mark.skipif(not (SHARED / "medmnist").is_dir(), reason="../shared/data not available")
@pytest.mark.parametrize("fraction", [0.3, 0.9])
def test_truncated_medmnist_npz_is_a_message(tmp_path, fraction):
    npz = tmp_path / "breastmnist.npz"
    npz.write_bytes((SHARED / "medmnist" / "breastmnist.npz").read_bytes())
    truncate(npz, fraction)
    out = cli("convert", "medmnist", npz, "-d", "917", "--name", "Cut", "-o", tmp_path / "raw")
    assert out.returncode == 2 and str(npz) in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "raw" / "Dataset917_Cut").exists()
