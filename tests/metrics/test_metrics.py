"""Tests for medad_monai.metrics: functional metrics, binned bounds, cumulative metrics, Ignite wiring."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ignite.engine import Engine
from monai.data import DataLoader
from monai.engines import SupervisedEvaluator
from monai.handlers import IgniteMetricHandler, from_engine
from scipy import ndimage
from sklearn.metrics import average_precision_score, roc_auc_score

from medad_monai.metrics import (
    ImageAnomalyMetrics,
    PerClassAnomalyMetrics,
    PixelAnomalyMetrics,
    accuracy_at,
    aupro,
    average_precision,
    f1_max,
    fpr_threshold,
    functional,
    image_auroc,
    mad,
    per_class_metrics,
    pixel_metrics,
)
from medad_monai.scoring import max_of_avg_pooled

PIXEL_KEYS = {"pixel_auroc", "pixel_ap", "pixel_f1_max", "aupro"}


def _brute_force_f1(scores: np.ndarray, labels: np.ndarray) -> float:
    best = 0.0
    for t in np.unique(scores):
        pred = scores >= t
        tp = np.sum(pred & labels)
        best = max(best, 2 * tp / (2 * tp + np.sum(pred & ~labels) + np.sum(~pred & labels)))
    return best


def _reference_aupro(maps: np.ndarray, masks: np.ndarray, fpr_limit: float, structure: np.ndarray) -> float:
    """Direct MVTec-style AUPRO: a loop over every distinct threshold, trapezoid cut at fpr_limit."""
    regions = []
    for i, mask in enumerate(masks):
        labels, count = ndimage.label(mask, structure=structure)
        regions += [(i, labels == r) for r in range(1, count + 1)]
    fprs, pros = [0.0], [0.0]
    for t in np.unique(maps)[::-1]:
        pred = maps >= t
        fprs.append(pred[~masks].mean())
        pros.append(np.mean([pred[i][region].mean() for i, region in regions]))
    area = 0.0
    for k in range(1, len(fprs)):
        f0, f1, p0, p1 = fprs[k - 1], fprs[k], pros[k - 1], pros[k]
        if f1 <= fpr_limit:
            area += (f1 - f0) * (p0 + p1) / 2
        else:
            p_limit = p0 + (p1 - p0) * (fpr_limit - f0) / (f1 - f0)
            area += (fpr_limit - f0) * (p0 + p_limit) / 2
            break
    return area / fpr_limit


def _blob_set(seed: int, num_images: int = 6, size: int = 24, quantize: float | None = None):
    """Maps (N, H, W) float32 and masks (N, H, W) bool with several regions, one normal image."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((num_images, size, size), dtype=bool)
    yy, xx = np.mgrid[:size, :size]
    for i in range(1, num_images):
        for _ in range(rng.integers(1, 4)):
            cy, cx = rng.integers(2, size - 2, size=2)
            ry, rx = rng.uniform(1, 4, size=2)
            masks[i] |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    maps = rng.normal(0.0, 1.0, masks.shape) + 1.5 * masks * rng.uniform(0.2, 1.5, masks.shape)
    if quantize is not None:
        maps = np.round(maps / quantize) * quantize
    return maps.astype(np.float32), masks


# ---------------------------------------------------------------- image level


@pytest.mark.parametrize("ties", [False, True])
def test_image_auroc_and_ap_equal_sklearn(ties):
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 200)
    scores = rng.normal(size=200) + labels
    if ties:
        scores = np.round(scores, 1)
    assert image_auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert average_precision(scores, labels) == pytest.approx(average_precision_score(labels, scores), abs=1e-12)
    assert image_auroc(torch.tensor(scores), torch.tensor(labels)) == pytest.approx(roc_auc_score(labels, scores))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_f1_max_equals_brute_force_and_threshold_achieves_it(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 60).astype(bool)
    scores = np.round(rng.normal(size=60) + labels, 1)
    f1, threshold = f1_max(scores, labels)
    assert f1 == pytest.approx(_brute_force_f1(scores, labels), abs=1e-12)
    pred = scores >= threshold
    tp = np.sum(pred & labels)
    assert 2 * tp / (pred.sum() + labels.sum()) == pytest.approx(f1, abs=1e-12)


