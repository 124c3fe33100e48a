"""Training loss of the restorers: L1 + w * (1 - SSIM), in float32 even under autocast.

The SSIM here is Wang et al.'s with a Gaussian window (sigma 1.5, truncated at 3.5 sigma, as scikit-image's
``structural_similarity(gaussian_weights=True, use_sample_covariance=False)``), averaged over the voxels whose
window lies inside the patch, so it equals scikit-image's value on the same array (tested).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SIGMA, TRUNCATE = 1.5, 3.5


def _gaussian(radius: int, sigma: float, device) -> torch.Tensor:
    x = torch.arange(-radius, radius + 1, dtype=torch.float32, device=device)
    g = torch.exp(-0.5 * (x / sigma) ** 2)
    return g / g.sum()


def _blur(x: torch.Tensor, kernels: list[torch.Tensor]) -> torch.Tensor:
    """Separable 'valid' Gaussian filter over every spatial axis of (B, C, *spatial)."""
    nd = x.ndim - 2
    conv = F.conv3d if nd == 3 else F.conv2d
    c = x.shape[1]
    for axis, k in enumerate(kernels):
        shape = [1] * nd
        shape[axis] = k.numel()
        x = conv(x, k.view(1, 1, *shape).expand(c, 1, *shape), groups=c)
    return x


def ssim(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Mean SSIM of (B, C, *spatial) tensors (2D or 3D), one value for the batch."""
    pred, target = pred.float(), target.float()
    radius = int(TRUNCATE * SIGMA + 0.5)
    kernels = [_gaussian(min(radius, (n - 1) // 2), SIGMA, pred.device) for n in pred.shape[2:]]
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_x, mu_y = _blur(pred, kernels), _blur(target, kernels)
    xx, yy, xy = _blur(pred * pred, kernels), _blur(target * target, kernels), _blur(pred * target, kernels)
    var_x, var_y, cov = xx - mu_x ** 2, yy - mu_y ** 2, xy - mu_x * mu_y
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))
    return s.mean()


class RestorationLoss(nn.Module):
    """``L1 + ssim_weight * (1 - SSIM)`` on intensity-normalised images (data range 1)."""

    def __init__(self, ssim_weight: float = 1.0):
        super().__init__()
        self.ssim_weight = ssim_weight

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.autocast(pred.device.type, enabled=False):
            pred, target = pred.float(), target.float()
            loss = F.l1_loss(pred, target)
            if self.ssim_weight:
                loss = loss + self.ssim_weight * (1 - ssim(pred, target))
            return loss
