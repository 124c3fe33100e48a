"""Round trips through nnU-Net for the AMOS and generic-folder converters: convert, plan and preprocess with
--verify_dataset_integrity, train a tiny model, predict, and compare the predictions' geometry with the inputs."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_mamba.dataset_conversion.amos import convert_amos
from nnunet_mamba.dataset_conversion.folder import convert_folder

from test_amos import make_amos
from test_folder_conversion import LABELS, demo_cases

pytestmark = pytest.mark.slow


def cli(name):
    return str(Path(sys.executable).with_name(name))


def nnunet_round_trip(tmp_path, dataset_id: int, dataset: Path) -> Path:
    env = dict(os.environ, nnUNet_raw=str(dataset.parent), nnUNet_preprocessed=str(tmp_path / "pre"),
               nnUNet_results=str(tmp_path / "res"))
    d = str(dataset_id)
    plan = [cli("nnUNetv2_plan_and_preprocess"), "-d", d, "-c", "3d_fullres", "-np", "1", "-npfp", "1",
            "--verify_dataset_integrity"]
    train = [cli("nnUNetv2_train"), d, "3d_fullres", "all", "-tr", "MambaTrainer_ci", "-device", "cpu"]
    predict = [cli("nnUNetv2_predict"), "-i", str(dataset / "imagesTr"), "-o", str(tmp_path / "pred"), "-d", d, "-c",
               "3d_fullres", "-f", "all", "-tr", "MambaTrainer_ci", "-device", "cpu", "-npp", "0", "-nps", "0"]
    # nnUNet_n_proc_DA=0 only for training: nnU-Net's planner calls torch.set_num_threads(nnUNet_n_proc_DA)
    for cmd, extra in ((plan, {}), (train, {"nnUNet_n_proc_DA": "0"}), (predict, {})):
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env={**env, **extra})
        assert proc.returncode == 0, " ".join(cmd) + "\n" + proc.stdout[-2000:] + proc.stderr[-3000:]
    return tmp_path / "pred"


def test_folder_nrrd_round_trip(tmp_path):
    img_dir, lab_dir = tmp_path / "img", tmp_path / "lab"
    img_dir.mkdir()
    lab_dir.mkdir()
    sources = {}
    for cid, img, lab in demo_cases(5):
        sitk.WriteImage(sitk.ReadImage(str(img)), str(img_dir / f"{cid}.nrrd"))
        sitk.WriteImage(sitk.ReadImage(str(lab)), str(lab_dir / f"{cid}.nrrd"))
        sources[cid] = sitk.ReadImage(str(img_dir / f"{cid}.nrrd"))
    out = convert_folder(img_dir, 970, "NrrdRT", ["MRI"], lab_dir, LABELS, output_root=tmp_path / "raw")
    pred = nnunet_round_trip(tmp_path, 970, out)
    for cid, src in sources.items():
        p = sitk.ReadImage(str(pred / f"{cid}.nii.gz"))
        assert p.GetSize() == src.GetSize()
        assert np.allclose(p.GetSpacing(), src.GetSpacing()) and np.allclose(p.GetOrigin(), src.GetOrigin())
        assert np.allclose(p.GetDirection(), src.GetDirection())
        assert set(np.unique(sitk.GetArrayFromImage(p)).tolist()) <= {0, 1, 2}


def test_amos_round_trip(tmp_path):
    task = make_amos(tmp_path)
    out = convert_amos(task, 971, tmp_path / "raw", modality="all")
    pred = nnunet_round_trip(tmp_path, 971, out)
    for f in sorted(task.glob("images[TV][ra]/amos_*.nii.gz")):
        p = sitk.ReadImage(str(pred / f.name))  # AMOS names survive: amos_XXXX.nii.gz
        src = sitk.ReadImage(str(f))
        assert p.GetSize() == src.GetSize() and np.allclose(p.GetSpacing(), src.GetSpacing())
        assert set(np.unique(sitk.GetArrayFromImage(p)).tolist()) <= set(range(16))
