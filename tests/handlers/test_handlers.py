"""Evaluation handlers on real (tiny) MONAI SupervisedEvaluators."""

from __future__ import annotations

import csv
import hashlib
import json

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.data import DataLoader, MetaTensor
from monai.engines import SupervisedEvaluator
from monai.handlers import CheckpointLoader, CheckpointSaver, StatsHandler, TensorBoardStatsHandler, from_engine
from PIL import Image
from sklearn.metrics import accuracy_score, average_precision_score, precision_recall_curve, roc_auc_score

from medad_monai.handlers import (
    CopyBatchToOutput,
    EvaluationReportHandler,
    ImageAnomalyMetricHandler,
    MetricsFileWriter,
    PixelAnomalyMetricHandler,
    ProgressBarHandler,
    ThresholdCalibrationHandler,
    VisualReportHandler,
    calibrate_threshold,
    denormalize_image,
    resolve_thresholds,
)

SIZE = 16


class MixNet(torch.nn.Module):
    """Anomaly map ``a * channel 0 + (1 - a) * channel 1``: channel 0 carries the lesion, channel 1 noise."""

    def __init__(self, a: float = 1.0) -> None:
        super().__init__()
        self.a = torch.nn.Parameter(torch.tensor(float(a)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.a * x[:, 0:1] + (1 - self.a) * x[:, 1:2]


def make_items(num_normal: int, num_abnormal: int, seed: int = 0) -> list[dict]:
    """(3, H, W) images named ``case_<i>.png``; abnormal ones get a random-strength lesion square in channel 0."""
    rng = np.random.default_rng(seed)
    items = []
    for i in range(num_normal + num_abnormal):
        label = int(i >= num_normal)
        image = rng.normal(0.0, 0.3, (3, SIZE, SIZE)).astype(np.float32)
        mask = np.zeros((1, SIZE, SIZE), dtype=np.float32)
        if label:
            r, c = rng.integers(0, SIZE - 4, size=2)
            mask[0, r : r + 4, c : c + 4] = 1
            image[0] += mask[0] * rng.uniform(0.2, 1.5)
        items.append(
            {
                "image": MetaTensor(torch.from_numpy(image), meta={"filename_or_obj": f"/data/case_{i}.png"}),
                "mask": torch.from_numpy(mask),
                "label": label,
            }
        )
    return items


def add_score(data: dict) -> dict:
    data["score"] = data["pred"].amax()
    return data


def make_evaluator(items, net=None, key_metric=None, additional=None, handlers=(), batch_size=4):
    return SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=DataLoader(items, batch_size=batch_size, shuffle=False, num_workers=0),
        network=net or MixNet(),
        postprocessing=add_score,
        key_val_metric=key_metric,
        additional_metrics=additional,
        val_handlers=[CopyBatchToOutput("mask"), *handlers],
    )


def image_auroc_evaluator(items, *handlers):
    return make_evaluator(items, key_metric={"image_auroc": ImageAnomalyMetricHandler()}, handlers=handlers)


def reference(items, net=None):
    """Scores, labels, maps and masks computed without the engine."""
    net = net or MixNet()
    with torch.no_grad():
        maps = net(torch.stack([torch.as_tensor(d["image"]) for d in items])).numpy()
    masks = np.stack([d["mask"].numpy() for d in items])
    labels = np.array([d["label"] for d in items])
    return maps.reshape(len(items), -1).max(1), labels, maps, masks


def brute_force_f1_max(scores, labels):
    """Best F1 of ``scores >= t`` over every observed value ``t``."""
    f1 = [2 * np.sum((scores >= t) & (labels == 1)) / (np.sum(scores >= t) + labels.sum()) for t in np.unique(scores)]
    return max(f1)


@pytest.fixture(scope="module")
def test_items():
    return make_items(8, 8, seed=1)


def test_metric_handlers_match_sklearn(test_items):
    scores, labels, maps, masks = reference(test_items)
    recorder = []

    class Writer:
        def add_scalar(self, tag, value, step):
            recorder.append((tag, value, step))

        def flush(self):
            pass

    evaluator = make_evaluator(
        test_items,
        key_metric={"val_auroc": ImageAnomalyMetricHandler(threshold=0.5)},
        additional={"pixel_auroc": PixelAnomalyMetricHandler(mode="exact")},
        handlers=[TensorBoardStatsHandler(Writer(), iteration_log=False, output_transform=lambda x: None)],
    )
    evaluator.run()
    metrics = evaluator.state.metrics
    for key in ("image_auroc", "image_ap", "image_f1_max", "image_f1_threshold", "image_accuracy", "mad"):
        assert isinstance(metrics[key], float), key
    for key in ("pixel_auroc", "pixel_ap", "pixel_f1_max", "aupro"):
        assert isinstance(metrics[key], float), key
    assert metrics["image_auroc"] == pytest.approx(roc_auc_score(labels, scores))
    assert metrics["image_ap"] == pytest.approx(average_precision_score(labels, scores))
    assert metrics["image_accuracy"] == pytest.approx(accuracy_score(labels, scores >= 0.5))
    assert metrics["pixel_auroc"] == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()))
    assert metrics["pixel_ap"] == pytest.approx(average_precision_score(masks.ravel(), maps.ravel()))
    # the attach name holds the key metric as a scalar, so the evaluator tracks the best value
    assert metrics["val_auroc"] == metrics["image_auroc"] == evaluator.state.best_metric
    logged = {tag for tag, _, _ in recorder}
    assert {"image_auroc", "image_ap", "pixel_auroc", "aupro", "mad"} <= logged


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_metrics_file_writer_one_row_per_evaluation(tmp_path, test_items, suffix):
    path = tmp_path / f"val_metrics{suffix}"
    evaluator = image_auroc_evaluator(test_items, MetricsFileWriter(str(path), metrics=["image_auroc", "image_ap"]))
    for epoch in (1, 2):
        evaluator.run(epoch)
    if suffix == ".csv":
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    else:
        rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert list(rows[0]) == ["epoch", "timestamp", "image_auroc", "image_ap"]
    assert float(rows[1]["image_auroc"]) == pytest.approx(evaluator.state.metrics["image_auroc"])
    # a re-run replaces the log; append=True keeps it
    image_auroc_evaluator(test_items, MetricsFileWriter(str(path), ["image_auroc", "image_ap"])).run()
    assert len(path.read_text().splitlines()) == (2 if suffix == ".csv" else 1)
    image_auroc_evaluator(test_items, MetricsFileWriter(str(path), ["image_auroc", "image_ap"], append=True)).run()
    assert len(path.read_text().splitlines()) == (3 if suffix == ".csv" else 2)


