"""Anomaly-detection metrics on arrays: NumPy arrays or torch tensors in, Python floats out.

Image level (scikit-learn): :func:`image_auroc`, :func:`average_precision`, :func:`f1_max`,
:func:`accuracy_at`, :func:`fpr_threshold`, and :func:`mad`, the mean of the first three.

Pixel level, over a whole test set:

- exact (:func:`pixel_metrics`, :func:`aupro`): sort-based, one sorted copy of the normal
  pixels' scores plus the anomalous pixels' scores and region weights; scikit-learn is not
  used here because its curves hold several float64 copies of every pixel.
- binned (:func:`binned_pixel_metrics`): from score histograms (see
  ``medad_monai.metrics.PixelAnomalyMetrics``), memory O(bins) whatever the test-set size,
  with a certified error bound from :func:`binned_error_bounds`.

Conventions. A sample (image or pixel) is predicted anomalous when ``score >= threshold``.
AUROC, AP and F1-max need both classes and raise ``ValueError`` otherwise; all-equal scores
are well defined (AUROC 0.5, AP the anomalous fraction). Scores must be finite.

AUPRO follows the MVTec AD definition (Bergmann et al., IJCV 2021): the regions are the
connected components of each image's ground-truth mask with 8-connectivity
(``scipy.ndimage.label`` with a 3 x 3 structure, as MVTec's evaluation code); at each
threshold, PRO is the mean over all regions of the set of the fraction of the region's
pixels predicted anomalous, and FPR is the fraction of all normal pixels predicted anomalous.
The (FPR, PRO) curve through every distinct threshold is integrated with the trapezoidal
rule from FPR 0 to ``fpr_limit`` (the curve is interpolated linearly at ``fpr_limit``) and
divided by ``fpr_limit``, so a perfect detector scores 1.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from scipy import ndimage
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

__all__ = [
    "image_auroc",
    "average_precision",
    "f1_max",
    "accuracy_at",
    "fpr_threshold",
    "mad",
    "aupro",
    "pixel_metrics",
    "label_regions",
    "binned_pixel_metrics",
    "binned_error_bounds",
]

ArrayLike = np.ndarray | torch.Tensor | Sequence[float]
MAD_KEYS = ("image_auroc", "image_ap", "image_f1_max")
# 8-connectivity, as MVTec AD's evaluation code.
REGION_STRUCTURE = np.ones((3, 3), dtype=bool)
_CHUNK = 2**20  # normal pixels per step of the exact AUPRO sum


def _to_numpy(x: ArrayLike) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _check_finite(x: np.ndarray, name: str) -> None:
    if not np.issubdtype(x.dtype, np.number) and x.dtype != bool:
        raise TypeError(f"{name} must be numeric, got dtype {x.dtype}.")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or Inf values.")


def _check_binary(x: np.ndarray, name: str) -> np.ndarray:
    """Returns ``x`` as a bool array; raises when it holds values other than 0 and 1."""
    if x.dtype == bool:
        return x
    if not np.isin(x, (0, 1)).all():
        raise ValueError(f"{name} must hold only 0 (normal) and 1 (anomalous), got values {np.unique(x)[:10]}.")
    return x.astype(bool)


def _scores_and_labels(scores: ArrayLike, labels: ArrayLike, metric: str) -> tuple[np.ndarray, np.ndarray]:
    s = _to_numpy(scores).reshape(-1)
    y = _to_numpy(labels).reshape(-1)
    if s.shape != y.shape:
        raise ValueError(
            f"{metric}: scores and labels must have the same number of elements, got {s.size} and {y.size}."
        )
    if s.size == 0:
        raise ValueError(f"{metric}: scores is empty.")
    _check_finite(s, f"{metric}: scores")
    return s.astype(np.float64), _check_binary(y, f"{metric}: labels")


def _require_both_classes(num_anomalous: int, num_normal: int, metric: str, what: str = "labels") -> None:
    if num_anomalous == 0 or num_normal == 0:
        raise ValueError(
            f"{metric} is undefined when {what} hold a single class: got {num_anomalous} anomalous and "
            f"{num_normal} normal samples; it needs at least one of each."
        )


def image_auroc(scores: ArrayLike, labels: ArrayLike) -> float:
    """Area under the ROC curve (``sklearn.metrics.roc_auc_score``); ties count one half.

    Args:
        scores: (N,) anomaly scores, higher means more anomalous.
        labels: (N,) 0 (normal) or 1 (anomalous), both present.
    """
    s, y = _scores_and_labels(scores, labels, "image_auroc")
    _require_both_classes(int(y.sum()), int((~y).sum()), "image_auroc")
    return float(roc_auc_score(y, s))


def average_precision(scores: ArrayLike, labels: ArrayLike) -> float:
    """Average precision, the step-wise area under the precision-recall curve (scikit-learn).

    Args:
        scores: (N,) anomaly scores.
        labels: (N,) 0 or 1, both present.
    """
    s, y = _scores_and_labels(scores, labels, "average_precision")
    _require_both_classes(int(y.sum()), int((~y).sum()), "average_precision")
    return float(average_precision_score(y, s))


def f1_max(scores: ArrayLike, labels: ArrayLike) -> tuple[float, float]:
    """Best F1 over all thresholds, and that threshold.

    Args:
        scores: (N,) anomaly scores.
        labels: (N,) 0 or 1, both present.

    Returns:
        ``(f1, threshold)``: predicting ``score >= threshold`` as anomalous gives F1 ``f1``;
        ``threshold`` is one of the scores (the highest among equally good ones).
    """
    s, y = _scores_and_labels(scores, labels, "f1_max")
    _require_both_classes(int(y.sum()), int((~y).sum()), "f1_max")
    precision, recall, thresholds = precision_recall_curve(y, s)
    precision, recall = precision[:-1], recall[:-1]  # the last point (recall 0) has no threshold
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros_like(denominator), where=denominator > 0)
    best = int(np.argmax(f1[::-1]))  # thresholds ascend: search from the top for the highest tie
    best = len(f1) - 1 - best
    return float(f1[best]), float(thresholds[best])


def accuracy_at(scores: ArrayLike, labels: ArrayLike, threshold: float) -> float:
    """Fraction of samples classified correctly by ``score >= threshold``.

    Args:
        scores: (N,) anomaly scores.
        labels: (N,) 0 or 1 (a single class is allowed).
        threshold: finite decision threshold.
    """
    s, y = _scores_and_labels(scores, labels, "accuracy_at")
    if not math.isfinite(threshold):
        raise ValueError(f"accuracy_at: threshold must be finite, got {threshold}.")
    return float(np.mean((s >= threshold) == y))


def fpr_threshold(normal_scores: ArrayLike, target_fpr: float) -> float:
    """Smallest threshold whose false-positive rate on normal samples is at most ``target_fpr``.

    With ``m = floor(target_fpr * N)`` false positives allowed among the ``N`` normal scores,
    the result is the smallest score value ``t`` with ``#(normal_scores >= t) <= m``, or, when
    no score qualifies (e.g. ``m = 0``), the next float above the largest score.

    Args:
        normal_scores: (N,) scores of normal samples, e.g. a validation set.
        target_fpr: in [0, 1].
    """
    s = _to_numpy(normal_scores).reshape(-1)
    if s.size == 0:
        raise ValueError("fpr_threshold: normal_scores is empty.")
    _check_finite(s, "fpr_threshold: normal_scores")
    if not 0.0 <= target_fpr <= 1.0:
        raise ValueError(f"fpr_threshold: target_fpr must be in [0, 1], got {target_fpr}.")
    s = np.sort(s.astype(np.float64))
    allowed = math.floor(target_fpr * s.size)
    values = np.unique(s)
    at_or_above = s.size - np.searchsorted(s, values, side="left")
    qualifying = values[at_or_above <= allowed]
    if qualifying.size == 0:
        return float(np.nextafter(s[-1], np.inf))
    return float(qualifying[0])


def mad(image_metrics: Mapping[str, float]) -> float:
    """mAD of the MambaAD family here: mean of image AUROC, image AP and image F1-max.

    Args:
        image_metrics: mapping with the keys ``image_auroc``, ``image_ap`` and ``image_f1_max``.
    """
    missing = [key for key in MAD_KEYS if key not in image_metrics]
    if missing:
        raise ValueError(f"mad: image_metrics lacks the keys {missing}.")
    return float(np.mean([image_metrics[key] for key in MAD_KEYS]))


def label_regions(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Connected components of one binary mask (H, W), 8-connectivity.

    Returns:
        ``(labels, count)``: int32 labels (H, W), 0 for background and 1..count for regions.
    """
    labels, count = ndimage.label(mask, structure=REGION_STRUCTURE)
    return labels, int(count)


