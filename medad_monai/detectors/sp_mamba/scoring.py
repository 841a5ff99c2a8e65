"""SP-Mamba's map-shape terms of the image score (eq. 4, 5, 7) and its image scorer.

``S_total = S_org + alpha * S_p-dist + beta * S_concen + gamma * S_contra`` (eq. 7). The first two
terms are the pixel map of :meth:`SPMamba.anomaly_map` pooled to an image score; the last two
describe the map's shape: :func:`concentration_score` (eq. 4) and :func:`contrast_score` (eq. 5, a
difference-of-Gaussians band-pass of the map).
"""

from __future__ import annotations

import torch

from medad_monai.ops.filters import gaussian_blur
from medad_monai.scoring import DEFAULT_POOL_KERNEL, AnomalyImageScore, check_anomaly_map

__all__ = ["SPMambaImageScore", "concentration_score", "contrast_score", "difference_of_gaussians"]

#: the paper's weights of eq. 7 and the Gaussians of eq. 5.
CONCENTRATION_WEIGHT = -0.025
CONTRAST_WEIGHT = 400.0
DOG_SIGMA = 0.6
DOG_K_SIGMA = 1.2


def concentration_score(anomaly_map: torch.Tensor) -> torch.Tensor:
    """SP-Mamba concentration score (eq. 4).

    ``S_concen = 1 / (H W) * sum_ij (e_ij - e*)^2 * d_ij``, with ``e*`` the maximum of the
    map and ``d_ij`` the Euclidean distance, in pixels, from (i, j) to the position of the
    maximum. When several pixels share the maximum, the first in row-major order is used
    (``torch.argmax``). A uniform map scores 0. The score grows with the gap between the
    peak and the rest of the map, weighted by distance from the peak: pixels far from the
    peak but almost as high (a second highlight) lower it. SP-Mamba reports that normal
    images score higher than abnormal ones on its maps and weights the term with a negative
    ``beta`` (-0.025).

    Args:
        anomaly_map: (B, 1, H, W).

    Returns:
        Scores of shape (B,).
    """
    check_anomaly_map(anomaly_map)
    batch, _, height, width = anomaly_map.shape
    flat = anomaly_map.reshape(batch, -1)
    peak_value, peak_index = flat.max(dim=1)
    rows = torch.arange(height, device=flat.device, dtype=flat.dtype).repeat_interleave(width)
    cols = torch.arange(width, device=flat.device, dtype=flat.dtype).repeat(height)
    peak_row = (peak_index // width).to(flat.dtype).unsqueeze(1)
    peak_col = (peak_index % width).to(flat.dtype).unsqueeze(1)
    distance = torch.sqrt((rows - peak_row) ** 2 + (cols - peak_col) ** 2)
    cost = (flat - peak_value.unsqueeze(1)) ** 2
    return (cost * distance).mean(dim=1)


def difference_of_gaussians(anomaly_map: torch.Tensor, sigma: float = DOG_SIGMA, k_sigma: float = DOG_K_SIGMA) -> torch.Tensor:
    """Band-pass response ``G_sigma * e - G_{k sigma} * e`` of the anomaly map ``e``.

    Positive where the map is locally higher than its surround (a peak), negative on the
    skirts of a peak, 0 on constant maps (up to rounding). Both blurs use :func:`gaussian_blur`,
    whose symmetric padding and normalized kernels preserve the sum of the map exactly, so
    the response always sums to 0 over the image (see :func:`contrast_score`).

    Args:
        anomaly_map: (B, 1, H, W).
        sigma: the narrow Gaussian's standard deviation (SP-Mamba: 0.6).
        k_sigma: the wide Gaussian's standard deviation ``k * sigma`` (SP-Mamba: 1.2).

    Returns:
        Response of shape (B, 1, H, W).
    """
    check_anomaly_map(anomaly_map)
    if not 0.0 < sigma < k_sigma:
        raise ValueError(f"need 0 < sigma < k_sigma, got sigma={sigma}, k_sigma={k_sigma}.")
    return gaussian_blur(anomaly_map, sigma) - gaussian_blur(anomaly_map, k_sigma)


def contrast_score(anomaly_map: torch.Tensor, sigma: float = DOG_SIGMA, k_sigma: float = DOG_K_SIGMA) -> torch.Tensor:
    """SP-Mamba contrast score (eq. 5), read as the RMS of the difference-of-Gaussians response.

    ``S_contra = sqrt(1 / (H W) * sum_ij D_ij^2)`` with ``D = G_sigma * e - G_{k sigma} * e``
    (:func:`difference_of_gaussians`), i.e. the RMS contrast of the map in the band between
    ``sigma`` and ``k sigma``.

    Eq. 5 as printed averages the DoG *kernel* ``G(x_ij, y_ij, k sigma) - G(x_ij, y_ij, sigma)``
    over pixel coordinates, which does not depend on the map ``e`` at all. The next reading,
    the signed mean of the DoG-filtered map, is no better: both Gaussians are normalized, so
    with symmetric padding the filtered maps have the same sum as ``e`` and the signed mean is
    exactly 0 for every map (with other paddings, a border artefact). Of the unsigned means,
    the mean absolute response tends, for a blob of height h and width s >> sigma, to a
    constant times h whatever s, i.e. it repeats the peak height that the reconstruction
    score already carries; the RMS keeps eq. 5's ``1 / (H W) * sum`` (under the root), is
    linear in the map's scale like the other terms, is 0 on a constant map, and grows with
    the height and with the sharpness of a peak (as h / s for s >> sigma). It is never
    negative, so with the paper's positive ``gamma`` (400) higher contrast raises the total
    score, matching the paper's observation that abnormal images have the larger
    ``S_contra``. On maps smoothed with sigma 4 the values are of order 1e-4 to 1e-3,
    consistent with the size of ``gamma``.

    Args:
        anomaly_map: (B, 1, H, W).
        sigma: the narrow Gaussian's standard deviation (SP-Mamba: 0.6).
        k_sigma: the wide Gaussian's standard deviation ``k * sigma`` (SP-Mamba: 1.2).

    Returns:
        Scores of shape (B,), non-negative.
    """
    return difference_of_gaussians(anomaly_map, sigma, k_sigma).square().mean(dim=(1, 2, 3)).sqrt()


class SPMambaImageScore(AnomalyImageScore):
    """SP-Mamba's image score (eq. 7), with the paper's defaults.

    ``score = pool(e) + concentration_weight * S_concen(e) + contrast_weight * S_contra(e)`` where
    ``e`` is the pixel map ``S_org + alpha * S_p-dist`` and ``pool`` is
    :class:`~medad_monai.scoring.AnomalyImageScore`'s pooling. ``concentration_weight`` is eq. 7's
    ``beta`` (-0.025), ``contrast_weight`` its ``gamma`` (400); setting either to 0 is the paper's
    ablation without that term.

    Args:
        pooling, kernel_size, top_k_ratio: see :class:`~medad_monai.scoring.AnomalyImageScore`
            (``kernel_size`` 16 at the paper's 256 x 256; the bundles scale it with the image size).
        concentration_weight: ``beta``.
        contrast_weight: ``gamma``.
        dog_sigma, dog_k_sigma: the two Gaussians of the contrast score (0.6 and 1.2).

    Call with maps ``(B, 1, H, W)``; returns scores ``(B,)``.
    """

    def __init__(
        self,
        pooling: str = "max_avg_pool",
        kernel_size: int = DEFAULT_POOL_KERNEL,
        top_k_ratio: float = 0.01,
        concentration_weight: float = CONCENTRATION_WEIGHT,
        contrast_weight: float = CONTRAST_WEIGHT,
        dog_sigma: float = DOG_SIGMA,
        dog_k_sigma: float = DOG_K_SIGMA,
    ) -> None:
        super().__init__(pooling, kernel_size, top_k_ratio)
        self.concentration_weight = concentration_weight
        self.contrast_weight = contrast_weight
        self.dog_sigma = dog_sigma
        self.dog_k_sigma = dog_k_sigma

    def __call__(self, anomaly_map: torch.Tensor) -> torch.Tensor:
        score = super().__call__(anomaly_map)
        if self.concentration_weight:
            score = score + self.concentration_weight * concentration_score(anomaly_map)
        if self.contrast_weight:
            score = score + self.contrast_weight * contrast_score(anomaly_map, self.dog_sigma, self.dog_k_sigma)
        return score
