"""Anomaly maps and image-level anomaly scores.

Batched tensor functions shared by the detectors and the evaluation layer:

- :func:`cosine_anomaly_map`: the feature-reconstruction anomaly map of the MambaAD family
  (SP-Mamba eq. 6, Wave-MambaAD): sum over scales of ``1 - cosine similarity``, upsampled
  and Gaussian-smoothed.
- :func:`max_of_avg_pooled` and :func:`top_k_mean`: image scores from an anomaly map.
- :func:`concentration_score` (SP-Mamba eq. 4), :func:`difference_of_gaussians` and
  :func:`contrast_score` (SP-Mamba eq. 5): the map-shape terms of SP-Mamba's total score
  ``S_total = S_org + alpha * S_p-dist + beta * S_concen + gamma * S_contra`` (eq. 7).

Gaussian smoothing (:func:`gaussian_blur`) uses MONAI's sampled, normalized kernel
(``monai.networks.layers.convutils.gaussian_1d``), truncated at ``4 * sigma`` (radius
``int(4 * sigma + 0.5)``), applied separably with half-sample symmetric padding
(``d c b a | a b c d | d c b a``). That is exactly ``scipy.ndimage.gaussian_filter(x, sigma,
mode="reflect", truncate=4.0)``, the filter MambaAD / ADer apply to their anomaly maps.
MONAI's ``GaussianFilter`` pads with zeros, which darkens the borders, so it is not used.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.layers.convutils import gaussian_1d

__all__ = [
    "AnomalyImageScore",
    "gaussian_blur",
    "cosine_anomaly_map",
    "max_of_avg_pooled",
    "top_k_mean",
    "concentration_score",
    "difference_of_gaussians",
    "contrast_score",
]

# ADer's evaluator default (``pooling_ks=[16, 16]``, stride 1, no padding).
DEFAULT_POOL_KERNEL = 16
GAUSSIAN_TRUNCATE = 4.0


def _check_map(anomaly_map: torch.Tensor, name: str = "anomaly_map") -> None:
    if not isinstance(anomaly_map, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(anomaly_map).__name__}.")
    if anomaly_map.ndim != 4 or anomaly_map.shape[1] != 1:
        raise ValueError(f"{name} must have shape (B, 1, H, W), got shape {tuple(anomaly_map.shape)}.")


def _symmetric_indices(size: int, radius: int, device: torch.device) -> torch.Tensor:
    """Indices of a length-``size`` axis padded by ``radius`` with half-sample symmetry.

    Folding modulo ``2 * size`` handles radii larger than the axis (e.g. a 3 x 3 map with a
    radius-3 kernel), where a single reflection would index out of range.
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
    x = x.index_select(2, _symmetric_indices(height, radius, x.device))
    x = x.index_select(3, _symmetric_indices(width, radius, x.device))
    x = F.conv2d(x, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)
    return F.conv2d(x, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)


def cosine_anomaly_map(
    features_in: Sequence[torch.Tensor],
    features_rec: Sequence[torch.Tensor],
    out_size: tuple[int, int],
    sigma: float = 4.0,
) -> torch.Tensor:
    """Reconstruction anomaly map: sum over scales of ``1 - cos(f_in, f_rec)`` (SP-Mamba eq. 6).

    Each scale's distance map is upsampled bilinearly (``align_corners=True``, as MambaAD /
    ADer) to ``out_size``; the maps are summed, as eq. 6 writes it (ADer's ``cal_anomaly_map``
    divides the sum by a constant, which does not change any ranking), then smoothed with a
    Gaussian of ``sigma`` (4 in MambaAD) by :func:`gaussian_blur`.

    Args:
        features_in: encoder features, one tensor (B, C_l, h_l, w_l) per scale.
        features_rec: reconstructed features, the same shapes as ``features_in``.
        out_size: (H, W) of the output map, usually the input image size.
        sigma: Gaussian standard deviation in output pixels; ``sigma <= 0`` disables smoothing.

    Returns:
        Anomaly map of shape (B, 1, H, W) with values in [0, 2 * L] for L scales: 0 where
        the features agree in direction, 2 per scale where they are opposite. A zero feature
        vector has cosine 0 (``F.cosine_similarity`` clamps the norms), hence distance 1.
    """
    if len(features_in) == 0 or len(features_in) != len(features_rec):
        raise ValueError(
            "features_in and features_rec must be non-empty sequences of the same length, "
            f"got {len(features_in)} and {len(features_rec)}."
        )
    batch = features_in[0].shape[0]
    anomaly_map = None
    for level, (f_in, f_rec) in enumerate(zip(features_in, features_rec)):
        if f_in.ndim != 4 or f_in.shape != f_rec.shape or f_in.shape[0] != batch:
            raise ValueError(
                f"features_in[{level}] and features_rec[{level}] must have the same shape (B, C, h, w) with "
                f"B={batch}, got {tuple(f_in.shape)} and {tuple(f_rec.shape)}."
            )
        distance = 1.0 - F.cosine_similarity(f_in, f_rec, dim=1).unsqueeze(1)
        distance = F.interpolate(distance, size=tuple(out_size), mode="bilinear", align_corners=True)
        anomaly_map = distance if anomaly_map is None else anomaly_map + distance
    return gaussian_blur(anomaly_map, sigma)


