"""Any nnU-Net raw dataset (or MSD-style single-channel images) -> a restoration dataset of (degraded, clean) pairs.

Layout of the output ``DatasetXXX_<name>`` (nnU-Net raw, so planning and preprocessing are nnU-Net's own):

* ``imagesTr/<case>_0000<ending>``: the degraded image (float32); ``imagesTr/<case>_0001<ending>``: the clean
  image (the source channel, float32) on the same grid. nnU-Net crops, resamples and patches both channels
  together, so every training patch is an aligned pair;
* ``labelsTr/<case><ending>``: a mask of ones over the whole image (label 1 "image"): nnU-Net's preprocessing needs a
  segmentation, and a whole-image mask keeps its cropping and patch sampling neutral;
* ``imagesTs/<case>_0000<ending>`` (degraded) and ``cleanTs/<case><ending>`` (clean), when the source has test
  images: held-out pairs for ``nnunet-mamba restore``;
* ``dataset.json``: both channels named ``noNorm`` (nnU-Net's ``NoNormalization``: intensities stay as they are;
  the restoration trainers scale each case by its *degraded* channel only, see
  :mod:`nnunet_mamba.restoration.inference`), plus ``"restoration": {...}`` with the degradation, its parameters,
  the seed and the source;
* ``degradation.json``: the same, plus per case the generator entropy ``[seed, crc32(case)]`` and what was drawn
  (noise sigma in image units, kept k-space lines).

Re-running with the same source, degradation and seed reproduces the files exactly (the per-case generator does
not depend on case order). Degradations: :mod:`nnunet_mamba.restoration.degradations`.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import SimpleITK as sitk

from nnunet_mamba.restoration.degradations import Degradation, case_rng
from .atomic import atomic_directory
from .checks import write_image
from .msd import output_dataset_folder

_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


def _file_ending(source: Path) -> str:
    meta_path = source / "dataset.json"
    if meta_path.is_file():
        try:
            return json.loads(meta_path.read_text()).get("file_ending", ".nii.gz")
        except json.JSONDecodeError as e:
            raise ValueError(f"{meta_path}: not valid JSON ({e})") from None
    return ".nii.gz"


def find_cases(folder: Path, ending: str, channel: int) -> dict[str, Path]:
    """case -> file of the wanted channel: ``<case>_<cccc><ending>`` (nnU-Net) or ``<case><ending>`` (one channel)."""
    out: dict[str, Path] = {}
    plain = []
    for f in sorted(folder.glob(f"*{ending}")):
        if f.name.startswith("."):
            continue
        stem = f.name[: -len(ending)]
        m = _CHANNEL.match(stem)
        if m:
            if int(m.group("channel")) == channel:
                out[m.group("case")] = f
        else:
            plain.append((stem, f))
    if plain and out:
        raise ValueError(f"{folder}: mixes <case>_<cccc>{ending} files with plain <case>{ending} files "
                         f"(e.g. {plain[0][1].name})")
    if plain:
        if channel != 0:
            raise ValueError(f"{folder}: files without a channel suffix hold one channel; --channel {channel} "
                             "does not exist")
        out = dict(plain)
    return out


def _read(path: Path) -> sitk.Image:
    try:
        img = sitk.ReadImage(str(path))
    except RuntimeError as e:
        raise ValueError(f"{path}: cannot be read as an image ({str(e).strip().splitlines()[-1][:200]})") from None
    if img.GetNumberOfComponentsPerPixel() != 1 or img.GetDimension() not in (2, 3):
        raise ValueError(f"{path}: a restoration source must be one 2D/3D scalar image, this one has "
                         f"{img.GetDimension()} dimensions and {img.GetNumberOfComponentsPerPixel()} components")
    return img


def _like(array: np.ndarray, ref: sitk.Image, dtype=np.float32) -> sitk.Image:
    img = sitk.GetImageFromArray(array.astype(dtype))
    img.CopyInformation(ref)
    return img


def convert_degrade(source: str | Path, dataset_id: int, name: str, degradation: Degradation, seed: int = 0,
                    channel: int = 0, output_root: Optional[str | Path] = None, max_cases: Optional[int] = None,
                    overwrite: bool = False, progress: Optional[Callable[[str], None]] = None) -> Path:
    source = Path(source)
    if not (source / "imagesTr").is_dir():
        raise FileNotFoundError(f"{source}: no imagesTr/ folder; expected an nnU-Net raw (or MSD) dataset folder")
    ending = _file_ending(source)
    train = find_cases(source / "imagesTr", ending, channel)
    if not train:
        raise FileNotFoundError(f"{source / 'imagesTr'}: no images of channel {channel:04d} ending in {ending}")
    test = find_cases(source / "imagesTs", ending, channel) if (source / "imagesTs").is_dir() else {}
    if max_cases:
        train = dict(list(train.items())[:max_cases])
        test = dict(list(test.items())[:max_cases])
    final = output_dataset_folder(output_root, dataset_id, name)
    say = progress or (lambda s: None)
    records = {}
    with atomic_directory(final, overwrite=overwrite, inputs=[source]) as tmp:
        for sub in ("imagesTr", "labelsTr") + (("imagesTs", "cleanTs") if test else ()):
            (tmp / sub).mkdir()
        for split, cases in (("train", train), ("test", test)):
            for i, (case, path) in enumerate(cases.items()):
                img = _read(path)
                clean = sitk.GetArrayFromImage(img).astype(np.float32)
                if not np.isfinite(clean).all():
                    raise ValueError(f"{path}: contains NaN or Inf values")
                rng, entropy = case_rng(seed, case)
                degraded, drawn = degradation.apply(clean, img.GetSpacing()[::-1], rng)
                if split == "train":
                    write_image(_like(degraded, img), str(tmp / "imagesTr" / f"{case}_0000{ending}"))
                    write_image(_like(clean, img), str(tmp / "imagesTr" / f"{case}_0001{ending}"))
                    write_image(_like(np.ones(clean.shape), img, np.uint8), str(tmp / "labelsTr" / f"{case}{ending}"))
                else:
                    write_image(_like(degraded, img), str(tmp / "imagesTs" / f"{case}_0000{ending}"))
                    write_image(_like(clean, img), str(tmp / "cleanTs" / f"{case}{ending}"))
                records[case] = {"split": split, "source_file": path.name, "rng_entropy": entropy, **drawn}
                if (i + 1) % 20 == 0 or i + 1 == len(cases):
                    say(f"degraded {i + 1}/{len(cases)} {split} cases")
        info = {**degradation.describe(), "seed": int(seed), "source": str(source.resolve()),
                "source_channel": channel, "degraded_channel": 0, "clean_channel": 1, "file": "degradation.json",
                "converted_by": "nnunet-mamba convert degrade"}
        ds = {"channel_names": {"0": "noNorm", "1": "noNorm"}, "labels": {"background": 0, "image": 1},
              "numTraining": len(train), "file_ending": ending, "name": name,
              "description": f"(degraded, clean) pairs for restoration: {degradation.describe()}",
              "restoration": info}
        (tmp / "dataset.json").write_text(json.dumps(ds, indent=2))
        (tmp / "degradation.json").write_text(json.dumps({**info, "cases": records}, indent=1))
    return final
