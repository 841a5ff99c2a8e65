"""End-to-end runs of every bundle through `python -m monai.bundle` on a tiny demo cohort.

A small network (per bundle, see ``conftest.BUNDLES``) keeps each run to seconds; the configs,
handlers and files are the real ones. Inference also runs on folders of awkward real inputs (pydicom's
test files, colour and broken files), and training on a damaged resume point.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from PIL import Image
from pydicom.data import get_testdata_file

from medad_monai.data import common_root, load_anomaly_datalist

pytestmark = pytest.mark.slow



def _resume_points(run_dir: Path) -> list[int]:
    files = (run_dir / "models").glob("last_checkpoint_epoch=*.pt")
    return sorted(int(p.name[len("last_checkpoint_epoch="):-3]) for p in files)


def _output(infer_dir: Path, image: str, root: str, suffix: str = "anomaly_map") -> Path:
    """Where inference writes ``image``'s output: its path under the inputs' common folder, kept."""
    relative = Path(os.path.relpath(image, root))
    return infer_dir / relative.parent / f"{relative.name.removesuffix('.nii.gz')}_{suffix}.nii.gz"


def _rows(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def _summary(result) -> list[str]:
    """The stderr lines of a failed run after its last log line: the short summary."""
    lines = result.stderr.strip().splitlines()
    start = max(i for i, line in enumerate(lines) if line.startswith("ERROR: "))
    return lines[start:]


def test_train_writes_best_model_threshold_and_resumable_checkpoint(bundle, trained):
    out, _ = trained
    best = torch.load(out / "models" / "model.pt", weights_only=True)
    assert set(best) == {"provenance", "model", "threshold"} and bundle.spec.model_key in best["model"]
    assert best["provenance"]["modality"] == "mri" and best["provenance"]["image_size"] == [64, 64]
    assert best["provenance"]["encoder_weights"] == "random" and len(best["provenance"]["datalist_sha256"]) == 64
    threshold = json.loads((out / "models" / "threshold.json").read_text())
    assert {"threshold", "pixel_threshold", "method"} <= set(threshold)
    assert threshold["threshold"] == pytest.approx(best["threshold"]["threshold"])
    assert _resume_points(out) == [1, 2]
    resume_point = torch.load(out / "models" / "last_checkpoint_epoch=2.pt", weights_only=True)
    assert resume_point["provenance"] == best["provenance"]
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
    assert _resume_points(out) == [2, 3]  # older resume points are pruned (they piled up, 262 MB each)
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
    root = common_root(items)
    for item in items:
        source = nib.load(item["image"])
        amap = nib.load(_output(infer_dir, item["image"], root))
        mask = nib.load(_output(infer_dir, item["image"], root, "anomaly_mask"))
        assert amap.shape[:2] == source.shape[:2] and mask.shape[:2] == source.shape[:2]
        assert (amap.affine == pytest.approx(source.affine)) and set(mask.get_fdata().ravel()) <= {0.0, 1.0}
    scores = _rows(infer_dir / "scores.csv")
    assert [r["image"] for r in scores] == [os.path.relpath(item["image"], root) for item in items]
    assert all(r["anomalous"] in ("0", "1") for r in scores) and _rows(infer_dir / "failures.csv") == []


def test_serving_and_label_configs_score_an_image_as_inference_does(bundle, trained, cohort, inference_args, tmp_path):
    """``serving.run_bundle`` (MONAI Deploy) and the MONAI Label copy (inference.json + label.json) give the
    bundle's own inference score and mask for an image."""
    from medad_monai.label import make_label_bundles
    from medad_monai.serving import run_bundle

    out, _ = trained
    item = load_anomaly_datalist(cohort, "test")[-1]
    folder = tmp_path / "one"
    folder.mkdir()
    image = Path(shutil.copy(item["image"], folder))
    infer_dir = tmp_path / "inference"
    bundle.run(*inference_args(out, folder, infer_dir), *bundle.spec.tiny_net, config="inference.json")
    expected_score = float(_rows(infer_dir / "scores.csv")[0]["score"])
    expected_mask = nib.load(_output(infer_dir, str(image), folder, "anomaly_mask")).get_fdata()
    # a bundle folder holding the trained run's model and thresholds
    root = tmp_path / "bundle"
    shutil.copytree(bundle.configs, root / "configs")
    shutil.copytree(out / "models", root / "models")
    tiny = dict(zip(bundle.spec.tiny_net[::2], bundle.spec.tiny_net[1::2]))
    overrides = {key.removeprefix("--"): json.loads(value) for key, value in tiny.items()}
    served = run_bundle(root, image, device="cpu", overrides=overrides)
    assert served.score == pytest.approx(expected_score, rel=1e-5, abs=1e-6)
    np.testing.assert_array_equal(np.asarray(served.mask).squeeze(), expected_mask.squeeze())
    label_root = next(iter(make_label_bundles(root, tmp_path / "label").values()))  # the 2D copy
    labelled = run_bundle(label_root, image, device="cpu", overrides=overrides)
    assert labelled.score == pytest.approx(expected_score, rel=1e-5, abs=1e-6)


