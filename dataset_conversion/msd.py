"""Medical Segmentation Decathlon (MSD) task folder -> nnU-Net v2 raw dataset.

Handles what real MSD files contain: 3D and 4D (multi-channel) NIfTI, mixed image dtypes,
labels stored as float, per-case origins, extreme intensity scales (kept as they are:
nnU-Net normalises per case). Every case is checked first and all problems are reported
at once; the output folder is written atomically. An optional ``labelsTs/`` next to
``imagesTs/`` (held-out ground truth) is converted too.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import SimpleITK as sitk

from .atomic import atomic_directory
from .checks import (DatasetError, Problem, geometry_problems, image_content_problems, label_problems,
                     read_again, read_image, write_image)

_NII = ".nii.gz"


def _case_id(path: str) -> str:
    name = Path(path).name
    if not name.endswith(_NII):
        raise ValueError(f"{path}: MSD files must end in {_NII}")
    return name[: -len(_NII)]


def _load_msd_json(task_dir: Path) -> dict:
    path = task_dir / "dataset.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; an MSD task folder has dataset.json, imagesTr/ and labelsTr/")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    for key in ("modality", "labels", "training"):
        if key not in meta:
            raise ValueError(f"{path}: missing the MSD key {key!r}")
    return meta


def _split_channels(img: sitk.Image) -> list[sitk.Image]:
    """A 4D (x, y, z, c) MSD image -> c 3D images with the spatial geometry of the first three axes."""
    if img.GetDimension() != 4:
        return [img]
    arr = sitk.GetArrayFromImage(img)  # (c, z, y, x)
    out = []
    for c in range(arr.shape[0]):
        ch = sitk.GetImageFromArray(arr[c])
        ch.SetSpacing(img.GetSpacing()[:3])
        ch.SetOrigin(img.GetOrigin()[:3])
        d = np.array(img.GetDirection()).reshape(4, 4)[:3, :3]
        ch.SetDirection(tuple(d.ravel()))
        out.append(ch)
    return out


def _label_as_uint8(lab: sitk.Image, like: sitk.Image) -> sitk.Image:
    arr = np.round(sitk.GetArrayViewFromImage(lab)).astype(np.uint8)
    out = sitk.GetImageFromArray(arr)
    out.CopyInformation(like)
    return out


def dataset_folder_name(dataset_id: int, name: str) -> str:
    """``DatasetXXX_<name>``, for an ID nnU-Net accepts (1-999) and a name that is one plain folder name."""
    if isinstance(dataset_id, bool) or int(dataset_id) != dataset_id or not 1 <= int(dataset_id) <= 999:
        raise ValueError(f"dataset ID {dataset_id!r}: nnU-Net needs an integer from 1 to 999")
    if not name or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise ValueError(f"dataset name {name!r}: use letters, digits, '_', '-' and '.' only (it becomes the folder "
                         f"name Dataset{int(dataset_id):03d}_<name>)")
    return f"Dataset{int(dataset_id):03d}_{name}"


def output_dataset_folder(output_root, dataset_id: int, name: str) -> Path:
    """``output_root`` (default: $nnUNet_raw) / ``DatasetXXX_<name>``; refuses an ID that a dataset of another
    name already has there (nnU-Net would later refuse both)."""
    if output_root is None:  # read here, not through nnunetv2.paths, which prints its own setup text
        output_root = os.environ.get("nnUNet_raw")
        if not output_root:
            raise RuntimeError("nnUNet_raw is not set: pass -o OUTPUT_ROOT (the folder to write DatasetXXX_<name> "
                               "into) or export nnUNet_raw")
    folder = dataset_folder_name(dataset_id, name)
    root = Path(output_root)
    if root.is_dir():
        taken = sorted(p.name for p in root.glob(f"Dataset{int(dataset_id):03d}_*") if p.is_dir() and p.name != folder)
        if taken:
            raise FileExistsError(f"{root / taken[0]}: dataset ID {int(dataset_id)} is already used by "
                                  f"{taken[0]}; pick another ID (-d) or remove that folder")
    return root / folder


def convert_msd(task_dir: str | Path, dataset_id: Optional[int] = None, output_root: Optional[str | Path] = None,
                name: Optional[str] = None, overwrite: bool = False, tolerance: float = 1e-3,
                progress: Optional[Callable[[str], None]] = None, training_keys: tuple[str, ...] = ("training",),
                case_filter: Optional[Callable[[str], bool]] = None, channel_names: Optional[dict] = None,
                converted_by: str = "nnunet-mamba convert msd") -> Path:
    """Convert ``task_dir`` (``TaskXX_Name``) into ``output_root/DatasetXXX_Name``; returns that path.

    ``training_keys``: the dataset.json lists whose cases are training cases (AMOS adds "validation");
    ``case_filter``: keep only the case IDs for which it returns True (e.g. AMOS CT-only);
    ``channel_names``: override the modality names (they choose nnU-Net's normalisation)."""
    task_dir = Path(task_dir)
    if not task_dir.is_dir():
        raise FileNotFoundError(f"{task_dir}: not a folder")
    meta = _load_msd_json(task_dir)
    m = re.match(r"Task(\d+)_(.+)", task_dir.name)
    dataset_id = dataset_id if dataset_id is not None else (int(m.group(1)) if m else None)
    if dataset_id is None:
        raise ValueError(f"{task_dir}: cannot infer a dataset ID from the folder name; pass dataset_id")
    name = name or (m.group(2) if m else task_dir.name)
    final = output_dataset_folder(output_root, dataset_id, name)
    say = progress or (lambda s: None)

    n_channels = len(meta["modality"])
    labels = {int(k): v for k, v in meta["labels"].items()}
    problems: list[Problem] = []
    cases: list[tuple[str, Path, Optional[Path], str]] = []  # (id, image file, label file, split): no images kept
    seen: dict[str, str] = {}

    def add_case(img_rel: str, lab_rel: Optional[str], split: str):
        img_path = task_dir / img_rel
        cid = _case_id(img_rel)
        if case_filter is not None and not case_filter(cid):
            return
        if cid in seen:
            problems.append(Problem(str(img_path), f"duplicate case ID {cid!r} (also in {seen[cid]})"))
            return
        seen[cid] = split
        if not img_path.is_file():
            problems.append(Problem(str(img_path), f"listed in {task_dir / 'dataset.json'} but missing"))
            return
        n_before = len(problems)
        img = read_image(img_path, problems)
        lab = None
        if lab_rel is not None:
            lab_path = task_dir / lab_rel
            if not lab_path.is_file():
                problems.append(Problem(str(lab_path), f"label of case {cid} is missing (listed in "
                                                       f"{task_dir / 'dataset.json'})"))
            else:
                lab = read_image(lab_path, problems)
        if img is None or len(problems) > n_before:
            return
        if img.GetDimension() == 4 and n_channels == 1:
            problems.append(Problem(str(img_path), "is 4D but dataset.json declares a single modality"))
            return
        if img.GetDimension() == 3 and n_channels > 1:
            problems.append(Problem(str(img_path), f"is 3D but dataset.json declares {n_channels} modalities "
                                                   "(MSD stores them as one 4D image)"))
            return
        chans = _split_channels(img)
        problems.extend(p for ch in chans for p in image_content_problems(ch, img_path))
        problems.extend(q for ch in chans[1:] for q in geometry_problems(chans[0], ch, img_path, img_path, tolerance))
        if lab is not None:
            problems.extend(geometry_problems(chans[0], lab, img_path, task_dir / lab_rel, tolerance))
            problems.extend(label_problems(lab, task_dir / lab_rel, labels))
        cases.append((cid, img_path, task_dir / lab_rel if lab is not None else None, split))
        say(f"checked {split} case {cid}")

    entries = [e for key in training_keys for e in meta.get(key, [])]
    for entry in entries:
        add_case(entry["image"], entry["label"], "train")
    listed = {Path(e["image"]).parent.name + "/" + Path(e["image"]).name for e in entries}
    for folder in {Path(e["image"]).parent.name for e in entries} | {"imagesTr"}:
        for f in sorted((task_dir / folder).glob(f"*{_NII}")):
            if f"{folder}/{f.name}" not in listed and not f.name.startswith("._"):
                problems.append(Problem(str(f), f"image in {folder}/ is not listed in dataset.json "
                                                f"{' / '.join(repr(k) for k in training_keys)}"))
    labels_ts = task_dir / "labelsTs"
    for rel in meta.get("test", []):
        rel = rel if isinstance(rel, str) else rel["image"]
        lab_rel = f"labelsTs/{Path(rel).name}" if (labels_ts / Path(rel).name).is_file() else None
        add_case(rel, lab_rel, "test")
    if not problems and not any(c[3] == "train" for c in cases):
        problems.append(Problem(str(task_dir), "no training case left to convert (check the dataset.json lists and "
                                               "any case filter)"))
    if problems:
        raise DatasetError(problems, f"MSD task {task_dir}")

    with atomic_directory(final, overwrite=overwrite, inputs=[task_dir]) as tmp:
        for sub in ("imagesTr", "labelsTr", "imagesTs") + (("labelsTs",) if labels_ts.is_dir() else ()):
            (tmp / sub).mkdir()
        for cid, img_path, lab_path, split in cases:
            chans = _split_channels(read_again(img_path))
            img_dir = tmp / ("imagesTr" if split == "train" else "imagesTs")
            for c, ch in enumerate(chans):
                write_image(ch, str(img_dir / f"{cid}_{c:04d}{_NII}"))
            if lab_path is not None:
                lab_dir = tmp / ("labelsTr" if split == "train" else "labelsTs")
                write_image(_label_as_uint8(read_again(lab_path), chans[0]), str(lab_dir / f"{cid}{_NII}"))
            say(f"wrote {split} case {cid}")
        out_json = {
            "channel_names": channel_names or {str(k): v for k, v in meta["modality"].items()},
            "labels": {v: k for k, v in sorted(labels.items())},
            "numTraining": sum(1 for c in cases if c[3] == "train"),
            "file_ending": _NII,
            "name": meta.get("name", name),
            "description": meta.get("description", ""),
            "reference": meta.get("reference", ""),
            "licence": meta.get("licence", meta.get("license", "")),
            "converted_by": converted_by,
        }
        (tmp / "dataset.json").write_text(json.dumps(out_json, indent=2))
    return final
