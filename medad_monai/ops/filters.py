"""Separable Gaussian smoothing with half-sample symmetric padding, ``scipy.ndimage`` style.

Uses MONAI's sampled, normalized kernel (``monai.networks.layers.convutils.gaussian_1d``),
truncated at ``4 * sigma`` (radius ``int(4 * sigma + 0.5)``), applied separably with
half-sample symmetric padding (``d c b a | a b c d | d c b a``). That is exactly
``scipy.ndimage.gaussian_filter(x, sigma, mode="reflect", truncate=4.0)``, the filter
MambaAD / ADer apply to their anomaly maps. MONAI's ``GaussianFilter`` pads with zeros,
which darkens the borders, so it is not used here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.layers.convutils import gaussian_1d

__all__ = ["GAUSSIAN_TRUNCATE", "gaussian_blur", "symmetric_indices"]

GAUSSIAN_TRUNCATE = 4.0


def symmetric_indices(size: int, radius: int, device: torch.device | None = None) -> torch.Tensor:
    """Indices of a length-``size`` axis padded by ``radius`` on both sides with half-sample symmetry.

    Folding modulo ``2 * size`` handles radii larger than the axis (e.g. a 3 x 3 map with a
    radius-3 kernel), where a single reflection would index out of range.

    Returns:
        A long tensor of shape ``(size + 2 * radius,)`` with values in ``[0, size)``.
    """
    idx = torch.arange(-radius, size + radius, device=device) % (2 * size)
    return torch.where(idx >= size, 2 * size - 1 - idx, idx)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian smoothing of every channel, ``scipy.ndimage.gaussian_filter`` style.

    Args:
        x: maps of shape (B, C, H, W), floating point.
        sigma: standard deviation in pixels; ``sigma <= 0`` returns ``x`` unchanged.

    Returns:
        Smoothed maps of shape (B, C, H, W). Constant maps stay constant (the kernel is
        normalized and the padding is symmetric), up to floating-point rounding.
    """
    if x.ndim != 4:
        raise ValueError(f"x must have shape (B, C, H, W), got shape {tuple(x.shape)}.")
    if sigma <= 0:
        return x
    kernel = gaussian_1d(torch.tensor(float(sigma)), truncated=GAUSSIAN_TRUNCATE, approx="sampled", normalize=True)
    kernel = kernel.to(device=x.device, dtype=x.dtype)
    kernel = kernel / kernel.sum()  # gaussian_1d normalizes in float32: renormalize in x's dtype
    radius = (kernel.numel() - 1) // 2
    channels, height, width = x.shape[1:]
    x = x.index_select(2, symmetric_indices(height, radius, x.device))
    x = x.index_select(3, symmetric_indices(width, radius, x.device))
    x = F.conv2d(x, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)
    return F.conv2d(x, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