def test_volume_inference_keeps_volume_geometry(bundle, trained, cohort, inference_args):
    out, _ = trained
    infer_dir = out / "inference_volume"
    args = inference_args(out, cohort, infer_dir) + list(bundle.spec.tiny_net)
    bundle.run(*args, config="inference.json+inference_volume.json")
    volumes = load_anomaly_datalist(cohort, "test_volumes")
    root = common_root(volumes)
    for item in volumes:
        source, amap = nib.load(item["image"]), nib.load(_output(infer_dir, item["image"], root))
        assert amap.shape[:3] == source.shape[:3] and amap.affine == pytest.approx(source.affine)
    assert len(_rows(infer_dir / "scores.csv")) == len(volumes)


def test_checkpoint_from_another_network_is_named(bundle, trained, cohort, inference_args):
    out, _ = trained
    args = inference_args(out, cohort, out / "bad")
    result = bundle.run(*args, "--network_def#encoder_depth", "34", config="inference.json", check=False)
    assert result.returncode != 0 and "model.pt does not fit this configuration" in _summary(result)[0]


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
    result = bundle.run("--datalist", str(tmp_path / "nowhere.json"), "--ckpt_dir", str(tmp_path),
                        "--output_dir", str(tmp_path / "runs"), config="train.json", check=False)
    assert result.returncode != 0
    # a short summary, not MONAI's 100-line config traceback ending in the run expression
    summary = _summary(result)
    assert "Traceback" not in result.stderr and len(summary) <= 4
    assert "nowhere.json' is not a file" in summary[0] and "config entry: 'train#datalist'" in summary[1]
    assert "Traceback" in (tmp_path / "runs" / "train.log").read_text()


def _demo_slice(cohort: Path, index: int) -> str:
    return load_anomaly_datalist(cohort, "test")[index]["image"]


def test_inference_on_a_folder_isolates_bad_inputs_and_keeps_its_structure(bundle, trained, cohort, inference_args,
                                                                             tmp_path):
    out, _ = trained
    folder = tmp_path / "inputs"
    for sub, index in (("a", 0), ("b", -1)):  # one file name in two folders: one map each, not one for both
        (folder / sub).mkdir(parents=True)
        shutil.copy(_demo_slice(cohort, index), folder / sub / "scan.nii.gz")
    (folder / "broken.nii.gz").write_bytes(b"not a nifti file")  # stopped the whole folder before
    shutil.copy(get_testdata_file("CT_small.dcm", download=False), folder / "ct.dcm")  # a CT under the mri preset
    grey = np.asarray(nib.load(_demo_slice(cohort, 1)).get_fdata(), dtype=np.float64)
    grey = (255 * grey / grey.max()).astype(np.uint8).T
    Image.fromarray(np.dstack([grey, grey, grey, np.full_like(grey, 255)]), "RGBA").save(folder / "z_rgba.png")
    infer_dir = tmp_path / "inference"
    args = inference_args(out, folder, infer_dir) + list(bundle.spec.tiny_net)
    result = bundle.run(*args, config="inference.json", check=False)
    assert result.returncode != 0, result.stdout[-2000:]
    summary = _summary(result)
    assert "Traceback" not in result.stderr and len(summary) <= 6
    assert summary[0].startswith("ERROR: InferenceFailed: 2 of 5 inputs failed") and "failures.csv" in summary[0]
    assert [r["image"] for r in _rows(infer_dir / "scores.csv")] == ["a/scan.nii.gz", "b/scan.nii.gz", "z_rgba.png"]
    failures = {r["image"]: r["reason"] for r in _rows(infer_dir / "failures.csv")}
    assert set(failures) == {"broken.nii.gz", "ct.dcm"}
    assert "cannot read 'image' file" in failures["broken.nii.gz"]
    assert "is a DICOM CT image, not one the 'mri' preset reads" in failures["ct.dcm"]
    for name in ("a/scan", "b/scan", "z_rgba"):
        for output in ("anomaly_map", "anomaly_mask"):
            assert (infer_dir / f"{name}_{output}.nii.gz").is_file()
    assert "Traceback" in (infer_dir / "inference.log").read_text()


