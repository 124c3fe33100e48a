"""BraTS (2021 and 2023+ naming) -> nnU-Net v2 raw dataset with region-based training, and back.

Naming conventions (one per input folder; a folder per case):

* 2021: ``BraTS2021_00000/BraTS2021_00000_{t1,t1ce,t2,flair,seg}.nii.gz``, labels 0, 1 (necrosis), 2 (edema),
  4 (enhancing tumour);
* 2023+: ``BraTS-GLI-00000-000/BraTS-GLI-00000-000-{t1n,t1c,t2w,t2f,seg}.nii.gz`` (any sub-challenge prefix:
  GLI, MEN, MET, PED, SSA, ...), labels 0, 1 (necrosis), 2 (edema), 3 (enhancing tumour).

nnU-Net side: channels 0 T1, 1 T1ce, 2 T2, 3 FLAIR; labels 1 edema, 2 necrosis, 3 enhancing tumour, trained as
the regions whole tumour (1, 2, 3), tumour core (2, 3) and enhancing tumour (3) with ``regions_class_order``
[1, 2, 3] (nnU-Net's own BraTS convention). The dataset.json records the naming so that
:func:`to_brats_labels` and ``nnunet-mamba submit brats`` convert predictions back. Cases without a
segmentation go to imagesTs. Everything is checked before anything is written; output is atomic.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import SimpleITK as sitk

from .atomic import atomic_directory
from .checks import (DatasetError, Problem, geometry_problems, image_content_problems, read_again, read_image,
                     write_image)
from .msd import output_dataset_folder

_NII = ".nii.gz"
NAMINGS = {
    "2021": dict(pattern=re.compile(r"^BraTS20\d\d_\d+$"), sep="_",
                 channels=("t1", "t1ce", "t2", "flair"), labels=(0, 1, 2, 4), enhancing=4),
    "2023": dict(pattern=re.compile(r"^BraTS-[A-Z]+-\d+-\d+$"), sep="-",
                 channels=("t1n", "t1c", "t2w", "t2f"), labels=(0, 1, 2, 3), enhancing=3),
}
CHANNEL_NAMES = {"0": "T1", "1": "T1ce", "2": "T2", "3": "FLAIR"}
NNUNET_LABELS = {"background": 0, "whole_tumor": [1, 2, 3], "tumor_core": [2, 3], "enhancing_tumor": [3]}


def detect_naming(case_ids: list[str], folder: Path) -> str:
    found = {name for cid in case_ids for name, n in NAMINGS.items() if n["pattern"].match(cid)}
    unknown = [cid for cid in case_ids if not any(n["pattern"].match(cid) for n in NAMINGS.values())]
    if unknown:
        raise DatasetError([Problem(str(folder / u), "is not a BraTS case folder name (BraTS2021_00000 or "
                                                      "BraTS-GLI-00000-000)") for u in unknown],
                           f"BraTS folder {folder}")
    if len(found) != 1:
        raise DatasetError([Problem(str(folder), f"mixes BraTS namings {sorted(found)}; convert them separately")]
                           if found else [Problem(str(folder), "contains no BraTS case folders")],
                           f"BraTS folder {folder}")
    return found.pop()


def from_brats_labels(arr: np.ndarray, naming: str) -> np.ndarray:
    """BraTS labels -> nnU-Net's (1 edema, 2 necrosis, 3 enhancing)."""
    out = np.zeros(arr.shape, np.uint8)
    out[arr == 2] = 1
    out[arr == 1] = 2
    out[arr == NAMINGS[naming]["enhancing"]] = 3
    return out


def to_brats_labels(arr: np.ndarray, naming: str) -> np.ndarray:
    """nnU-Net's labels (after regions_class_order) -> the BraTS convention of ``naming``."""
    out = np.zeros(arr.shape, np.uint8)
    out[arr == 1] = 2
    out[arr == 2] = 1
    out[arr == 3] = NAMINGS[naming]["enhancing"]
    return out


def _case_files(case_dir: Path, naming: str) -> dict[str, Path]:
    n = NAMINGS[naming]
    return {key: case_dir / f"{case_dir.name}{n['sep']}{key}{_NII}" for key in (*n["channels"], "seg")}


