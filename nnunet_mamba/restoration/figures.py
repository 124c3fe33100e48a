"""Restoration figures (PNG): slice panels (the middle slice of each image side by side, one grey window, plus
|error| maps) and the training progress (losses, validation PSNR and SSIM per epoch)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def _save(fig, path: Path) -> Path:
    """Write the figure next to ``path``, then rename (no half-written PNG)."""
    import matplotlib.pyplot as plt
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def middle_slice(image: np.ndarray, axis: int = 0) -> np.ndarray:
    image = np.asarray(image)
    return np.take(image, image.shape[axis] // 2, axis=axis) if image.ndim == 3 else image


def save_panel(path: str | Path, images: dict, clean_key: str = "clean", title: str = "", axis: int = 0,
               errors: bool = True) -> Path:
    """``images``: name -> 2D/3D array (same shape). Grey window: 0.5-99.5th percentile of the clean slice.
    With ``errors``, a second row shows |image - clean| of every other image on one common scale."""
    import matplotlib
    matplotlib.use("agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    slices = {k: middle_slice(v, axis) for k, v in images.items()}
    ref = slices[clean_key]
    lo, hi = np.percentile(ref, [0.5, 99.5])
    others = [k for k in slices if k != clean_key] if errors else []
    err = {k: np.abs(slices[k] - ref) for k in others}
    emax = max([float(np.percentile(e, 99.5)) for e in err.values()] + [1e-12])
    rows = 2 if others else 1
    fig, axes = plt.subplots(rows, len(slices), figsize=(2.6 * len(slices), 2.8 * rows), squeeze=False)
    for j, (name, sl) in enumerate(slices.items()):
        axes[0, j].imshow(sl, cmap="gray", vmin=lo, vmax=hi)
        axes[0, j].set_title(name, fontsize=9)
        if rows == 2:
            if name in err:
                axes[1, j].imshow(err[name], cmap="magma", vmin=0, vmax=emax)
                axes[1, j].set_title(f"|{name} - {clean_key}|", fontsize=8)
    for a in axes.ravel():
        a.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def plot_progress(history: dict, path: str | Path, title: str = "") -> Path:
    """``history``: per-epoch lists ``train_losses``, ``val_losses``, ``val_psnr``, ``val_psnr_input`` (the degraded
    input's PSNR on the same patches), ``val_ssim``; ``None`` entries are skipped."""
    import matplotlib
    matplotlib.use("agg")
    import matplotlib.pyplot as plt

    def series(key):
        values = np.array([np.nan if v is None else float(v) for v in history.get(key, [])], dtype=float)
        return np.arange(len(values)), values

    path = Path(path)
    fig, (ax, bx) = plt.subplots(2, 1, figsize=(8, 7), sharex=True)
    ax.plot(*series("train_losses"), "b-o", ms=3, label="train loss")
    ax.plot(*series("val_losses"), "r-o", ms=3, label="val loss")
    ax.set(ylabel="L1 + (1 - SSIM)", title=title or "restoration training")
    ax.legend()
    bx.plot(*series("val_psnr"), "g-o", ms=3, label="val PSNR, restored")
    bx.plot(*series("val_psnr_input"), "k--", label="val PSNR, degraded input")
    bx.set(xlabel="epoch", ylabel="PSNR (dB, validation patches)")
    cx = bx.twinx()
    cx.plot(*series("val_ssim"), "m-", label="val SSIM, restored")
    cx.set_ylabel("SSIM")
    lines = bx.get_legend_handles_labels()
    more = cx.get_legend_handles_labels()
    bx.legend(lines[0] + more[0], lines[1] + more[1], loc="center right")
    return _save(fig, path)
