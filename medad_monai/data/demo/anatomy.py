"""Demo subjects: the template moved by a random deformation and rendered as brain MRI or head CT.

The anatomy and intensity models are specified in ``docs/demo_cohort.md``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial.transform import Rotation

from .fields import smooth_field
from .lesions import add_ct_lesions, add_mri_lesions, lesion_kinds
from .template import (
    BRAIN_THRESHOLD,
    DEMO_MODALITIES,
    DemoTemplate,
    cohort_grid,
    load_demo_template,
    load_template_landmarks,
)
from .variants import ct_variants, flair_variants

__all__ = ["NUISANCES", "DemoSubject", "synthesize_subject"]

#: Per-subject quantiles in [0, 1) that set a subject's nuisance parameters (size, intensity
#: scale, noise, bias field) and normal variants; the cohort stratifies them over a split's
#: subjects so that its normal and abnormal groups cover the same values.
NUISANCES = {
    "brain_mri": ("size", "scale", "noise", "bias", "frontal_caps", "occipital_caps", "cst", "wmh"),
    "head_ct": ("size", "noise", "pineal", "choroid", "falx"),
}
_MAX_ROTATION_DEG = np.array([5.0, 5.0, 8.0])
_MAX_SIZE = 0.06  # isotropic size factor 0.94-1.06
_MAX_ANISOTROPY = 0.03  # times a per-axis factor 0.97-1.03
_MAX_SHIFT_MM = 3.0
_ELASTIC_NODE_SPACING_MM = 32.0
_ELASTIC_STD_MM = 2.0
_PSF_SIGMA_VOXELS = (0.5, 0.5, 0.0)  # in-plane only, so that no lesion leaks into a neighbouring slice
_FLAIR_WHITE_MATTER = 800.0  # arbitrary units, before the subject's scale
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
        nuisance: the subject's nuisance quantiles (:data:`NUISANCES`) and normal variants.
    """

    image: np.ndarray
    mask: np.ndarray
    lesion_labels: np.ndarray
    brain: np.ndarray
    affine: np.ndarray
    lesions: list[dict]
    nuisance: dict


def _subject_coordinates(
    rng: np.random.Generator, template: DemoTemplate, shape: tuple[int, int, int], affine: np.ndarray, size: float
) -> np.ndarray:
    """Template voxel coordinates, (3, X, Y, Z), that each grid voxel samples for one random subject.

    A subject is the template moved by ``x -> A (x - c) + c + t`` (``A`` rotation times per-axis
    scale: the isotropic factor ``1 + 0.06 (2 size - 1)`` times 0.97-1.03 per axis, ``c`` the
    brain-box centre, ``t`` a shift) and an elastic displacement; the grid samples the inverse map.
    """
    rotation = Rotation.from_euler("xyz", rng.uniform(-1, 1, 3) * _MAX_ROTATION_DEG, degrees=True).as_matrix()
    scale = (1 + _MAX_SIZE * (2 * size - 1)) * rng.uniform(1 - _MAX_ANISOTROPY, 1 + _MAX_ANISOTROPY, 3)
    forward = rotation @ np.diag(scale)
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


def _ct_surroundings(rng: np.random.Generator, brain: np.ndarray, voxel_size: float) -> np.ndarray:
    """Noise-free head CT in HU outside ``brain``, (X, Y, Z): skull, scalp and air (zero inside)."""
    outside = ndi.distance_transform_edt(~brain, sampling=voxel_size).astype(np.float32)
    skull = rng.uniform(5.0, 7.0) + smooth_field(rng, brain.shape, (4, 4, 4)).clip(-1.5, 1.5) * 0.7
    scalp = skull + rng.uniform(3.0, 6.0)
    # tables at 1000 HU, diploe at 700 HU half-way through the bone
    bone = 1000.0 - 300.0 * np.sin(np.pi * np.clip(outside / skull, 0, 1))
    hu = np.full(brain.shape, _CT_TISSUE_HU["air"], np.float32)
    hu[outside <= scalp] = _CT_TISSUE_HU["scalp"]
    in_bone = outside <= skull
    hu[in_bone] = bone[in_bone]
    hu[brain] = 0.0
    return hu


