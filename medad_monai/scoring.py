"""Anomaly maps and image-level anomaly scores shared by the detectors.

Batched tensor functions for the evaluation layer and the detectors' own scoring:

- :func:`cosine_anomaly_map`: the feature-reconstruction anomaly map of the MambaAD family
  (SP-Mamba eq. 6, Wave-MambaAD): sum over scales of ``1 - cosine similarity``, upsampled
  and Gaussian-smoothed (:func:`medad_monai.ops.gaussian_blur`).
- :func:`max_of_avg_pooled` and :func:`top_k_mean`: image scores from an anomaly map, and
  :class:`AnomalyImageScore`, the configurable pooling the bundles call.

Detector-specific terms (e.g. SP-Mamba's concentration and contrast scores) live in
``medad_monai/detectors/<name>/scoring.py``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from medad_monai.ops.filters import gaussian_blur

__all__ = ["AnomalyImageScore", "check_anomaly_map", "cosine_anomaly_map", "max_of_avg_pooled", "top_k_mean"]

# ADer's evaluator default (``pooling_ks=[16, 16]``, stride 1, no padding).
DEFAULT_POOL_KERNEL = 16


def check_anomaly_map(anomaly_map: torch.Tensor, name: str = "anomaly_map") -> None:
    """Raise a clear error unless ``anomaly_map`` is a tensor of shape (B, 1, H, W)."""
    if not isinstance(anomaly_map, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(anomaly_map).__name__}.")
    if anomaly_map.ndim != 4 or anomaly_map.shape[1] != 1:
        raise ValueError(f"{name} must have shape (B, 1, H, W), got shape {tuple(anomaly_map.shape)}.")


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
    check_anomaly_map(anomaly_map)
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
    check_anomaly_map(anomaly_map)
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


class AnomalyImageScore:
    """Image score of an anomaly map: the pooling of the MambaAD family or a top-k mean.

    ``pooling="max_avg_pool"`` is :func:`max_of_avg_pooled` (MambaAD / Wave-MambaAD, ADer's
    evaluator); ``pooling="top_k_mean"`` is :func:`top_k_mean` over ``top_k_ratio`` of the pixels.
    Detectors whose papers add terms subclass it (``SPMambaImageScore``).

    Args:
        pooling: ``"max_avg_pool"`` or ``"top_k_mean"``.
        kernel_size: averaging window of ``max_avg_pool`` (16 at 256 x 256, ADer's default).
        top_k_ratio: fraction of pixels averaged by ``top_k_mean``.

    Call with maps ``(B, 1, H, W)``; returns scores ``(B,)``.
    """

    def __init__(self, pooling: str = "max_avg_pool", kernel_size: int = DEFAULT_POOL_KERNEL, top_k_ratio: float = 0.01) -> None:
        if pooling not in ("max_avg_pool", "top_k_mean"):
            raise ValueError(f"pooling must be 'max_avg_pool' or 'top_k_mean', got {pooling!r}.")
        self.pooling = pooling
        self.kernel_size = kernel_size
        self.top_k_ratio = top_k_ratio

    def __call__(self, anomaly_map: torch.Tensor) -> torch.Tensor:
        if self.pooling == "max_avg_pool":
            return max_of_avg_pooled(anomaly_map, self.kernel_size)
        return top_k_mean(anomaly_map, ratio=self.top_k_ratio)