def test_metrics_file_writer_errors(tmp_path, test_items):
    with pytest.raises(ValueError, match="save_path"):
        MetricsFileWriter(str(tmp_path / "m.txt"))
    csv_path = tmp_path / "m.csv"
    csv_path.write_text("epoch,timestamp,other\n1,t,0.5\n")
    evaluator = image_auroc_evaluator(test_items, MetricsFileWriter(str(csv_path), "image_auroc", append=True))
    with pytest.raises(ValueError, match="header"):
        evaluator.run()
    evaluator = image_auroc_evaluator(test_items, MetricsFileWriter(str(tmp_path / "n.csv"), ["missing"]))
    with pytest.raises(KeyError, match="missing"):
        evaluator.run()


def test_threshold_f1_max_with_labelled_anomalies(tmp_path):
    items = make_items(10, 6, seed=2)
    scores, labels, maps, masks = reference(items)
    save_path = tmp_path / "threshold.json"
    handler = ThresholdCalibrationHandler(
        pixel_output_transform=from_engine(["pred", "mask"]), save_path=str(save_path), save_best_only=False
    )
    evaluator = make_evaluator(items, handlers=[handler])
    evaluator.run()
    best_f1 = brute_force_f1_max(scores, labels)
    saved = json.loads(save_path.read_text())
    assert saved == handler.state_dict()
    assert saved["method"] == "f1_max" and saved["target_fpr"] is None
    # the threshold is one of the validation scores and reaches the best F1 (ties may pick another score)
    assert saved["threshold"] in scores.tolist()
    flagged = scores >= saved["threshold"]
    assert 2 * np.sum(flagged & (labels == 1)) / (flagged.sum() + labels.sum()) == pytest.approx(best_f1)
    assert saved["f1"] == pytest.approx(best_f1)
    assert (saved["num_normal"], saved["num_abnormal"], saved["epoch"]) == (10, 6, 1)
    assert evaluator.state.metrics["threshold"] == handler.threshold == saved["threshold"]
    # pixel F1-max over the validation masks, checked against sklearn's PR curve
    precision, recall, thresholds = precision_recall_curve(masks.ravel(), maps.ravel())
    pixel_f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    assert saved["pixel_method"] == "f1_max"
    assert saved["pixel_f1"] == pytest.approx(pixel_f1.max())
    flagged = maps.ravel() >= saved["pixel_threshold"]
    assert 2 * np.sum(flagged & (masks.ravel() == 1)) / (flagged.sum() + masks.sum()) == pytest.approx(pixel_f1.max())
    assert saved["num_pixels"] == 16 * SIZE * SIZE
    assert evaluator.state.metrics["pixel_threshold"] == saved["pixel_threshold"]


