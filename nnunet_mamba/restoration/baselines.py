"""Classical baselines of the restoration tasks: non-local means (denoising), cubic-spline interpolation (through-plane
super-resolution), compressed sensing with total variation (undersampled k-space).

NLM (scikit-image), parameters as scikit-image's own denoising example:
``h = h_over_sigma * sigma`` (default 0.8), 3-voxel patches searched within a distance of 5 voxels, ``fast_mode=True``.
``sigma``: the true noise sigma when it is known (synthetic degradations record it: an oracle setting that favours NLM),
else scikit-image's wavelet estimate ``estimate_sigma`` (needs PyWavelets).
"""
from __future__ import annotations

import numpy as np
from skimage.restoration import denoise_nl_means, denoise_tv_chambolle, estimate_sigma

from .degradations import thick_slices, through_plane_sr, to_image, to_kspace

NLM_PARAMS = {"h_over_sigma": 0.8, "patch_size": 3, "patch_distance": 5, "fast_mode": True}


def nlm_denoise(image: np.ndarray, sigma: float | None = None,
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
    n = clean.shape[axis]
    thick = thick_slices(np.asarray(clean, np.float64), factor, axis)
    centres = np.array([(s + min(s + factor, n) - 1) / 2 for s in range(0, n, factor)])
    if len(centres) < 3:
        return through_plane_sr(clean, factor, axis)
    positions = np.clip(np.arange(n), centres[0], centres[-1])  # clamped at the ends, as the degradation
    return CubicSpline(centres, thick, axis=axis)(positions).astype(np.float32)


def cs_tv_reconstruct(measured: np.ndarray, mask: np.ndarray, axis: int, weight: float,
                      iterations: int = 40) -> np.ndarray:
    """Compressed-sensing baseline for undersampled Cartesian k-space: POCS, alternating scikit-image's total-variation
    denoising (Chambolle; real and imaginary parts, 3D) with data consistency on the acquired lines.

    ``measured``: the acquired k-space as :func:`~nnunet_mamba.restoration.degradations.measured_kspace` returns it
    (slices perpendicular to ``axis`` first); ``weight``: TV weight in image intensity units. Returns the magnitude
    image in the original axis order. It reads the complex k-space, more than the magnitude image the networks get.
    """
    x = to_image(measured)
    for _ in range(iterations):
        parts = denoise_tv_chambolle(np.stack([x.real, x.imag], -1), weight=weight, channel_axis=-1)
        k = to_kspace(parts[..., 0] + 1j * parts[..., 1])
        k[:, mask, :] = measured[:, mask, :]
        x = to_image(k)
    return np.moveaxis(np.abs(x), 0, axis).astype(np.float32)
