"""Any folder of images (+ labels) in a format SimpleITK reads -> nnU-Net v2 raw dataset.

Inputs: NIfTI (.nii/.nii.gz), NRRD (.nrrd/.nhdr), MetaImage (.mha/.mhd) files, FreeSurfer MGH (.mgz/.mgh,
read with nibabel), or DICOM series (a sub-folder per case). Case IDs come from the file or folder names:

* one channel: the name without extension is the case ID (a trailing nnU-Net ``_0000`` is dropped);
* several channels: names match ``channel_pattern`` (default ``<case>_<4-digit channel>``, as nnU-Net).

Labels are files named ``<case>.<ext>``. Every case is checked first (readable, complete channels, geometry of
channels and label, label values, NaN/Inf, empty or constant images, 4D images, duplicate IDs, labels without
images and images without labels) and all problems are reported at once; the output is written atomically.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import SimpleITK as sitk

from .atomic import atomic_directory
from .checks import (DatasetError, Problem, geometry_problems, image_content_problems, label_problems, read_again,
                     read_image, write_image)
from .msd import output_dataset_folder

EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".mgz", ".mgh")
NIBABEL_ONLY = (".mgz", ".mgh")
DEFAULT_CHANNEL_PATTERN = r"^(?P<case>.+)_(?P<channel>\d{4})$"
_NII = ".nii.gz"


def _stem(path: Path) -> Optional[str]:
    for ext in EXTENSIONS:
        if path.name.lower().endswith(ext):
            return path.name[: -len(ext)]
    return None


def _is_dicom_dir(path: Path) -> bool:
    return path.is_dir() and any(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(path)))


def read_nibabel(path: Path, problems: list[Problem]) -> Optional[sitk.Image]:
    """A 3D file nibabel reads (RAS affine) as a SimpleITK image (LPS): same voxels, same physical positions."""
    import nibabel as nib
    from nnunet_mamba.input_checks import file_damage
    damage = file_damage(str(path))
    if damage:
        problems.append(Problem(str(path), damage))
        return None
    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except Exception as e:  # nibabel raises several types for broken files
        problems.append(Problem(str(path), f"cannot be read ({type(e).__name__}: {str(e)[:200]})"))
        return None
    if data.ndim != 3:
        problems.append(Problem(str(path), f"is {data.ndim}D; expected a 3D image per channel"))
        return None
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ img.affine  # RAS -> LPS
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    data = data.astype(data.dtype.newbyteorder("="), copy=False)  # MGH is big-endian; ITK wants native order
    out = sitk.GetImageFromArray(np.ascontiguousarray(data.transpose(2, 1, 0)))
    out.SetSpacing(tuple(float(s) for s in spacing))
    out.SetOrigin(tuple(float(o) for o in affine[:3, 3]))
    out.SetDirection(tuple(float(d) for d in (affine[:3, :3] / spacing).ravel()))
    return out


def read_any(path: Path, problems: list[Problem]) -> Optional[sitk.Image]:
    """A file, or a folder holding exactly one DICOM series."""
    if not path.is_dir():
        if path.name.lower().endswith(NIBABEL_ONLY):
            return read_nibabel(path, problems)
        return read_image(path, problems)
    ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(path))
    if len(ids) != 1:
        problems.append(Problem(str(path), f"holds {len(ids)} DICOM series; one case folder must hold exactly one"))
        return None
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(path), ids[0])
    uneven = slice_spacing_problem(files)
    if uneven:
        problems.append(Problem(str(path), uneven))
        return None
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    try:
        return reader.Execute()
    except RuntimeError as e:
        problems.append(Problem(str(path), f"DICOM series cannot be read ({str(e).strip().splitlines()[0][:200]})"))
        return None


def slice_spacing_problem(files, rtol: float = 0.01) -> Optional[str]:
    """Uneven distances between the slices of a DICOM series along its normal, e.g. a missing file: ITK would stack
    the slices at their mean spacing and misplace them (by up to a slice)."""
    if len(files) < 3:
        return None
    positions, normal = [], None
    for f in files:
        r = sitk.ImageFileReader()
        r.SetFileName(f)
        r.ReadImageInformation()
        if not (r.HasMetaDataKey("0020|0032") and r.HasMetaDataKey("0020|0037")):
            return None  # no patient position: ITK's own ordering applies
        pos = np.array([float(v) for v in r.GetMetaData("0020|0032").split("\\")])
        if normal is None:
            o = np.array([float(v) for v in r.GetMetaData("0020|0037").split("\\")])
            normal = np.cross(o[:3], o[3:])
        positions.append(float(pos @ normal))
    gaps = np.diff(np.sort(positions))
    step = float(np.median(gaps))
    if step <= 0:
        return f"{len(files)} slices, some at the same position: not one series"
    off = np.abs(gaps - step) > rtol * step
    if off.any():
        i = int(np.argmax(off))
        return (f"slice spacing is uneven ({gaps.min():.4g} to {gaps.max():.4g} mm, median {step:.4g} mm; first "
                f"irregular gap after slice {i + 1} of {len(files)}): a slice file is missing or from another series")
    return None


def discover(folder: Path, n_channels: int, channel_pattern: str, problems: list[Problem],
             incomplete: Optional[set] = None) -> dict[str, list[Path]]:
    """case ID -> channel paths (ordered), from the file and folder names of ``folder``; the IDs of cases with
    missing or extra channels (reported in ``problems``) are added to ``incomplete``."""
    pattern = re.compile(channel_pattern)
    found: dict[str, dict[int, Path]] = {}
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        stem = entry.name if _is_dicom_dir(entry) else _stem(entry)
        if stem is None:
            problems.append(Problem(str(entry), f"not an image file ({', '.join(EXTENSIONS)}) or DICOM series folder"))
            continue
        if n_channels == 1:
            m = pattern.match(stem)
            case, channel = (m.group("case"), int(m.group("channel"))) if m and int(m.group("channel")) == 0 \
                else (stem, 0)
        else:
            m = pattern.match(stem)
            if not m:
                problems.append(Problem(str(entry), f"name does not match the channel pattern {channel_pattern!r}"))
                continue
            case, channel = m.group("case"), int(m.group("channel"))
        slots = found.setdefault(case, {})
        if channel in slots:
            problems.append(Problem(str(entry),
                                    f"duplicate case {case!r} channel {channel} (also {slots[channel].name})"))
            continue
        slots[channel] = entry
    cases = {}
    for case, slots in found.items():
        missing = [c for c in range(n_channels) if c not in slots]
        extra = sorted(c for c in slots if c >= n_channels)
        if missing:
            problems.append(Problem(str(folder / case), f"case {case} lacks channel(s) {missing} of {n_channels}"))
        if extra:
            problems.append(Problem(str(slots[extra[0]]), f"case {case} has channel(s) {extra} but only "
                                                           f"{n_channels} are declared"))
        if not missing and not extra:
            cases[case] = [slots[c] for c in range(n_channels)]
        elif incomplete is not None:
            incomplete.add(case)
    return cases


def convert_folder(images: str | Path, dataset_id: int, name: str, channel_names: Sequence[str],
                   labels: Optional[str | Path] = None, label_names: Optional[dict[str, int]] = None,
                   test_images: Optional[str | Path] = None, output_root: Optional[str | Path] = None,
                   channel_pattern: str = DEFAULT_CHANNEL_PATTERN, overwrite: bool = False, tolerance: float = 1e-3,
                   progress: Optional[Callable[[str], None]] = None) -> Path:
    """Convert into ``output_root/DatasetXXX_<name>``; without ``labels`` every case goes to imagesTs."""
    images = Path(images)
    for p, what in ((images, "images"), (labels, "labels"), (test_images, "test images")):
        if p is not None and not Path(p).is_dir():
            raise FileNotFoundError(f"{p}: {what} folder not found")
    if labels is not None and not label_names:
        raise ValueError("label names are needed with labels, e.g. background=0 tumour=1")
    if label_names and label_names.get("background") != 0:
        raise ValueError("the label names must map background to 0")
    final = output_dataset_folder(output_root, dataset_id, name)
    say = progress or (lambda s: None)
    n = len(channel_names)
    problems: list[Problem] = []
    incomplete: set[str] = set()  # reported already: their labels are not "without an image"
    train = discover(images, n, channel_pattern, problems, incomplete)
    test = discover(Path(test_images), n, channel_pattern, problems) if test_images else {}
    for case in sorted(set(train) & set(test)):
        problems.append(Problem(str(Path(test_images) / case), f"case {case} is both a training and a test case"))
    label_files: dict[str, Path] = {}
    if labels is not None:
        for entry in sorted(Path(labels).iterdir()):
            stem = _stem(entry)
            if stem is None or entry.name.startswith("."):
                continue
            if stem in label_files:
                problems.append(Problem(str(entry), f"duplicate label of case {stem} (also {label_files[stem].name})"))
            label_files[stem] = entry
        for case in sorted(set(label_files) - set(train) - incomplete):
            problems.append(Problem(str(label_files[case]), f"label of case {case} has no image in {images}"))
        for case in sorted(set(train) - set(label_files)):
            problems.append(Problem(str(train[case][0]), f"image of case {case} has no label in {labels}"))
    allowed = set(label_names.values()) if label_names else set()
    checked = []  # (case, [image files], label file or None, split): no images kept between checking and writing

    def check(case: str, paths: list[Path], split: str):
        n_before = len(problems)
        imgs = [read_any(p, problems) for p in paths]
        lab = read_any(label_files[case], problems) if split == "train" and case in label_files else None
        if len(problems) > n_before:
            return
        for p, img in zip(paths, imgs):
            if img.GetDimension() != 3 and img.GetDimension() != 2:
                problems.append(Problem(str(p), f"is {img.GetDimension()}D: give each channel as its own 2D/3D file"))
                return
            problems.extend(image_content_problems(img, p, expect_channels=1))
        for p, img in zip(paths[1:], imgs[1:]):
            problems.extend(geometry_problems(imgs[0], img, paths[0], p, tolerance))
        if lab is not None:
            problems.extend(geometry_problems(imgs[0], lab, paths[0], label_files[case], tolerance))
            problems.extend(label_problems(lab, label_files[case], allowed))
        checked.append((case, paths, label_files[case] if lab is not None else None, split))
        say(f"checked {case}")

    for case, paths in sorted(train.items()):
        if labels is None or case in label_files:
            check(case, paths, "train" if labels is not None else "test")
    for case, paths in sorted(test.items()):
        check(case, paths, "test")
    if not train and not test:
        problems.append(Problem(str(images), "no cases found"))
    if problems:
        raise DatasetError(problems, f"input folders ({images})")

    with atomic_directory(final, overwrite=overwrite, inputs=[images, labels, test_images]) as tmp:
        for sub in ("imagesTr", "labelsTr", "imagesTs"):
            (tmp / sub).mkdir()
        for case, paths, lab_path, split in checked:
            folder = tmp / ("imagesTr" if split == "train" else "imagesTs")
            for c, path in enumerate(paths):
                img = read_again(path, read_any)
                if c == 0:
                    first = img  # the label gets the first channel's geometry
                write_image(img, str(folder / f"{case}_{c:04d}{_NII}"))
            if lab_path is not None:
                lab = read_again(lab_path, read_any)
                arr = np.round(sitk.GetArrayViewFromImage(lab)).astype(np.uint8 if max(allowed) < 256 else np.uint16)
                out = sitk.GetImageFromArray(arr)
                out.CopyInformation(first)
                write_image(out, str(tmp / "labelsTr" / f"{case}{_NII}"))
            say(f"wrote {case}")
        ds = {"channel_names": {str(i): c for i, c in enumerate(channel_names)},
              "labels": dict(label_names) if label_names else {"background": 0},
              "numTraining": sum(1 for c in checked if c[3] == "train"), "file_ending": _NII, "name": name,
              "converted_by": "nnunet-mamba convert folder"}
        (tmp / "dataset.json").write_text(json.dumps(ds, indent=2))
    return final