def test_threshold_is_logged_to_console_and_file(tmp_path, capsys, test_items):
    path = tmp_path / "val.csv"
    handlers = [
        ThresholdCalibrationHandler(),
        StatsHandler(name="medad_test", iteration_log=False, output_transform=lambda x: None),
        MetricsFileWriter(str(path)),
    ]
    evaluator = make_evaluator(test_items, key_metric={"image_auroc": ImageAnomalyMetricHandler()}, handlers=handlers)
    evaluator.run(1)
    evaluator.run(2)
    console = capsys.readouterr().out  # StatsHandler's logger prints to stdout
    assert "threshold: " in console and "image_auroc: " in console
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and float(rows[1]["threshold"]) == pytest.approx(evaluator.state.metrics["threshold"])
    assert {"image_auroc", "image_ap", "image_f1_max", "image_accuracy", "mad"} <= set(rows[0])


def test_threshold_target_fpr_with_normal_only_validation(tmp_path):
    items = make_items(20, 0, seed=3)
    scores, _, maps, _ = reference(items)
    save_path = tmp_path / "threshold.json"
    handler = ThresholdCalibrationHandler(
        target_fpr=0.1,
        pixel_output_transform=lambda out: ([o["pred"] for o in out], None),
        pixel_target_fpr=0.02,
        save_path=str(save_path),
        save_best_only=False,
    )
    make_evaluator(items, handlers=[handler]).run()
    saved = json.loads(save_path.read_text())
    assert saved["method"] == "fpr" and saved["target_fpr"] == 0.1 and saved["f1"] is None
    assert (saved["num_normal"], saved["num_abnormal"]) == (20, 0)
    assert saved["fpr"] == pytest.approx(np.mean(scores >= saved["threshold"]))
    assert 0 < saved["fpr"] <= 0.1
    assert saved["pixel_method"] == "fpr" and saved["pixel_target_fpr"] == 0.02
    assert saved["pixel_fpr"] == pytest.approx(np.mean(maps >= saved["pixel_threshold"]))
    assert 0.01 < saved["pixel_fpr"] <= 0.02
    assert saved["num_pixels"] == maps.size


def test_threshold_method_errors():
    with pytest.raises(ValueError, match="f1_max"):
        calibrate_threshold(np.array([0.1, 0.2]), np.array([0, 0]), "f1_max", 0.05)
    with pytest.raises(ValueError, match="normal"):
        calibrate_threshold(np.array([0.1, 0.2]), np.array([1, 1]), "fpr", 0.05)
    with pytest.raises(ValueError, match="method"):
        ThresholdCalibrationHandler(method="youden")
    with pytest.raises(ValueError, match="target_fpr"):
        ThresholdCalibrationHandler(target_fpr=1.5)
    # the JSON follows the best checkpoint, which needs a key metric
    with pytest.raises(ValueError, match="save_best_only"):
        make_evaluator(make_items(2, 2), handlers=[ThresholdCalibrationHandler(save_path="t.json")])


