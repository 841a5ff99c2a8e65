"""Embedded demo cohort: synthetic brain MRI and head CT subjects with lesion masks.

Every subject is the MNI ICBM152 2009a nonlinear symmetric template that ships inside the
``nilearn`` wheel (T1 image and grey/white-matter probability maps, read with
``nilearn.datasets.load_mni152_*`` at their native 1 mm, which reads the wheel's files and
downloads nothing), resampled onto a common grid of ``voxel_size`` mm (2 mm by default) through
a random per-subject deformation. Each subject draws from its own ``numpy`` generator, seeded by
``(seed, modality, split, label, subject index)``: a cohort is a pure function of its
parameters, and a subject does not change when the cohort's size does.

Subjects
    - Anatomy: a random affine (rotation up to 5/5/8 degrees about the left-right /
      anterior-posterior / superior-inferior axes, per-axis scale 0.94-1.06, shift up to 3 mm)
      composed with a smooth elastic displacement (natural cubic splines through random nodes
      every ~32 mm, 2 mm standard deviation). Brain mask (brain and CSF): the warped T1 above
      0.2 (the threshold of ``nilearn.datasets.load_mni152_brain_mask``), holes in each axial
      plane filled.
    - Brain MRI, integer arbitrary units (white matter ~860 before scaling): the warped T1, an
      in-plane blur (sigma 0.5 voxel), a multiplicative bias field (``exp`` of a smooth field of
      standard deviation 0.05-0.15), a global scale in [0.75, 1.3] and Rician noise of standard
      deviation 1-3 % of the scaled 1000-unit reference; then skull-stripped (zero outside the
      brain mask), as brain-MRI anomaly benchmarks built on BraTS (e.g. BMAD) are.
    - Head CT, integer Hounsfield units: grey matter 40, white matter 25 and CSF 5 HU mixed by
      the warped probability maps inside the brain mask; around it a skull 5-7 mm thick (varying
      smoothly by up to ~1 mm) with 1000 HU tables and a 700 HU diploe, 3-6 mm of 30 HU scalp
      and air at -1000 HU; then the in-plane blur and Gaussian noise of 3-6 HU.

Lesions: every abnormal subject has a primary lesion and, with probability 1/2, one to three
secondary ones, all inside its brain mask and clear of each other. Blobs are randomly oriented
ellipsoids (longest axis the diameter, the others 0.7-1 times it) whose radius smooth noise
erodes by up to 25 %. Lesions are painted before the blur and the noise, from a random stream of
their own: the same generator state with and without lesions gives the same subject (anatomy,
bias field, scale, noise) apart from them, so ``image / twin - 1`` is exactly what they changed.
    - MRI (sizes are diameters): primary ``tumour`` 25-50 mm, oedema included, as gliomas of
      BraTS are (probability 0.6) or ``cavity`` 12-30 mm (0.4); secondary ``focus`` 3-8 mm (0.5), ``cavity`` 6-20 mm (0.3) or ``tumour``
      12-30 mm (0.2). Lesions are centred in white matter and cover the grey and white matter
      of their blob (fluid in it is left as it is). A lesion multiplies the tissue it covers by
      ``1 + contrast`` (with 2 % smooth texture), so that its mask is exactly the tissue it
      changes and it differs by its contrast from the tissue it replaced and, at its edge, from
      the tissue around it; ``|contrast|`` is drawn in [0.1, 0.6]: foci are hyperintense,
      cavities hypointense, tumour cores either, inside a hypointense oedema ring of contrast
      between -0.15 and -(0.15 + (|contrast| - 0.1) / 2), 15-25 % of the diameter thick and at
      least 2 voxels (less only where the tumour is too thin to keep a core), so that the blur
      does not wash the ring out (records: ``contrast``, ``oedema_contrast``,
      ``oedema_thickness_mm``). The blur lowers the contrast of lesions a few voxels across
      (by up to a third for the smallest foci).
    - CT: primary intraparenchymal ``haemorrhage`` 10-30 mm (0.6) or ``subdural`` haematoma
      (0.4); secondary haemorrhages 3-15 mm. Haemorrhages are 50-90 HU blobs; a subdural
      haematoma is a 50-80 HU crescent under the inner skull of the upper half of the brain,
      30-60 mm across and 3-10 mm thick in its middle, replacing the brain under it.

Slices and splits
    - Axial planes are kept where the brain mask covers at least ``min_brain_fraction`` (0.75)
      of the subject's largest axial brain area; of those, every ``slice_stride``-th (2) is
      exported. Lesion centres are drawn with every axial plane equally likely, so abnormal
      slices come from the same levels as normal ones.
    - An exported slice is abnormal (label 1) iff its lesion mask covers at least
      ``min_lesion_area_mm2`` (100 mm2, 25 pixels at 2 mm). Abnormal subjects contribute their
      abnormal slices only: their lesion-free slices and those with a smaller, non-zero lesion
      area are dropped, so every normal slice comes from a normal subject and is lesion-free.
      A normal subject exports at most ``max_normal_slices`` (4) of its kept slices, drawn at
      random, so normal slices come from about as many subjects as abnormal ones.
    - ``training`` holds normal subjects; ``validation`` and ``test`` hold normal and abnormal
      subjects of their own, so no subject is in two splits. Each of the five groups (split and
      label) grows by whole subjects until it has its ``num_*`` slices.

Layout under ``root_dir/<modality>/``::

    manifest.json                     parameters, generator version, counts
    datalist.json                     training / validation / test (+ *_volumes) items
    lesions.json                      per-subject lesion parameters
    volumes/<subject>_image.nii.gz    MRI volume, int16 (MRI only)
    dicom/<subject>/CT_<k>.dcm        CT series, one file per axial slice (CT only)
    volumes/<subject>_mask.nii.gz     lesion mask, uint8 (all zero for normal subjects)
    slices/<subject>/<subject>_z<k>_image.nii.gz   2D axial slice, float32 (MRI units / HU)
    slices/<subject>/<subject>_z<k>_mask.nii.gz    2D mask, uint8 (validation and test only)

All arrays are stored in the voxel order MONAI's ``PydicomReader`` and ``ITKReader`` return for
the CT series: axis 0 runs towards the patient's left, axis 1 towards posterior, axis 2 towards
superior (affine ``diag(-v, -v, v)``). A 2D slice is ``volume[:, :, k]`` with the affine of that
plane, so slices of a loaded volume (e.g. through ``SliceInferer``) match the 2D exports.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi
from scipy.interpolate import CubicSpline
from scipy.spatial.transform import Rotation

from medad_monai.data.datalist import write_datalist

__all__ = [
    "DEMO_GENERATOR_VERSION",
    "DEMO_MODALITIES",
    "DemoCohortParameters",
    "DemoSubject",
    "DemoTemplate",
    "draw_lesions",
    "ensure_demo_cohort",
    "generate_demo_cohort",
    "load_demo_template",
    "synthesize_subject",
    "write_ct_series",
]

#: Bump when a change alters the generated files; existing cohorts then no longer match.
DEMO_GENERATOR_VERSION = 4
DEMO_MODALITIES = ("brain_mri", "head_ct")
MANIFEST_NAME = "manifest.json"
DATALIST_NAME = "datalist.json"
LESIONS_NAME = "lesions.json"

_SPLITS = ("training", "validation", "test")
_SPLIT_PREFIX = {"training": "train", "validation": "val", "test": "test"}
# a group that has not reached its slice count after this many subjects beyond the count is stuck
_EXTRA_SUBJECTS = 20
# grid margin around the template's brain box: deformation, plus skull and scalp for CT
_MARGIN_MM = {"brain_mri": 12.0, "head_ct": 24.0}
_MAX_ROTATION_DEG = np.array([5.0, 5.0, 8.0])
_MAX_SCALE = 0.06
_MAX_SHIFT_MM = 3.0
_ELASTIC_NODE_SPACING_MM = 32.0
_ELASTIC_STD_MM = 2.0
_PSF_SIGMA_VOXELS = (0.5, 0.5, 0.0)  # in-plane only, so that no lesion leaks into a neighbouring slice
# a tumour's oedema ring: at least 2 voxels thick (the blur takes half or more off the contrast of
# a 1-voxel ring next to an opposite-signed core) and of contrast at least -0.15 (its blurred edges
# stay near -0.1)
_MIN_OEDEMA_VOXELS = 2
_MIN_OEDEMA_CONTRAST = 0.15
_MRI_REFERENCE = 1000.0
# the brain mask (brain and CSF) is the T1 above this, the threshold of nilearn's load_mni152_brain_mask
_BRAIN_THRESHOLD = 0.2
_CT_TISSUE_HU = {"grey": 40.0, "white": 25.0, "csf": 5.0, "scalp": 30.0, "air": -1000.0}
_CT_RESCALE_INTERCEPT = -1024
_UID_NAMESPACE = "medad-monai demo cohort"


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


@dataclass(frozen=True)
class DemoSubject:
    """One synthetic subject on the cohort grid, arrays of shape (X, Y, Z) in LPS voxel order.

    Attributes:
        image: float32 with integer values, MRI arbitrary units or CT Hounsfield units.
        mask: uint8 lesion mask in {0, 1}.
        lesion_labels: int16, 0 background and ``i + 1`` on the voxels of ``lesions[i]``.
        brain: bool brain mask (brain and CSF).
        affine: voxel to world (RAS mm), (4, 4).
        lesions: one dict per lesion: ``kind``, ``centre_mm`` (RAS) and its size and
            intensity parameters (see the module docstring).
    """

    image: np.ndarray
    mask: np.ndarray
    lesion_labels: np.ndarray
    brain: np.ndarray
    affine: np.ndarray
    lesions: list[dict]


# ---------------------------------------------------------------------------------------------
# template and grid


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
    corners = np.argwhere(t1 > _BRAIN_THRESHOLD)
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


def _cohort_grid(
    template: DemoTemplate, voxel_size: float, margin_mm: float
) -> tuple[tuple[int, int, int], np.ndarray]:
    """Shape and affine of the output grid: the template's brain box plus ``margin_mm``, LPS voxel order.

    The grid stops at the bottom of the template's field of view, below which it has no data.
    """
    lo = template.brain_lo_mm - margin_mm
    hi = template.brain_hi_mm + margin_mm
    lo[2] = max(lo[2], template.fov_lo_mm[2])
    shape = tuple(int(n) for n in np.floor((hi - lo) / voxel_size).astype(int) + 1)
    affine = np.diag([-voxel_size, -voxel_size, voxel_size, 1.0])
    affine[:3, 3] = [hi[0], hi[1], lo[2]]
    return shape, affine


# ---------------------------------------------------------------------------------------------
# random fields and deformation


def _smooth_field(rng: np.random.Generator, shape: tuple[int, ...], nodes: tuple[int, ...]) -> np.ndarray:
    """Smooth random field of ``shape``: standard normal values on a ``nodes`` lattice spanning the
    array, interpolated by natural cubic splines along each axis in turn (separable, so cheap)."""
    field = rng.standard_normal(nodes)
    for axis, (size, count) in enumerate(zip(shape, nodes)):
        weights = CubicSpline(np.arange(count), np.eye(count), bc_type="natural")(np.linspace(0, count - 1, size))
        field = np.moveaxis(np.tensordot(weights, field, axes=(1, axis)), 0, axis)
    return field.astype(np.float32)


def _subject_coordinates(
    rng: np.random.Generator, template: DemoTemplate, shape: tuple[int, int, int], affine: np.ndarray
) -> np.ndarray:
    """Template voxel coordinates, (3, X, Y, Z), that each grid voxel samples for one random subject.

    A subject is the template moved by ``x -> A (x - c) + c + t`` (``A`` rotation times per-axis
    scale, ``c`` the brain-box centre, ``t`` a shift) and an elastic displacement; the grid
    samples the inverse map.
    """
    rotation = Rotation.from_euler("xyz", rng.uniform(-1, 1, 3) * _MAX_ROTATION_DEG, degrees=True).as_matrix()
    forward = rotation @ np.diag(rng.uniform(1 - _MAX_SCALE, 1 + _MAX_SCALE, 3))
    shift = rng.uniform(-_MAX_SHIFT_MM, _MAX_SHIFT_MM, 3)
    centre = (template.brain_lo_mm + template.brain_hi_mm) / 2
    inverse = np.eye(4)
    inverse[:3, :3] = np.linalg.inv(forward)
    inverse[:3, 3] = centre - inverse[:3, :3] @ (centre + shift)
    # grid index -> world -> template world (inverse motion) -> template voxel, as one affine map
    index_to_template = np.linalg.inv(template.affine) @ inverse @ affine
    extent = np.abs(np.diag(affine)[:3]) * shape
    nodes = tuple(int(n) for n in np.maximum(np.ceil(extent / _ELASTIC_NODE_SPACING_MM) + 1, 2))
    i, j, k = (np.arange(n, dtype=np.float32) for n in shape)
    coordinates = np.empty((3, *shape), np.float32)
    for row, (a_i, a_j, a_k, offset) in enumerate(index_to_template[:3].astype(np.float32)):
        coordinates[row] = a_i * i[:, None, None] + a_j * j[None, :, None] + (a_k * k + offset)[None, None, :]
        # the template's voxels are 1 mm, so the displacement is in mm
        coordinates[row] += _ELASTIC_STD_MM * _smooth_field(rng, shape, nodes)
    return coordinates


def _resample(volume: np.ndarray, coordinates: np.ndarray) -> np.ndarray:
    """Trilinear sample of ``volume`` at ``coordinates`` (3, ...), shape (...); zero outside the template."""
    return ndi.map_coordinates(volume, coordinates, order=1, mode="constant", cval=0.0, output=np.float32)


def _in_plane_blur(image: np.ndarray) -> np.ndarray:
    """Point-spread blur within axial planes, (X, Y, Z) -> (X, Y, Z)."""
    return ndi.gaussian_filter(image, _PSF_SIGMA_VOXELS)


def _fill_holes_in_plane(mask: np.ndarray) -> np.ndarray:
    """Fill the holes of each axial plane of ``mask`` (X, Y, Z): dark CSF spaces enclosed by brain in
    a plane (cisterns, which open downwards in 3D) belong inside the skull."""
    in_plane = np.zeros((3, 3, 3), bool)
    in_plane[:, :, 1] = ndi.generate_binary_structure(2, 1)
    return ndi.binary_fill_holes(mask, structure=in_plane)


def _depth_mm(mask: np.ndarray, voxel_size: float) -> np.ndarray:
    """Distance (mm) from each voxel of ``mask`` to the nearest voxel outside it or to the grid border."""
    padded = np.pad(mask, 1, constant_values=False)
    return ndi.distance_transform_edt(padded, sampling=voxel_size)[1:-1, 1:-1, 1:-1].astype(np.float32)


# ---------------------------------------------------------------------------------------------
# lesions


def _irregular_blob(rng: np.random.Generator, diameter_mm: float, voxel_size: float) -> np.ndarray:
    """Boolean (n, n, n) blob centred on the middle voxel, n odd.

    A randomly oriented ellipsoid with longest axis ``diameter_mm`` and the other two 0.7-1 times
    it, whose normalised radius is eroded by 0-25 % by a smooth noise field; the component that
    holds the centre voxel (always part of it) is kept.
    """
    half = int(np.ceil(diameter_mm / 2 / voxel_size))
    size = 2 * half + 1
    semi_axes = diameter_mm / 2 * np.array([1.0, *rng.uniform(0.7, 1.0, 2)])
    rotation = Rotation.from_quat(rng.standard_normal(4)).as_matrix()
    offsets = (np.indices((size,) * 3, dtype=np.float32) - half) * voxel_size
    local = np.tensordot(rotation.T, offsets, axes=1) / semi_axes[:, None, None, None]
    erosion = 0.25 * 0.5 * (1 + np.tanh(_smooth_field(rng, (size,) * 3, (4, 4, 4))))
    blob = np.sqrt((local**2).sum(0)) < 1 - erosion
    blob[half, half, half] = True
    components, _ = ndi.label(blob)
    return components == components[half, half, half]


def _embed(blob: np.ndarray, size: int) -> np.ndarray:
    """Zero-pad a centred cubic ``blob`` to (size, size, size), keeping it centred."""
    pad = (size - blob.shape[0]) // 2
    if pad < 0:
        raise ValueError(f"blob of side {blob.shape[0]} does not fit a box of side {size}.")
    return np.pad(blob, pad)


def _box(centre: np.ndarray, half: int) -> tuple[slice, slice, slice]:
    """Index box of side ``2 * half + 1`` around ``centre``."""
    return tuple(slice(int(c) - half, int(c) + half + 1) for c in centre)


def _pick_centre(
    rng: np.random.Generator, allowed: np.ndarray, half: int, taken: list[tuple[np.ndarray, int]]
) -> np.ndarray:
    """Random voxel of ``allowed`` whose box of half-side ``half`` lies in the grid, clear of the ``taken`` lesions.

    Every axial plane (last axis) holding candidates is equally likely, whatever its number of
    candidates: lesions spread over the brain's height instead of crowding the levels where white
    matter is widest, so abnormal slices come from the same levels as normal ones and a detector
    cannot tell them apart by level alone.

    Raises:
        ValueError: no such voxel, i.e. the lesions do not fit the brain on this grid.
    """
    inside = np.zeros_like(allowed)
    inside[tuple(slice(half, n - half) for n in allowed.shape)] = True
    candidates = np.argwhere(allowed & inside)
    _, level, per_level = np.unique(candidates[:, 2], return_inverse=True, return_counts=True)
    weights = 1.0 / per_level[level]
    tries = min(256, len(candidates))
    order = rng.choice(len(candidates), size=tries, replace=False, p=weights / weights.sum()) if tries else []
    for candidate in candidates[order]:
        if all(np.linalg.norm(candidate - centre) > half + other + 1 for centre, other in taken):
            return candidate
    raise ValueError(
        f"no room for a lesion of half-side {half} voxels clear of {len(taken)} others: "
        "the brain is too small on this grid (reduce voxel_size)."
    )


# (kind, size range in mm, probability): every abnormal subject has one primary lesion and, with
# probability 1/2, one to three secondary ones; sizes are diameters, subdural ones their span
_LESION_TABLE = {
    "brain_mri": {
        "primary": (("tumour", (25.0, 50.0), 0.6), ("cavity", (12.0, 30.0), 0.4)),
        "secondary": (("focus", (3.0, 8.0), 0.5), ("cavity", (6.0, 20.0), 0.3), ("tumour", (12.0, 30.0), 0.2)),
    },
    "head_ct": {
        "primary": (("haemorrhage", (10.0, 30.0), 0.6), ("subdural", (30.0, 60.0), 0.4)),
        "secondary": (("haemorrhage", (3.0, 15.0), 1.0),),
    },
}


def draw_lesions(rng: np.random.Generator, modality: str) -> list[tuple[str, float]]:
    """(kind, size in mm) of the lesions of one random abnormal subject of ``modality``.

    A primary lesion, then with probability 1/2 one to three secondary ones, drawn from the
    kinds and size ranges of the module docstring.
    """
    if modality not in DEMO_MODALITIES:
        raise ValueError(f"modality must be one of {DEMO_MODALITIES}, got {modality!r}.")
    count = 0 if rng.random() < 0.5 else int(rng.integers(1, 4))
    drawn = []
    for role in ["primary"] + ["secondary"] * count:
        table = _LESION_TABLE[modality][role]
        kind, (low, high), _ = table[rng.choice(len(table), p=[p for *_, p in table])]
        drawn.append((kind, float(rng.uniform(low, high))))
    return drawn


def _paint_mri_lesion(
    rng: np.random.Generator, clean: np.ndarray, region: np.ndarray, kind: str, diameter_mm: float, voxel_size: float
) -> dict:
    """Multiply ``region`` of the box view ``clean`` by ``1 + contrast`` (2 % texture); returns the parameters.

    The change is relative to the tissue each voxel replaces, not to one reference intensity: a
    lesion over grey and white matter then differs from both by its contrast, where a uniform
    value would match one of them and leave part of its mask unchanged.

    A tumour is a core inside an oedema ring of uniform thickness (the voxels of ``region`` within
    that distance of its outside): at least ``_MIN_OEDEMA_VOXELS`` thick, so that the in-plane
    blur leaves the ring visible, and never the whole region, so that the core is not empty.
    """
    texture = 1 + 0.02 * _smooth_field(rng, region.shape, (4, 4, 4))
    contrast = float(rng.uniform(0.1, 0.6))
    if kind == "tumour":
        contrast *= float(rng.choice([-1.0, 1.0]))
        depth = _depth_mm(region, voxel_size)
        thickness = max(float(rng.uniform(0.15, 0.25)) * diameter_mm, _MIN_OEDEMA_VOXELS * voxel_size)
        thickness = min(thickness, float(depth.max()) - voxel_size)
        oedema = -(_MIN_OEDEMA_CONTRAST + (abs(contrast) - 0.1) * float(rng.uniform(0.0, 0.5)))
        core = depth > thickness
        ring = region & ~core
        clean[ring] *= (1 + oedema) * texture[ring]
        clean[core] *= (1 + contrast) * texture[core]
        return {"contrast": contrast, "oedema_contrast": oedema, "oedema_thickness_mm": thickness}
    contrast *= 1.0 if kind == "focus" else -1.0
    clean[region] *= (1 + contrast) * texture[region]
    return {"contrast": contrast}


def _add_mri_lesions(
    rng: np.random.Generator,
    clean: np.ndarray,
    brain: np.ndarray,
    tissue: np.ndarray,
    white: np.ndarray,
    affine: np.ndarray,
    drawn: list[tuple[str, float]],
) -> tuple[np.ndarray, list[dict]]:
    """Paint the ``drawn`` (kind, diameter) lesions into the noise-free MRI ``clean`` (X, Y, Z), in place.

    Lesions are centred in white matter (``white`` probability 0.5 or more) and cover the brain
    tissue (``tissue``, grey plus white matter, 0.5 or more) of their blob: centred in white
    matter, a lesion mostly has the tissue it changes around it too, so that its contrast to
    what it replaced is also its contrast to its surroundings.

    Returns:
        The lesion label volume (int16, ``i + 1`` on lesion ``i``) and the lesion parameters.
    """
    voxel_size = float(affine[2, 2])
    depth = _depth_mm(brain, voxel_size)
    parenchyma = brain & (tissue >= 0.5)
    labels = np.zeros(clean.shape, np.int16)
    taken: list[tuple[np.ndarray, int]] = []
    records = []
    for index, (kind, diameter) in enumerate(drawn):
        blob = _irregular_blob(rng, diameter, voxel_size)
        half = blob.shape[0] // 2
        centre = _pick_centre(rng, (depth > (half + 1) * voxel_size) & (white >= 0.5), half, taken)
        box = _box(centre, half)
        # lesions change tissue: a blob over a sulcus or ventricle leaves its fluid as it is
        region = blob & parenchyma[box]
        params = _paint_mri_lesion(rng, clean[box], region, kind, diameter, voxel_size)
        labels[box][region] = index + 1
        taken.append((centre, half))
        records.append({"kind": kind, "centre_mm": _world(affine, centre), "diameter_mm": diameter, **params})
    return labels, records


def _world(affine: np.ndarray, index: np.ndarray) -> list[float]:
    """World (RAS mm) position of voxel ``index``, rounded to 0.1 mm for the records."""
    return [round(float(x), 1) for x in nib.affines.apply_affine(affine, index)]


def _add_ct_lesions(
    rng: np.random.Generator,
    hu: np.ndarray,
    brain: np.ndarray,
    tissue: np.ndarray,
    affine: np.ndarray,
    drawn: list[tuple[str, float]],
) -> tuple[np.ndarray, list[dict]]:
    """Paint the ``drawn`` (kind, size) haemorrhages into the noise-free CT ``hu`` (X, Y, Z), in place.

    Returns:
        The lesion label volume (int16, ``i + 1`` on lesion ``i``) and the lesion parameters.
    """
    voxel_size = float(affine[2, 2])
    depth = _depth_mm(brain, voxel_size)
    # subdural haematomas sit on the convexity: brain-surface voxels above the brain's centroid
    convexity = brain & (depth <= voxel_size)
    convexity[:, :, : int(round(ndi.center_of_mass(brain)[2]))] = False
    labels = np.zeros(hu.shape, np.int16)
    taken: list[tuple[np.ndarray, int]] = []
    records = []
    for index, (kind, size) in enumerate(drawn):
        if kind == "haemorrhage":
            blob = _irregular_blob(rng, size, voxel_size)
            half = blob.shape[0] // 2
            centre = _pick_centre(rng, (depth > (half + 1) * voxel_size) & (tissue >= 0.5), half, taken)
            box = _box(centre, half)
            region = blob & brain[box]
            params = {"diameter_mm": size, "hu": float(rng.uniform(50.0, 90.0))}
        else:
            half = int(np.ceil(size / 2 / voxel_size))
            centre = _pick_centre(rng, convexity, half, taken)
            box = _box(centre, half)
            thickness = float(rng.uniform(3.0, 10.0))
            offsets = (np.indices((2 * half + 1,) * 3, dtype=np.float32) - half) * voxel_size
            taper = 1 - (offsets**2).sum(0) / (size / 2) ** 2
            region = brain[box] & (depth[box] <= thickness * taper)
            region[half, half, half] = True  # the anchor, so that a crescent thinner than a voxel is not empty
            params = {"span_mm": size, "thickness_mm": thickness, "hu": float(rng.uniform(50.0, 80.0))}
        texture = 2.0 * _smooth_field(rng, region.shape, (4, 4, 4))
        hu[box][region] = params["hu"] + texture[region]
        labels[box][region] = index + 1
        taken.append((centre, half))
        records.append({"kind": kind, "centre_mm": _world(affine, centre), **params})
    return labels, records


# ---------------------------------------------------------------------------------------------
# subjects


def _ct_anatomy(
    rng: np.random.Generator, grey: np.ndarray, white: np.ndarray, brain: np.ndarray, voxel_size: float
) -> np.ndarray:
    """Noise-free head CT in HU, (X, Y, Z): tissue mixture inside ``brain``, skull, scalp and air outside."""
    csf = np.clip(1 - grey - white, 0, 1)
    inside = _CT_TISSUE_HU["grey"] * grey + _CT_TISSUE_HU["white"] * white + _CT_TISSUE_HU["csf"] * csf
    outside = ndi.distance_transform_edt(~brain, sampling=voxel_size).astype(np.float32)
    skull = rng.uniform(5.0, 7.0) + _smooth_field(rng, brain.shape, (4, 4, 4)).clip(-1.5, 1.5) * 0.7
    scalp = skull + rng.uniform(3.0, 6.0)
    # tables at 1000 HU, diploe at 700 HU half-way through the bone
    bone = 1000.0 - 300.0 * np.sin(np.pi * np.clip(outside / skull, 0, 1))
    hu = np.full(brain.shape, _CT_TISSUE_HU["air"], np.float32)
    hu[outside <= scalp] = _CT_TISSUE_HU["scalp"]
    in_bone = outside <= skull
    hu[in_bone] = bone[in_bone]
    hu[brain] = inside[brain]
    return hu


def synthesize_subject(
    modality: str,
    rng: np.random.Generator,
    lesions: Sequence[tuple[str, float]] = (),
    voxel_size: float = 2.0,
) -> DemoSubject:
    """One random subject of ``modality`` on the cohort grid of ``voxel_size`` mm.

    Args:
        modality: ``"brain_mri"`` or ``"head_ct"``.
        rng: the subject's random generator.
        lesions: (kind, size in mm) of each lesion to add, e.g. from :func:`draw_lesions`; the
            kinds are ``tumour``, ``focus``, ``cavity`` (MRI) and ``haemorrhage``, ``subdural``
            (CT); the size is the diameter, or the span of a subdural haematoma.
        voxel_size: isotropic voxel size in mm.

    See the module docstring for the anatomy, intensity and lesion models. Two generators in the
    same state give the same subject with and without ``lesions``: the lesion-free twin shows
    what the lesions changed.

    Raises:
        ValueError: unknown modality or lesion kind, a non-positive size, or lesions that do not
            fit the brain.
    """
    if modality not in DEMO_MODALITIES:
        raise ValueError(f"modality must be one of {DEMO_MODALITIES}, got {modality!r}.")
    kinds = {kind for table in _LESION_TABLE[modality].values() for kind, *_ in table}
    for kind, size in lesions:
        if kind not in kinds or not size > 0:
            raise ValueError(f"lesions of {modality} must be (kind in {sorted(kinds)}, size > 0), got {(kind, size)}.")
    # lesions draw from a stream of their own: the same generator state with and without lesions
    # gives the same subject apart from them, a lesion-free twin that shows what each lesion changed
    lesion_rng = np.random.default_rng(rng.integers(2**63))
    template = load_demo_template()
    shape, affine = _cohort_grid(template, float(voxel_size), _MARGIN_MM[modality])
    coordinates = _subject_coordinates(rng, template, shape, affine)
    t1 = _resample(template.t1, coordinates)
    brain = _fill_holes_in_plane(t1 > _BRAIN_THRESHOLD)
    labels, records = np.zeros(shape, np.int16), []
    if modality == "brain_mri":
        clean = t1 * _MRI_REFERENCE
        if lesions:
            tissue, white = _resample(template.tissue, coordinates), _resample(template.white, coordinates)
            labels, records = _add_mri_lesions(lesion_rng, clean, brain, tissue, white, affine, lesions)
        scale = rng.uniform(0.75, 1.3)
        bias = np.exp(rng.uniform(0.05, 0.15) * _smooth_field(rng, shape, (3, 3, 3)))
        signal = _in_plane_blur(clean) * bias * scale
        sigma = rng.uniform(0.01, 0.03) * _MRI_REFERENCE * scale
        # Rician noise: magnitude of a complex signal with Gaussian noise in both channels
        image = np.round(np.hypot(signal + rng.normal(0, sigma, shape), rng.normal(0, sigma, shape)))
        # skull-stripped, as brain MRI anomaly benchmarks (BraTS, BMAD) are: zero outside the brain
        image[~brain] = 0
    else:
        # grey and white matter only matter inside the brain: sampling only there halves the cost
        grey, white = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
        grey[brain] = _resample(template.grey, coordinates[:, brain])
        white[brain] = _resample(template.white, coordinates[:, brain])
        clean = _ct_anatomy(rng, grey, white, brain, float(voxel_size))
        if lesions:
            labels, records = _add_ct_lesions(lesion_rng, clean, brain, grey + white, affine, lesions)
        image = np.round(_in_plane_blur(clean) + rng.normal(0, rng.uniform(3.0, 6.0), shape))
    return DemoSubject(
        image=image.astype(np.float32),
        mask=(labels > 0).astype(np.uint8),
        lesion_labels=labels,
        brain=brain,
        affine=affine,
        lesions=records,
    )


# ---------------------------------------------------------------------------------------------
# writers


def _save_nifti(path: Path, array: np.ndarray, affine: np.ndarray) -> None:
    """Save ``array`` (2D or 3D) as NIfTI with ``affine`` as both qform and sform (scanner space, mm)."""
    image = nib.Nifti1Image(array, affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    image.header.set_xyzt_units("mm")
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, path)


def _plane_affine(affine: np.ndarray, k: int) -> np.ndarray:
    """Affine of the 2D slice ``volume[:, :, k]``: the volume's, moved to plane ``k``."""
    plane = affine.copy()
    plane[:3, 3] = affine[:3, :3] @ [0, 0, k] + affine[:3, 3]
    return plane


