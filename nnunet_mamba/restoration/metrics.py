"""Image-quality metrics against the clean image.

Both use the clean image's range as data range (``clean.max() - clean.min()``), so degraded input, baseline and
network outputs of one case are scored on the same scale.

* PSNR: ``10 log10(range^2 / MSE)`` over all voxels (infinite when identical).
* SSIM: scikit-image's ``structural_similarity`` on the whole 2D/3D image with Wang et al.'s settings (Gaussian
  window, sigma 1.5, population covariance).
"""
from __future__ import annotations

import numpy as np

SSIM_SIGMA = 1.5


def data_range(clean: np.ndarray) -> float:
    r = float(np.max(clean) - np.min(clean))
    if not r > 0:
        raise ValueError("the clean image is constant: PSNR/SSIM need an intensity range")
    return r


def psnr(clean: np.ndarray, image: np.ndarray) -> float:
    clean, image = _pair(clean, image)
    mse = float(np.mean((clean - image) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(data_range(clean) ** 2 / mse))


def ssim(clean: np.ndarray, image: np.ndarray) -> float:
    from skimage.metrics import structural_similarity  # imported here: PSNR works without scikit-image
    clean, image = _pair(clean, image)
    squeezed = [a.squeeze() for a in (clean, image)]
    return float(structural_similarity(squeezed[0], squeezed[1], data_range=data_range(clean), gaussian_weights=True,
                                       sigma=SSIM_SIGMA, use_sample_covariance=False))


def scores(clean: np.ndarray, image: np.ndarray) -> dict:
    """PSNR and SSIM; SSIM is None where scikit-image is not installed (bare GPU machines)."""
    try:
        s = ssim(clean, image)
    except ImportError:
        s = None
    return {"PSNR": psnr(clean, image), "SSIM": s}


def _pair(clean, image):
    clean, image = np.asarray(clean, np.float64), np.asarray(image, np.float64)
    if clean.shape != image.shape:
        raise ValueError(f"shape {image.shape} differs from the clean image's {clean.shape}")
    return clean, image