@pytest.mark.parametrize("saver_first", [True, False])
def test_best_checkpoint_holds_threshold_of_its_evaluation(tmp_path, saver_first):
    """Per evaluation the mixing weight changes the AUROC; epoch 2 is best, and its threshold must be saved."""
    items = make_items(8, 8, seed=4)
    net = MixNet()
    handler = ThresholdCalibrationHandler(save_path=str(tmp_path / "threshold.json"))
    saver = CheckpointSaver(
        str(tmp_path), {"net": net, "threshold": handler}, save_key_metric=True, key_metric_filename="best.pt"
    )
    evaluator = make_evaluator(
        items,
        net=net,
        key_metric={"image_auroc": ImageAnomalyMetricHandler()},
        handlers=[saver, handler] if saver_first else [handler, saver],
    )
    records = {}
    for epoch, a in ((1, 0.3), (2, 1.0), (3, 0.0)):
        net.a.data.fill_(a)
        evaluator.run(epoch)
        records[epoch] = (evaluator.state.metrics["image_auroc"], handler.state_dict())
    assert evaluator.state.best_metric_epoch == 2
    assert records[2][0] > max(records[1][0], records[3][0])
    assert len({r["threshold"] for _, r in records.values()}) == 3
    assert json.loads((tmp_path / "threshold.json").read_text()) == records[2][1]

    restored_net, restored = MixNet(a=0.5), ThresholdCalibrationHandler()
    infer = make_evaluator(items, net=restored_net)
    CheckpointLoader(str(tmp_path / "best.pt"), {"net": restored_net, "threshold": restored}).attach(infer)
    infer.run()
    assert restored.record == records[2][1]
    assert restored.threshold == records[2][1]["threshold"]
    assert restored_net.a.item() == 1.0
    assert resolve_thresholds(restored)["threshold"] == records[2][1]["threshold"]


def test_visual_report_panels_and_curves(tmp_path, test_items):
    images = []

    class Writer:
        def add_image(self, tag, img, step, dataformats):
            images.append((tag, img.shape, img.dtype, dataformats, step))

        def flush(self):
            pass

    handler = VisualReportHandler(
        str(tmp_path),
        threshold_source={"threshold": 0.8, "pixel_threshold": 0.6},
        num_images=2,
        summary_writer=Writer(),
    )
    make_evaluator(test_items, handlers=[handler]).run()
    panels = sorted((tmp_path / "panels").glob("*.png"))
    # first 2 normal (cases 0, 1) and first 2 abnormal (cases 8, 9) in evaluation order
    assert [p.name for p in panels] == ["0000_case_0.png", "0001_case_1.png", "0008_case_8.png", "0009_case_9.png"]
    for path in panels + [tmp_path / "roc_curve.png", tmp_path / "pr_curve.png"]:
        with Image.open(path) as img:
            img.verify()
            assert img.format == "PNG"
    with Image.open(panels[0]) as img:
        assert img.size[0] > 3 * img.size[1]  # four columns side by side
    assert len(images) == 6
    for _, shape, dtype, fmt, step in images:
        assert (len(shape), shape[2], dtype, fmt, step) == (3, 3, np.uint8, "HWC", 1)
    assert {tag for tag, *_ in images} >= {"visual/roc_curve", "visual/pr_curve", "visual/panels/0008_case_8"}


def test_visual_report_errors(tmp_path):
    items = make_items(4, 0)
    with pytest.raises(ValueError, match="plot_curves"):
        make_evaluator(items, handlers=[VisualReportHandler(str(tmp_path), num_images=1)]).run()
    with pytest.raises(ValueError, match="pixel_threshold"):
        handler = VisualReportHandler(str(tmp_path), threshold_source=0.5, plot_curves=False)
        make_evaluator(items, handlers=[handler]).run()
    make_evaluator(items, handlers=[VisualReportHandler(str(tmp_path), num_images=3, plot_curves=False)]).run()
    assert len(list((tmp_path / "panels").glob("*.png"))) == 3
    with pytest.raises(ValueError, match="channels"):
        denormalize_image(np.zeros((3, 4, 4)), mean=(0.5, 0.5), std=(0.2, 0.2))