def _maps_and_masks(anomaly_maps: ArrayLike, masks: ArrayLike, metric: str) -> tuple[np.ndarray, np.ndarray]:
    maps = _to_numpy(anomaly_maps)
    gt = _to_numpy(masks)
    if maps.ndim == 4 and maps.shape[1] == 1:
        maps = maps[:, 0]
    if gt.ndim == 4 and gt.shape[1] == 1:
        gt = gt[:, 0]
    if maps.ndim != 3 or maps.shape != gt.shape:
        raise ValueError(
            f"{metric}: anomaly_maps and masks must have the same shape (N, H, W) or (N, 1, H, W), "
            f"got {tuple(_to_numpy(anomaly_maps).shape)} and {tuple(_to_numpy(masks).shape)}."
        )
    _check_finite(maps, f"{metric}: anomaly_maps")
    return maps, _check_binary(gt, f"{metric}: masks")


def _truncated_area(d_fpr: np.ndarray, pro_start: np.ndarray, pro_end: np.ndarray, fpr_limit: float) -> float:
    """Trapezoidal area under a curve of consecutive segments, cut at FPR ``fpr_limit``.

    Segment i runs from (F_{i-1}, pro_start[i]) to (F_i, pro_end[i]) with F_i = cumsum(d_fpr)[i]
    and F_{-1} = 0; the segment crossing ``fpr_limit`` is interpolated linearly.
    """
    fpr_end = np.cumsum(d_fpr)
    fpr_start = fpr_end - d_fpr
    full = fpr_end <= fpr_limit
    area = float(np.sum(d_fpr[full] * (pro_start[full] + pro_end[full]) / 2))
    crossing = np.flatnonzero(~full & (fpr_start < fpr_limit))
    if crossing.size:
        i = crossing[0]
        width = fpr_limit - fpr_start[i]
        pro_at_limit = pro_start[i] + (pro_end[i] - pro_start[i]) * width / d_fpr[i]
        area += width * (pro_start[i] + pro_at_limit) / 2
    return float(area)


