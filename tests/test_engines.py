"""IsolatingEvaluator with InferenceResultsWriter: one bad input never costs the others their outputs, and
scores are on disk as each item finishes."""

from __future__ import annotations

import csv

import nibabel as nib
import numpy as np
import pytest
import torch
from ignite.engine import Events
from monai.data import DataLoader
from monai.transforms import Compose, Lambdad, SaveImaged

from medad_monai.data import IsolatedDataset, collate_isolated
from medad_monai.engines import IsolatingEvaluator
from medad_monai.handlers import InferenceFailed, InferenceResultsWriter
from medad_monai.inferers import ImageInferer
from medad_monai.scoring import AnomalyImageScore
from medad_monai.transforms import ImageScored, UnpackOutputd, modality_preset


def _refuse(name: str):
    def check(pred):
        if pred.meta["filename_or_obj"].endswith(name):
            raise ValueError(f"{name} cannot be written")
        return pred

    return check


def _evaluator(items, out_dir, threshold=0.5):
    dataset = IsolatedDataset(items, modality_preset("mri", spatial_size=None))
    post = Compose([
        UnpackOutputd("pred"),
        ImageScored("pred_network", AnomalyImageScore(kernel_size=2)),
        Lambdad("pred", _refuse("late.nii.gz")),  # fails after the network: post-processing is isolated too
        SaveImaged("pred", output_dir=out_dir, output_postfix="anomaly_map", separate_folder=False, print_log=False,
                   resample=False, data_root_dir=str(out_dir.parent / "in"), savepath_in_metadict=True),
    ])
    writer = InferenceResultsWriter(out_dir, data_root=out_dir.parent / "in", threshold=threshold)
    evaluator = IsolatingEvaluator(
        device=torch.device("cpu"),
        val_data_loader=DataLoader(dataset, batch_size=1, collate_fn=collate_isolated),
        network=torch.nn.Conv2d(3, 1, 1),
        inferer=ImageInferer((16, 16), network_map_key="pred_network"),
        postprocessing=post,
        val_handlers=[writer],
    )
    return evaluator


def test_failures_are_listed_and_the_others_scored_as_they_finish(tmp_path):
    src = tmp_path / "in"
    for name in ("a/scan", "b/scan", "late", "z"):
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(np.random.rand(12, 10).astype(np.float32) + 0.1, np.eye(4)), src / f"{name}.nii.gz")
    (src / "broken.nii.gz").write_bytes(b"not a nifti")
    names = ["a/scan", "broken", "b/scan", "late", "z"]
    evaluator = _evaluator([{"image": str(src / f"{n}.nii.gz")} for n in names], tmp_path / "out")
    rows_seen = []

    @evaluator.on(Events.ITERATION_COMPLETED)
    def count_rows(engine):  # what a crash at this moment would leave on disk
        with open(tmp_path / "out" / "scores.csv") as f:
            rows_seen.append(len(f.readlines()) - 1)

    with pytest.raises(InferenceFailed, match="2 of 5 inputs failed .*broken.nii.gz.*failures.csv.*other 3 inputs"):
        evaluator.run()
    assert rows_seen == [1, 1, 2, 2, 3]
    with open(tmp_path / "out" / "scores.csv") as f:
        scores = list(csv.DictReader(f))
    assert [r["image"] for r in scores] == ["a/scan.nii.gz", "b/scan.nii.gz", "z.nii.gz"]
    assert [r["anomaly_map"] for r in scores] == ["a/scan_anomaly_map.nii.gz", "b/scan_anomaly_map.nii.gz",
                                                 "z_anomaly_map.nii.gz"]
    assert all(r["anomalous"] in ("0", "1") for r in scores)
    with open(tmp_path / "out" / "failures.csv") as f:
        failures = list(csv.DictReader(f))
    assert [r["image"] for r in failures] == ["broken.nii.gz", "late.nii.gz"]
    assert "cannot read 'image' file" in failures[0]["reason"]
    assert "late.nii.gz cannot be written" in failures[1]["reason"]
    assert (tmp_path / "out" / "a" / "scan_anomaly_map.nii.gz").is_file()
    assert (tmp_path / "out" / "b" / "scan_anomaly_map.nii.gz").is_file()


def test_missing_threshold_stops_before_any_item(tmp_path):
    nib.save(nib.Nifti1Image(np.random.rand(12, 10).astype(np.float32), np.eye(4)), tmp_path / "x.nii.gz")
    items = [{"image": str(tmp_path / "x.nii.gz")}]
    evaluator = _evaluator(items, tmp_path / "out", threshold=str(tmp_path / "t.json"))
    with pytest.raises(FileNotFoundError, match="t.json"):
        evaluator.run()
    assert not (tmp_path / "out" / "scores.csv").exists()