def convert_brats(input_dir: str | Path, dataset_id: int, output_root: Optional[str | Path] = None,
                  name: str = "BraTS", overwrite: bool = False, tolerance: float = 1e-3,
                  progress: Optional[Callable[[str], None]] = None) -> Path:
    """Convert a folder of BraTS case folders into ``output_root/DatasetXXX_<name>``; returns that path."""
    input_dir = Path(input_dir)
    if not input_dir.is_dir():
        raise FileNotFoundError(f"{input_dir}: not a folder")
    final = output_dataset_folder(output_root, dataset_id, name)
    say = progress or (lambda s: None)
    case_dirs = sorted(p for p in input_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    naming = detect_naming([p.name for p in case_dirs], input_dir)
    spec = NAMINGS[naming]
    problems: list[Problem] = []
    cases = []  # (case id, [channel files], label file or None): no images kept between checking and writing
    for case_dir in case_dirs:
        files = _case_files(case_dir, naming)
        expected = {f.name for f in files.values()}
        for extra in sorted(f for f in case_dir.iterdir() if f.name not in expected and not f.name.startswith(".")):
            problems.append(Problem(str(extra), f"unexpected file in case folder (expected {sorted(expected)})"))
        n_before = len(problems)
        chans = []
        for key in spec["channels"]:
            if not files[key].is_file():
                problems.append(Problem(str(files[key]), f"missing {key} image of case {case_dir.name}"))
                continue
            img = read_image(files[key], problems)
            if img is not None:
                if img.GetDimension() != 3:
                    problems.append(Problem(str(files[key]), f"is {img.GetDimension()}D; BraTS images are 3D"))
                    continue
                problems.extend(image_content_problems(img, files[key]))
                chans.append((files[key], img))
        lab = read_image(files["seg"], problems) if files["seg"].is_file() else None
        if len(problems) > n_before or len(chans) != len(spec["channels"]):
            continue
        ref_path, ref = chans[0]
        for path, img in chans[1:]:
            problems.extend(geometry_problems(ref, img, ref_path, path, tolerance))
        if lab is not None:
            problems.extend(geometry_problems(ref, lab, ref_path, files["seg"], tolerance))
            arr = sitk.GetArrayViewFromImage(lab)
            values = sorted(set(np.unique(arr).astype(np.int64).tolist()) - set(spec["labels"]))
            if values:
                problems.append(Problem(str(files["seg"]), f"label values {values} are not BraTS {naming} labels "
                                                           f"{list(spec['labels'])}"))
        cases.append((case_dir.name, [path for path, _ in chans], files["seg"] if lab is not None else None))
        say(f"checked {case_dir.name}")
    if problems:
        raise DatasetError(problems, f"BraTS folder {input_dir}")

    with atomic_directory(final, overwrite=overwrite, inputs=[input_dir]) as tmp:
        for sub in ("imagesTr", "labelsTr", "imagesTs"):
            (tmp / sub).mkdir()
        n_train = 0
        for cid, chan_files, lab_file in cases:
            img_dir = tmp / ("imagesTr" if lab_file is not None else "imagesTs")
            for c, path in enumerate(chan_files):
                img = read_again(path)
                if c == 0:
                    first = img  # the label gets the first channel's geometry
                write_image(img, str(img_dir / f"{cid}_{c:04d}{_NII}"))
            if lab_file is not None:
                lab = read_again(lab_file)  # kept referenced: the array view does not keep the image alive
                out = sitk.GetImageFromArray(from_brats_labels(sitk.GetArrayViewFromImage(lab), naming))
                out.CopyInformation(first)
                write_image(out, str(tmp / "labelsTr" / f"{cid}{_NII}"))
                n_train += 1
            say(f"wrote {cid}")
        dataset_json = {
            "channel_names": CHANNEL_NAMES, "labels": NNUNET_LABELS, "regions_class_order": [1, 2, 3],
            "numTraining": n_train, "file_ending": _NII, "name": name,
            "converted_by": "nnunet-mamba convert brats",
            "nnunet_mamba": {"source": "brats", "naming": naming,
                             "label_map_to_nnunet": {"2": 1, "1": 2, str(spec["enhancing"]): 3}},
        }
        (tmp / "dataset.json").write_text(json.dumps(dataset_json, indent=2))
    return final
