"""AMOS 2022 -> nnU-Net v2 raw dataset (CT and MRI, 15 abdominal organs), optionally CT-only or MRI-only.

AMOS ships in the Decathlon layout (dataset.json with "training", "validation" and "test" lists,
imagesTr/labelsTr, imagesVa/labelsVa, imagesTs); case ``amos_XXXX`` is CT for XXXX <= 500 and MRI above.
Training and validation cases both become nnU-Net training cases (nnU-Net makes its own folds).
The channel name chooses nnU-Net's normalisation: "CT" (dataset-wide intensity statistics) only for a
CT-only dataset, z-score ("MRI" / "CT_MRI") otherwise, since CT statistics would be wrong for MRI cases.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Optional

from .msd import convert_msd

_ID = re.compile(r"^amos_(\d+)$")


def amos_modality(case_id: str) -> str:
    m = _ID.match(case_id)
    if not m:
        raise ValueError(f"{case_id}: not an AMOS case name (amos_XXXX)")
    return "CT" if int(m.group(1)) <= 500 else "MRI"


def convert_amos(task_dir: str | Path, dataset_id: int = 218, output_root: Optional[str | Path] = None,
                 name: Optional[str] = None, modality: str = "all", overwrite: bool = False,
                 progress: Optional[Callable[[str], None]] = None) -> Path:
    """``modality``: "all", "ct" or "mri"."""
    modality = modality.lower()
    if modality not in ("all", "ct", "mri"):
        raise ValueError(f"modality must be all, ct or mri, not {modality!r}")
    keep = None if modality == "all" else (lambda cid: amos_modality(cid).lower() == modality)
    channel = {"all": "CT_MRI", "ct": "CT", "mri": "MRI"}[modality]
    name = name or {"all": "AMOS2022", "ct": "AMOS2022_CT", "mri": "AMOS2022_MRI"}[modality]
    return convert_msd(task_dir, dataset_id, output_root, name, overwrite, progress=progress,
                       training_keys=("training", "validation"), case_filter=keep, channel_names={"0": channel},
                       converted_by=f"nnunet-mamba convert amos --modality {modality}")
