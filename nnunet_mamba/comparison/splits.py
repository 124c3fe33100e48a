"""Cross-validation folds for datasets too small for nnU-Net's default: with fewer than five training cases its
5-fold split cannot be made (``nnUNetv2_train`` fails), so a comparison leaves one case out per fold instead,
written to ``splits_final.json`` in the preprocessed dataset folder, where nnU-Net's trainers read their folds."""
from __future__ import annotations

import json
import os
from pathlib import Path

NNUNET_FOLDS = 5


def training_cases(preprocessed_dataset: Path) -> list[str]:
    """Case identifiers of a preprocessed dataset: its ``gt_segmentations`` (copied there by nnU-Net's
    preprocessing), without the file ending of its ``dataset.json``."""
    ending = json.loads((preprocessed_dataset / "dataset.json").read_text())["file_ending"]
    gt = preprocessed_dataset / "gt_segmentations"
    if not gt.is_dir():
        raise FileNotFoundError(f"{gt}: missing; run nnUNetv2_plan_and_preprocess first")
    return sorted(f.name[: -len(ending)] for f in gt.iterdir() if f.name.endswith(ending))


def leave_one_out(cases: list[str]) -> list[dict]:
    """One fold per case: that case validates, the others train."""
    return [{"train": [c for c in cases if c != held], "val": [held]} for held in cases]


def fold_count(preprocessed_dataset: Path) -> tuple[int, str]:
    """How many folds the dataset's training has, and where they come from: an existing ``splits_final.json``,
    nnU-Net's 5-fold default, or a leave-one-out split written now (fewer than five cases)."""
    path = preprocessed_dataset / "splits_final.json"
    if path.is_file():
        return len(json.loads(path.read_text())), f"the folds of {path}"
    cases = training_cases(preprocessed_dataset)
    if len(cases) >= NNUNET_FOLDS:
        return NNUNET_FOLDS, "nnU-Net's 5-fold split"
    if len(cases) < 2:
        raise ValueError(f"{preprocessed_dataset}: {len(cases)} training case(s); cross-validation needs two or more")
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(leave_one_out(cases), indent=1))
    os.replace(tmp, path)  # never a half-written split for nnU-Net to read
    return len(cases), f"leave-one-out over {len(cases)} cases, written to {path}"
