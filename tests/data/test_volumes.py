"""Slices of 3D volumes, on NIfTI volumes written here and on pydicom's real series folder and cine."""

from __future__ import annotations

import os

import nibabel as nib
import numpy as np
import pytest
from monai.data import DataLoader
from pydicom.data import get_testdata_file

from medad_monai.data.volumes import VolumeSliceDataset, extract_slice
from medad_monai.transforms import ReadImaged, modality_preset


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_extract_slice_matches_numpy_and_world_position(volume_affine, volume_files, axis):
    path, _, volume, _ = volume_files
    vol = ReadImaged("image")({"image": path})["image"]
    index = 3
    piece = extract_slice(vol, axis, index)
    np.testing.assert_array_equal(piece[0].numpy(), np.take(volume, index, axis=axis))
    assert piece.meta["slice_index"] == index and piece.meta["slice_axis"] == axis
    assert piece.meta["filename_or_obj"] == path
    # voxel (i, j) of the slice sits where the volume's voxel with `index` on `axis` sits
    ij = [4, 5]
    voxel = ij[:axis] + [index] + ij[axis:]
    slice_voxel = ij[:axis] + [0] + ij[axis:]
    np.testing.assert_allclose(
        (piece.affine.numpy() @ np.array([*slice_voxel, 1.0]))[:3], (volume_affine @ np.array([*voxel, 1.0]))[:3]
    )
    with pytest.raises(ValueError, match="out of range"):
        extract_slice(vol, axis, vol.shape[axis + 1])


def test_dataset_all_and_foreground_slices_with_masks(volume_files):
    path, mask_path, volume, mask = volume_files
    data = [{"image": path, "mask": mask_path, "label": 1}]
    every = VolumeSliceDataset(data, axis=2)
    assert len(every) == 10
    foreground = VolumeSliceDataset(data, axis=2, foreground_threshold=0.5)
    assert [s for _, s in foreground.index] == list(range(2, 8))
    for n, k in enumerate(range(2, 8)):
        item = foreground[n]
        np.testing.assert_array_equal(item["image"][0].numpy(), volume[:, :, k])
        np.testing.assert_array_equal(item["mask"][0].numpy(), mask[:, :, k])
        assert item["image"].meta["slice_index"] == k and item["image"].meta["filename_or_obj"] == path
        assert item["label"] == 1
    coronal = VolumeSliceDataset(data, axis=1, foreground_threshold=0.5)
    assert [s for _, s in coronal.index] == list(range(6, 18))


def test_dataset_with_preset_batches(volume_files):
    path, mask_path, _, _ = volume_files
    preset = modality_preset("mri", spatial_size=(32, 32), load=False)
    dataset = VolumeSliceDataset([{"image": path, "mask": mask_path}], foreground_threshold=0.5, transform=preset)
    batch = next(iter(DataLoader(dataset, batch_size=4)))
    assert batch["image"].shape == (4, 3, 32, 32) and batch["mask"].shape == (4, 1, 32, 32)
    assert batch["image"].meta["slice_index"].tolist() == [2, 3, 4, 5]


def test_dataset_rejects_bad_volumes(tmp_path, volume_files):
    nib.save(nib.Nifti1Image(np.ones((8, 8), np.float32), np.eye(4)), tmp_path / "flat.nii.gz")
    with pytest.raises(ValueError, match="flat.nii.gz.*expected a \\(C, D0, D1, D2\\) volume"):
        VolumeSliceDataset([{"image": str(tmp_path / "flat.nii.gz")}])
    path = volume_files[0]
    with pytest.raises(ValueError, match="vol.nii.gz: no slice has a voxel > 5.0"):
        VolumeSliceDataset([{"image": path}], foreground_threshold=5.0)


def test_dicom_series_and_cine_slices():
    base = os.path.join(os.path.dirname(get_testdata_file("CT_small.dcm", download=False)), "dicomdirtests")
    series = VolumeSliceDataset([{"image": os.path.join(base, "98892001", "CT5N")}])
    assert len(series) == 5 and series[4]["image"].shape == (1, 16, 16)
    cine = get_testdata_file("examples_ybr_color.dcm", download=False)
    preset = modality_preset("ultrasound", spatial_size=(64, 64), load=False)
    frames = VolumeSliceDataset([{"image": cine}], transform=preset)
    assert len(frames) == 30
    frame = frames[12]
    assert frame["image"].shape == (3, 64, 64) and frame["image"].meta["slice_index"] == 12
