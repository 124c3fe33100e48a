"""Classical baseline: non-local means (scikit-image), parameters as scikit-image's own 3D example.

``sigma`` is estimated from the degraded image (``estimate_sigma``, wavelet-based), ``h = 0.8 * sigma``,
3-voxel patches searched within a distance of 5 voxels, ``fast_mode=True``.
"""
from __future__ import annotations

import numpy as np
from skimage.restoration import denoise_nl_means, estimate_sigma

NLM_PARAMS = {"h_over_sigma": 0.8, "patch_size": 3, "patch_distance": 5, "fast_mode": True}


def nlm_denoise(image: np.ndarray) -> tuple[np.ndarray, float]:
    """(denoised image, estimated noise sigma)."""
    image = np.asarray(image, np.float64)
    sigma = float(estimate_sigma(image, channel_axis=None))
    out = denoise_nl_means(image, h=NLM_PARAMS["h_over_sigma"] * sigma, sigma=sigma,
                           patch_size=NLM_PARAMS["patch_size"], patch_distance=NLM_PARAMS["patch_distance"],
                           fast_mode=NLM_PARAMS["fast_mode"], channel_axis=None)
    return out.astype(np.float32), sigma