def test_accuracy_at_and_mad():
    scores = np.array([0.1, 0.4, 0.35, 0.8])
    labels = np.array([0, 0, 1, 1])
    assert accuracy_at(scores, labels, 0.35) == pytest.approx(0.75)
    assert accuracy_at(scores, labels, 0.5) == pytest.approx(0.75)
    assert accuracy_at(scores, np.zeros(4), 0.9) == 1.0  # one class is fine for accuracy
    assert mad({"image_auroc": 0.9, "image_ap": 0.6, "image_f1_max": 0.3, "other": 5.0}) == pytest.approx(0.6)
    with pytest.raises(ValueError, match="image_ap"):
        mad({"image_auroc": 0.9, "image_f1_max": 0.3})


@pytest.mark.parametrize("target", [0.0, 0.05, 0.1, 0.33, 1.0])
def test_fpr_threshold_is_smallest_threshold_within_target(target):
    rng = np.random.default_rng(3)
    normal = np.round(rng.normal(size=101), 1)  # ties
    t = fpr_threshold(normal, target)
    assert np.mean(normal >= t) <= target
    smaller = np.unique(normal[normal < t])
    if smaller.size:  # the next candidate down already exceeds the target
        assert np.mean(normal >= smaller[-1]) > target
    assert fpr_threshold(np.array([1.0, 2.0]), 0.0) > 2.0


def test_single_class_raises_naming_metric():
    scores, labels = np.array([0.1, 0.2, 0.3]), np.zeros(3)
    for metric, name in [(image_auroc, "image_auroc"), (average_precision, "average_precision"), (f1_max, "f1_max")]:
        with pytest.raises(ValueError, match=f"{name}.*single class"):
            metric(scores, labels)
        with pytest.raises(ValueError, match=name):
            metric(scores, np.ones(3))


def test_all_equal_scores_are_well_defined():
    labels = np.array([0, 1, 0, 1, 1])
    scores = np.full(5, 0.7)
    assert image_auroc(scores, labels) == 0.5
    assert average_precision(scores, labels) == pytest.approx(0.6)
    assert f1_max(scores, labels) == (pytest.approx(0.75), 0.7)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_scores_raise(bad):
    scores, labels = np.array([0.1, bad, 0.3]), np.array([0, 1, 1])
    for metric in (image_auroc, average_precision, f1_max):
        with pytest.raises(ValueError, match="NaN or Inf"):
            metric(scores, labels)
    maps, masks = _blob_set(0)
    maps[0, 0, 0] = bad
    with pytest.raises(ValueError, match="NaN or Inf"):
        pixel_metrics(maps, masks)
    for mode in ("exact", "binned"):
        with pytest.raises(ValueError, match="NaN or Inf"):
            PixelAnomalyMetrics(mode=mode)(torch.tensor(maps[:, None]), torch.tensor(masks[:, None]))


def test_bad_labels_and_shapes_raise():
    with pytest.raises(ValueError, match="labels must hold only 0"):
        image_auroc([0.1, 0.2], [0, 2])
    with pytest.raises(ValueError, match="same number"):
        image_auroc([0.1, 0.2, 0.3], [0, 1])
    maps, masks = _blob_set(0)
    with pytest.raises(ValueError, match="same shape"):
        aupro(maps, masks[:, :-1])
    with pytest.raises(ValueError, match="fpr_limit"):
        aupro(maps, masks, fpr_limit=0.0)


# ---------------------------------------------------------------- pixel level, exact


@pytest.mark.parametrize("quantize", [None, 0.25])
def test_exact_pixel_metrics_equal_sklearn_and_brute_force(quantize):
    maps, masks = _blob_set(4, quantize=quantize)
    results = pixel_metrics(maps, masks)
    y, s = masks.ravel(), maps.ravel()
    assert results["pixel_auroc"] == pytest.approx(roc_auc_score(y, s), abs=1e-6)
    assert results["pixel_ap"] == pytest.approx(average_precision_score(y, s), abs=1e-6)
    assert results["pixel_f1_max"] == pytest.approx(_brute_force_f1(s, y), abs=1e-12)
    pred = s >= results["pixel_f1_threshold"]
    assert 2 * np.sum(pred & y) / (pred.sum() + y.sum()) == pytest.approx(results["pixel_f1_max"])


@pytest.mark.parametrize("seed, quantize, fpr_limit", [(5, None, 0.3), (6, 0.2, 0.3), (7, None, 0.05), (8, 0.5, 1.0)])
def test_aupro_equals_slow_reference(seed, quantize, fpr_limit):
    maps, masks = _blob_set(seed, quantize=quantize)
    expected = _reference_aupro(maps, masks, fpr_limit, np.ones((3, 3)))
    assert aupro(maps, masks, fpr_limit=fpr_limit) == pytest.approx(expected, abs=1e-9)
    assert pixel_metrics(maps[:, None], masks[:, None], fpr_limit)["aupro"] == pytest.approx(expected, abs=1e-9)


