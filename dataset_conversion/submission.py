"""Challenge submissions from nnU-Net predictions: the challenge's naming and labels, checked geometry,
a manifest with checksums and a zip, written atomically.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import SimpleITK as sitk

from .atomic import atomic_directory
from .brats import NAMINGS, to_brats_labels
from .checks import DatasetError, Problem, geometry_problems, read_image, write_image

_NII = ".nii.gz"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def predict_with_model(model: Path, images: Path, folds, out: Path, device: str = "cuda") -> None:
    """Run nnU-Net's predictor from a trained model folder or an exported zip (unpacked to a temp dir)."""
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    tmp = None
    if model.suffix == ".zip":
        tmp = Path(tempfile.mkdtemp(prefix="nnunet_mamba_model_"))
        with zipfile.ZipFile(model) as z:
            z.extractall(tmp)
        found = sorted(p.parent for p in tmp.rglob("plans.json"))
        if not found:
            raise ValueError(f"{model}: no trained model folder (with plans.json) inside the zip")
        model = found[0]
    try:
        dev = torch.device(device if device != "cuda" or torch.cuda.is_available() else "cpu")
        pred = nnUNetPredictor(device=dev, perform_everything_on_device=dev.type == "cuda", allow_tqdm=True)
        pred.initialize_from_trained_model_folder(str(model), folds, "checkpoint_final.pth")
        pred.predict_from_files(str(images), str(out), save_probabilities=False, overwrite=True,
                                num_processes_preprocessing=1, num_processes_segmentation_export=1)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def submit_brats(predictions: str | Path, output: str | Path, dataset_json: str | Path,
                 reference_images: Optional[str | Path] = None, overwrite: bool = False,
                 progress: Optional[Callable[[str], None]] = None, allow_missing: bool = False) -> tuple[Path, Path]:
    """nnU-Net predictions of a dataset made by ``convert brats`` -> BraTS submission folder + zip.

    ``reference_images``: the nnU-Net images the predictions were made from (``<case>_0000.nii.gz``); each
    prediction must match their geometry (size, spacing, origin, direction) and gets their exact header, and
    every one of their cases needs a prediction (``allow_missing``: submit without the missing ones, listed in
    the manifest).
    """
    predictions, output = Path(predictions), Path(output)
    meta = json.loads(Path(dataset_json).read_text())
    record = meta.get("nnunet_mamba", {})
    if record.get("source") != "brats":
        raise ValueError(f"{dataset_json}: not a dataset made by `nnunet-mamba convert brats` (no BraTS naming "
                         "record); convert the data with it, or pass the dataset.json of such a dataset")
    naming = record["naming"]
    say = progress or (lambda s: None)
    files = sorted(predictions.glob(f"*{_NII}"))
    problems: list[Problem] = []
    if not files:
        problems.append(Problem(str(predictions), f"contains no {_NII} predictions"))
    converted = []
    for f in files:
        cid = f.name[: -len(_NII)]
        if not NAMINGS[naming]["pattern"].match(cid):
            problems.append(Problem(str(f), f"is not named like a BraTS {naming} case"))
            continue
        img = read_image(f, problems)
        if img is None:
            continue
        arr = sitk.GetArrayViewFromImage(img)
        bad = sorted(set(np.unique(arr).astype(np.int64).tolist()) - {0, 1, 2, 3})
        if bad:
            problems.append(Problem(str(f), f"label values {bad} are not nnU-Net BraTS labels 0-3"))
            continue
        ref = None
        if reference_images is not None:
            ref_path = Path(reference_images) / f"{cid}_0000{_NII}"
            if not ref_path.is_file():
                problems.append(Problem(str(ref_path), f"reference image of prediction {f.name} is missing"))
                continue
            ref = read_image(ref_path, problems)
            if ref is None:
                continue
            n = len(problems)
            problems.extend(geometry_problems(ref, img, ref_path, f))
            if len(problems) > n:
                continue
        converted.append((cid, img, ref))
    missing = []
    if reference_images is not None:
        predicted = {f.name[: -len(_NII)] for f in files}
        missing = sorted(p.name[: -len(f"_0000{_NII}")] for p in Path(reference_images).glob(f"*_0000{_NII}")
                         if p.name[: -len(f"_0000{_NII}")] not in predicted)
        if missing and not allow_missing:
            problems.extend(Problem(str(Path(reference_images) / f"{cid}_0000{_NII}"),
                                    f"has no prediction in {predictions}: a submission needs every case "
                                    "(--allow-missing submits without it)") for cid in missing)
    if problems:
        raise DatasetError(problems, f"predictions in {predictions}")
    for cid in missing:
        say(f"no prediction for {cid}: left out of the submission (--allow-missing)")

    manifest = {"challenge": "BraTS", "naming": naming, "labels": {"1": "necrosis", "2": "edema",
                str(NAMINGS[naming]["enhancing"]): "enhancing tumour"}, "files": {}, "missing_cases": missing}
    with atomic_directory(output, overwrite=overwrite, inputs=[predictions, reference_images]) as tmp:
        for cid, img, ref in converted:
            out = sitk.GetImageFromArray(to_brats_labels(sitk.GetArrayViewFromImage(img), naming))
            out.CopyInformation(ref if ref is not None else img)
            path = tmp / f"{cid}{_NII}"
            write_image(out, str(path))
            manifest["files"][path.name] = {"sha256": sha256(path), "size": list(out.GetSize()),
                                            "spacing": list(out.GetSpacing())}
            say(f"wrote {path.name}")
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
    zip_path = output.with_suffix(".zip")
    tmp_zip = zip_path.with_name(f".{zip_path.name}.partial-{os.getpid()}")
    try:
        with zipfile.ZipFile(tmp_zip, "w", zipfile.ZIP_DEFLATED) as z:
            for p in sorted(output.iterdir()):
                z.write(p, p.name)
        os.replace(tmp_zip, zip_path)
    finally:
        if tmp_zip.exists():
            tmp_zip.unlink()
    return output, zip_path