def test_evaluation_report(tmp_path, test_items):
    checkpoint = tmp_path / "model.pt"
    torch.save({"net": MixNet().state_dict()}, checkpoint)
    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps({"test": []}))
    threshold_json = tmp_path / "threshold.json"
    calibration = {"threshold": 0.7, "method": "fpr", "target_fpr": 0.05, "pixel_threshold": 0.4, "epoch": 12}
    threshold_json.write_text(json.dumps(calibration))
    out = tmp_path / "eval"
    handler = EvaluationReportHandler(
        str(out), checkpoint_path=str(checkpoint), threshold_source=str(threshold_json), datalist_path=str(datalist)
    )
    evaluator = make_evaluator(
        test_items,
        key_metric={"image_auroc": ImageAnomalyMetricHandler(threshold=str(threshold_json))},
        additional={"pixel_auroc": PixelAnomalyMetricHandler()},
        handlers=[handler],
    )
    evaluator.run()
    report = json.loads((out / "evaluation_report.json").read_text())
    assert report["metrics"] == pytest.approx(dict(evaluator.state.metrics))
    assert report["num_images"] == {"normal": 8, "abnormal": 8, "total": 16}
    assert report["checkpoint"]["sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert report["datalist"]["sha256"] == hashlib.sha256(datalist.read_bytes()).hexdigest()
    assert report["thresholds"]["threshold"] == 0.7 and report["thresholds"]["source"] == str(threshold_json)
    assert report["thresholds"]["pixel_threshold"] == 0.4
    scores, labels, _, _ = reference(test_items)
    assert report["metrics"]["image_accuracy"] == pytest.approx(accuracy_score(labels, scores >= 0.7))
    markdown = (out / "evaluation_report.md").read_text()
    assert f"| image_auroc | {evaluator.state.metrics['image_auroc']:.6g} |" in markdown
    assert report["checkpoint"]["sha256"] in markdown and "| 8 / 8 |" in markdown
    # the training epoch of the thresholds, not the stand-alone evaluator's epoch 1
    assert report["epoch"] == 1 and report["thresholds_epoch"] == 12
    assert "| training epoch of the thresholds | 12 |" in markdown
    checkpoint.unlink()
    with pytest.raises(FileNotFoundError, match="model.pt"):
        make_evaluator(test_items, handlers=[EvaluationReportHandler(str(out), checkpoint_path=str(checkpoint))]).run()


def test_resolve_thresholds_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.json"):
        resolve_thresholds(str(tmp_path / "nothing.json"))
    with pytest.raises(ValueError, match="threshold"):
        resolve_thresholds(ThresholdCalibrationHandler())
    with pytest.raises(TypeError, match="threshold source"):
        resolve_thresholds([0.5])


def test_progress_bar_handler(capsys, test_items):
    handler = ProgressBarHandler(desc="val", persist=True)
    make_evaluator(test_items, handlers=[handler]).run()
    assert handler.bar is not None
    assert "val" in capsys.readouterr().err


def test_handlers_build_from_bundle_config(tmp_path):
    config = {
        "out": str(tmp_path),
        "threshold": {
            "_target_": "medad_monai.handlers.ThresholdCalibrationHandler",
            "target_fpr": 0.1,
            "save_path": "$@out + '/t.json'",
        },
        "handlers": [
            "@threshold",
            {
                "_target_": "medad_monai.handlers.VisualReportHandler",
                "output_dir": "@out",
                "threshold_source": "@threshold",
            },
            {"_target_": "medad_monai.handlers.EvaluationReportHandler", "output_dir": "@out", "checkpoint_path": None},
            {"_target_": "medad_monai.handlers.CopyBatchToOutput", "keys": ["mask"]},
            {"_target_": "medad_monai.handlers.MetricsFileWriter", "save_path": "$@out + '/m.csv'"},
            {"_target_": "medad_monai.handlers.ProgressBarHandler", "desc": "val"},
        ],
        "metrics": {
            "image": {"_target_": "medad_monai.handlers.ImageAnomalyMetricHandler", "threshold": "@threshold"},
            "pixel": {"_target_": "medad_monai.handlers.PixelAnomalyMetricHandler"},
        },
    }
    parser = ConfigParser(config)
    handlers = parser.get_parsed_content("handlers")
    assert handlers[1].threshold_source is handlers[0]
    assert all(callable(getattr(h, "attach", None)) for h in handlers)
    assert parser.get_parsed_content("metrics")["image"].threshold is handlers[0]