def test_exact_aupro_sums_in_chunks(monkeypatch):
    maps, masks = _blob_set(18)
    expected = aupro(maps, masks)
    monkeypatch.setattr(functional, "_CHUNK", 7)
    assert aupro(maps, masks) == pytest.approx(expected, abs=1e-12)
    assert expected == pytest.approx(_reference_aupro(maps, masks, 0.3, np.ones((3, 3))), abs=1e-9)


def test_aupro_uses_8_connectivity():
    masks = np.zeros((1, 8, 8), dtype=bool)
    masks[0, 1, 1] = masks[0, 2, 2] = masks[0, 3, 3] = True  # one diagonal region, three 4-connected ones
    masks[0, 6, 6] = True
    maps = np.linspace(0.0, 1.0, 64).reshape(1, 8, 8).astype(np.float32)
    value = aupro(maps, masks, fpr_limit=1.0)
    assert value == pytest.approx(_reference_aupro(maps, masks, 1.0, np.ones((3, 3))))
    assert value != pytest.approx(_reference_aupro(maps, masks, 1.0, ndimage.generate_binary_structure(2, 1)))


def test_perfect_detector_and_empty_masks():
    maps, masks = _blob_set(9)
    perfect = masks.astype(np.float32)
    assert pixel_metrics(perfect, masks) == pytest.approx(
        {"pixel_auroc": 1.0, "pixel_ap": 1.0, "pixel_f1_max": 1.0, "pixel_f1_threshold": 1.0, "aupro": 1.0}
    )
    empty = np.zeros_like(masks)
    with pytest.raises(ValueError, match="aupro.*single class"):
        aupro(maps, empty)
    with pytest.raises(ValueError, match="pixel_metrics.*single class"):
        pixel_metrics(maps, empty)
    for mode in ("exact", "binned"):
        metric = PixelAnomalyMetrics(mode=mode)
        metric(torch.tensor(maps[:, None]), torch.tensor(empty[:, None]))
        with pytest.raises(ValueError, match="single class"):
            metric.aggregate()


# ---------------------------------------------------------------- pixel level, binned


def _feed(metric: PixelAnomalyMetrics, maps: np.ndarray, masks: np.ndarray, batch: int = 2) -> PixelAnomalyMetrics:
    for start in range(0, len(maps), batch):
        batch_masks = torch.tensor(masks[start : start + batch, None]).float()
        metric(torch.tensor(maps[start : start + batch, None]), batch_masks)
    return metric


@pytest.mark.parametrize("num_bins, score_range", [(2**16, None), (2**8, None), (2**6, (-6.0, 8.0))])
def test_binned_within_certified_bounds_of_exact(num_bins, score_range):
    maps, masks = _blob_set(10, num_images=10, size=32)
    exact = pixel_metrics(maps, masks)
    metric = _feed(PixelAnomalyMetrics(mode="binned", num_bins=num_bins, score_range=score_range), maps, masks)
    binned, bounds = metric.aggregate(), metric.error_bounds()
    assert set(binned) == PIXEL_KEYS and set(bounds) == PIXEL_KEYS
    for key in PIXEL_KEYS:
        assert abs(binned[key] - exact[key]) <= bounds[key] + 1e-12, key
    # the binned F1 never beats the exact one; the a priori AUROC / AUPRO bounds hold
    assert binned["pixel_f1_max"] <= exact["pixel_f1_max"] + 1e-12
    normal_hist = metric._histogram.normal
    q = normal_hist.max() / normal_hist.sum()
    assert bounds["pixel_auroc"] <= q / 2 + 1e-12
    assert bounds["aupro"] <= q / 0.3 + 1e-12
    if num_bins == 2**16:
        assert max(bounds.values()) < 2e-3


def test_binned_equals_exact_with_one_bin_per_distinct_score():
    maps, masks = _blob_set(11, quantize=1.0)
    maps = np.clip(maps + 3, 0, 7)
    exact = pixel_metrics(maps, masks)
    binned = _feed(PixelAnomalyMetrics(mode="binned", num_bins=8, score_range=(0.0, 8.0)), maps, masks).aggregate()
    assert binned == pytest.approx({key: exact[key] for key in PIXEL_KEYS}, abs=1e-12)


