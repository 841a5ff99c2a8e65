"""Wave-MambaAD's image score: the maximum of the average-pooled anomaly map (sec. 3.5)."""

from __future__ import annotations

from medad_monai.scoring import DEFAULT_POOL_KERNEL, AnomalyImageScore

__all__ = ["WaveMambaADImageScore"]


class WaveMambaADImageScore(AnomalyImageScore):
    """Image score of a Wave-MambaAD anomaly map, with the paper's defaults.

    Sec. 3.5: "we perform average pooling on A_sum and use its maximum value as the image-level
    score". The pooling window is not given in the paper; the default is ADer's evaluator's 16 x 16,
    stride 1, no padding, at 256 x 256 (the benchmark framework the paper's numbers come from;
    scale it with the image size).

    Args:
        pooling, kernel_size, top_k_ratio: see :class:`~medad_monai.scoring.AnomalyImageScore`.

    Call with maps ``(B, 1, H, W)``; returns scores ``(B,)``.
    """

    def __init__(self, pooling: str = "max_avg_pool", kernel_size: int = DEFAULT_POOL_KERNEL, top_k_ratio: float = 0.01) -> None:
        super().__init__(pooling, kernel_size, top_k_ratio)
