"""UMIAD-EGMF's anomaly maps (additive and multiplicative aggregation of the per-scale likelihoods) and image score.

The flows map every scale to latents ``u^k`` that are standard normal on normal images. Per position,
``log p^k = -||u^k||^2 / (2 C_k)`` (MSFlow's per-channel mean; the constant and the log-determinant
are left out, as MSFlow does), which is ``<= 0``, so ``p^k = exp(log p^k)`` lies in ``(0, 1]`` and
never overflows.

- additive aggregation (the pixel map): ``A = K - sum_k up(p^k)``, in ``[0, K)`` for ``K`` scales;
- multiplicative aggregation (the image-level map): ``M = 1 - prod_k up(p^k) = -expm1(sum_k up(log p^k))``,
  in ``[0, 1)``;
- image score: the mean of the ``N`` largest values of the image-level map.

MSFlow subtracts each image's maximum log-likelihood before the exponential, which makes maps of
different images incomparable; the bound ``log p <= 0`` makes that unnecessary here, so one threshold
applies to every image.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from medad_monai.scoring import AnomalyImageScore, top_k_mean

__all__ = [
    "DEFAULT_TOP_K_RATIO",
    "UMIADEGMFImageScore",
    "additive_anomaly_map",
    "log_likelihood_map",
    "multiplicative_anomaly_map",
]

#: fraction of pixels averaged when no ``N`` is given: the paper names no value; MSFlow's default ``top_k``.
DEFAULT_TOP_K_RATIO = 0.1


def log_likelihood_map(latent: torch.Tensor) -> torch.Tensor:
    """``log p = -||u||^2 / (2 C)`` per position: ``(B, C, h, w)`` -> ``(B, 1, h, w)``, always ``<= 0``.

    Bounded below by ``-finfo.max / 64`` so that a latent whose square overflows gives a finite value:
    a ``-inf`` would turn into NaN where bilinear upsampling weights it by 0, and sums of up to 64 scales
    stay finite.
    """
    floor = -torch.finfo(latent.dtype).max / 64
    return (-0.5 * latent.square().mean(dim=1, keepdim=True)).clamp(min=floor)


def _upsampled(maps: Sequence[torch.Tensor], size: Sequence[int]) -> list[torch.Tensor]:
    if len(maps) == 0:
        raise ValueError("need at least one per-scale log-likelihood map.")
    return [F.interpolate(m, size=tuple(size), mode="bilinear", align_corners=True) for m in maps]


def additive_anomaly_map(log_likelihoods: Sequence[torch.Tensor], size: Sequence[int]) -> torch.Tensor:
    """Additive aggregation: ``K - sum_k up(exp(log p^k))``.

    Args:
        log_likelihoods: per-scale maps ``(B, 1, h_k, w_k)`` with values ``<= 0``.
        size: output ``(H, W)``; maps are upsampled bilinearly (``align_corners=True``, as MSFlow).

    Returns:
        ``(B, 1, H, W)`` in ``[0, K)``: 0 where every scale has the highest likelihood.
    """
    probabilities = _upsampled([torch.exp(m) for m in log_likelihoods], size)
    return len(probabilities) - sum(probabilities)


def multiplicative_anomaly_map(log_likelihoods: Sequence[torch.Tensor], size: Sequence[int]) -> torch.Tensor:
    """Multiplicative aggregation: ``1 - prod_k up(p^k) = -expm1(sum_k up(log p^k))``: ``(B, 1, H, W)`` in ``[0, 1)``."""
    return -torch.expm1(sum(_upsampled(log_likelihoods, size)))


class UMIADEGMFImageScore(AnomalyImageScore):
    """UMIAD-EGMF's image score: the mean of the top ``N`` values of the image-level anomaly map.

    The paper averages the ``N`` highest scores of its multiplicative map and does not give ``N``.
    ``top_k`` sets ``N`` directly; otherwise ``N = ceil(top_k_ratio * H * W)`` with MSFlow's 10 %.
    The scorer pools whichever map it is given. The paper's image-level map is the multiplicative one:
    ``UMIADEGMF.anomaly_and_score_maps`` returns it beside the pixel map, and the inferers hand it to the
    scorer (the bundle's ``pred_network``); ``UMIADEGMF(eval_map="multiplicative")`` also returns it.

    Call with maps ``(B, 1, H, W)``; returns scores ``(B,)``.
    """

    def __init__(self, top_k: int | None = None, top_k_ratio: float = DEFAULT_TOP_K_RATIO) -> None:
        super().__init__(pooling="top_k_mean", top_k_ratio=top_k_ratio)
        if top_k is not None and top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}.")
        if top_k is None and not 0.0 < top_k_ratio <= 1.0:
            raise ValueError(f"top_k_ratio must be in (0, 1], got {top_k_ratio}.")
        self.top_k = top_k

    def __call__(self, anomaly_map: torch.Tensor) -> torch.Tensor:
        if self.top_k is not None:
            return top_k_mean(anomaly_map, k=self.top_k)
        return top_k_mean(anomaly_map, ratio=self.top_k_ratio)
