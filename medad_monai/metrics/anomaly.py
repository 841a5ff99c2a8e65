"""Cumulative anomaly-detection metrics for MONAI evaluators.

- :class:`ImageAnomalyMetrics`: image AUROC, AP, F1-max (and threshold), accuracy, mAD.
- :class:`PixelAnomalyMetrics`: pixel AUROC, AP, F1-max and AUPRO, exact or from histograms.
- :class:`PerClassAnomalyMetrics` / :func:`per_class_metrics`: one metric per class (BMAD
  brain / liver / retinal ...) plus the mean over classes.

``aggregate()`` returns a dict of floats. Wrapped in ``monai.handlers.IgniteMetricHandler``
and attached under a name, Ignite's ``Metric.completed`` copies every key of that dict into
``engine.state.metrics`` (and the dict itself under the name, which must differ from the keys)::

    from monai.handlers import IgniteMetricHandler, from_engine

    pixel = IgniteMetricHandler(
        PixelAnomalyMetrics(mode="binned"), output_transform=from_engine(["pred", "mask"]), save_details=False
    )
    pixel.attach(evaluator, "pixel_metrics")
    # after evaluator.run(): evaluator.state.metrics["pixel_auroc"], ["aupro"], ...

MONAI workflows track the best metric only when the attached name holds a scalar:
``medad_monai.handlers.ImageAnomalyMetricHandler`` / ``PixelAnomalyMetricHandler`` wrap these
metrics so that it does.

Metric state lives on the local process; under distributed evaluation, gather maps or
scores before updating (the image metric's buffers are synchronized by MONAI's ``Cumulative``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from monai.metrics import Cumulative, CumulativeIterationMetric
from monai.metrics.metric import IterationMetric

from medad_monai.metrics.functional import (
    _exact_pixel_metrics,
    accuracy_at,
    average_precision,
    binned_error_bounds,
    binned_pixel_metrics,
    f1_max,
    image_auroc,
    label_regions,
    mad,
)

__all__ = ["ImageAnomalyMetrics", "PixelAnomalyMetrics", "PerClassAnomalyMetrics", "per_class_metrics"]

PIXEL_KEYS = ("pixel_auroc", "pixel_ap", "pixel_f1_max", "aupro")


class ImageAnomalyMetrics(CumulativeIterationMetric):
    """Image-level metrics accumulated over batches of image scores and labels.

    Usage::

        metric = ImageAnomalyMetrics()
        for batch in loader:
            metric(y_pred=scores, y=labels)  # (B,) or (B, 1) each
        results = metric.aggregate()

    Args:
        threshold: decision threshold for ``image_accuracy`` (``score >= threshold`` is
            anomalous), e.g. one chosen on validation data with ``fpr_threshold``; ``None``
            uses the F1-max threshold of the accumulated data.
    """

    def __init__(self, threshold: float | None = None) -> None:
        super().__init__()
        self.threshold = threshold

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Validates one batch: ``y_pred`` scores (B,) or (B, 1), ``y`` labels of the same size."""
        if y is None:
            raise ValueError("ImageAnomalyMetrics needs image labels y.")
        if (
            y_pred.ndim == 0
            or y.ndim == 0
            or y_pred.numel() != y_pred.shape[0]
            or y.shape[0] != y_pred.shape[0]
            or y.numel() != y_pred.numel()
        ):
            raise ValueError(
                "ImageAnomalyMetrics expects y_pred scores and y labels of shape (B,) or (B, 1), "
                f"got {tuple(y_pred.shape)} and {tuple(y.shape)}."
            )
        return [y_pred.reshape(-1), y.reshape(-1)]

    def aggregate(self) -> dict[str, float]:
        """Returns ``image_auroc``, ``image_ap``, ``image_f1_max``, ``image_f1_threshold``,
        ``image_accuracy`` and ``mad`` (mean of AUROC, AP and F1-max) over everything accumulated."""
        buffers = self.get_buffer()
        if buffers is None:
            raise ValueError("ImageAnomalyMetrics.aggregate: no data accumulated.")
        scores, labels = buffers
        f1, f1_threshold = f1_max(scores, labels)
        results = {
            "image_auroc": image_auroc(scores, labels),
            "image_ap": average_precision(scores, labels),
            "image_f1_max": f1,
            "image_f1_threshold": f1_threshold,
        }
        threshold = f1_threshold if self.threshold is None else self.threshold
        results["image_accuracy"] = accuracy_at(scores, labels, threshold)
        results["mad"] = mad(results)
        return results