def _check_fpr_limit(fpr_limit: float, metric: str) -> None:
    if not 0.0 < fpr_limit <= 1.0:
        raise ValueError(f"{metric}: fpr_limit must be in (0, 1], got {fpr_limit}.")


def _exact_pixel_metrics(
    map_batches: Sequence[np.ndarray], mask_batches: Sequence[np.ndarray], fpr_limit: float, metric: str
) -> dict[str, float]:
    """Exact pixel metrics over batches of maps (B, H, W) and bool masks (B, H, W).

    Normal scores are gathered into one array and sorted in place; anomalous scores are sorted
    with their region weights ``1 / (area of the pixel's region * number of regions)``. AUROC,
    AP and F1-max then walk the distinct anomalous scores, looking up the normal counts with
    ``searchsorted``; AUPRO walks the normal scores within the top ``fpr_limit``, in chunks.
    """
    _check_fpr_limit(fpr_limit, metric)
    num_anomalous = sum(int(m.sum()) for m in mask_batches)
    num_normal = sum(m.size for m in mask_batches) - num_anomalous
    _require_both_classes(num_anomalous, num_normal, metric, what="masks")
    dtype = np.result_type(*[m.dtype for m in map_batches])
    normal = np.empty(num_normal, dtype=dtype)
    anomalous = np.empty(num_anomalous, dtype=dtype)
    weight = np.empty(num_anomalous, dtype=np.float64)
    num_regions, n_pos, n_neg = 0, 0, 0
    for maps, masks in zip(map_batches, mask_batches):
        for score_map, mask in zip(maps, masks):
            regions, count = label_regions(mask)
            in_region = regions[mask]
            k = in_region.size
            anomalous[n_pos : n_pos + k] = score_map[mask]
            weight[n_pos : n_pos + k] = 1.0 / np.bincount(in_region)[in_region]
            normal[n_neg : n_neg + mask.size - k] = score_map[~mask]
            n_pos, n_neg, num_regions = n_pos + k, n_neg + mask.size - k, num_regions + count
    normal.sort()
    order = np.argsort(anomalous, kind="stable")
    anomalous, weight = anomalous[order], weight[order] / num_regions
    del order

    # AUROC, AP, F1-max over the distinct anomalous scores u (ascending).
    starts = np.flatnonzero(np.r_[True, anomalous[1:] != anomalous[:-1]])
    u = anomalous[starts]
    count_u = np.diff(np.r_[starts, num_anomalous])
    below = np.searchsorted(normal, u, side="left")
    tied = np.searchsorted(normal, u, side="right") - below
    auroc = float(np.sum(count_u * (below + 0.5 * tied)) / (float(num_anomalous) * num_normal))
    tp = (num_anomalous - starts).astype(np.float64)  # anomalous scores >= u
    fp = (num_normal - below).astype(np.float64)  # normal scores >= u
    ap = float(np.sum(count_u / num_anomalous * tp / (tp + fp)))
    f1 = 2 * tp / (tp + fp + num_anomalous)
    best = len(f1) - 1 - int(np.argmax(f1[::-1]))  # the highest of equally good thresholds

    # AUPRO. A normal pixel of score v widens FPR by 1 / N while PRO rises from pro(> v) to
    # pro(>= v), so the trapezoid of a tie group is the sum of its pixels' shares: the area of
    # every group that ends at or below fpr_limit is a sum over pixels, taken in chunks to bound
    # memory; the group crossing fpr_limit is interpolated.
    pro_above = np.r_[np.cumsum(weight[::-1])[::-1], 0.0]  # pro_above[i] = sum(weight[i:])

    def pro(values: np.ndarray, side: str) -> np.ndarray:  # "left": PRO at threshold v, "right": just above v
        return pro_above[np.searchsorted(anomalous, values, side=side)]

    allowed = math.floor(fpr_limit * num_normal)  # normal pixels allowed above the threshold
    crossing = normal[num_normal - 1 - allowed] if allowed < num_normal else None
    full_start = 0 if crossing is None else int(np.searchsorted(normal, crossing, side="right"))
    area = 0.0
    for start in range(full_start, num_normal, _CHUNK):
        chunk = normal[start : start + _CHUNK]
        area += float(np.sum(pro(chunk, "right")) + np.sum(pro(chunk, "left"))) / 2
    area /= num_normal
    if crossing is not None:
        fpr_before = (num_normal - full_start) / num_normal
        group_fpr = (full_start - np.searchsorted(normal, crossing, side="left")) / num_normal
        pro_before, pro_after = float(pro(crossing, "right")), float(pro(crossing, "left"))
        width = fpr_limit - fpr_before
        pro_at_limit = pro_before + (pro_after - pro_before) * width / group_fpr
        area += width * (pro_before + pro_at_limit) / 2
    return {
        "pixel_auroc": auroc,
        "pixel_ap": ap,
        "pixel_f1_max": float(f1[best]),
        "pixel_f1_threshold": float(u[best]),
        "aupro": area / fpr_limit,
    }


