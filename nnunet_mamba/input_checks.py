"""Checks of prediction inputs and trained models, before anything is predicted or written.

Used by ``nnunet-mamba check-input`` and, through :mod:`nnunet_mamba.stock_cli`, by the stock
``nnUNetv2_predict`` / ``nnUNetv2_predict_from_modelfolder`` commands. Every problem names its file and
what to do; all problems are reported at once.
"""
from __future__ import annotations

import gzip
import io
import os
import re
import zlib
from collections import defaultdict
from typing import Optional, Sequence

import numpy as np


class InputError(ValueError):
    """Bad user input; the message lists every problem, one per line, each naming its file."""

    def __init__(self, problems: Sequence[str], what: str = "input"):
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{len(self.problems)} problem(s) with the {what}:\n{lines}")


def file_damage(path: str, chunk: int = 1 << 22) -> Optional[str]:
    """Why an image file is damaged in a way readers would accept (None if it is not): a truncated or corrupt
    gzip stream, or a NIfTI file (``.nii`` / ``.nii.gz``) with fewer bytes of voxel data than its header declares.
    ITK reads both without complaint and fills the missing voxels with zeros or garbage."""
    import nibabel as nib

    name = str(path).lower()
    head, total = b"", 0
    if name.endswith(".gz"):
        with open(path, "rb") as f:
            if f.read(2) != b"\x1f\x8b":
                return "cannot be read: not gzip data, as its .gz ending says"
    try:
        opener = gzip.open if name.endswith(".gz") else open
        with opener(path, "rb") as f:
            while True:
                block = f.read(chunk)
                if not block:
                    break
                if len(head) < 544:
                    head += block[:544 - len(head)]
                total += len(block)
    except (EOFError, OSError, zlib.error) as e:
        return f"damaged gzip data ({e}); the file is truncated or corrupt, copy it again"
    if not name.endswith((".nii", ".nii.gz")):
        return None
    if total < 348:
        return f"only {total} bytes, shorter than a NIfTI header; the file is truncated, copy it again"
    try:
        header = nib.Nifti1Header.from_fileobj(io.BytesIO(head), check=False)
        if header.sizeof_hdr != 348:
            header = nib.Nifti2Header.from_fileobj(io.BytesIO(head), check=False)
    except Exception:  # not a NIfTI header at all: the image reader reports that
        return None
    expected = int(header.get_data_offset()) + int(np.prod(header.get_data_shape(), dtype=np.int64)) \
        * header.get_data_dtype().itemsize
    if total < expected:
        return (f"truncated: its header declares {expected} bytes of image data and header, the file holds {total}; "
                "copy it again")
    return None


def read_geometry(path: str):
    """(size, spacing, origin, direction) from the header, or a problem string."""
    import SimpleITK as sitk

    if not os.path.isfile(path):
        return f"{path}: no such file"
    if path.endswith(".gz"):
        damage = file_damage(path)
        if damage:
            return f"{path}: {damage}"
    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    try:
        reader.ReadImageInformation()
    except RuntimeError as e:
        first = str(e).strip().splitlines()[-1][:200] if str(e).strip() else type(e).__name__
        return f"{path}: not a readable image ({first})"
    return (reader.GetSize(), reader.GetSpacing(), reader.GetOrigin(), reader.GetDirection(),
            reader.GetNumberOfComponents())


def _same(a, b, rtol=1e-3, atol=1e-3) -> bool:
    return len(a) == len(b) and np.allclose(a, b, rtol=rtol, atol=atol)


def case_problems(files: Sequence[str], n_channels: int, file_ending: str,
                  image_ndim: Optional[int] = None) -> list[str]:
    """Problems of one case: channel count and suffixes, readability, dimensionality (``image_ndim``: that of
    the training images, 2 or 3), equal geometry of its channels, NaN/Inf voxels."""
    problems = []
    names = [os.path.basename(f) for f in files]
    expected = [f"_{c:04d}{file_ending}" for c in range(n_channels)]
    present = sorted(n[-len(file_ending) - 5:] for n in names)
    if present != expected:
        case = names[0][:-(len(file_ending) + 5)] if names else "?"
        problems.append(f"{os.path.dirname(files[0]) if files else '.'}/{case}: has channel file(s) "
                        f"{', '.join(p[:5] for p in present)} but the model needs exactly {n_channels} "
                        f"({', '.join(e[:5] for e in expected)}), named <case>_0000{file_ending} ...")
    geometry = {}
    for f in files:
        g = read_geometry(f)
        if isinstance(g, str):
            problems.append(g)
        elif len(g[0]) > 3:
            problems.append(f"{f}: is a {len(g[0])}D image of size {g[0]}; nnU-Net reads one 2D or 3D image per "
                            f"channel: split it into <case>_0000{file_ending}, <case>_0001{file_ending}, ...")
        elif image_ndim == 3 and len(g[0]) == 2:
            problems.append(f"{f}: is a 2D image, but the model was trained on 3D volumes")
        else:
            nonfinite = nonfinite_problem(f)
            if nonfinite:
                problems.append(nonfinite)
            geometry[f] = g
    if len(geometry) > 1:
        ref_file, ref = next(iter(geometry.items()))
        for f, g in geometry.items():
            for i, what in enumerate(("size", "spacing", "origin", "direction")):
                if not _same(g[i], ref[i]):
                    problems.append(f"{f}: {what} {tuple(np.round(g[i], 4))} differs from "
                                    f"{os.path.basename(ref_file)} ({tuple(np.round(ref[i], 4))}); all channels of a "
                                    "case must share one voxel grid (resample them onto one grid first)")
                    break
    for f, g in geometry.items():
        if g[4] != 1:
            problems.append(f"{f}: has {g[4]} components per voxel; store each channel in its own _000X file")
    return problems


