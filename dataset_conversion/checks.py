"""Checks on image/label files before anything is written; every problem names its file."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np
import SimpleITK as sitk


@dataclass(frozen=True)
class Problem:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class DatasetError(ValueError):
    """All problems found in an input dataset, reported at once."""

    def __init__(self, problems: Sequence[Problem], what: str = "dataset"):
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{len(self.problems)} problem(s) in the {what}; nothing was written:\n{lines}")


def write_image(image: sitk.Image, path: Path, compress: bool = True) -> None:
    """``sitk.WriteImage``, then a check of what reached the disk: on a full disk SimpleITK can leave a short or
    empty file without raising."""
    from nnunet_mamba.input_checks import file_damage

    sitk.WriteImage(image, str(path), useCompression=compress)
    damage = file_damage(str(path)) if os.path.getsize(path) else "0 bytes were written"
    if damage:
        raise OSError(f"{path}: {damage} after writing it (is the disk full?)")


def read_again(path: Path, reader=None) -> sitk.Image:
    """A file that passed the checks, read again for writing (converters keep no image between checking and
    writing, so that memory does not grow with the number of cases); a change since the check is an error."""
    problems: list[Problem] = []
    img = (reader or read_image)(Path(path), problems)
    if img is None or problems:
        raise DatasetError(problems or [Problem(str(path), "cannot be read any more")], "dataset (changed while "
                                                                                        "converting)")
    return img


def read_image(path: Path, problems: list[Problem]) -> Optional[sitk.Image]:
    from nnunet_mamba.input_checks import file_damage

    damage = file_damage(str(path))
    if damage:  # SimpleITK would read it without complaint, filling the missing voxels
        problems.append(Problem(str(path), damage))
        return None
    try:
        img = sitk.ReadImage(str(path))
    except Exception as e:  # SimpleITK raises RuntimeError with a long C++ trace
        first = str(e).strip().splitlines()
        reason = next((line for line in first if "ERROR" in line or "Could not" in line), first[0] if first else "")
        problems.append(Problem(str(path), f"cannot be read ({reason.strip()[:200]})"))
        return None
    problems.extend(nifti_nonfinite_problems(path))
    return img


def nifti_nonfinite_problems(path: Path) -> list[Problem]:
    """NaN/Inf voxels of a float NIfTI file (:func:`nnunet_mamba.input_checks.nonfinite_voxels`)."""
    from nnunet_mamba.input_checks import nonfinite_voxels
    try:
        counts = nonfinite_voxels(str(path))
    except Exception as e:  # a damaged file: one problem, and the dataset's other problems still get reported
        return [Problem(str(path), f"cannot be read ({type(e).__name__}: {str(e)[:200]})")]
    return [Problem(str(path), f"contains {counts[0]} NaN/Inf voxel(s)")] if counts and counts[0] else []


def geometry_problems(ref: sitk.Image, other: sitk.Image, ref_path: Path, other_path: Path,
                      tol: float = 1e-3) -> list[Problem]:
    """Shape, spacing, origin and direction of ``other`` against ``ref`` (relative/absolute tolerance)."""
    out = []
    if ref.GetSize() != other.GetSize():
        out.append(Problem(str(other_path), f"size {other.GetSize()} differs from {ref_path.name} {ref.GetSize()}"))
        return out
    for name, a, b in (("spacing", ref.GetSpacing(), other.GetSpacing()),
                       ("origin", ref.GetOrigin(), other.GetOrigin()),
                       ("direction", ref.GetDirection(), other.GetDirection())):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape or not np.allclose(a, b, rtol=tol, atol=tol):
            out.append(Problem(str(other_path), f"{name} {tuple(np.round(b, 4))} differs from {ref_path.name} "
                                                f"{tuple(np.round(a, 4))}"))
    return out


def image_content_problems(img: sitk.Image, path: Path, expect_channels: Optional[int] = None) -> list[Problem]:
    out = []
    arr = sitk.GetArrayViewFromImage(img)
    dim = img.GetDimension()
    channels = img.GetNumberOfComponentsPerPixel() if dim == 3 else (img.GetSize()[-1] if dim == 4 else 1)
    if dim not in (2, 3, 4):
        out.append(Problem(str(path), f"is {dim}D; expected a 2D, 3D or 4D (channels last) image"))
    if expect_channels is not None and channels != expect_channels:
        out.append(Problem(str(path), f"has {channels} channel(s) but the dataset declares {expect_channels}"))
    if arr.size == 0:
        out.append(Problem(str(path), "is empty (no voxels)"))
        return out
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        out.append(Problem(str(path), f"contains {int((~np.isfinite(arr)).sum())} NaN/Inf voxel(s)"))
    elif float(arr.max()) == float(arr.min()):
        out.append(Problem(str(path), f"is constant (every voxel is {float(arr.max())}): an empty image"))
    return out


def label_problems(lab: sitk.Image, path: Path, allowed: Iterable[int]) -> list[Problem]:
    out = []
    if lab.GetDimension() != 3 and lab.GetDimension() != 2:
        return [Problem(str(path), f"label is {lab.GetDimension()}D; labels must be 2D or 3D")]
    arr = sitk.GetArrayViewFromImage(lab)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            return [Problem(str(path), "label contains NaN/Inf")]
        if not np.array_equal(arr, np.round(arr)):
            return [Problem(str(path), "label has non-integer values")]
    values = set(np.unique(arr).astype(np.int64).tolist())
    extra = sorted(values - set(allowed))
    if extra:
        out.append(Problem(str(path), f"label values {extra} are not declared in dataset.json (allowed: "
                                      f"{sorted(set(allowed))})"))
    return out