def write_ct_series(
    folder: str | os.PathLike, hu: np.ndarray, affine: np.ndarray, patient_id: str, uid_entropy: list[str]
) -> list[Path]:
    """Write a CT volume as a DICOM series of axial CT Image Storage files, one per plane ``hu[:, :, k]``.

    Pixels are stored as int16 ``hu + 1024`` with Rescale Slope 1 and Intercept -1024. Rows run along
    axis 1 and columns along axis 0 of ``hu``, and ImagePositionPatient, ImageOrientationPatient,
    PixelSpacing and SliceThickness follow ``affine`` (converted from RAS to DICOM's LPS), so MONAI's
    ``PydicomReader`` and ``ITKReader`` return ``hu`` with ``affine``. The study, series, frame of
    reference and instance UIDs are derived from ``uid_entropy`` with ``pydicom.uid.generate_uid``,
    so the same entropy gives the same UIDs.

    Args:
        folder: output folder, created if needed; files are ``CT_<k>.dcm``.
        hu: (X, Y, Z) integer-valued Hounsfield units.
        affine: (4, 4) voxel to world (RAS mm).
        patient_id: PatientID and PatientName.
        uid_entropy: strings that identify the series, e.g. ``[seed, subject id]``.

    Returns:
        The written file paths, in slice order.

    Raises:
        ValueError: ``hu`` is not 3D, holds non-integer values or values outside the int16 range
            after the offset.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, CTImageStorage, ExplicitVRLittleEndian, generate_uid

    hu, affine = np.asarray(hu), np.asarray(affine, dtype=np.float64)
    if hu.ndim != 3:
        raise ValueError(f"hu must be a 3D (X, Y, Z) array, got shape {hu.shape}.")
    if affine.shape != (4, 4):
        raise ValueError(f"affine must be a (4, 4) array, got shape {affine.shape}.")
    stored = hu.astype(np.float64) - _CT_RESCALE_INTERCEPT
    if not np.array_equal(stored, np.round(stored)) or stored.min() < -(2**15) or stored.max() >= 2**15:
        raise ValueError(
            f"hu must hold integers in [{-(2**15) + _CT_RESCALE_INTERCEPT}, {2**15 - 1 + _CT_RESCALE_INTERCEPT}] HU "
            f"to be stored as int16 with intercept {_CT_RESCALE_INTERCEPT}."
        )
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    to_lps = np.array([-1.0, -1.0, 1.0])
    uid = lambda *part: generate_uid(entropy_srcs=[_UID_NAMESPACE, *uid_entropy, *part])  # noqa: E731

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20000101"
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
    ds.AccessionNumber = ""
    ds.Modality = "CT"
    ds.Manufacturer = "medad-monai synthetic"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "medad-monai demo head CT"
    ds.SeriesDescription = "synthetic axial head CT"
    ds.PatientName = ds.PatientID = patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.BodyPartExamined = "HEAD"
    ds.KVP = 120
    ds.SliceThickness = f"{spacing[2]:.6g}"
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = uid("study")
    ds.SeriesInstanceUID = uid("series")
    ds.FrameOfReferenceUID = uid("frame")
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.AcquisitionNumber = 1
    ds.PositionReferenceIndicator = ""
    # rows follow axis 1, columns axis 0: ImageOrientationPatient is (row direction, column direction)
    orientation = np.concatenate([to_lps * affine[:3, 0] / spacing[0], to_lps * affine[:3, 1] / spacing[1]])
    ds.ImageOrientationPatient = [f"{x + 0.0:.6g}" for x in orientation]  # + 0.0 turns -0 into 0
    ds.PixelSpacing = [f"{spacing[1]:.6g}", f"{spacing[0]:.6g}"]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = hu.shape[1], hu.shape[0]
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleIntercept = str(_CT_RESCALE_INTERCEPT)
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    ds.WindowCenter, ds.WindowWidth = "40", "80"

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(hu.shape[2]):
        position = to_lps * (affine[:3, :3] @ [0, 0, k] + affine[:3, 3])
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid("instance", str(k))
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [f"{x + 0.0:.6g}" for x in position]
        ds.SliceLocation = f"{position[2]:.6g}"
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).astype("<i2").tobytes()
        paths.append(folder / f"CT_{k:04d}.dcm")
        ds.save_as(paths[-1], enforce_file_format=True)
    return paths


# ---------------------------------------------------------------------------------------------
# cohort


@dataclass(frozen=True)
class DemoCohortParameters:
    """Sizes and slicing rules of a demo cohort; the defaults give the cohort the bundles use.

    The ``num_*`` counts are minimum numbers of 2D slices: a group of subjects (e.g. the abnormal
    test subjects) grows by whole subjects until its slices reach the count, so the datalist
    holds at least that many (``manifest.json`` records the exact numbers).

    Attributes:
        num_train: normal training slices (at least 1).
        num_val_normal: normal validation slices.
        num_val_abnormal: abnormal validation slices.
        num_test_normal: normal test slices.
        num_test_abnormal: abnormal test slices.
        voxel_size: isotropic voxel size of the volumes and slices, mm (at least 1, the template's).
        slice_stride: keep every ``slice_stride``-th of the axial slices with enough brain.
        min_brain_fraction: an axial slice is kept when its brain area is at least this fraction
            of the subject's largest axial brain area, in (0, 1].
        min_lesion_area_mm2: a kept slice is abnormal iff its lesion mask covers at least this
            area; slices of abnormal subjects below it are dropped.
        max_normal_slices: a normal subject exports at most this many of its kept slices, drawn
            at random: normal slices then come from about as many subjects as abnormal ones (which
            only have a few lesion slices each), so no single subject's noise level or anatomy
            dominates a split.
    """

    num_train: int = 300
    num_val_normal: int = 40
    num_val_abnormal: int = 40
    num_test_normal: int = 100
    num_test_abnormal: int = 100
    voxel_size: float = 2.0
    slice_stride: int = 2
    min_brain_fraction: float = 0.75
    min_lesion_area_mm2: float = 100.0
    max_normal_slices: int = 4

    def __post_init__(self) -> None:
        for name in ("num_train", "num_val_normal", "num_val_abnormal", "num_test_normal", "num_test_abnormal"):
            minimum = 1 if name == "num_train" else 0
            object.__setattr__(self, name, _check_int(name, getattr(self, name), minimum))
        object.__setattr__(self, "slice_stride", _check_int("slice_stride", self.slice_stride, minimum=1))
        object.__setattr__(self, "max_normal_slices", _check_int("max_normal_slices", self.max_normal_slices, minimum=1))
        for name, low, high in (
            ("voxel_size", 1.0, np.inf),
            ("min_brain_fraction", 0.0, 1.0),
            ("min_lesion_area_mm2", 0.0, np.inf),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not low <= value <= high:
                raise ValueError(f"{name} must be a number in [{low}, {high}], got {value!r}.")
            # stored as float so that a manifest written from 2 matches a request of 2.0
            object.__setattr__(self, name, float(value))
        if self.min_brain_fraction == 0.0 or self.min_lesion_area_mm2 == 0.0:
            raise ValueError("min_brain_fraction and min_lesion_area_mm2 must be positive.")


def _check_int(name: str, value: Any, minimum: int) -> int:
    """``value`` as a Python int; ValueError unless it is an integer (not bool) of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}.")
    return int(value)


