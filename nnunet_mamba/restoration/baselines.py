"""Classical baseline: non-local means (scikit-image), parameters as scikit-image's own denoising example.

``h = h_over_sigma * sigma`` (default 0.8), 3-voxel patches searched within a distance of 5 voxels, ``fast_mode=True``. ``sigma``: the true
noise sigma when it is known (synthetic degradations record it: an oracle setting that favours NLM), else
scikit-image's wavelet estimate ``estimate_sigma`` (needs PyWavelets).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
from skimage.restoration import denoise_nl_means, estimate_sigma

NLM_PARAMS = {"h_over_sigma": 0.8, "patch_size": 3, "patch_distance": 5, "fast_mode": True}


def nlm_denoise(image: np.ndarray, sigma: Optional[float] = None,
                h_over_sigma: float = NLM_PARAMS["h_over_sigma"]) -> tuple[np.ndarray, float]:
    """(denoised image, the noise sigma used)."""
    image = np.asarray(image, np.float64)
    if sigma is None:
        sigma = float(estimate_sigma(image, channel_axis=None))
    out = denoise_nl_means(image, h=h_over_sigma * sigma, sigma=sigma,
                           patch_size=NLM_PARAMS["patch_size"], patch_distance=NLM_PARAMS["patch_distance"],
                           fast_mode=NLM_PARAMS["fast_mode"], channel_axis=None)
    return out.astype(np.float32), sigma


def sr_cubic(clean: np.ndarray, factor: int, axis: int) -> np.ndarray:
    """Through-plane SR baseline: the thick slices of the acquisition (block means of ``factor`` slices, as
    :func:`~nnunet_mamba.restoration.degradations.through_plane_sr` makes them) interpolated with a cubic spline
    from the block centres to every slice (the degraded input is the linear interpolation of the same slices)."""
    from scipy.interpolate import CubicSpline
    from .degradations import thick_slices, through_plane_sr
    n = clean.shape[axis]
    thick = thick_slices(np.asarray(clean, np.float64), factor, axis)
    centres = np.array([(s + min(s + factor, n) - 1) / 2 for s in range(0, n, factor)])
    if len(centres) < 3:
        return through_plane_sr(clean, factor, axis)
    positions = np.clip(np.arange(n), centres[0], centres[-1])  # clamped at the ends, as the degradation
    return CubicSpline(centres, thick, axis=axis)(positions).astype(np.float32)
