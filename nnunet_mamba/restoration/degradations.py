"""Synthetic, seeded degradations of a clean image (numpy arrays in SimpleITK order, i.e. (z, y, x)).

* Noise (``denoise``): ``sigma = level * robust_max(clean)``, with ``robust_max`` the 99.5th percentile of the
  clean image over all voxels. Gaussian: ``clean + n``; Rician: ``sqrt((clean + n1)^2 + n2^2)`` (magnitude MRI
  with complex Gaussian noise), ``n, n1, n2 ~ N(0, sigma^2)``.
* Through-plane super-resolution (``sr``): slices are averaged in blocks of ``factor`` along the slice axis
  (the axis of largest spacing; the first array axis on ties), then interpolated linearly from the block centres
  back to every original slice position (clamped at the ends), so degraded and clean share one grid.
* Undersampled k-space (``kspace``): every 2D slice (perpendicular to the slice axis) is Fourier transformed; a
  retrospective Cartesian mask keeps whole phase-encode lines (along the first in-plane axis): the central
  ``center_fraction`` of the lines plus randomly chosen others, ``round(n / acceleration)`` lines in all, the same
  mask for every slice of a volume; the result is the magnitude of the zero-filled inverse transform.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.interpolate import interp1d

TASKS = ("denoise", "sr", "kspace")
NOISES = ("gaussian", "rician")


def robust_max(image: np.ndarray) -> float:
    """99.5th percentile of all voxels: the reference intensity that noise levels are fractions of."""
    return float(np.percentile(image, 99.5))


def add_gaussian_noise(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    return (image + rng.normal(0.0, sigma, image.shape)).astype(np.float32)


def add_rician_noise(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    real = image + rng.normal(0.0, sigma, image.shape)
    imag = rng.normal(0.0, sigma, image.shape)
    return np.sqrt(real ** 2 + imag ** 2).astype(np.float32)


def slice_axis(spacing_zyx) -> int:
    """Array axis with the largest spacing (the through-plane axis); the first one on ties."""
    return int(np.argmax(np.asarray(spacing_zyx, dtype=float)))


def thick_slices(image: np.ndarray, factor: int, axis: int) -> np.ndarray:
    """Means of consecutive blocks of ``factor`` slices along ``axis`` (a shorter last block if it does not divide)."""
    n = image.shape[axis]
    blocks = [np.take(image, range(s, min(s + factor, n)), axis=axis).mean(axis=axis) for s in range(0, n, factor)]
    return np.stack(blocks, axis=axis)


def through_plane_sr(image: np.ndarray, factor: int, axis: int) -> np.ndarray:
    """Thick slices (block means), linearly interpolated back to the original slice positions."""
    n = image.shape[axis]
    thick = thick_slices(image.astype(np.float64), factor, axis)
    centres = np.array([(s + min(s + factor, n) - 1) / 2 for s in range(0, n, factor)])
    if len(centres) == 1:
        return np.repeat(thick, n, axis=axis).astype(np.float32)
    f = interp1d(centres, thick, axis=axis, bounds_error=False,
                 fill_value=(np.take(thick, 0, axis=axis), np.take(thick, -1, axis=axis)))
    return f(np.arange(n)).astype(np.float32)


def cartesian_mask(n_lines: int, acceleration: float, center_fraction: float,
                   rng: np.random.Generator) -> np.ndarray:
    """Boolean mask over ``n_lines`` phase-encode lines in centred k-space order (DC at ``n_lines // 2``)."""
    if acceleration < 1:
        raise ValueError(f"acceleration must be >= 1, not {acceleration}")
    if not 0 <= center_fraction <= 1:
        raise ValueError(f"center_fraction must be in [0, 1], not {center_fraction}")
    n_keep = max(1, int(round(n_lines / acceleration)))
    n_center = min(n_keep, int(round(n_lines * center_fraction)))
    mask = np.zeros(n_lines, bool)
    start = n_lines // 2 - n_center // 2
    mask[start:start + n_center] = True
    others = np.flatnonzero(~mask)
    mask[rng.choice(others, n_keep - n_center, replace=False)] = True
    return mask


def to_kspace(slices: np.ndarray) -> np.ndarray:
    """Centred 2D k-space of every slice of ``slices`` (slices first; orthonormal FFT)."""
    return np.fft.fftshift(np.fft.fft2(slices, axes=(1, 2), norm="ortho"), axes=(1, 2))


def to_image(kspace: np.ndarray) -> np.ndarray:
    """Inverse of :func:`to_kspace` (complex slices)."""
    return np.fft.ifft2(np.fft.ifftshift(kspace, axes=(1, 2)), axes=(1, 2), norm="ortho")


def measured_kspace(image: np.ndarray, mask: np.ndarray, axis: int) -> np.ndarray:
    """The acquired k-space: every slice perpendicular to ``axis`` (moved first) transformed, the phase-encode lines
    outside ``mask`` (along the first in-plane axis) set to zero."""
    moved = np.moveaxis(np.asarray(image, np.float64), axis, 0)
    if mask.shape != (moved.shape[1],):
        raise ValueError(f"mask has {mask.shape[0]} lines but the phase-encode axis has {moved.shape[1]}")
    k = to_kspace(moved)
    k[:, ~mask, :] = 0
    return k


def kspace_undersample(image: np.ndarray, mask: np.ndarray, axis: int) -> np.ndarray:
    """Zero-filled reconstruction (magnitude) of every slice perpendicular to ``axis`` with the line ``mask`` applied
    along the first in-plane axis."""
    out = np.abs(to_image(measured_kspace(image, mask, axis)))
    return np.moveaxis(out, 0, axis).astype(np.float32)


@dataclass(frozen=True)
class Degradation:
    """One degradation with its parameters; ``apply`` returns the degraded image and what was drawn."""
    task: str
    noise: str = "rician"
    level: float = 0.05
    factor: int = 2
    acceleration: float = 4.0
    center_fraction: float = 0.08

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"unknown degradation task {self.task!r}; choose one of {', '.join(TASKS)}")
        if self.task == "denoise":
            if self.noise not in NOISES:
                raise ValueError(f"unknown noise {self.noise!r}; choose one of {', '.join(NOISES)}")
            if not self.level > 0:
                raise ValueError(f"noise level must be > 0 (a fraction of the robust maximum), not {self.level}")
        if self.task == "sr" and self.factor not in (2, 3, 4, 5, 6, 8):
            raise ValueError(f"super-resolution factor must be a small integer (2 or 4), not {self.factor}")

    def describe(self) -> dict:
        keep = {"denoise": ("noise", "level"), "sr": ("factor",), "kspace": ("acceleration", "center_fraction")}
        return {"task": self.task, **{k: v for k, v in asdict(self).items() if k in keep[self.task]}}

    def apply(self, clean: np.ndarray, spacing_zyx, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
        clean = clean.astype(np.float32)
        axis = slice_axis(spacing_zyx)
        if self.task == "denoise":
            sigma = self.level * robust_max(clean)
            add = add_gaussian_noise if self.noise == "gaussian" else add_rician_noise
            return add(clean, sigma, rng), {"sigma": sigma, "robust_max": robust_max(clean)}
        if self.task == "sr":
            if clean.shape[axis] < self.factor:
                raise ValueError(f"only {clean.shape[axis]} slices along axis {axis}: fewer than the factor "
                                 f"{self.factor}")
            return through_plane_sr(clean, self.factor, axis), {"slice_axis": axis}
        pe_axis = [a for a in range(clean.ndim) if a != axis][0]
        mask = cartesian_mask(clean.shape[pe_axis], self.acceleration, self.center_fraction, rng)
        return kspace_undersample(clean, mask, axis), {"slice_axis": axis, "phase_encode_axis": pe_axis,
                                                       "lines_kept": np.flatnonzero(mask).tolist()}


def case_rng(seed: int, case: str) -> tuple[np.random.Generator, list[int]]:
    """A generator for one case from the dataset seed and the case ID (independent of case order)."""
    import zlib
    entropy = [int(seed), zlib.crc32(case.encode())]
    return np.random.default_rng(entropy), entropy

