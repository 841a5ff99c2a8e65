"""The MNI ICBM152 2009 template that every demo subject is made from, and the cohort grid.

The template is read from the files the ``nilearn`` wheel ships (nothing is downloaded); see
``docs/demo_cohort.md`` for the model built on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

__all__ = [
    "BRAIN_THRESHOLD",
    "DEMO_MODALITIES",
    "DemoTemplate",
    "TemplateLandmarks",
    "cohort_grid",
    "load_demo_template",
    "load_template_landmarks",
]

DEMO_MODALITIES = ("brain_mri", "head_ct")
#: The brain mask (brain and CSF) is the T1 above this, the threshold of nilearn's load_mni152_brain_mask.
BRAIN_THRESHOLD = 0.2
# grid margin around the template's brain box: deformation, plus skull and scalp for CT
_MARGIN_MM = {"brain_mri": 12.0, "head_ct": 24.0}
# the box (RAS mm) searched for the lateral ventricles, and the CSF probability that marks them
_VENTRICLE_BOX_MM = ((-40.0, -70.0, -8.0), (40.0, 40.0, 35.0))
_VENTRICLE_CSF = 0.6
# the pineal gland sits behind the third ventricle, between the posterior thalami: our reading of
# the template (the quadrigeminal cistern's CSF starts just behind it)
_PINEAL_MM = (0.0, -27.0, 4.0)


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
    # C order: trilinear sampling along the grid's last axis then reads neighbouring memory (2x faster)
    t1, grey, white = (
        np.ascontiguousarray(np.asarray(img.dataobj, dtype=np.float32))
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


@dataclass(frozen=True)
class TemplateLandmarks:
    """Where the template's normal variants and ventricular lesions go (RAS mm, template space).

    Attributes:
        ventricles: boolean lateral-ventricle mask of a box of the template grid.
        ventricles_offset: template voxel index of the box's first voxel, (3,).
        frontal_horns_mm: tips of the frontal horns (most anterior 8 % of each ventricle), (2, 3).
        atria_mm: posterior ends (atria / occipital horns, most posterior 10 %), (2, 3).
        pineal_mm: the pineal gland, (3,).
    """

    ventricles: np.ndarray
    ventricles_offset: np.ndarray
    frontal_horns_mm: np.ndarray
    atria_mm: np.ndarray
    pineal_mm: np.ndarray


@lru_cache(maxsize=1)
def load_template_landmarks() -> TemplateLandmarks:
    """Find the lateral ventricles of the template and the landmarks of :class:`TemplateLandmarks`.

    The lateral ventricles are the two largest connected sets of voxels of CSF probability above
    0.6 (one minus grey and white matter, inside the brain) in a box around the brain's centre,
    off the midline (|x| >= 2 mm, so that the septum keeps them apart).
    """
    template = load_demo_template()
    to_index = np.linalg.inv(template.affine)
    lo, hi = (np.round(nib.affines.apply_affine(to_index, corner)).astype(int) for corner in _VENTRICLE_BOX_MM)
    box = tuple(slice(int(a), int(b) + 1) for a, b in zip(np.minimum(lo, hi), np.maximum(lo, hi)))
    offset = np.array([s.start for s in box])
    csf = np.clip(1 - template.grey[box] - template.white[box], 0, 1) * (template.t1[box] > BRAIN_THRESHOLD)
    world = nib.affines.apply_affine(template.affine, np.argwhere(np.ones(csf.shape, bool)) + offset)
    x_mm = world[:, 0].reshape(csf.shape)
    components, _ = ndi.label((csf > _VENTRICLE_CSF) & (np.abs(x_mm) >= 2.0))
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    largest = np.argsort(sizes)[::-1][:2]
    ventricles = np.isin(components, largest)
    horns, atria = [], []
    for label in sorted(largest, key=lambda c: -world[components.ravel() == c, 0].mean()):  # right (x > 0) first
        points = world[components.ravel() == label]
        horns.append(points[points[:, 1] >= np.percentile(points[:, 1], 92)].mean(0))
        atria.append(points[points[:, 1] <= np.percentile(points[:, 1], 10)].mean(0))
    return TemplateLandmarks(
        ventricles=ventricles,
        ventricles_offset=offset,
        frontal_horns_mm=np.array(horns),
        atria_mm=np.array(atria),
        pineal_mm=np.array(_PINEAL_MM),
    )