def _axial_slices(brain: np.ndarray, min_brain_fraction: float, stride: int) -> np.ndarray:
    """Indices k of the kept planes ``brain[:, :, k]``: enough brain area, then every ``stride``-th."""
    area = brain.sum(axis=(0, 1))
    return np.flatnonzero(area >= min_brain_fraction * area.max())[::stride]


def _slice_groups(params: DemoCohortParameters) -> tuple[tuple[str, int, int], ...]:
    """(split, label, minimum number of slices) of each group of subjects, in generation order."""
    return (
        ("training", 0, params.num_train),
        ("validation", 0, params.num_val_normal),
        ("validation", 1, params.num_val_abnormal),
        ("test", 0, params.num_test_normal),
        ("test", 1, params.num_test_abnormal),
    )


def _subject_id(split: str, label: int, index: int) -> str:
    """E.g. ``train-n000``, ``val-a003``, ``test-n001``: split, normal/abnormal, index."""
    return f"{_SPLIT_PREFIX[split]}-{'na'[label]}{index:03d}"


def _subject_rng(seed: int, modality: str, split: str, label: int, index: int) -> np.random.Generator:
    """Generator of one subject, independent of how many other subjects the cohort has."""
    key = (DEMO_MODALITIES.index(modality), _SPLITS.index(split), label, index)
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def _export_subject(
    folder: Path,
    modality: str,
    seed: int,
    split: str,
    label: int,
    subject_id: str,
    subject: DemoSubject,
    params: DemoCohortParameters,
    rng: np.random.Generator,
) -> tuple[list[dict], dict, int]:
    """Write one subject's volume, mask and kept slices under ``folder``; ``rng`` draws the slices of
    a normal subject.

    Returns:
        The slice items (absolute paths), the volume item and the number of dropped slices.
    """
    mask_path = folder / "volumes" / f"{subject_id}_mask.nii.gz"
    _save_nifti(mask_path, subject.mask, subject.affine)
    if modality == "brain_mri":
        image_path = folder / "volumes" / f"{subject_id}_image.nii.gz"
        # scanner-like integer intensities: int16 halves the files of float32 and loses nothing
        _save_nifti(image_path, subject.image.astype(np.int16), subject.affine)
    else:
        image_path = folder / "dicom" / subject_id
        write_ct_series(image_path, subject.image, subject.affine, subject_id, [str(seed), modality, subject_id])
    volume_item = {"image": image_path, "label": label, "mask": mask_path, "subject": subject_id}

    lesion_area = subject.mask.sum(axis=(0, 1)) * params.voxel_size**2
    items, dropped = [], 0
    levels = _axial_slices(subject.brain, params.min_brain_fraction, params.slice_stride)
    if label == 0 and len(levels) > params.max_normal_slices:
        levels = np.sort(rng.choice(levels, params.max_normal_slices, replace=False))
    for k in levels:
        slice_label = int(lesion_area[k] >= params.min_lesion_area_mm2)
        # abnormal subjects give abnormal slices only: their lesion-free and sub-threshold slices are dropped
        if slice_label != label:
            dropped += 1
            continue
        stem = folder / "slices" / subject_id / f"{subject_id}_z{k:03d}"
        plane = _plane_affine(subject.affine, int(k))
        item = {"image": stem.with_name(stem.name + "_image.nii.gz"), "label": slice_label}
        _save_nifti(item["image"], subject.image[:, :, k], plane)
        if split != "training":
            item["mask"] = stem.with_name(stem.name + "_mask.nii.gz")
            _save_nifti(item["mask"], subject.mask[:, :, k], plane)
        items.append(item)
    return items, volume_item, dropped


