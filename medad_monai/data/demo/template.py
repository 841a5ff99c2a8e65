"""The MNI ICBM152 2009 template that every demo subject is made from, and the cohort grid.

The template is read from the files the ``nilearn`` wheel ships (nothing is downloaded); see
``docs/demo_cohort.md`` for the model built on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import nibabel as nib
import numpy as np

__all__ = ["BRAIN_THRESHOLD", "DEMO_MODALITIES", "DemoTemplate", "cohort_grid", "load_demo_template"]

DEMO_MODALITIES = ("brain_mri", "head_ct")
#: The brain mask (brain and CSF) is the T1 above this, the threshold of nilearn's load_mni152_brain_mask.
BRAIN_THRESHOLD = 0.2
# grid margin around the template's brain box: deformation, plus skull and scalp for CT
_MARGIN_MM = {"brain_mri": 12.0, "head_ct": 24.0}


@dataclass(frozen=True)
class DemoTemplate:
    """The MNI ICBM152 2009 template on its 1 mm grid.

    Attributes:
        t1: T1 intensities scaled to [0, 1], shape (197, 233, 189), float32.
        grey: grey-matter probability, same shape.
        white: white-matter probability, same shape.
        tissue: ``grey + white``, same shape.
        affine: voxel to world (RAS mm) of the template, (4, 4).
        brain_lo_mm: lower corner (RAS mm) of the brain mask's bounding box, (3,).
        brain_hi_mm: upper corner (RAS mm) of the brain mask's bounding box, (3,).
        fov_lo_mm: lower corner (RAS mm) of the template's field of view, (3,).
    """

    t1: np.ndarray
    grey: np.ndarray
    white: np.ndarray
    tissue: np.ndarray
    affine: np.ndarray
    brain_lo_mm: np.ndarray
    brain_hi_mm: np.ndarray
    fov_lo_mm: np.ndarray


@lru_cache(maxsize=1)
def load_demo_template() -> DemoTemplate:
    """Load the MNI152 T1 and grey/white-matter maps from the ``nilearn`` wheel (no download)."""
    # nilearn is imported here only: importing it takes seconds and only the generator needs it
    from nilearn import datasets

    t1_img = datasets.load_mni152_template(resolution=1)
    t1, grey, white = (
        np.asarray(img.dataobj, dtype=np.float32)
        for img in (
            t1_img,
            datasets.load_mni152_gm_template(resolution=1),
            datasets.load_mni152_wm_template(resolution=1),
        )
    )
    affine = np.asarray(t1_img.affine, dtype=np.float64)
    corners = np.argwhere(t1 > BRAIN_THRESHOLD)
    return DemoTemplate(
        t1=t1,
        grey=grey,
        white=white,
        tissue=grey + white,
        affine=affine,
        brain_lo_mm=nib.affines.apply_affine(affine, corners.min(0)),
        brain_hi_mm=nib.affines.apply_affine(affine, corners.max(0)),
        fov_lo_mm=nib.affines.apply_affine(affine, np.zeros(3)),
    )


def cohort_grid(template: DemoTemplate, modality: str, voxel_size: float) -> tuple[tuple[int, int, int], np.ndarray]:
    """Shape and affine of the grid of ``modality``'s subjects, in LPS voxel order.

    The grid is the template's brain box plus a margin (room for the deformation, and for the
    skull and scalp of CT); it stops at the bottom of the template's field of view, below which
    the template has no data.

    Args:
        template: from :func:`load_demo_template`.
        modality: one of ``DEMO_MODALITIES``.
        voxel_size: isotropic voxel size in mm.

    Returns:
        ``(shape, affine)``: the grid's (X, Y, Z) size and its voxel-to-world (RAS mm) affine,
        ``diag(-v, -v, v)`` plus the offset of its first voxel.
    """
    if modality not in DEMO_MODALITIES:
        raise ValueError(f"modality must be one of {DEMO_MODALITIES}, got {modality!r}.")
    margin_mm = _MARGIN_MM[modality]
    lo = template.brain_lo_mm - margin_mm
    hi = template.brain_hi_mm + margin_mm
    lo[2] = max(lo[2], template.fov_lo_mm[2])
    shape = tuple(int(n) for n in np.floor((hi - lo) / voxel_size).astype(int) + 1)
    affine = np.diag([-voxel_size, -voxel_size, voxel_size, 1.0])
    affine[:3, 3] = [hi[0], hi[1], lo[2]]
    return shape, affine
