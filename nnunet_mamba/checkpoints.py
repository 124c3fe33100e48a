"""Reading nnU-Net training checkpoints and model folders, with errors that name the file."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence


def read_checkpoint(path: str | Path) -> dict:
    """``torch.load`` of an nnU-Net checkpoint on the CPU; a missing, unreadable or foreign file raises one clear
    error naming it."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # truncated file, not a torch file, ...
        raise RuntimeError(f"{path}: cannot be read as a checkpoint ({type(e).__name__}: {str(e)[:200]})") from None
    if not isinstance(checkpoint, dict) or "network_weights" not in checkpoint:
        raise ValueError(f"{path}: not an nnU-Net training checkpoint (no 'network_weights')")
    return checkpoint


def model_folds(model_folder: str | Path, checkpoint: str, folds: Optional[Sequence] = None) -> list[str]:
    """The folds to use: ``folds`` as given, else every ``fold_X`` of the model folder that has ``checkpoint``."""
    if folds:
        return [str(f) for f in folds]
    model_folder = Path(model_folder)
    found = sorted(p.name[5:] for p in model_folder.glob("fold_*") if (p / checkpoint).is_file())
    if not found:
        raise FileNotFoundError(f"{model_folder}: no fold_X/{checkpoint} (not a trained model folder, or training "
                                "has not finished: pick another checkpoint with -chk)")
    return found