def _write_cohort(folder: Path, modality: str, seed: int, params: DemoCohortParameters) -> dict:
    """Generate and write every subject, the datalist, lesion records and manifest into ``folder``."""
    datalist: dict[str, list[dict]] = {key: [] for split in _SPLITS for key in (split, f"{split}_volumes")}
    lesions: dict[str, list[dict]] = {}
    subjects = {split: {"normal": 0, "abnormal": 0} for split in _SPLITS}
    slices = {split: {"normal": 0, "abnormal": 0} for split in _SPLITS}
    dropped = 0
    for split, label, needed in _slice_groups(params):
        group = "abnormal" if label else "normal"
        index = 0
        # whole subjects are added until the group has its slices
        while slices[split][group] < needed:
            if index == needed + _EXTRA_SUBJECTS:
                raise ValueError(
                    f"{index} {group} {split} subjects gave only {slices[split][group]} of the {needed} slices "
                    "requested: lower min_lesion_area_mm2, min_brain_fraction or voxel_size."
                )
            subject_id = _subject_id(split, label, index)
            rng = _subject_rng(seed, modality, split, label, index)
            subject = synthesize_subject(modality, rng, draw_lesions(rng, modality) if label else (), params.voxel_size)
            items, volume_item, subject_dropped = _export_subject(
                folder, modality, seed, split, label, subject_id, subject, params, rng
            )
            datalist[split] += items
            datalist[f"{split}_volumes"].append(volume_item)
            if label:
                lesions[subject_id] = subject.lesions
            subjects[split][group] += 1
            slices[split][group] += len(items)
            dropped += subject_dropped
            index += 1

    write_datalist(folder / DATALIST_NAME, datalist)
    _write_json(folder / LESIONS_NAME, lesions)
    manifest = {
        **_request(modality, seed, params),
        "template": "MNI ICBM152 2009a nonlinear symmetric (nilearn.datasets.load_mni152_*)",
        "counts": {"subjects": subjects, "slices": slices, "dropped_slices": dropped},
    }
    # written last: a folder with a manifest is complete
    _write_json(folder / MANIFEST_NAME, manifest)
    return manifest