class _ScoreHistogram:
    """Pixel-score histograms over ``num_bins`` equal bins: normal pixels, anomalous pixels,
    and region mass (per bin, the sum over regions of the region's pixels in the bin divided
    by the region's area).

    A fixed ``score_range`` (low, high) is used as given (bins half-open, the last one closed
    at ``high``); a score outside it raises. Without it, the range starts at the first batch's
    [min, max] and doubles, down or up, whenever a batch falls outside: merging pairs of
    adjacent bins is exact, so no count is ever re-estimated. A range doubles only while it is
    narrower than the scores seen, so the final bin width is at most 2 * (max - min) / num_bins
    over all scores, unless the first batch was constant and no doubling followed: that range
    starts max(|score|, 1) * 2**-16 wide.
    """

    def __init__(self, num_bins: int, score_range: tuple[float, float] | None) -> None:
        self.num_bins = num_bins
        self.fixed = score_range is not None
        self.low, self.width = (score_range[0], score_range[1] - score_range[0]) if self.fixed else (None, None)
        self.normal = np.zeros(num_bins, dtype=np.int64)
        self.anomalous = np.zeros(num_bins, dtype=np.int64)
        self.region_mass = np.zeros(num_bins, dtype=np.float64)
        self.num_regions = 0

    def _extend(self, lowest: float, highest: float) -> None:
        if self.low is None:
            span = highest - lowest
            self.low = lowest
            self.width = span * self.num_bins / (self.num_bins - 1) if span > 0 else max(abs(lowest), 1.0) * 2.0**-16
        while lowest < self.low or highest >= self.low + self.width:
            downwards = lowest < self.low
            half = self.num_bins // 2
            for name in ("normal", "anomalous", "region_mass"):
                hist = getattr(self, name)
                merged = np.zeros_like(hist)
                target = slice(half, None) if downwards else slice(0, half)
                merged[target] = hist.reshape(half, 2).sum(axis=1)
                setattr(self, name, merged)
            if downwards:
                self.low -= self.width
            self.width *= 2

    def _bin_index(self, maps: np.ndarray) -> np.ndarray:
        lowest, highest = float(maps.min()), float(maps.max())
        if self.fixed:
            if lowest < self.low or highest > self.low + self.width:
                raise ValueError(
                    f"PixelAnomalyMetrics: scores in [{lowest}, {highest}] fall outside "
                    f"score_range [{self.low}, {self.low + self.width}]."
                )
        else:
            self._extend(lowest, highest)
        scaled = (maps.astype(np.float64) - self.low) * (self.num_bins / self.width)
        # scaled >= 0, so truncation is floor; the minimum only absorbs rounding at the top edge.
        return np.minimum(scaled.astype(np.int64), self.num_bins - 1)

    def update(self, maps: np.ndarray, masks: np.ndarray) -> None:
        """Adds maps (B, H, W) and bool masks (B, H, W)."""
        index = self._bin_index(maps)
        self.normal += np.bincount(index[~masks], minlength=self.num_bins)
        self.anomalous += np.bincount(index[masks], minlength=self.num_bins)
        for image_index, mask in zip(index, masks):
            regions, count = label_regions(mask)
            if count == 0:
                continue
            in_region = regions[mask]
            weights = 1.0 / np.bincount(in_region)[in_region]
            self.region_mass += np.bincount(image_index[mask], weights=weights, minlength=self.num_bins)
            self.num_regions += count

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(normal, anomalous, region_mass / num_regions)`` for ``binned_pixel_metrics``."""
        return self.normal, self.anomalous, self.region_mass / max(self.num_regions, 1)

    def bin_edges(self) -> np.ndarray:
        return self.low + self.width * np.arange(self.num_bins + 1) / self.num_bins


class PixelAnomalyMetrics(CumulativeIterationMetric):
    """Pixel-level AUROC, AP, F1-max and AUPRO accumulated over batches of anomaly maps and masks.

    ``mode="exact"`` keeps every map (4 bytes a pixel for float32) and mask (1 byte a pixel)
    and computes the exact values with ``functional.pixel_metrics``'s algorithm, which adds one
    sorted copy of the scores at ``aggregate``: for small test sets.

    ``mode="binned"`` reduces each batch at once into histograms of ``num_bins`` bins: normal
    pixel counts, anomalous pixel counts, and the region mass that AUPRO needs (regions are
    the 8-connected components of each image's mask, complete within an image, so each
    region's pixels can be weighted by 1 / area as they arrive). Memory is O(num_bins)
    whatever the test-set size; no pixel is kept. The bin range is ``score_range`` when
    given, else grows from the data (see ``_ScoreHistogram``): the final bin width is at most
    2 * (max score - min score) / num_bins (except after a constant first batch).

    Error bound of the binned mode (certified, computed by :meth:`error_bounds` from the
    histograms, see ``functional.binned_error_bounds``): with q the largest fraction of normal
    pixels in one bin, |AUROC error| <= q / 2 and |AUPRO error| <= q / fpr_limit; the AP and
    F1-max bounds depend on the histograms likewise. When every bin holds a single distinct
    score (e.g. integer-valued maps, ``score_range=(0, 256)``, ``num_bins=256``) the binned
    values are the exact ones, although the bounds, blind to that, stay positive.

    Args:
        mode: ``"binned"`` or ``"exact"``.
        num_bins: number of histogram bins, a power of two >= 2 (binned mode).
        score_range: optional fixed (low, high) score range (binned mode); scores outside it
            raise ``ValueError``. Cosine-distance maps of L scales lie in [0, 2 L].
        fpr_limit: AUPRO integration limit, in (0, 1]; 0.3 as MVTec AD.

    ``__call__(y_pred, y)`` takes anomaly maps ``y_pred`` (B, 1, H, W) and binary masks ``y``
    (B, 1, H, W), batch-first tensors or lists of channel-first tensors; ``aggregate()``
    returns ``pixel_auroc``, ``pixel_ap``, ``pixel_f1_max`` and ``aupro``. Nothing is kept in
    MONAI's per-sample buffers, so ``get_buffer()`` is ``None``: give
    ``IgniteMetricHandler`` ``save_details=False``.
    """

    def __init__(
        self,
        mode: str = "binned",
        num_bins: int = 2**16,
        score_range: tuple[float, float] | None = None,
        fpr_limit: float = 0.3,
    ) -> None:
        if mode not in ("binned", "exact"):
            raise ValueError(f"mode must be 'binned' or 'exact', got {mode!r}.")
        if num_bins < 2 or num_bins & (num_bins - 1):
            raise ValueError(f"num_bins must be a power of two >= 2, got {num_bins}.")
        if score_range is not None and not (
            len(score_range) == 2 and np.isfinite(score_range).all() and score_range[0] < score_range[1]
        ):
            raise ValueError(f"score_range must be finite (low, high) with low < high, got {score_range}.")
        if not 0.0 < fpr_limit <= 1.0:
            raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}.")
        self.mode = mode
        self.num_bins = num_bins
        self.score_range = None if score_range is None else (float(score_range[0]), float(score_range[1]))
        self.fpr_limit = fpr_limit
        super().__init__()

    def reset(self) -> None:
        super().reset()
        self._maps: list[np.ndarray] = []
        self._masks: list[np.ndarray] = []
        self._histogram = _ScoreHistogram(self.num_bins, self.score_range)

    def __call__(self, y_pred: Any, y: Any = None, **kwargs: Any) -> None:  # type: ignore[override]
        """Accumulates one batch into the running statistics, bypassing MONAI's per-sample buffers."""
        IterationMetric.__call__(self, y_pred, y, **kwargs)

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None) -> None:
        if y is None or y_pred.ndim != 4 or y_pred.shape[1] != 1 or y.shape != y_pred.shape:
            raise ValueError(
                "PixelAnomalyMetrics expects y_pred anomaly maps and y masks of the same shape (B, 1, H, W), "
                f"got {None if y_pred is None else tuple(y_pred.shape)} and {None if y is None else tuple(y.shape)}."
            )
        maps = y_pred[:, 0].cpu().numpy()
        masks = y[:, 0].cpu().numpy()
        if not np.isfinite(maps).all():
            raise ValueError("PixelAnomalyMetrics: y_pred contains NaN or Inf values.")
        if masks.dtype != bool:
            if not np.isin(masks, (0, 1)).all():
                raise ValueError("PixelAnomalyMetrics: y masks must hold only 0 and 1.")
            masks = masks.astype(bool)
        if self.mode == "exact":
            self._maps.append(maps.copy())
            self._masks.append(masks.copy())
        else:
            self._histogram.update(maps, masks)

    def aggregate(self) -> dict[str, float]:
        """Returns ``pixel_auroc``, ``pixel_ap``, ``pixel_f1_max`` and ``aupro`` over everything accumulated.

        Raises ``ValueError`` when nothing was accumulated or when the masks hold no anomalous
        (or no normal) pixel: the metrics are undefined then.
        """
        if self.mode == "exact":
            if not self._maps:
                raise ValueError("PixelAnomalyMetrics.aggregate: no data accumulated.")
            results = _exact_pixel_metrics(self._maps, self._masks, self.fpr_limit, "PixelAnomalyMetrics")
        else:
            if self._histogram.low is None:
                raise ValueError("PixelAnomalyMetrics.aggregate: no data accumulated.")
            results = binned_pixel_metrics(
                *self._histogram.arrays(), self._histogram.bin_edges(), fpr_limit=self.fpr_limit
            )
        return {key: results[key] for key in PIXEL_KEYS}

    def error_bounds(self) -> dict[str, float]:
        """Certified bounds on ``|aggregate() - exact|`` per key: zeros in exact mode."""
        if self.mode == "exact":
            return dict.fromkeys(PIXEL_KEYS, 0.0)
        return binned_error_bounds(*self._histogram.arrays(), fpr_limit=self.fpr_limit)


