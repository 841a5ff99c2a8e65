"""End-to-end runs of the sp_mamba bundle through `python -m monai.bundle` on a tiny demo cohort.

A small network (ResNet18 encoder, one SPSS block per stage) keeps each run to seconds; the
configs, handlers and files are the real ones.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import pytest
import torch

from medad_monai.data import generate_demo_cohort, load_anomaly_datalist

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "bundles" / "sp_mamba" / "configs"
TINY_NET = ["--network_def#encoder_depth", "18", "--network_def#decoder_depths", "[1,1,1,1]"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def bundle(*args: str, config: str = "train.json", check: bool = True, runner: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    files = [str(CONFIGS / c) for c in config.split("+")]
    config_arg = files[0] if len(files) == 1 else json.dumps(files)
    command = list(runner or (sys.executable,)) + ["-m", "monai.bundle", "run", "--config_file", config_arg, *args]
    result = subprocess.run(command, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=900)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
    return result


def inference_args(run_dir: Path, cohort: Path, output_dir: Path) -> list[str]:
    """inference.json overrides: the tiny cohort's test split, the trained run's model and thresholds."""
    return ["--input", str(cohort), "--ckpt_path", str(run_dir / "models" / "model.pt"),
            "--threshold_file", str(run_dir / "models" / "threshold.json"), "--output_dir", str(output_dir)]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cohort")
    sizes = dict(num_train=8, num_val_normal=4, num_val_abnormal=4, num_test_normal=4, num_test_abnormal=4)
    return generate_demo_cohort(root, "brain_mri", seed=0, **sizes)


@pytest.fixture(scope="module")
def trained(cohort, tmp_path_factory) -> tuple[Path, list[str]]:
    out = tmp_path_factory.mktemp("run")
    paths = ["--datalist", str(cohort), "--ckpt_dir", str(out / "models"), "--output_dir", str(out / "runs"),
             "--threshold_file", str(out / "models" / "threshold.json")]
    common = paths + TINY_NET + ["--batch_size", "4"]
    bundle(*common, "--epochs", "2")
    return out, common


def test_train_writes_best_model_threshold_and_resumable_checkpoint(trained):
    out, _ = trained
    best = torch.load(out / "models" / "model.pt", weights_only=True)
    assert set(best) == {"model", "threshold"} and "prototypes.prototypes" in best["model"]
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


def test_training_resumes_without_repeating_finished_epochs(trained):
    out, common = trained
    result = bundle(*common, "--epochs", "3")
    assert "resumed from" in result.stdout + result.stderr
    assert (out / "models" / "last_checkpoint_epoch=3.pt").is_file()
    with open(out / "runs" / "validation_metrics.csv") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [1, 2, 3]


def test_evaluate_writes_report_and_panels(trained, cohort):
    out, common = trained
    eval_dir = out / "eval"
    bundle(*common, "--eval_dir", str(eval_dir), config="train.json+evaluate.json")
    report = json.loads((eval_dir / "evaluation_report.json").read_text())
    metrics = report["metrics"]
    for key in ("image_auroc", "image_ap", "image_f1_max", "pixel_auroc", "aupro"):
        assert 0.0 <= metrics[key] <= 1.0
    assert (eval_dir / "evaluation_report.md").is_file() and (eval_dir / "roc_curve.png").is_file()
    labels = [item["label"] for item in load_anomaly_datalist(cohort, "test")]
    expected = min(8, labels.count(0)) + min(8, labels.count(1))  # num_report_images of each class
    assert len(list((eval_dir / "panels").glob("*.png"))) == expected


def test_inference_writes_maps_in_input_geometry_and_scores(trained, cohort):
    out, _ = trained
    infer_dir = out / "inference"
    args = inference_args(out, cohort, infer_dir) + TINY_NET
    bundle(*args, config="inference.json")
    items = load_anomaly_datalist(cohort, "test")
    for item in items:
        stem = Path(item["image"]).name.removesuffix(".nii.gz")
        source = nib.load(item["image"])
        amap, mask = nib.load(infer_dir / f"{stem}_anomaly_map.nii.gz"), nib.load(infer_dir / f"{stem}_anomaly_mask.nii.gz")
        assert amap.shape[:2] == source.shape[:2] and mask.shape[:2] == source.shape[:2]
        assert (amap.affine == pytest.approx(source.affine)) and set(mask.get_fdata().ravel()) <= {0.0, 1.0}
    with open(infer_dir / "scores.csv") as f:
        assert len(list(csv.reader(f))) == len(items)


def test_volume_inference_keeps_volume_geometry(trained, cohort):
    out, _ = trained
    infer_dir = out / "inference_volume"
    args = inference_args(out, cohort, infer_dir) + TINY_NET
    bundle(*args, config="inference.json+inference_volume.json")
    volumes = load_anomaly_datalist(cohort, "test_volumes")
    for item in volumes:
        stem = Path(item["image"]).name.removesuffix(".nii.gz")
        source, amap = nib.load(item["image"]), nib.load(infer_dir / f"{stem}_anomaly_map.nii.gz")
        assert amap.shape[:3] == source.shape[:3] and amap.affine == pytest.approx(source.affine)


def test_checkpoint_from_another_network_is_named(trained, cohort):
    out, _ = trained
    args = inference_args(out, cohort, out / "bad")
    result = bundle(*args, "--network_def#encoder_depth", "34", config="inference.json", check=False)
    assert result.returncode != 0 and "model.pt does not fit this configuration" in result.stderr


def test_multi_gpu_config_runs_with_torchrun_on_cpu(cohort, tmp_path):
    runner = (sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517")
    files = json.dumps([str(CONFIGS / "train.json"), str(CONFIGS / "multi_gpu_train.json")])
    args = ["-m", "monai.bundle", "run", "--config_file", files, "--datalist", str(cohort),
            "--ckpt_dir", str(tmp_path / "models"), "--output_dir", str(tmp_path / "runs"),
            "--threshold_file", str(tmp_path / "models" / "threshold.json"), "--epochs", "1", "--batch_size", "2"]
    result = subprocess.run(list(runner) + args + TINY_NET, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-6000:]
    assert (tmp_path / "models" / "last_checkpoint_epoch=1.pt").is_file()
    assert (tmp_path / "models" / "model.pt").is_file()


def test_verify_net_in_out():
    command = [sys.executable, "-m", "monai.bundle", "verify_net_in_out", "network_def",
               "--meta_file", str(CONFIGS / "metadata.json"), "--config_file", str(CONFIGS / "inference.json"),
               "--bundle_root", str(ROOT / "bundles" / "sp_mamba")] + TINY_NET
    result = subprocess.run(command, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "data shape of network is verified with no error" in result.stdout + result.stderr


def test_missing_datalist_is_a_clear_error(tmp_path):
    result = bundle("--datalist", str(tmp_path / "nowhere.json"), "--ckpt_dir", str(tmp_path), config="train.json", check=False)
    assert result.returncode != 0 and "nowhere.json" in result.stderr