def nonfinite_voxels(path: str) -> Optional[tuple[int, int]]:
    """(NaN/Inf voxels, voxels) of a float NIfTI image, read with nibabel (SimpleITK's NIfTI reader turns them into
    0); None for other files and integer images. A file nibabel cannot read raises."""
    if not str(path).endswith((".nii", ".nii.gz")):
        return None
    import nibabel as nib
    img = nib.load(str(path))
    if not np.issubdtype(img.header.get_data_dtype(), np.floating):
        return None
    data = np.asanyarray(img.dataobj)
    return int((~np.isfinite(data)).sum()), int(data.size)


def nonfinite_problem(path: str) -> Optional[str]:
    try:
        counts = nonfinite_voxels(path)
    except Exception as e:
        return f"{path}: cannot be read ({type(e).__name__}: {str(e)[:200]})"
    if not counts or not counts[0]:
        return None
    bad, size = counts
    if bad == size:
        return f"{path}: every voxel is NaN or Inf: there is no image to segment"
    return f"{path}: {bad} of {size} voxels are NaN or Inf; replace them (e.g. by 0) before predicting"


OTHER_IMAGE_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".png", ".tif", ".tiff", ".bmp")


def group_cases(folder: str, file_ending: str) -> tuple[dict[str, list[str]], list[str]]:
    """nnU-Net's <case>_<XXXX><ending> naming -> {case: files}; plus the problems of stray files."""
    if not os.path.isdir(folder):
        raise InputError([f"{folder}: no such folder"], "prediction input")
    pattern = re.compile(r"(.+)_(\d{4})" + re.escape(file_ending) + r"$")
    cases, problems = defaultdict(list), []
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if not os.path.isfile(path) or name.startswith("."):
            continue
        m = pattern.match(name)
        if m:
            cases[m.group(1)].append(path)
        elif name.endswith(file_ending):
            problems.append(f"{path}: not named <case>_<4-digit channel>{file_ending} (e.g. "
                            f"{name[:-len(file_ending)]}_0000{file_ending}); nnU-Net would ignore it")
        elif name.lower().endswith(OTHER_IMAGE_ENDINGS) and re.search(r"_\d{4}\.", name):
            problems.append(f"{path}: the model reads {file_ending} files; nnU-Net would skip this one (convert it "
                            f"to {file_ending})")
    if not cases and not problems:
        problems.append(f"{folder}: no {file_ending} images in it (the model's dataset.json says file_ending "
                        f"{file_ending!r})")
    return dict(cases), problems


def training_image_ndim(plans: dict) -> int:
    """2 for a dataset of 2D images (nnU-Net stores them with one slice), else 3."""
    shape = plans.get("original_median_shape_after_transp") or [2, 2, 2]
    return 2 if len(shape) == 3 and int(shape[0]) == 1 or len(shape) == 2 else 3


def check_prediction_inputs(list_of_lists_or_folder, dataset_json: dict, image_ndim: Optional[int] = None) -> None:
    """Raise :class:`InputError` listing every problem of the inputs of a model trained on ``dataset_json``
    (``image_ndim``: of its training images, :func:`training_image_ndim`)."""
    ending = dataset_json["file_ending"]
    n_channels = len(dataset_json.get("channel_names", dataset_json.get("modality", {})))
    if isinstance(list_of_lists_or_folder, str):
        cases, problems = group_cases(list_of_lists_or_folder, ending)
        groups = list(cases.values())
    else:
        groups, problems = [list(g) for g in list_of_lists_or_folder], []
    for files in groups:
        problems += case_problems(files, n_channels, ending, image_ndim)
    if problems:
        raise InputError(problems, "prediction input")


def checkpoint_problems(network, parameters: Sequence[dict], checkpoint_files: Sequence[str], trainer: str) -> list:
    """Each checkpoint whose weights do not fit the network ``trainer`` builds now, by file."""
    from nnunet_mamba.trainers.base import weights_mismatch

    problems = []
    for weights, path in zip(parameters, checkpoint_files):
        missing, unexpected, shapes = weights_mismatch(weights, network)
        if missing or unexpected or shapes:
            example = (missing or unexpected or shapes)[0]
            problems.append(
                f"{path}: its weights do not fit the network that {trainer} builds with this installation "
                f"({len(missing)} tensor(s) missing, {len(unexpected)} unexpected, {len(shapes)} of another shape; "
                f"first: {example!r}). It was written by another version of the trainer's code or edited plans: "
                "predict with the nnunet-mamba version that trained it (pip install 'nnunet-mamba==<version>'), "
                "or retrain.")
    return problems
