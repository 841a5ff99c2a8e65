"""End-to-end runs of every bundle through `python -m monai.bundle` on a tiny demo cohort.

A small network (per bundle, see ``conftest.BUNDLES``) keeps each run to seconds; the configs,
handlers and files are the real ones.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import nibabel as nib
import pytest
import torch

from medad_monai.data import load_anomaly_datalist

pytestmark = pytest.mark.slow



def test_train_writes_best_model_threshold_and_resumable_checkpoint(bundle, trained):
    out, _ = trained
    best = torch.load(out / "models" / "model.pt", weights_only=True)
    assert set(best) == {"model", "threshold"} and bundle.spec.model_key in best["model"]
    threshold = json.loads((out / "models" / "threshold.json").read_text())
    assert {"threshold", "pixel_threshold", "method"} <= set(threshold)
    assert threshold["threshold"] == pytest.approx(best["threshold"]["threshold"])
    assert (out / "models" / "last_checkpoint_epoch=2.pt").is_file()
    with open(out / "runs" / "validation_metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert 0.0 <= float(rows[-1]["image_auroc"]) <= 1.0 and "pixel_auroc" in rows[-1]
    # the best model and its thresholds come from the first epoch with the highest validation AUPRO
    best_epoch = max(rows, key=lambda r: float(r["val_aupro"]))["epoch"]
    assert threshold["epoch"] == int(best_epoch)


def test_training_resumes_without_repeating_finished_epochs(bundle, trained):
    out, common = trained
    result = bundle.run(*common, "--epochs", "3")
    assert "resumed from" in result.stdout + result.stderr
    assert (out / "models" / "last_checkpoint_epoch=3.pt").is_file()
    with open(out / "runs" / "validation_metrics.csv") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [1, 2, 3]


def test_evaluate_writes_report_and_panels(bundle, trained, cohort):
    out, common = trained
    eval_dir = out / "eval"
    bundle.run(*common, "--eval_dir", str(eval_dir), config="train.json+evaluate.json")
    report = json.loads((eval_dir / "evaluation_report.json").read_text())
    metrics = report["metrics"]
    for key in ("image_auroc", "image_ap", "image_f1_max", "pixel_auroc", "aupro"):
        assert 0.0 <= metrics[key] <= 1.0
    assert (eval_dir / "evaluation_report.md").is_file() and (eval_dir / "roc_curve.png").is_file()
    labels = [item["label"] for item in load_anomaly_datalist(cohort, "test")]
    expected = min(8, labels.count(0)) + min(8, labels.count(1))  # num_report_images of each class
    assert len(list((eval_dir / "panels").glob("*.png"))) == expected


def test_inference_writes_maps_in_input_geometry_and_scores(bundle, trained, cohort, inference_args):
    out, _ = trained
    infer_dir = out / "inference"
    args = inference_args(out, cohort, infer_dir) + list(bundle.spec.tiny_net)
    bundle.run(*args, config="inference.json")
    items = load_anomaly_datalist(cohort, "test")
    for item in items:
        stem = Path(item["image"]).name.removesuffix(".nii.gz")
        source = nib.load(item["image"])
        amap, mask = nib.load(infer_dir / f"{stem}_anomaly_map.nii.gz"), nib.load(infer_dir / f"{stem}_anomaly_mask.nii.gz")
        assert amap.shape[:2] == source.shape[:2] and mask.shape[:2] == source.shape[:2]
        assert (amap.affine == pytest.approx(source.affine)) and set(mask.get_fdata().ravel()) <= {0.0, 1.0}
    with open(infer_dir / "scores.csv") as f:
        assert len(list(csv.reader(f))) == len(items)


def test_volume_inference_keeps_volume_geometry(bundle, trained, cohort, inference_args):
    out, _ = trained
    infer_dir = out / "inference_volume"
    args = inference_args(out, cohort, infer_dir) + list(bundle.spec.tiny_net)
    bundle.run(*args, config="inference.json+inference_volume.json")
    volumes = load_anomaly_datalist(cohort, "test_volumes")
    for item in volumes:
        stem = Path(item["image"]).name.removesuffix(".nii.gz")
        source, amap = nib.load(item["image"]), nib.load(infer_dir / f"{stem}_anomaly_map.nii.gz")
        assert amap.shape[:3] == source.shape[:3] and amap.affine == pytest.approx(source.affine)


def test_checkpoint_from_another_network_is_named(bundle, trained, cohort, inference_args):
    out, _ = trained
    args = inference_args(out, cohort, out / "bad")
    result = bundle.run(*args, "--network_def#encoder_depth", "34", config="inference.json", check=False)
    assert result.returncode != 0 and "model.pt does not fit this configuration" in result.stderr


def test_multi_gpu_config_runs_with_torchrun_on_cpu(bundle, cohort, tmp_path):
    runner = (sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517")
    args = ["--datalist", str(cohort), "--ckpt_dir", str(tmp_path / "models"), "--output_dir", str(tmp_path / "runs"),
            "--threshold_file", str(tmp_path / "models" / "threshold.json"), "--epochs", "1", "--batch_size", "2"]
    bundle.run(*args, *bundle.spec.tiny_net, config="train.json+multi_gpu_train.json", runner=runner)
    assert (tmp_path / "models" / "last_checkpoint_epoch=1.pt").is_file()
    assert (tmp_path / "models" / "model.pt").is_file()


def test_verify_net_in_out(bundle):
    # MONAI 1.6.1 needs the net id: without it, it resolves the whole config (a dict) and calls .to() on it.
    # network_def must resolve on its own, without the inference inputs (datalist, cohort, thresholds).
    command = [sys.executable, "-m", "monai.bundle", "verify_net_in_out", "network_def", "--input", "/nonexistent",
               "--meta_file", str(bundle.configs / "metadata.json"), "--config_file", str(bundle.configs / "inference.json"),
               "--bundle_root", str(bundle.root), *bundle.spec.tiny_net]
    result = bundle.call(command)
    assert "data shape of network is verified with no error" in result.stdout + result.stderr


def test_missing_datalist_is_a_clear_error(bundle, tmp_path):
    result = bundle.run("--datalist", str(tmp_path / "nowhere.json"), "--ckpt_dir", str(tmp_path), config="train.json", check=False)
    assert result.returncode != 0 and "nowhere.json" in result.stderr