def _take(data: Any, indices: list[int]) -> Any:
    if isinstance(data, torch.Tensor):
        return data[torch.as_tensor(indices, device=data.device)]
    return [data[i] for i in indices]


class PerClassAnomalyMetrics(Cumulative):
    """Runs one metric per class and reports each class's results and their mean.

    ``aggregate()`` returns a flat dict (so that Ignite spreads it into ``engine.state.metrics``
    and loggers see scalars): ``"<class>/<key>"`` for each class and ``"mean/<key>"`` the mean
    over classes of every key except thresholds (thresholds of differently scaled classes do
    not average meaningfully). Class names are ``str(class_id)``; a class whose metric is
    undefined (e.g. no anomalous image) raises ``ValueError`` naming the class.

    Usage with an Ignite engine whose output dict carries ``pred``, ``mask`` and ``class`` (in
    a MONAI evaluator, copy the batch's class key into the output with a post-transform; for
    decollated outputs build the same pair of lists)::

        metric = PerClassAnomalyMetrics(lambda: PixelAnomalyMetrics(mode="binned"))
        handler = IgniteMetricHandler(
            metric, output_transform=lambda out: (out["pred"], (out["mask"], out["class"])), save_details=False
        )

    i.e. ``y`` may be the pair ``(y, class_ids)``; called directly, pass ``class_ids=``.

    Args:
        metric_factory: builds a fresh metric for each new class, e.g. ``ImageAnomalyMetrics``.
    """

    def __init__(self, metric_factory: Callable[[], CumulativeIterationMetric]) -> None:
        self.metric_factory = metric_factory
        super().__init__()

    def reset(self) -> None:
        super().reset()
        self._per_class: dict[str, CumulativeIterationMetric] = {}

    def __call__(self, y_pred: Any, y: Any, class_ids: Sequence | torch.Tensor | None = None) -> None:
        """Routes each sample of the batch to its class's metric.

        Args:
            y_pred: batch-first tensor or list of channel-first tensors.
            y: the same for targets, or the pair ``(y, class_ids)`` when ``class_ids`` is None.
            class_ids: (B,) class of each sample (str, int or a tensor).
        """
        if class_ids is None:
            if not (isinstance(y, (tuple, list)) and len(y) == 2):
                raise ValueError("PerClassAnomalyMetrics needs class_ids, or y given as the pair (y, class_ids).")
            y, class_ids = y
        names = [str(c) for c in (class_ids.tolist() if isinstance(class_ids, torch.Tensor) else class_ids)]
        if len(names) != len(y_pred) or len(names) != len(y):
            raise ValueError(
                f"PerClassAnomalyMetrics: got {len(names)} class_ids for {len(y_pred)} predictions "
                f"and {len(y)} targets."
            )
        for name in dict.fromkeys(names):
            indices = [i for i, n in enumerate(names) if n == name]
            if name not in self._per_class:
                self._per_class[name] = self.metric_factory()
            self._per_class[name](_take(y_pred, indices), _take(y, indices))

    def aggregate(self) -> dict[str, float]:
        if not self._per_class:
            raise ValueError("PerClassAnomalyMetrics.aggregate: no data accumulated.")
        results: dict[str, float] = {}
        per_key: dict[str, list[float]] = {}
        for name in sorted(self._per_class):
            try:
                class_results = self._per_class[name].aggregate()
            except ValueError as error:
                raise ValueError(f"class {name!r}: {error}") from error
            for key, value in class_results.items():
                results[f"{name}/{key}"] = value
                if "threshold" not in key:
                    per_key.setdefault(key, []).append(value)
        results.update({f"mean/{key}": float(np.mean(values)) for key, values in per_key.items()})
        return results


def per_class_metrics(
    metric_factory: Callable[[], CumulativeIterationMetric],
    y_pred: Any,
    y: Any,
    class_ids: Sequence | torch.Tensor,
) -> dict[str, float]:
    """One-shot :class:`PerClassAnomalyMetrics`: per-class results and their means for one set.

    Example::

        per_class_metrics(ImageAnomalyMetrics, scores, labels, ["brain", "brain", "liver", ...])
        # {"brain/image_auroc": ..., "liver/image_auroc": ..., "mean/image_auroc": ..., ...}
    """
    metric = PerClassAnomalyMetrics(metric_factory)
    metric(y_pred, y, class_ids=class_ids)
    return metric.aggregate()
