"""Demo subjects: the template moved by a random deformation and rendered as brain MRI or head CT.

The anatomy and intensity models are specified in ``docs/demo_cohort.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial.transform import Rotation

from .fields import smooth_field
from .lesions import add_ct_lesions, add_mri_lesions, lesion_kinds
from .template import BRAIN_THRESHOLD, DEMO_MODALITIES, DemoTemplate, cohort_grid, load_demo_template

__all__ = ["DemoSubject", "synthesize_subject"]

_MAX_ROTATION_DEG = np.array([5.0, 5.0, 8.0])
_MAX_SCALE = 0.06
_MAX_SHIFT_MM = 3.0
_ELASTIC_NODE_SPACING_MM = 32.0
_ELASTIC_STD_MM = 2.0
_PSF_SIGMA_VOXELS = (0.5, 0.5, 0.0)  # in-plane only, so that no lesion leaks into a neighbouring slice
_MRI_REFERENCE = 1000.0
_CT_TISSUE_HU = {"grey": 40.0, "white": 25.0, "csf": 5.0, "scalp": 30.0, "air": -1000.0}


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
            intensity parameters (see ``docs/demo_cohort.md``).
    """

    image: np.ndarray
    mask: np.ndarray
    lesion_labels: np.ndarray
    brain: np.ndarray
    affine: np.ndarray
    lesions: list[dict]


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
        coordinates[row] += _ELASTIC_STD_MM * smooth_field(rng, shape, nodes)
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


def _ct_anatomy(
    rng: np.random.Generator, grey: np.ndarray, white: np.ndarray, brain: np.ndarray, voxel_size: float
) -> np.ndarray:
    """Noise-free head CT in HU, (X, Y, Z): tissue mixture inside ``brain``, skull, scalp and air outside."""
    csf = np.clip(1 - grey - white, 0, 1)
    inside = _CT_TISSUE_HU["grey"] * grey + _CT_TISSUE_HU["white"] * white + _CT_TISSUE_HU["csf"] * csf
    outside = ndi.distance_transform_edt(~brain, sampling=voxel_size).astype(np.float32)
    skull = rng.uniform(5.0, 7.0) + smooth_field(rng, brain.shape, (4, 4, 4)).clip(-1.5, 1.5) * 0.7
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
        lesions: (kind, size in mm) of each lesion to add, e.g. from
            :func:`~medad_monai.data.demo.draw_lesions`; the kinds are those of
            :func:`~medad_monai.data.demo.lesion_kinds`; the size is the diameter, or the span
            of a subdural haematoma.
        voxel_size: isotropic voxel size in mm.

    See ``docs/demo_cohort.md`` for the anatomy, intensity and lesion models. Two generators in
    the same state give the same subject with and without ``lesions``: the lesion-free twin
    shows what the lesions changed.

    Raises:
        ValueError: unknown modality or lesion kind, a non-positive size, or lesions that do not
            fit the brain.
    """
    if modality not in DEMO_MODALITIES:
        raise ValueError(f"modality must be one of {DEMO_MODALITIES}, got {modality!r}.")
    kinds = lesion_kinds(modality)
    for kind, size in lesions:
        if kind not in kinds or not size > 0:
            raise ValueError(f"lesions of {modality} must be (kind in {sorted(kinds)}, size > 0), got {(kind, size)}.")
    # lesions draw from a stream of their own: the same generator state with and without lesions
    # gives the same subject apart from them, a lesion-free twin that shows what each lesion changed
    lesion_rng = np.random.default_rng(rng.integers(2**63))
    template = load_demo_template()
    shape, affine = cohort_grid(template, modality, float(voxel_size))
    coordinates = _subject_coordinates(rng, template, shape, affine)
    t1 = _resample(template.t1, coordinates)
    brain = _fill_holes_in_plane(t1 > BRAIN_THRESHOLD)
    labels, records = np.zeros(shape, np.int16), []
    if modality == "brain_mri":
        clean = t1 * _MRI_REFERENCE
        if lesions:
            tissue, white = _resample(template.tissue, coordinates), _resample(template.white, coordinates)
            labels, records = add_mri_lesions(lesion_rng, clean, brain, tissue, white, affine, lesions)
        scale = rng.uniform(0.75, 1.3)
        bias = np.exp(rng.uniform(0.05, 0.15) * smooth_field(rng, shape, (3, 3, 3)))
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
            labels, records = add_ct_lesions(lesion_rng, clean, brain, grey + white, affine, lesions)
        image = np.round(_in_plane_blur(clean) + rng.normal(0, rng.uniform(3.0, 6.0), shape))
    return DemoSubject(
        image=image.astype(np.float32),
        mask=(labels > 0).astype(np.uint8),
        lesion_labels=labels,
        brain=brain,
        affine=affine,
        lesions=records,
    )