def test_binned_range_growth_merges_bins_exactly():
    maps, masks = _blob_set(12, num_images=6)
    maps[0] = 0.25  # a constant first batch, then wider batches on both sides
    maps[2:4] *= 3
    maps[4:] -= 5
    grown = _feed(PixelAnomalyMetrics(mode="binned", num_bins=2**10), maps, masks, batch=1)
    histogram = grown._histogram
    assert histogram.low <= maps.min() and maps.max() < histogram.low + histogram.width
    assert histogram.width <= 2 * (maps.max() - maps.min())
    final_range = (histogram.low, histogram.low + histogram.width)
    fixed = _feed(PixelAnomalyMetrics(num_bins=2**10, score_range=final_range), maps, masks, batch=6)._histogram
    np.testing.assert_array_equal(histogram.normal, fixed.normal)
    np.testing.assert_array_equal(histogram.anomalous, fixed.anomalous)
    np.testing.assert_allclose(histogram.region_mass, fixed.region_mass, rtol=1e-12)
    exact, binned, bounds = pixel_metrics(maps, masks), grown.aggregate(), grown.error_bounds()
    for key in PIXEL_KEYS:
        assert abs(binned[key] - exact[key]) <= bounds[key] + 1e-12, key


def test_binned_fixed_range_rejects_outside_scores_and_bad_arguments():
    maps, masks = _blob_set(13)
    with pytest.raises(ValueError, match="score_range"):
        _feed(PixelAnomalyMetrics(score_range=(0.0, 1.0)), maps, masks)
    with pytest.raises(ValueError, match="num_bins"):
        PixelAnomalyMetrics(num_bins=1000)
    with pytest.raises(ValueError, match="mode"):
        PixelAnomalyMetrics(mode="fast")
    with pytest.raises(ValueError, match="score_range"):
        PixelAnomalyMetrics(score_range=(1.0, 1.0))
    with pytest.raises(ValueError, match="no data"):
        PixelAnomalyMetrics().aggregate()
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        PixelAnomalyMetrics()(torch.zeros(2, 8, 8), torch.zeros(2, 8, 8))


# ---------------------------------------------------------------- cumulative metrics


def test_image_metrics_accumulate_batches_and_lists():
    rng = np.random.default_rng(14)
    labels = rng.integers(0, 2, 40)
    scores = rng.normal(size=40) + labels
    metric = ImageAnomalyMetrics()
    metric(torch.tensor(scores[:15]), torch.tensor(labels[:15]))
    metric(torch.tensor(scores[15:30, None]), torch.tensor(labels[15:30, None]))
    metric([torch.tensor(s) for s in scores[30:]], [torch.tensor(v) for v in labels[30:]])
    results = metric.aggregate()
    f1, threshold = f1_max(scores, labels)
    expected = {
        "image_auroc": roc_auc_score(labels, scores),
        "image_ap": average_precision_score(labels, scores),
        "image_f1_max": f1,
        "image_f1_threshold": threshold,
        "image_accuracy": accuracy_at(scores, labels, threshold),
    }
    expected["mad"] = (expected["image_auroc"] + expected["image_ap"] + f1) / 3
    assert results == pytest.approx(expected, abs=1e-6)
    fixed = ImageAnomalyMetrics(threshold=10.0)
    fixed(torch.tensor(scores), torch.tensor(labels))
    assert fixed.aggregate()["image_accuracy"] == pytest.approx(1 - labels.mean())
    metric.reset()
    with pytest.raises(ValueError, match="no data"):
        metric.aggregate()
    with pytest.raises(ValueError, match=r"\(B,\) or \(B, 1\)"):
        metric(torch.zeros(4, 2), torch.zeros(4, 2))


@pytest.mark.parametrize("mode", ["exact", "binned"])
def test_pixel_metrics_batches_equal_one_pass(mode):
    maps, masks = _blob_set(15)
    exact = pixel_metrics(maps, masks)
    one = PixelAnomalyMetrics(mode=mode)
    one(torch.tensor(maps[:, None]), torch.tensor(masks[:, None]))
    several = PixelAnomalyMetrics(mode=mode)
    several([torch.tensor(m[None]) for m in maps[:3]], [torch.tensor(m[None]) for m in masks[:3]])
    several(torch.tensor(maps[3:, None]), torch.tensor(masks[3:, None]).float())
    if mode == "exact":
        assert one.aggregate() == several.aggregate() == pytest.approx({key: exact[key] for key in PIXEL_KEYS})
    for metric in (one, several):  # binned: the bin grid depends on the first batch, the bound holds for both
        for key in PIXEL_KEYS:
            assert abs(metric.aggregate()[key] - exact[key]) <= metric.error_bounds()[key] + 1e-12


