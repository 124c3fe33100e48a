"""MedMNIST v2 npz (2D or 3D classification) -> nnU-Net v2 raw dataset with per-case classes.

Layout (nnU-Net's, so planning and preprocessing are nnU-Net's own):

* ``imagesTr/<split>_<index>_0000.nii.gz`` for the train and val splits (``imagesTs`` for a test split);
  2D images are stored as one-slice volumes with a 999 mm slice spacing, as nnU-Net expects for 2D data;
* ``labelsTr/<case>.nii.gz``: a mask covering the whole image (label 1 "image"): nnU-Net's preprocessing needs a
  segmentation, and a whole-image mask keeps its cropping and foreground sampling neutral;
* ``classes.csv``: ``case,class,split`` for every case (test cases too, when the npz has test labels);
* ``dataset.json``: nnU-Net's keys plus ``"classification": {"classes": {"0": name, ...}, "file": "classes.csv",
  "cases": {case: class}}`` (the training cases' classes, so trainers find them in every copy of dataset.json);
* ``splits_final.json``: fold 0 = the official train / val split (nnU-Net copies it to its preprocessed folder),
  so ``nnUNetv2_train ... 0`` trains on train and selects on val.
"""
from __future__ import annotations

import csv
import json
import zipfile
import zlib
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import SimpleITK as sitk

from .atomic import atomic_directory
from .checks import write_image
from .msd import output_dataset_folder

_NII = ".nii.gz"
SPLITS = ("train", "val", "test")


def load_npz(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """split -> (images (N, ...), labels (N,)), with every problem of the file named."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        return _read_npz(path)
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as e:  # truncated or damaged archive
        raise ValueError(f"{path}: not a readable .npz file ({type(e).__name__}: {e}); the file is truncated or "
                         "corrupt, download it again") from None


def _read_npz(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    z = np.load(path)
    out = {}
    for split in SPLITS:
        ik, lk = f"{split}_images", f"{split}_labels"
        if ik not in z.files:
            continue
        if lk not in z.files:
            raise ValueError(f"{path}: has {ik} but no {lk}")
        images, labels = z[ik], np.asarray(z[lk]).reshape(len(z[lk]), -1)
        if labels.shape[1] != 1:
            raise ValueError(f"{path}: {lk} has {labels.shape[1]} columns; only single-label (multi-class) "
                             "MedMNIST subsets are supported")
        if len(images) != len(labels):
            raise ValueError(f"{path}: {len(images)} {ik} but {len(labels)} {lk}")
        if images.ndim not in (3, 4, 5):
            raise ValueError(f"{path}: {ik} has shape {images.shape}; expected (N, H, W[, C]) or (N, D, H, W)")
        out[split] = (images, labels[:, 0].astype(np.int64))
    if "train" not in out:
        raise ValueError(f"{path}: no train_images / train_labels")
    return out


def _to_image(arr: np.ndarray, is_3d: bool) -> sitk.Image:
    if is_3d:
        img = sitk.GetImageFromArray(arr.astype(np.float32))
        img.SetSpacing((1.0, 1.0, 1.0))
    else:
        img = sitk.GetImageFromArray(arr[None].astype(np.float32))  # (1, H, W): one slice
        img.SetSpacing((1.0, 1.0, 999.0))
    return img


def convert_medmnist(npz: str | Path, dataset_id: int, name: str, class_names: Optional[Sequence[str]] = None,
                     output_root: Optional[str | Path] = None, max_per_split: Optional[int] = None,
                     overwrite: bool = False, progress: Optional[Callable[[str], None]] = None) -> Path:
    npz = Path(npz)
    data = load_npz(npz)
    if max_per_split:
        data = {s: (im[:max_per_split], lab[:max_per_split]) for s, (im, lab) in data.items()}
    sample = data["train"][0]
    if sample.ndim == 5 or (sample.ndim == 4 and sample.shape[-1] in (3, 4) and sample.shape[1] != sample.shape[-1]):
        raise ValueError(f"{npz}: colour images (last axis {sample.shape[-1]}) are not supported yet")
    is_3d = sample.ndim == 4
    n_classes = int(max(lab.max() for _, lab in data.values())) + 1
    if class_names is None:
        class_names = [f"class_{i}" for i in range(n_classes)]
    if len(class_names) < n_classes:
        raise ValueError(f"{npz}: labels go up to {n_classes - 1} but only {len(class_names)} class names were given")
    final = output_dataset_folder(output_root, dataset_id, name)
    say = progress or (lambda s: None)
    rows = []
    with atomic_directory(final, overwrite=overwrite, inputs=[npz]) as tmp:
        for sub in ("imagesTr", "labelsTr", "imagesTs"):
            (tmp / sub).mkdir()
        for split, (images, labels) in data.items():
            for i, (arr, cls) in enumerate(zip(images, labels)):
                case = f"{split}_{i:05d}"
                img = _to_image(arr, is_3d)
                folder = tmp / ("imagesTs" if split == "test" else "imagesTr")
                write_image(img, str(folder / f"{case}_0000{_NII}"))
                if split != "test":
                    mask = sitk.GetImageFromArray(np.ones(sitk.GetArrayViewFromImage(img).shape, np.uint8))
                    mask.CopyInformation(img)
                    write_image(mask, str(tmp / "labelsTr" / f"{case}{_NII}"))
                rows.append((case, int(cls), split))
            say(f"wrote {len(images)} {split} cases")
        with open(tmp / "classes.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["case", "class", "split"])
            w.writerows(rows)
        train = [c for c, _, s in rows if s == "train"]
        val = [c for c, _, s in rows if s == "val"]
        if val:
            (tmp / "splits_final.json").write_text(json.dumps([{"train": train, "val": val}], indent=1))
        ds = {"channel_names": {"0": "image"}, "labels": {"background": 0, "image": 1},
              "numTraining": len(train) + len(val), "file_ending": _NII, "name": name,
              "classification": {"classes": {str(i): c for i, c in enumerate(class_names)}, "file": "classes.csv",
                                 "cases": {c: k for c, k, s in rows if s != "test"}},
              "converted_by": "nnunet-mamba convert medmnist", "source": npz.name}
        (tmp / "dataset.json").write_text(json.dumps(ds, indent=2))
    return final


def read_classes(dataset_folder: str | Path) -> dict[str, int]:
    """case -> class from a converted dataset's classes.csv."""
    path = Path(dataset_folder) / "classes.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; classification datasets list each case's class there")
    with open(path, newline="") as f:
        return {r["case"]: int(r["class"]) for r in csv.DictReader(f)}
