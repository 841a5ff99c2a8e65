"""Fixtures shared across the test packages."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

AFFINE = np.array([[0.0, -1.5, 0.0, 10.0], [2.0, 0.0, 0.0, -5.0], [0.0, 0.0, 3.0, 7.0], [0.0, 0.0, 0.0, 1.0]])


@pytest.fixture
def volume_files(tmp_path):
    """A (20, 24, 10) NIfTI volume with content in slices 2..7 of axis 2, its mask, and the arrays."""
    rng = np.random.default_rng(0)
    volume = np.zeros((20, 24, 10), dtype=np.float32)
    volume[5:15, 6:18, 2:8] = 1.0 + rng.random((10, 12, 6), dtype=np.float32)
    mask = (volume > 1.5).astype(np.uint8)
    nib.save(nib.Nifti1Image(volume, AFFINE), tmp_path / "vol.nii.gz")
    nib.save(nib.Nifti1Image(mask, AFFINE), tmp_path / "mask.nii.gz")
    return str(tmp_path / "vol.nii.gz"), str(tmp_path / "mask.nii.gz"), volume, mask



@pytest.fixture
def volume_affine() -> np.ndarray:
    """The affine the ``volume_files`` NIfTI files are written with."""
    return AFFINE