def test_colour_cine_and_radiograph_dicom_folders_run(bundle, trained, inference_args, tmp_path):
    out, _ = trained
    folder = tmp_path / "inputs"
    (folder / "xray").mkdir(parents=True)
    for name in ("examples_rgb_color.dcm", "examples_palette.dcm", "examples_ybr_color.dcm"):  # RGB, palette, cine
        shutil.copy(get_testdata_file(name, download=False), folder / name)
    radiographs = os.path.join(os.path.dirname(get_testdata_file("CT_small.dcm", download=False)), "dicomdirtests",
                               "77654033")
    for name in ("CR1/6154", "CR2/6247", "CR3/6278"):  # unrelated 2D files of one size: stacked into one volume before
        shutil.copy(os.path.join(radiographs, name), folder / "xray" / name.replace("/", "_"))
    rgb = np.zeros((60, 80, 3), dtype=np.uint8)
    rgb[10:50, 10:70] = np.random.default_rng(0).integers(30, 255, (40, 60, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(folder / "rgb.png")
    infer_dir = tmp_path / "inference"
    args = inference_args(out, folder, infer_dir) + list(bundle.spec.tiny_net)
    # the model was trained on MRI: the ultrasound preset on it needs the explicit override
    bundle.run(*args, "--modality", "ultrasound", "--allow_modality_mismatch", "true", config="inference.json")
    expected = ["examples_palette.dcm", "examples_rgb_color.dcm", "examples_ybr_color.dcm", "rgb.png",
                "xray/CR1_6154", "xray/CR2_6247", "xray/CR3_6278"]
    assert sorted(r["image"] for r in _rows(infer_dir / "scores.csv")) == expected
    assert _rows(infer_dir / "failures.csv") == []
    cine = nib.load(infer_dir / "examples_ybr_color_anomaly_map.nii.gz")
    assert cine.shape[-1] == 30  # the multi-frame file went slice by slice, frame by frame
    for name in expected:
        assert (infer_dir / f"{name.removesuffix('.dcm').removesuffix('.png')}_anomaly_map.nii.gz").is_file()


#: Real ultrasound DICOM files (Modality US) in pydicom's wheel, and what makes each one awkward.
ULTRASOUND_FILES = {
    "examples_rgb_color.dcm": "RGB",
    "examples_palette.dcm": "PALETTE COLOR: palette indices expanded through the file's lookup tables",
    "examples_ybr_color.dcm": "YBR_FULL_422, JPEG baseline, 30 frames: a cine loop",
    "examples_jpeg2k.dcm": "YBR_RCT, JPEG 2000",
    "ExplVR_BigEnd.dcm": "RGB, explicit VR big endian",
}


def test_ultrasound_dicom_files_get_maps_and_scores(bundle, trained, inference_args, tmp_path):
    out, _ = trained
    folder = tmp_path / "ultrasound"
    folder.mkdir()
    for name in ULTRASOUND_FILES:
        shutil.copy(get_testdata_file(name, download=False), folder / name)
    whole = (folder / "examples_rgb_color.dcm").read_bytes()
    (folder / "truncated.dcm").write_bytes(whole[: len(whole) // 2])  # its pixel data cut in half
    infer_dir = tmp_path / "inference"
    args = inference_args(out, folder, infer_dir) + list(bundle.spec.tiny_net)
    # the model was trained on MRI: the ultrasound preset on it needs the explicit override
    overrides = ["--modality", "ultrasound", "--allow_modality_mismatch", "true"]
    result = bundle.run(*args, *overrides, config="inference.json", check=False)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert _summary(result)[0].startswith("ERROR: InferenceFailed: 1 of 6 inputs failed")
    failures = {r["image"]: r["reason"] for r in _rows(infer_dir / "failures.csv")}
    assert list(failures) == ["truncated.dcm"] and "cannot read 'image' file" in failures["truncated.dcm"]
    # the bad file cost the others nothing: each has its map in the preprocessed image's geometry, a mask and a score
    scores = {r["image"]: r for r in _rows(infer_dir / "scores.csv")}
    assert sorted(scores) == sorted(ULTRASOUND_FILES)
    parser = ConfigParser()
    parser.read_config(str(bundle.configs / "inference.json"))
    parser.update({"modality": "ultrasound", "allow_modality_mismatch": True})
    preprocessing = parser.get_parsed_content("preprocessing")
    for name in ULTRASOUND_FILES:
        image = preprocessing({"image": str(folder / name)})["image"]
        amap = nib.load(infer_dir / f"{name.removesuffix('.dcm')}_anomaly_map.nii.gz")
        mask = nib.load(infer_dir / f"{name.removesuffix('.dcm')}_anomaly_mask.nii.gz")
        assert amap.shape == mask.shape == tuple(image.shape[1:]), name
        values = amap.get_fdata()
        assert np.isfinite(values).all() and values.std() > 0, name
        assert np.isfinite(float(scores[name]["score"])) and scores[name]["anomalous"] in ("0", "1"), name
    assert nib.load(infer_dir / "examples_ybr_color_anomaly_map.nii.gz").shape[-1] == 30  # one map per frame


def test_inference_refuses_a_checkpoint_of_another_modality(bundle, trained, cohort, inference_args, tmp_path):
    out, _ = trained
    args = inference_args(out, cohort, tmp_path / "inference") + list(bundle.spec.tiny_net)
    result = bundle.run(*args, "--modality", "ct", config="inference.json", check=False)
    summary = _summary(result)
    assert result.returncode != 0 and len(summary) <= 4 and "Traceback" not in result.stderr
    assert "ProvenanceMismatchError: checkpoint " in summary[0]
    assert "was trained with modality 'mri' (this run: 'ct')" in summary[0]
    assert "--allow_modality_mismatch true" in summary[0]


def test_truncated_model_is_reported_as_corrupt(bundle, trained, cohort, inference_args, tmp_path):
    out, _ = trained
    damaged = tmp_path / "run"
    shutil.copytree(out / "models", damaged / "models")
    model = damaged / "models" / "model.pt"
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 3])
    args = inference_args(damaged, cohort, tmp_path / "inference") + list(bundle.spec.tiny_net)
    result = bundle.run(*args, config="inference.json", check=False)
    summary = _summary(result)
    assert result.returncode != 0 and "model.pt is truncated or corrupt" in summary[0]
    assert "another network" not in summary[0]


def test_torn_resume_point_falls_back_to_the_previous_one(bundle, trained, tmp_path):
    out, common = trained
    run = tmp_path / "run"
    shutil.copytree(out / "models", run / "models")
    points = _resume_points(run)
    newest = run / "models" / f"last_checkpoint_epoch={points[-1]}.pt"
    newest.write_bytes(newest.read_bytes()[:1000])  # what a kill during MONAI's non-atomic save left behind
    args = [a if a != str(out / "models") else str(run / "models") for a in common]
    args = [a if a != str(out / "models" / "threshold.json") else str(run / "models" / "threshold.json") for a in args]
    args = [a if a != str(out / "runs") else str(run / "runs") for a in args]
    result = bundle.run(*args, "--epochs", str(points[-1] + 1))
    log = result.stdout + result.stderr
    assert f"last_checkpoint_epoch={points[-1]}.pt is truncated or corrupt" in log
    assert f"resumed from {run / 'models' / f'last_checkpoint_epoch={points[-2]}.pt'}" in log
    assert _resume_points(run) == [points[-1], points[-1] + 1]