def max_of_avg_pooled(anomaly_map: torch.Tensor, kernel_size: int = DEFAULT_POOL_KERNEL) -> torch.Tensor:
    """MambaAD-family image score: the maximum of the average-pooled anomaly map.

    Pooling is ``avg_pool2d(kernel_size, stride=1)`` without padding, as ADer's evaluator
    with its default ``pooling_ks=[16, 16]``; averaging first makes the score respond to
    an anomalous patch rather than to a single hot pixel. MambaAD's own config passes
    ``pooling_ks=None``, i.e. the plain maximum: use ``kernel_size=1`` for that.

    Args:
        anomaly_map: (B, 1, H, W).
        kernel_size: side of the square pooling window, 1 <= kernel_size <= min(H, W).

    Returns:
        Image scores of shape (B,).
    """
    _check_map(anomaly_map)
    height, width = anomaly_map.shape[-2:]
    if not 1 <= kernel_size <= min(height, width):
        raise ValueError(f"kernel_size must be in [1, min(H, W)] = [1, {min(height, width)}], got {kernel_size}.")
    pooled = F.avg_pool2d(anomaly_map, kernel_size, stride=1)
    return pooled.amax(dim=(1, 2, 3))


def top_k_mean(anomaly_map: torch.Tensor, k: int | None = None, ratio: float | None = None) -> torch.Tensor:
    """Image score: mean of the ``k`` largest values of each anomaly map.

    Args:
        anomaly_map: (B, 1, H, W).
        k: number of pixels, 1 <= k <= H * W.
        ratio: alternatively, the fraction of pixels in (0, 1]; ``k = ceil(ratio * H * W)``
            (ADer's ``max_ratio``). Give exactly one of ``k`` and ``ratio``.

    Returns:
        Image scores of shape (B,).
    """
    _check_map(anomaly_map)
    num_pixels = anomaly_map.shape[-2] * anomaly_map.shape[-1]
    if (k is None) == (ratio is None):
        raise ValueError(f"give exactly one of k and ratio, got k={k}, ratio={ratio}.")
    if ratio is not None:
        if not 0.0 < ratio <= 1.0:
            raise ValueError(f"ratio must be in (0, 1], got {ratio}.")
        k = math.ceil(ratio * num_pixels)
    if not 1 <= k <= num_pixels:
        raise ValueError(f"k must be in [1, H * W] = [1, {num_pixels}], got {k}.")
    return anomaly_map.flatten(1).topk(k, dim=1).values.mean(dim=1)


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
    _check_map(anomaly_map)
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


def difference_of_gaussians(anomaly_map: torch.Tensor, sigma: float = 0.6, k_sigma: float = 1.2) -> torch.Tensor:
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
    _check_map(anomaly_map)
    if not 0.0 < sigma < k_sigma:
        raise ValueError(f"need 0 < sigma < k_sigma, got sigma={sigma}, k_sigma={k_sigma}.")
    return gaussian_blur(anomaly_map, sigma) - gaussian_blur(anomaly_map, k_sigma)


def contrast_score(anomaly_map: torch.Tensor, sigma: float = 0.6, k_sigma: float = 1.2) -> torch.Tensor:
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


class AnomalyImageScore:
    """Image score of an anomaly map with the aggregation each paper uses.

    ``score = pool(e) + concentration_weight * S_concen(e) + contrast_weight * S_contra(e)``
    where ``pool`` is :func:`max_of_avg_pooled` (MambaAD family; ``pooling="max_avg_pool"``)
    or :func:`top_k_mean` (``pooling="top_k_mean"``, ``top_k_ratio`` of the pixels). For
    SP-Mamba (eq. 7) ``concentration_weight`` is ``beta`` (-0.025) and ``contrast_weight``
    is ``gamma`` (400); setting either to 0 is the paper's ablation without that term.

    Args:
        pooling: ``"max_avg_pool"`` or ``"top_k_mean"``.
        kernel_size: averaging window of ``max_avg_pool`` (16 at 256 x 256, ADer's default).
        top_k_ratio: fraction of pixels averaged by ``top_k_mean``.
        concentration_weight: ``beta`` of SP-Mamba eq. 7.
        contrast_weight: ``gamma`` of SP-Mamba eq. 7.
        dog_sigma, dog_k_sigma: the two Gaussians of the contrast score (0.6 and 1.2).

    Call with maps ``(B, 1, H, W)``; returns scores ``(B,)``.
    """

    def __init__(
        self,
        pooling: str = "max_avg_pool",
        kernel_size: int = DEFAULT_POOL_KERNEL,
        top_k_ratio: float = 0.01,
        concentration_weight: float = 0.0,
        contrast_weight: float = 0.0,
        dog_sigma: float = 0.6,
        dog_k_sigma: float = 1.2,
    ) -> None:
        if pooling not in ("max_avg_pool", "top_k_mean"):
            raise ValueError(f"pooling must be 'max_avg_pool' or 'top_k_mean', got {pooling!r}.")
        self.pooling = pooling
        self.kernel_size = kernel_size
        self.top_k_ratio = top_k_ratio
        self.concentration_weight = concentration_weight
        self.contrast_weight = contrast_weight
        self.dog_sigma = dog_sigma
        self.dog_k_sigma = dog_k_sigma

    def __call__(self, anomaly_map: torch.Tensor) -> torch.Tensor:
        if self.pooling == "max_avg_pool":
            score = max_of_avg_pooled(anomaly_map, self.kernel_size)
        else:
            score = top_k_mean(anomaly_map, ratio=self.top_k_ratio)
        if self.concentration_weight:
            score = score + self.concentration_weight * concentration_score(anomaly_map)
        if self.contrast_weight:
            score = score + self.contrast_weight * contrast_score(anomaly_map, self.dog_sigma, self.dog_k_sigma)
        return score