def _write_json(path: Path, content: Any) -> None:
    with open(path, "w") as f:
        json.dump(content, f, indent=1)
        f.write("\n")


def _request(modality: str, seed: int, params: DemoCohortParameters) -> dict:
    """The manifest fields that identify a cohort: an existing cohort is reused only if all match."""
    return {
        "generator_version": DEMO_GENERATOR_VERSION,
        "modality": modality,
        "seed": seed,
        "parameters": asdict(params),
    }


def _check_modality_seed(modality: str, seed: int) -> int:
    """``seed`` as a Python int, after checking ``modality`` and ``seed``."""
    if modality not in DEMO_MODALITIES:
        raise ValueError(f"modality must be one of {DEMO_MODALITIES}, got {modality!r}.")
    return _check_int("seed", seed, minimum=0)


def generate_demo_cohort(
    root_dir: str | os.PathLike,
    modality: str = "brain_mri",
    seed: int = 0,
    num_train: int = DemoCohortParameters.num_train,
    num_val_normal: int = DemoCohortParameters.num_val_normal,
    num_val_abnormal: int = DemoCohortParameters.num_val_abnormal,
    num_test_normal: int = DemoCohortParameters.num_test_normal,
    num_test_abnormal: int = DemoCohortParameters.num_test_abnormal,
    voxel_size: float = DemoCohortParameters.voxel_size,
    slice_stride: int = DemoCohortParameters.slice_stride,
    min_brain_fraction: float = DemoCohortParameters.min_brain_fraction,
    min_lesion_area_mm2: float = DemoCohortParameters.min_lesion_area_mm2,
    max_normal_slices: int = DemoCohortParameters.max_normal_slices,
) -> Path:
    """Generate a demo cohort of ``modality`` into ``root_dir/<modality>/`` and return its datalist path.

    The cohort is written into a hidden sibling folder that is renamed into place once complete,
    so an interrupted run never leaves a cohort that looks complete (a killed run leaves a
    ``.<modality>.partial-*`` folder, which nothing reads). The model and the rules are in the
    module docstring; the counts are minimum numbers of slices, reached by adding whole subjects
    (see :class:`DemoCohortParameters`); ``manifest.json`` holds the exact counts.

    Returns:
        Path of ``root_dir/<modality>/datalist.json``.

    Raises:
        FileExistsError: ``root_dir/<modality>`` exists (use :func:`ensure_demo_cohort` to reuse it).
        ValueError: an argument is out of range.
    """
    seed = _check_modality_seed(modality, seed)
    params = DemoCohortParameters(
        num_train=num_train,
        num_val_normal=num_val_normal,
        num_val_abnormal=num_val_abnormal,
        num_test_normal=num_test_normal,
        num_test_abnormal=num_test_abnormal,
        voxel_size=voxel_size,
        slice_stride=slice_stride,
        min_brain_fraction=min_brain_fraction,
        min_lesion_area_mm2=min_lesion_area_mm2,
        max_normal_slices=max_normal_slices,
    )
    target = Path(root_dir) / modality
    if target.exists():
        raise FileExistsError(
            f"'{target}' already exists: ensure_demo_cohort reuses a matching cohort, or remove it to regenerate."
        )
    partial = Path(root_dir) / f".{modality}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    partial.mkdir(parents=True)
    try:
        _write_cohort(partial, modality, seed, params)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    try:
        # atomic on one file system: the cohort appears complete or not at all
        os.rename(partial, target)
    except OSError as error:
        shutil.rmtree(partial, ignore_errors=True)
        raise FileExistsError(f"'{target}' appeared while the demo cohort was being generated.") from error
    return target / DATALIST_NAME