def test_per_class_metrics_match_separate_metrics_and_mean():
    rng = np.random.default_rng(16)
    classes = np.array(["brain", "liver", "retina"])[rng.integers(0, 3, 90)]
    labels = rng.integers(0, 2, 90)
    scores = rng.normal(size=90) + labels
    results = per_class_metrics(ImageAnomalyMetrics, torch.tensor(scores), torch.tensor(labels), list(classes))
    for name in ("brain", "liver", "retina"):
        keep = classes == name
        assert results[f"{name}/image_auroc"] == pytest.approx(roc_auc_score(labels[keep], scores[keep]))
    for key in ("image_auroc", "image_ap", "image_f1_max", "image_accuracy", "mad"):
        assert results[f"mean/{key}"] == pytest.approx(np.mean([results[f"{c}/{key}"] for c in np.unique(classes)]))
    assert "mean/image_f1_threshold" not in results

    metric = PerClassAnomalyMetrics(ImageAnomalyMetrics)
    metric(torch.tensor(scores[:50]), (torch.tensor(labels[:50]), list(classes[:50])))  # the Ignite (y, classes) form
    metric(torch.tensor(scores[50:]), torch.tensor(labels[50:]), class_ids=list(classes[50:]))
    assert metric.aggregate() == pytest.approx(results)
    metric([torch.tensor(0.5)], [torch.tensor(0)], class_ids=["spine"])
    with pytest.raises(ValueError, match="class 'spine'.*single class"):
        metric.aggregate()
    with pytest.raises(ValueError, match="class_ids"):
        metric(torch.zeros(2), torch.zeros(2))


# ---------------------------------------------------------------- Ignite / MONAI evaluator


def test_ignite_metric_handler_spreads_dict_results_into_engine_state():
    maps, masks = _blob_set(17, num_images=6, size=16)
    data = [{"image": torch.tensor(m[None]), "label": torch.tensor(k[None]).float()} for m, k in zip(maps, masks)]
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=DataLoader(data, batch_size=4),
        network=torch.nn.Identity(),  # the image itself is the anomaly map
    )
    pixel = IgniteMetricHandler(
        PixelAnomalyMetrics(mode="binned"), output_transform=from_engine(["pred", "label"]), save_details=False
    )
    pixel.attach(evaluator, "pixel_metrics")

    def image_scores(output):  # decollated: one dict per image; Ignite unrolls the per-image lists
        return [max_of_avg_pooled(o["pred"][None], 4)[0] for o in output], [o["label"].amax() for o in output]

    image = IgniteMetricHandler(ImageAnomalyMetrics(), output_transform=image_scores)
    image.attach(evaluator, "image_metrics")
    evaluator.run()

    metrics = evaluator.state.metrics
    assert PIXEL_KEYS <= set(metrics)
    assert {"image_auroc", "image_ap", "image_f1_max", "image_f1_threshold", "image_accuracy", "mad"} <= set(metrics)
    exact = pixel_metrics(maps, masks)
    assert abs(metrics["pixel_auroc"] - exact["pixel_auroc"]) < 1e-3
    scores = max_of_avg_pooled(torch.tensor(maps[:, None]), 4).numpy()
    assert metrics["image_auroc"] == pytest.approx(image_auroc(scores, masks.any(axis=(1, 2))))
    assert evaluator.state.metric_details["image_metrics"][0].shape == (6,)


def test_per_class_metric_through_ignite_engine():
    maps, masks = _blob_set(19, num_images=8, size=16)
    masks[[1, 2]] = False  # keep both classes anomalous: images 3.. carry regions
    classes = ["brain", "liver"] * 4
    batches = [
        {"pred": torch.tensor(maps[i:j, None]), "mask": torch.tensor(masks[i:j, None]), "class": classes[i:j]}
        for i, j in ((0, 4), (4, 8))
    ]
    engine = Engine(lambda engine, batch: batch)
    handler = IgniteMetricHandler(
        PerClassAnomalyMetrics(lambda: PixelAnomalyMetrics(mode="exact")),
        output_transform=lambda out: (out["pred"], (out["mask"], out["class"])),
        save_details=False,
    )
    handler.attach(engine, "per_class")
    engine.run(batches)
    metrics = engine.state.metrics
    for name in ("brain", "liver"):
        keep = np.array(classes) == name
        expected = pixel_metrics(maps[keep], masks[keep])
        for key in PIXEL_KEYS:
            assert metrics[f"{name}/{key}"] == pytest.approx(expected[key])
    assert metrics["mean/aupro"] == pytest.approx((metrics["brain/aupro"] + metrics["liver/aupro"]) / 2)
