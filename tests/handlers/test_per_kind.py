"""Per-lesion-kind metrics: the function against direct subset metrics, the handler on a real evaluator, the report."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from monai.data import DataLoader
from monai.engines import SupervisedEvaluator
from sklearn.metrics import roc_auc_score

from medad_monai.handlers import CopyBatchToOutput, EvaluationReportHandler, PerKindMetricsHandler, per_kind_metrics
from medad_monai.metrics.functional import pixel_metrics

SIZE = 12


def _items(seed: int = 0) -> list[dict]:
    """6 normal images, 4 bright "mass" lesions (easy) and 4 faint "focus" lesions (hard), channel 0 = map."""
    rng = np.random.default_rng(seed)
    items = []
    for kind, strength, count in (("normal", 0.0, 6), ("mass", 2.0, 4), ("focus", 0.05, 4)):
        for _ in range(count):
            image = rng.normal(0.0, 0.3, (1, SIZE, SIZE)).astype(np.float32)
            mask = np.zeros((1, SIZE, SIZE), dtype=np.float32)
            if kind != "normal":
                r, c = rng.integers(0, SIZE - 3, size=2)
                mask[0, r : r + 3, c : c + 3] = 1
                image[0] += mask[0] * strength
            items.append({"image": torch.from_numpy(image), "mask": torch.from_numpy(mask), "label": int(kind != "normal"), "kind": kind})
    return items


def test_per_kind_metrics_equal_metrics_on_each_subset():
    items = _items()
    maps = np.stack([d["image"].numpy() for d in items])
    masks = np.stack([d["mask"].numpy() for d in items])
    scores, labels = maps.reshape(len(items), -1).max(1), np.array([d["label"] for d in items])
    kinds = [d["kind"] for d in items]
    result = per_kind_metrics(scores, labels, kinds, maps, masks)
    assert list(result) == ["focus", "mass"]
    for kind, entry in result.items():
        subset = np.array([k in ("normal", kind) for k in kinds])
        assert entry["count"] == 4
        assert entry["image_auroc"] == pytest.approx(roc_auc_score(labels[subset], scores[subset]))
        assert entry["aupro"] == pytest.approx(pixel_metrics(maps[subset], masks[subset])["aupro"])
    assert result["mass"]["image_auroc"] > result["focus"]["image_auroc"]
    assert set(per_kind_metrics(scores, labels, kinds)["mass"]) == {"count", "image_auroc", "image_ap", "image_f1_max"}


def test_per_kind_metrics_reject_inconsistent_input():
    with pytest.raises(ValueError, match="kind 'normal'"):
        per_kind_metrics(np.array([0.1, 0.9]), np.array([1, 1]), ["normal", "mass"])
    with pytest.raises(ValueError, match="need normal images"):
        per_kind_metrics(np.array([0.1, 0.9]), np.array([1, 1]), ["mass", "mass"])
    with pytest.raises(ValueError, match="one entry per image"):
        per_kind_metrics(np.array([0.1]), np.array([0, 1]), ["normal", "mass"])


def _evaluator(items: list[dict], handlers: list) -> SupervisedEvaluator:
    def add_score(data: dict) -> dict:
        data["score"] = data["pred"].amax()
        return data

    return SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=DataLoader(items, batch_size=4, shuffle=False, num_workers=0),
        network=torch.nn.Identity(),
        postprocessing=add_score,
        val_handlers=[CopyBatchToOutput("mask"), *handlers],
    )


def test_handler_feeds_the_evaluation_report(tmp_path):
    items = _items(seed=3)
    encoder = torch.nn.Module()
    encoder.weights_source = "imagenet:resnet34-b627a593.pth"
    network = torch.nn.Module()
    network.encoder = encoder
    report = EvaluationReportHandler(str(tmp_path), network=network)
    evaluator = _evaluator(items, [PerKindMetricsHandler(), report])
    evaluator.run()
    maps = np.stack([d["image"].numpy() for d in items])
    expected = per_kind_metrics(
        maps.reshape(len(items), -1).max(1), np.array([d["label"] for d in items]), [d["kind"] for d in items],
        maps, np.stack([d["mask"].numpy() for d in items]),
    )
    written = json.loads((tmp_path / "evaluation_report.json").read_text())
    assert list(written["per_kind"]) == list(expected)
    for kind, entry in expected.items():
        assert written["per_kind"][kind] == pytest.approx(entry)
    assert written["encoder_weights"] == "imagenet:resnet34-b627a593.pth"
    markdown = (tmp_path / "evaluation_report.md").read_text()
    assert "| mass | 4 |" in markdown and "| focus | 4 |" in markdown and "resnet34-b627a593" in markdown


def test_handler_without_kinds_falls_back_to_labels(tmp_path):
    items = [{k: v for k, v in d.items() if k != "kind"} for d in _items(seed=4)]
    evaluator = _evaluator(items, [PerKindMetricsHandler()])
    evaluator.run()
    assert list(evaluator.state.per_kind_metrics) == ["abnormal"]
    assert evaluator.state.per_kind_metrics["abnormal"]["count"] == 8