def ensure_demo_cohort(
    root_dir: str | os.PathLike, modality: str = "brain_mri", seed: int = 0, **parameters: Any
) -> Path:
    """Return the datalist of the demo cohort in ``root_dir/<modality>/``, generating it if missing.

    Bundles call this so that training runs on a fresh machine without arguments. An existing
    cohort is reused when its manifest matches the request; it is never overwritten.

    Args:
        root_dir: folder that holds one sub-folder per modality.
        modality: ``"brain_mri"`` or ``"head_ct"``.
        seed: cohort seed.
        parameters: :class:`DemoCohortParameters` fields, passed to :func:`generate_demo_cohort`.

    Raises:
        ValueError: ``root_dir/<modality>`` exists but is not a demo cohort, or was generated with
            another seed, generator version or parameters (the message names the folder and the
            differences).
        TypeError: an unknown parameter name.
    """
    seed = _check_modality_seed(modality, seed)
    params = DemoCohortParameters(**parameters)
    target = Path(root_dir) / modality
    if not target.exists():
        try:
            return generate_demo_cohort(root_dir, modality, seed, **asdict(params))
        except FileExistsError:
            # another process (e.g. another rank) finished first: check its cohort below
            if not target.exists():
                raise
    return _reuse_cohort(target, _request(modality, seed, params))


def _reuse_cohort(target: Path, request: dict) -> Path:
    """Datalist of the cohort in ``target`` if its manifest matches ``request``."""
    manifest_path = target / MANIFEST_NAME
    if not manifest_path.is_file():
        raise ValueError(
            f"'{target}' exists but holds no {MANIFEST_NAME}, so it is not a demo cohort: "
            "move it away or choose another root_dir."
        )
    with open(manifest_path) as f:
        manifest = json.load(f)
    differences = [
        f"{key}: requested {value!r}, found {manifest.get(key)!r}"
        for key, value in request.items()
        if key != "parameters" and manifest.get(key) != value
    ]
    found_parameters = manifest.get("parameters", {})
    differences += [
        f"{key}: requested {value!r}, found {found_parameters.get(key)!r}"
        for key, value in request["parameters"].items()
        if found_parameters.get(key) != value
    ]
    if differences:
        raise ValueError(
            f"the demo cohort in '{target}' does not match the request ({'; '.join(differences)}): "
            "remove it to regenerate, or choose another root_dir."
        )
    datalist = target / DATALIST_NAME
    if not datalist.is_file():
        raise FileNotFoundError(f"demo cohort '{target}' has a manifest but no {DATALIST_NAME}.")
    return datalist