def pixel_metrics(anomaly_maps: ArrayLike, masks: ArrayLike, fpr_limit: float = 0.3) -> dict[str, float]:
    """Exact pixel AUROC, AP, F1-max (and its threshold) and AUPRO over a set of images.

    AUROC, AP and F1-max equal scikit-learn's on the flattened pixels. Memory beyond the
    inputs: one sorted copy of the scores (4 bytes a pixel for float32 maps) plus 16 bytes
    per anomalous pixel; use ``PixelAnomalyMetrics(mode="binned")`` for large sets.

    Args:
        anomaly_maps: (N, H, W) or (N, 1, H, W) finite scores.
        masks: same shape, 0/1 or bool; at least one anomalous and one normal pixel.
        fpr_limit: upper FPR integration limit of AUPRO, in (0, 1].

    Returns:
        dict with ``pixel_auroc``, ``pixel_ap``, ``pixel_f1_max``, ``pixel_f1_threshold``, ``aupro``.
    """
    maps, gt = _maps_and_masks(anomaly_maps, masks, "pixel_metrics")
    return _exact_pixel_metrics([maps], [gt], fpr_limit, "pixel_metrics")


def aupro(anomaly_maps: ArrayLike, masks: ArrayLike, fpr_limit: float = 0.3) -> float:
    """Exact area under the per-region-overlap curve up to ``fpr_limit``, normalized to [0, 1].

    See the module docstring for the definition (MVTec AD, 8-connected regions).

    Args:
        anomaly_maps: (N, H, W) or (N, 1, H, W) finite scores.
        masks: same shape, 0/1 or bool; at least one anomalous and one normal pixel.
        fpr_limit: upper FPR integration limit, in (0, 1]; 0.3 as MVTec AD.
    """
    maps, gt = _maps_and_masks(anomaly_maps, masks, "aupro")
    return _exact_pixel_metrics([maps], [gt], fpr_limit, "aupro")["aupro"]


