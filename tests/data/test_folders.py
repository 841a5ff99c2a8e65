"""folder_items and common_root: one input per image, DICOM slices grouped by series, nothing stacked that is
not one volume; inference_items on datalists without labels."""

from __future__ import annotations

import os
import shutil

import nibabel as nib
import numpy as np
import pytest
from pydicom.data import get_testdata_file

from medad_monai.bundle import inference_items
from medad_monai.data import common_root, folder_items


def _dicom(*parts: str) -> str:
    base = os.path.dirname(get_testdata_file("CT_small.dcm", download=False))
    return os.path.join(base, *parts)


@pytest.fixture
def mixed_folder(tmp_path):
    """NIfTI files of one name in two folders, radiographs, a CT series folder, a flat folder of three MR
    series, a multi-frame cine, a non-image, a hidden file and a DICOMDIR."""
    root = tmp_path / "inputs"
    for sub in ("a", "b"):
        (root / sub).mkdir(parents=True)
        nib.save(nib.Nifti1Image(np.random.rand(8, 8).astype(np.float32), np.eye(4)), root / sub / "scan.nii.gz")
    (root / "xray").mkdir()
    for name in ("CR1/6154", "CR2/6247", "CR3/6278"):
        shutil.copy(_dicom("dicomdirtests", "77654033", *name.split("/")), root / "xray" / f"{name[:3]}.dcm")
    shutil.copytree(_dicom("dicomdirtests", "98892001", "CT5N"), root / "ct_series")
    shutil.copytree(_dicom("dicomdirtests", "98892003", "MR2"), root / "mr_flat")  # 3 series in one folder
    shutil.copy(_dicom("examples_ybr_color.dcm"), root / "cine.dcm")
    (root / "notes.txt").write_text("not an image")
    (root / ".DS_Store").write_bytes(b"")
    shutil.copy(_dicom("dicomdirtests", "DICOMDIR"), root / "DICOMDIR")
    return root


def test_folder_items_one_per_image_and_per_series(mixed_folder):
    items = [item["image"] for item in folder_items(mixed_folder)]
    relative = [
        os.path.relpath(i, mixed_folder) if isinstance(i, str) else [os.path.relpath(p, mixed_folder) for p in i]
        for i in items
    ]
    singles = sorted(r for r in relative if isinstance(r, str))
    assert singles == sorted([
        "a/scan.nii.gz", "b/scan.nii.gz", "cine.dcm", "ct_series", "mr_flat/15970", "notes.txt",
        "xray/CR1.dcm", "xray/CR2.dcm", "xray/CR3.dcm",
    ])
    series = sorted(sorted(r) for r in relative if isinstance(r, list))  # each in InstanceNumber order
    assert series == [[f"mr_flat/{n}" for n in (4950, 4981, 5011)], [f"mr_flat/{n}" for n in (6273, 6605, 6935)]]
    assert common_root(folder_items(mixed_folder)) == str(mixed_folder)


def test_folder_items_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        folder_items(tmp_path / "nowhere")
    (tmp_path / ".hidden").write_text("")
    with pytest.raises(FileNotFoundError, match="holds no file"):
        folder_items(tmp_path)


def test_inference_items_from_a_datalist_without_labels(tmp_path):
    nib.save(nib.Nifti1Image(np.random.rand(8, 8).astype(np.float32), np.eye(4)), tmp_path / "x.nii.gz")
    (tmp_path / "list.json").write_text('{"test": [{"image": "x.nii.gz"}, {"image": "gone.nii.gz"}], "empty": []}')
    # a missing file is an input that fails on its own (listed in failures.csv), not a reason to stop the run
    expected = [{"image": str(tmp_path / name)} for name in ("x.nii.gz", "gone.nii.gz")]
    assert inference_items(tmp_path / "list.json") == expected
    with pytest.raises(ValueError, match="'empty' of datalist .* has no items"):
        inference_items(tmp_path / "list.json", "empty")
    assert inference_items(tmp_path / "x.nii.gz") == [{"image": str(tmp_path / "x.nii.gz")}]
