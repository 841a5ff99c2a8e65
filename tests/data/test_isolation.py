"""IsolatedDataset and collate_isolated: an item that fails becomes a named failure record."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import torch
from monai.data import DataLoader

from medad_monai.data import FAILURE_KEY, IsolatedDataset, collate_isolated, failure_reason, item_source
from medad_monai.transforms import modality_preset


def test_failing_items_become_records_and_the_others_load(tmp_path):
    for name in ("a", "c"):
        nib.save(nib.Nifti1Image(np.random.rand(8, 8).astype(np.float32) + 0.1, np.eye(4)), tmp_path / f"{name}.nii.gz")
    (tmp_path / "b.nii.gz").write_bytes(b"broken")
    data = [{"image": str(tmp_path / f"{n}.nii.gz")} for n in "abc"] + [{"image": [str(tmp_path / "x.dcm"), "y.dcm"]}]
    dataset = IsolatedDataset(data, modality_preset("mri", spatial_size=None))
    assert dataset[0]["image"].shape == (3, 8, 8)
    record = dataset[1][FAILURE_KEY][0]
    assert record["image"].endswith("b.nii.gz") and record["reason"].startswith("ValueError: ReadImaged: cannot read")
    assert dataset[3][FAILURE_KEY][0]["image"].endswith("x.dcm (+1 files)")
    batches = list(DataLoader(dataset, batch_size=2, collate_fn=collate_isolated))
    assert batches[0]["image"].shape == (1, 3, 8, 8) and len(batches[0][FAILURE_KEY]) == 1
    assert batches[1]["image"].shape == (1, 3, 8, 8) and len(batches[1][FAILURE_KEY]) == 1
    only_failures = collate_isolated([dataset[1]])
    assert set(only_failures) == {FAILURE_KEY}


def test_failure_reason_skips_monai_wrappers():
    try:
        try:
            raise ValueError("scan.dcm is not an image")
        except ValueError as err:
            raise RuntimeError("applying transform <ReadImaged>") from err
    except RuntimeError as wrapped:
        assert failure_reason(wrapped) == "ValueError: scan.dcm is not an image"
    assert item_source({"image": torch.zeros(1)}).startswith("tensor")