def _descending_cumulative(normal_hist: np.ndarray, anomalous_hist: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per bin, from the highest: counts of the bin and cumulative counts above and at it."""
    neg = normal_hist[::-1].astype(np.float64)
    pos = anomalous_hist[::-1].astype(np.float64)
    fp, tp = np.cumsum(neg), np.cumsum(pos)
    return neg, pos, fp - neg, tp - pos, fp, tp


def _check_histograms(
    normal_hist: np.ndarray, anomalous_hist: np.ndarray, region_mass: np.ndarray, metric: str
) -> None:
    if not normal_hist.shape == anomalous_hist.shape == region_mass.shape or normal_hist.ndim != 1:
        raise ValueError(
            f"{metric}: histograms must be 1D of the same length, got {normal_hist.shape}, "
            f"{anomalous_hist.shape}, {region_mass.shape}."
        )
    _require_both_classes(int(anomalous_hist.sum()), int(normal_hist.sum()), metric, what="masks")


def binned_pixel_metrics(
    normal_hist: np.ndarray,
    anomalous_hist: np.ndarray,
    region_mass: np.ndarray,
    bin_edges: np.ndarray,
    fpr_limit: float = 0.3,
) -> dict[str, float]:
    """Pixel metrics from score histograms, every bin treated as one tied score.

    The curves are evaluated at the bin edges only, i.e. at the thresholds ``score >= edge``;
    those points lie exactly on the exact curves, and within a bin the exact curves run
    monotonically between them. :func:`binned_error_bounds` turns that into certified
    bounds on the difference to the exact values.

    Args:
        normal_hist: (bins,) counts of normal pixels per bin, bins in ascending score order.
        anomalous_hist: (bins,) counts of anomalous pixels per bin.
        region_mass: (bins,) per bin, the sum over regions of (region pixels in the bin /
            region area), divided by the number of regions; it sums to 1.
        bin_edges: (bins + 1,) ascending edges; bin b holds scores in [edge_b, edge_{b+1}).
        fpr_limit: AUPRO integration limit, in (0, 1].

    Returns:
        dict with ``pixel_auroc``, ``pixel_ap``, ``pixel_f1_max``, ``pixel_f1_threshold`` (the
        lower edge of the best bin) and ``aupro``.
    """
    _check_fpr_limit(fpr_limit, "binned_pixel_metrics")
    _check_histograms(normal_hist, anomalous_hist, region_mass, "binned_pixel_metrics")
    neg, pos, _, tp_above, fp, tp = _descending_cumulative(normal_hist, anomalous_hist)
    num_normal, num_anomalous = fp[-1], tp[-1]
    auroc = float(np.sum(neg * (tp_above + tp) / 2) / (num_normal * num_anomalous))
    has_pos = pos > 0
    ap = float(np.sum(pos[has_pos] / num_anomalous * tp[has_pos] / (tp[has_pos] + fp[has_pos])))
    f1 = 2 * tp / (tp + fp + num_anomalous)
    best = int(np.argmax(f1))
    pro_end = np.cumsum(region_mass[::-1].astype(np.float64))
    pro_start = pro_end - region_mass[::-1]
    area = _truncated_area(neg / num_normal, pro_start, pro_end, fpr_limit)
    return {
        "pixel_auroc": auroc,
        "pixel_ap": ap,
        "pixel_f1_max": float(f1[best]),
        "pixel_f1_threshold": float(bin_edges[len(neg) - 1 - best]),
        "aupro": area / fpr_limit,
    }


def binned_error_bounds(
    normal_hist: np.ndarray, anomalous_hist: np.ndarray, region_mass: np.ndarray, fpr_limit: float = 0.3
) -> dict[str, float]:
    """Certified bounds on ``|binned - exact|`` for :func:`binned_pixel_metrics`.

    With per-bin (descending) counts n_b (normal), p_b (anomalous), cumulative counts above a
    bin FP_<b, TP_<b and including it FP_b, TP_b, totals N and P, and q = max_b n_b / N:

    - AUROC: the bin's box in ROC space is crossed by the exact staircase and by the binned
      diagonal, so the error is at most ``sum_b n_b p_b / (2 N P) <= q / 2``.
    - AP: inside bin b the exact precisions lie in ``[(TP_<b + 1) / (TP_<b + 1 + FP_b),
      TP_b / (TP_b + FP_<b)]`` and so does the binned one, so the error is at most
      ``sum_b p_b / P * (upper_b - lower_b)``.
    - F1-max: binned <= exact <= ``max_b 2 TP_b / (TP_b + FP_<b + P)``; the bound is the gap.
    - AUPRO: as AUROC on the (FPR, PRO) curve: ``sum_b dF_b dPRO_b / 2`` over the bins below
      ``fpr_limit`` plus ``(fpr_limit - F_<b) dPRO_b`` for the bin crossing it, divided by
      ``fpr_limit``; at most ``q / fpr_limit``.

    Args: as :func:`binned_pixel_metrics`.

    Returns:
        dict with the bounds under the keys ``pixel_auroc``, ``pixel_ap``, ``pixel_f1_max``, ``aupro``.
    """
    _check_fpr_limit(fpr_limit, "binned_error_bounds")
    _check_histograms(normal_hist, anomalous_hist, region_mass, "binned_error_bounds")
    neg, pos, fp_above, tp_above, fp, tp = _descending_cumulative(normal_hist, anomalous_hist)
    num_normal, num_anomalous = fp[-1], tp[-1]
    auroc = float(np.sum(neg * pos) / (2 * num_normal * num_anomalous))
    has_pos = pos > 0
    upper = tp[has_pos] / (tp[has_pos] + fp_above[has_pos])
    lower = (tp_above[has_pos] + 1) / (tp_above[has_pos] + 1 + fp[has_pos])
    ap = float(np.sum(pos[has_pos] / num_anomalous * (upper - lower)))
    f1_binned = np.max(2 * tp / (tp + fp + num_anomalous))
    f1_upper = np.max(2 * tp / (tp + fp_above + num_anomalous))
    d_fpr = neg / num_normal
    d_pro = region_mass[::-1].astype(np.float64)
    fpr_end = np.cumsum(d_fpr)
    fpr_start = fpr_end - d_fpr
    full = fpr_end <= fpr_limit
    area = float(np.sum(d_fpr[full] * d_pro[full]) / 2)
    crossing = np.flatnonzero(~full & (fpr_start < fpr_limit))
    if crossing.size:
        area += (fpr_limit - fpr_start[crossing[0]]) * d_pro[crossing[0]]
    return {
        "pixel_auroc": auroc,
        "pixel_ap": ap,
        "pixel_f1_max": float(f1_upper - f1_binned),
        "aupro": area / fpr_limit,
    }
