"""Smooth random fields and distance maps shared by the demo cohort's anatomy and lesion models."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from scipy.interpolate import CubicSpline

__all__ = ["depth_mm", "smooth_field"]


def smooth_field(rng: np.random.Generator, shape: tuple[int, ...], nodes: tuple[int, ...]) -> np.ndarray:
    """Smooth random field of ``shape``, float32, of about unit standard deviation.

    Standard normal values on a ``nodes`` lattice spanning the array, interpolated by natural
    cubic splines along each axis in turn (separable, so cheap).

    Args:
        rng: draws the lattice values (``prod(nodes)`` standard normals).
        shape: output shape.
        nodes: lattice size along each axis, at least 2.
    """
    field = rng.standard_normal(nodes)
    for axis, (size, count) in enumerate(zip(shape, nodes)):
        weights = CubicSpline(np.arange(count), np.eye(count), bc_type="natural")(np.linspace(0, count - 1, size))
        field = np.moveaxis(np.tensordot(weights, field, axes=(1, axis)), 0, axis)
    return field.astype(np.float32)


def depth_mm(mask: np.ndarray, voxel_size: float) -> np.ndarray:
    """Distance (mm) from each voxel of ``mask`` to the nearest voxel outside it or to the grid border.

    Args:
        mask: boolean (X, Y, Z).
        voxel_size: isotropic voxel size in mm.

    Returns:
        float32 (X, Y, Z), zero outside ``mask``.
    """
    padded = np.pad(mask, 1, constant_values=False)
    return ndi.distance_transform_edt(padded, sampling=voxel_size)[1:-1, 1:-1, 1:-1].astype(np.float32)