def synthesize_subject(
    modality: str,
    rng: np.random.Generator,
    lesions: Sequence[tuple[str, float]] = (),
    voxel_size: float = 2.0,
    nuisance: Mapping[str, float] | None = None,
    lesion_level_mm: float | None = None,
) -> DemoSubject:
    """One random subject of ``modality`` on the cohort grid of ``voxel_size`` mm.

    Args:
        modality: ``"brain_mri"`` or ``"head_ct"``.
        rng: the subject's random generator.
        lesions: (kind, size in mm) of each lesion to add, the primary first, e.g. from
            :func:`~medad_monai.data.demo.draw_lesions`; the kinds are those of
            :func:`~medad_monai.data.demo.lesion_kinds`; the size is the diameter, or the span
            of a subdural haematoma.
        voxel_size: isotropic voxel size in mm.
        nuisance: quantiles in [0, 1) of some of :data:`NUISANCES`; the others are drawn.
        lesion_level_mm: world z (RAS mm) near which the primary lesion's centre goes; anywhere
            when None.

    See ``docs/demo_cohort.md`` for the anatomy, intensity and lesion models. Two generators in
    the same state give the same subject with and without ``lesions`` (given the same
    ``nuisance``): the lesion-free twin shows what the lesions changed.

    Raises:
        ValueError: unknown modality, nuisance or lesion kind, a quantile outside [0, 1), a
            non-positive size, or lesions that do not fit the brain.
    """
    if modality not in DEMO_MODALITIES:
        raise ValueError(f"modality must be one of {DEMO_MODALITIES}, got {modality!r}.")
    kinds = lesion_kinds(modality)
    for kind, size in lesions:
        if kind not in kinds or not size > 0:
            raise ValueError(f"lesions of {modality} must be (kind in {sorted(kinds)}, size > 0), got {(kind, size)}.")
    quantiles = dict(zip(NUISANCES[modality], (float(u) for u in rng.random(len(NUISANCES[modality])))))
    for name, value in (nuisance or {}).items():
        if name not in quantiles or not 0.0 <= value < 1.0:
            raise ValueError(f"nuisance of {modality} must map {NUISANCES[modality]} to [0, 1), got {name!r}: {value!r}.")
        quantiles[name] = float(value)
    # lesions draw from a stream of their own: the same generator state with and without lesions
    # gives the same subject apart from them, a lesion-free twin that shows what each lesion changed
    lesion_rng = np.random.default_rng(rng.integers(2**63))
    template, landmarks = load_demo_template(), load_template_landmarks()
    shape, affine = cohort_grid(template, modality, float(voxel_size))
    coordinates = _subject_coordinates(rng, template, shape, affine, quantiles["size"])
    brain = _fill_holes_in_plane(_resample(template.t1, coordinates) > BRAIN_THRESHOLD)
    # tissue maps and variants are needed inside the brain only: sampling there halves the cost
    grey, white = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
    grey[brain] = _resample(template.grey, coordinates[:, brain])
    white[brain] = _resample(template.white, coordinates[:, brain])
    csf = np.clip(1 - grey - white, 0, 1) * brain
    to_world = template.affine.astype(np.float32)
    points_mm = coordinates[:, brain].T @ to_world[:3, :3].T + to_world[:3, 3]
    plane = None if lesion_level_mm is None else round((lesion_level_mm - affine[2, 3]) / affine[2, 2])
    labels, records = np.zeros(shape, np.int16), []
    if modality == "brain_mri":
        # FLAIR: grey matter brighter than white matter, CSF suppressed
        grey_level, csf_level = rng.uniform(1.15, 1.35), rng.uniform(0.15, 0.35)
        change, variants = flair_variants(rng, points_mm, white[brain], quantiles, landmarks)
        clean = np.zeros(shape, np.float32)
        clean[brain] = _FLAIR_WHITE_MATTER * (white + grey_level * grey + csf_level * csf)[brain] * (1 + change)
        if lesions:
            labels, records = add_mri_lesions(
                lesion_rng, clean, brain, grey + white, white, affine, list(lesions), _FLAIR_WHITE_MATTER, plane
            )
        scale = 0.75 + 0.55 * quantiles["scale"]
        bias = np.exp((0.05 + 0.1 * quantiles["bias"]) * smooth_field(rng, shape, (3, 3, 3)))
        signal = _in_plane_blur(clean) * bias * scale
        sigma = (0.01 + 0.02 * quantiles["noise"]) * _FLAIR_WHITE_MATTER * scale
        # Rician noise: magnitude of a complex signal with Gaussian noise in both channels
        image = np.round(np.hypot(signal + rng.normal(0, sigma, shape), rng.normal(0, sigma, shape)))
        # skull-stripped, as brain MRI anomaly benchmarks (BraTS, BMAD) are: zero outside the brain
        image[~brain] = 0
        variants.update(grey_level=float(grey_level), csf_level=float(csf_level))
    else:
        clean = _ct_surroundings(rng, brain, float(voxel_size))
        added, variants = ct_variants(rng, points_mm, csf[brain], quantiles, landmarks)
        tissue_hu = _CT_TISSUE_HU["grey"] * grey + _CT_TISSUE_HU["white"] * white + _CT_TISSUE_HU["csf"] * csf
        clean[brain] = tissue_hu[brain] + added
        if lesions:
            labels, records = add_ct_lesions(lesion_rng, clean, brain, grey + white, affine, list(lesions), plane)
        image = np.round(_in_plane_blur(clean) + rng.normal(0, 3.0 + 3.0 * quantiles["noise"], shape))
    return DemoSubject(
        image=image.astype(np.float32),
        mask=(labels > 0).astype(np.uint8),
        lesion_labels=labels,
        brain=brain,
        affine=affine,
        lesions=records,
        nuisance={**quantiles, **variants},
    )
