"""Lesions of the demo cohort: which are drawn, where they go and how they are painted.

Each modality has benchmark kinds, standing for the lesions of the public benchmark the demo
stands for (BraTS gliomas for brain MRI, acute haemorrhages for head CT), and a separately
labelled harder subset (:data:`HARD_KINDS`). The model (sizes, intensities, placement) and the
sources of its numbers are in ``docs/demo_cohort.md``.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi
from scipy.spatial.transform import Rotation

from .fields import depth_mm, smooth_field
from .template import DEMO_MODALITIES

__all__ = [
    "HARD_KINDS",
    "add_ct_lesions",
    "add_mri_lesions",
    "draw_lesions",
    "lesion_kinds",
    "pick_lesion_centre",
]

# (kind, size range in mm, probability) of the primary lesion, then of the secondary ones, which a
# subject has with probability ``secondary_probability`` (1 to ``max_secondary`` of them); sizes
# are diameters, subdural ones their span. The harder subset's small lesions start at 5-6 mm: a
# smaller blob covers fewer than 4 pixels of its plane at 2 mm and would give no slice.
_LESION_TABLE = {
    "brain_mri": {
        "benchmark": {
            "primary": (("tumour", (30.0, 60.0), 1.0),),
            "secondary": (("tumour", (10.0, 25.0), 1.0),),
            "secondary_probability": 0.3,
            "max_secondary": 1,
        },
        "hard": {
            "primary": (("cavity", (8.0, 30.0), 0.5), ("focus", (5.0, 12.0), 0.5)),
            "secondary": (("focus", (5.0, 12.0), 1.0),),
            "secondary_probability": 0.6,
            "max_secondary": 3,
        },
    },
    "head_ct": {
        "benchmark": {
            "primary": (("haemorrhage", (15.0, 50.0), 0.6), ("subdural", (50.0, 100.0), 0.4)),
            "secondary": (("haemorrhage", (8.0, 20.0), 1.0),),
            "secondary_probability": 0.25,
            "max_secondary": 1,
        },
        "hard": {
            "primary": (("small_haemorrhage", (6.0, 12.0), 0.5), ("isodense_subdural", (50.0, 100.0), 0.5)),
            "secondary": (("small_haemorrhage", (6.0, 12.0), 1.0),),
            "secondary_probability": 0.5,
            "max_secondary": 2,
        },
    },
}
# a tumour's FLAIR oedema: range of its contrast to the tissue it replaces, and its infiltrative
# edge (the share of the contrast at the border, and the depth in mm where all of it is reached)
_OEDEMA_CONTRAST = (0.1, 0.5)
_OEDEMA_EDGE = (0.3, 6.0)
#: The kinds of the separately labelled harder subset of each modality.
HARD_KINDS = {modality: tuple(kind for kind, *_ in _LESION_TABLE[modality]["hard"]["primary"]) for modality in DEMO_MODALITIES}


def _check_modality(modality: str) -> None:
    if modality not in DEMO_MODALITIES:
        raise ValueError(f"modality must be one of {DEMO_MODALITIES}, got {modality!r}.")


def lesion_kinds(modality: str) -> set[str]:
    """Names of the lesion kinds of ``modality`` (the ``kind`` of :func:`draw_lesions`' draws)."""
    _check_modality(modality)
    return {kind for subset in _LESION_TABLE[modality].values() for role in ("primary", "secondary") for kind, *_ in subset[role]}


def draw_lesions(rng: np.random.Generator, modality: str, hard: bool = False) -> list[tuple[str, float]]:
    """(kind, size in mm) of the lesions of one random abnormal subject of ``modality``.

    Args:
        rng: draws the lesions.
        modality: ``"brain_mri"`` or ``"head_ct"``.
        hard: draw from the harder subset (:data:`HARD_KINDS`) instead of the benchmark kinds.

    Returns:
        The primary lesion, then 0 to a few secondary ones (``docs/demo_cohort.md``).
    """
    _check_modality(modality)
    table = _LESION_TABLE[modality]["hard" if hard else "benchmark"]
    count = int(rng.integers(1, table["max_secondary"] + 1)) if rng.random() < table["secondary_probability"] else 0
    drawn = []
    for role in ["primary"] + ["secondary"] * count:
        kinds = table[role]
        kind, (low, high), _ = kinds[rng.choice(len(kinds), p=[p for *_, p in kinds])]
        drawn.append((kind, float(rng.uniform(low, high))))
    return drawn


def _irregular_blob(rng: np.random.Generator, diameter_mm: float, voxel_size: float, pad: int = 0) -> np.ndarray:
    """Boolean (n, n, n) blob centred on the middle voxel, n odd, with ``pad`` empty voxels on every side.

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
    erosion = 0.25 * 0.5 * (1 + np.tanh(smooth_field(rng, (size,) * 3, (4, 4, 4))))
    blob = np.sqrt((local**2).sum(0)) < 1 - erosion
    blob[half, half, half] = True
    components, _ = ndi.label(blob)
    return np.pad(components == components[half, half, half], pad)


def _box(centre: np.ndarray, half: int) -> tuple[slice, slice, slice]:
    """Index box of side ``2 * half + 1`` around ``centre``."""
    return tuple(slice(int(c) - half, int(c) + half + 1) for c in centre)


def pick_lesion_centre(
    rng: np.random.Generator,
    allowed: np.ndarray,
    half: int,
    taken: list[tuple[np.ndarray, int]],
    plane: int | None = None,
) -> np.ndarray:
    """Random voxel of ``allowed`` whose box of half-side ``half`` lies in the grid, clear of the ``taken`` lesions.

    Every axial plane (last axis) holding candidates is equally likely, whatever its number of
    candidates: lesions spread over the brain's height instead of crowding the levels where white
    matter is widest, so abnormal slices come from the same levels as normal ones and a detector
    cannot tell them apart by level alone. With ``plane``, the centre is drawn from the plane
    nearest to it that has candidates (the cohort spreads primary lesions evenly over the
    exported levels this way).

    Args:
        rng: draws the candidates.
        allowed: boolean (X, Y, Z), the voxels a centre may take.
        half: half-side (voxels) of the lesion's box.
        taken: (centre, half-side) of the lesions already placed; a new centre is farther than
            the sum of the half-sides plus one voxel from each.
        plane: index of the preferred axial plane, or None.

    Returns:
        The centre's voxel index, (3,).

    Raises:
        ValueError: no such voxel, i.e. the lesions do not fit the brain on this grid.
    """
    inside = np.zeros_like(allowed)
    inside[tuple(slice(half, n - half) for n in allowed.shape)] = True
    candidates = np.argwhere(allowed & inside)
    if plane is not None and len(candidates):
        distance = np.abs(candidates[:, 2] - plane)
        candidates = candidates[distance == distance.min()]
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


def _world(affine: np.ndarray, index: np.ndarray) -> list[float]:
    """World (RAS mm) position of voxel ``index``, rounded to 0.1 mm for the records."""
    return [round(float(x), 1) for x in nib.affines.apply_affine(affine, index)]


def _paint_tumour(
    rng: np.random.Generator, clean: np.ndarray, region: np.ndarray, white_share: np.ndarray, diameter_mm: float, voxel_size: float, wm_level: float
) -> dict:
    """A glioma's whole tumour on FLAIR: hyperintense oedema around a core that may hold necrosis.

    The oedema multiplies the tissue by ``1 + oedema_contrast`` (0.1-0.5; half of it in grey
    matter), with a 25 % smooth texture and an infiltrative edge (30 % of the contrast at the
    border, all of it 6 mm in). The core (probability 0.8), inside an oedema shell of 15-30 % of
    the diameter, multiplies the tissue by ``1 + core_contrast`` (-0.2 to 0.3); necrosis
    (probability 0.7, 2-5 mm inside the core's edge) replaces it by
    ``wm_level * (1 + necrosis_contrast)`` (-0.5 to 0.1: iso- to hypointense).
    """
    depth = depth_mm(region, voxel_size)
    texture = smooth_field(rng, region.shape, (5, 5, 5))
    oedema = float(rng.uniform(*_OEDEMA_CONTRAST))
    border, full_depth = _OEDEMA_EDGE
    edge = np.clip(border + (1 - border) * depth / full_depth, 0.0, 1.0)
    oedema_factor = 1 + oedema * edge * (0.5 + 0.5 * white_share) * (1 + 0.25 * texture)
    clean[region] *= oedema_factor[region]
    record = {"oedema_contrast": oedema, "core_contrast": None, "necrosis_contrast": None}
    thickness = max(float(rng.uniform(0.15, 0.3)) * diameter_mm, 2 * voxel_size)
    core = depth > thickness
    if rng.random() < 0.8 and core.any():
        contrast = float(rng.uniform(-0.2, 0.3))
        # the core replaces the oedema's change by its own
        clean[core] *= ((1 + contrast * (1 + 0.3 * texture)) / oedema_factor)[core]
        record.update(core_contrast=contrast, oedema_thickness_mm=thickness)
        necrosis = depth > thickness + float(rng.uniform(2.0, 5.0))
        if rng.random() < 0.7 and necrosis.any():
            contrast = float(rng.uniform(-0.5, 0.1))
            clean[necrosis] = (wm_level * (1 + contrast) * (1 + 0.05 * texture))[necrosis]
            record["necrosis_contrast"] = contrast
    return record


def _paint_cavity(rng: np.random.Generator, clean: np.ndarray, region: np.ndarray, voxel_size: float, wm_level: float) -> dict:
    """A fluid-filled cavity: dark fluid (20-50 % of white matter) inside a 2-4 mm rim of gliosis
    that multiplies the tissue by ``1 + rim_contrast`` (0.1-0.4)."""
    depth = depth_mm(region, voxel_size)
    rim = float(rng.uniform(2.0, 4.0))
    fluid, rim_contrast = float(rng.uniform(0.2, 0.5)), float(rng.uniform(0.1, 0.4))
    inner = region & (depth > rim)
    clean[region & ~inner] *= 1 + rim_contrast
    clean[inner] = wm_level * fluid
    return {"fluid_level": fluid, "rim_contrast": rim_contrast, "rim_mm": rim}


def _paint_focus(rng: np.random.Generator, clean: np.ndarray, region: np.ndarray, voxel_size: float) -> dict:
    """A small hyperintense focus: the tissue times ``1 + contrast`` (0.2-0.6) in its middle, 60 % of that at its edge."""
    depth = depth_mm(region, voxel_size)
    contrast = float(rng.uniform(0.2, 0.6))
    profile = 0.6 + 0.4 * depth / max(float(depth.max()), voxel_size)
    clean[region] *= (1 + contrast * profile)[region]
    return {"contrast": contrast}


def add_mri_lesions(
    rng: np.random.Generator,
    clean: np.ndarray,
    brain: np.ndarray,
    tissue: np.ndarray,
    white: np.ndarray,
    affine: np.ndarray,
    drawn: list[tuple[str, float]],
    wm_level: float,
    plane: int | None = None,
) -> tuple[np.ndarray, list[dict]]:
    """Paint the ``drawn`` (kind, diameter) lesions into the noise-free FLAIR ``clean`` (X, Y, Z), in place.

    Lesions are centred in white matter (``white`` probability 0.5 or more) and cover the brain
    tissue (``tissue``, grey plus white matter, 0.5 or more) of their blob: a lesion changes
    tissue, and the fluid of a sulcus or ventricle in its blob is left as it is.

    Args:
        rng: the lesions' own random stream.
        clean: noise-free FLAIR, float32 (X, Y, Z), changed in place.
        brain: boolean brain mask, (X, Y, Z).
        tissue: grey plus white matter probability, (X, Y, Z).
        white: white matter probability, (X, Y, Z).
        affine: voxel to world (RAS mm) of the grid.
        drawn: (kind, diameter in mm) of each lesion, the primary first.
        wm_level: white matter's intensity in ``clean``.
        plane: preferred axial plane of the primary lesion's centre (see :func:`pick_lesion_centre`).

    Returns:
        The lesion label volume (int16, ``i + 1`` on lesion ``i``) and the lesion parameters.
    """
    voxel_size = float(affine[2, 2])
    depth = depth_mm(brain, voxel_size)
    parenchyma = brain & (tissue >= 0.5)
    labels = np.zeros(clean.shape, np.int16)
    taken: list[tuple[np.ndarray, int]] = []
    records = []
    for index, (kind, diameter) in enumerate(drawn):
        blob = _irregular_blob(rng, diameter, voxel_size)
        half = blob.shape[0] // 2
        allowed = (depth > (half + 1) * voxel_size) & (white >= 0.5)
        centre = pick_lesion_centre(rng, allowed, half, taken, plane if index == 0 else None)
        box = _box(centre, half)
        region = blob & parenchyma[box] & (labels[box] == 0)
        if kind == "tumour":
            white_share = np.clip(white[box] / np.maximum(tissue[box], 1e-3), 0.0, 1.0)
            params = _paint_tumour(rng, clean[box], region, white_share, diameter, voxel_size, wm_level)
        elif kind == "cavity":
            params = _paint_cavity(rng, clean[box], region, voxel_size, wm_level)
        else:
            params = _paint_focus(rng, clean[box], region, voxel_size)
        labels[box][region] = index + 1
        taken.append((centre, half))
        records.append({"kind": kind, "centre_mm": _world(affine, centre), "diameter_mm": diameter, **params})
    return labels, records


def _paint_haemorrhage(
    rng: np.random.Generator,
    hu: np.ndarray,
    region: np.ndarray,
    free: np.ndarray,
    tissue: np.ndarray,
    voxel_size: float,
    small: bool,
) -> tuple[np.ndarray, dict]:
    """An intraparenchymal haematoma of 55-85 HU (50-80 when ``small``) with a 3 HU texture.

    A large one may hold hypodense pockets of 30-45 HU (probability 0.3, the swirl of unclotted
    blood) and has a ring of perihaematomal oedema 2-6 mm wide in the tissue around it, 4-10 HU
    below the tissue it replaces where it meets the clot, fading outwards, within the ``free``
    voxels (brain not taken by another lesion). Returns the changed voxels (haematoma and ring:
    the lesion's mask) and the parameters.
    """
    texture = smooth_field(rng, region.shape, (5, 5, 5))
    clot = float(rng.uniform(50.0, 80.0) if small else rng.uniform(55.0, 85.0))
    hu[region] = (clot + 3.0 * texture)[region]
    record: dict = {"hu": clot, "swirl_hu": None, "oedema_hu": None, "oedema_mm": None}
    if small:
        return region, record
    pockets = region & (depth_mm(region, voxel_size) > voxel_size) & (texture > 0.8)
    if rng.random() < 0.3 and pockets.any():
        record["swirl_hu"] = float(rng.uniform(30.0, 45.0))
        hu[pockets] = record["swirl_hu"]
    width, drop = float(rng.uniform(2.0, 6.0)), float(rng.uniform(4.0, 10.0))
    outside = ndi.distance_transform_edt(~region, sampling=voxel_size)
    ring = ~region & free & (outside <= width) & (tissue >= 0.3)
    hu[ring] -= (drop * (1 - (outside - voxel_size) / width).clip(0.2, 1.0))[ring]
    record.update(oedema_hu=-drop, oedema_mm=width)
    return region | ring, record


def add_ct_lesions(
    rng: np.random.Generator,
    hu: np.ndarray,
    brain: np.ndarray,
    tissue: np.ndarray,
    affine: np.ndarray,
    drawn: list[tuple[str, float]],
    plane: int | None = None,
) -> tuple[np.ndarray, list[dict]]:
    """Paint the ``drawn`` (kind, size) haemorrhages into the noise-free CT ``hu`` (X, Y, Z), in place.

    Args:
        rng: the lesions' own random stream.
        hu: noise-free CT in HU, float32 (X, Y, Z), changed in place.
        brain: boolean brain mask (brain and CSF), (X, Y, Z).
        tissue: grey plus white matter probability, (X, Y, Z).
        affine: voxel to world (RAS mm) of the grid.
        drawn: (kind, size in mm) of each lesion, the primary first: a haemorrhage's diameter or
            a subdural haematoma's span.
        plane: preferred axial plane of the primary lesion's centre (see :func:`pick_lesion_centre`).

    Returns:
        The lesion label volume (int16, ``i + 1`` on lesion ``i``) and the lesion parameters.
    """
    voxel_size = float(affine[2, 2])
    depth = depth_mm(brain, voxel_size)
    # subdural haematomas lie on the convexity, under the inner table of the skull
    convexity = brain & (depth <= voxel_size)
    labels = np.zeros(hu.shape, np.int16)
    taken: list[tuple[np.ndarray, int]] = []
    records = []
    for index, (kind, size) in enumerate(drawn):
        preferred = plane if index == 0 else None
        if kind in ("haemorrhage", "small_haemorrhage"):
            pad = int(np.ceil(6.0 / voxel_size)) if kind == "haemorrhage" else 0  # room for the oedema ring
            blob = _irregular_blob(rng, size, voxel_size, pad)
            half = blob.shape[0] // 2
            inner = half - pad
            allowed = (depth > (inner + 1) * voxel_size) & (tissue >= 0.5)
            centre = pick_lesion_centre(rng, allowed, half, taken, preferred)
            box = _box(centre, half)
            free = brain[box] & (labels[box] == 0)
            region, params = _paint_haemorrhage(
                rng, hu[box], blob & free, free, tissue[box], voxel_size, kind == "small_haemorrhage"
            )
            params = {"diameter_mm": size, **params}
        else:
            half = int(np.ceil(size / 2 / voxel_size))
            centre = pick_lesion_centre(rng, convexity, half, taken, preferred)
            box = _box(centre, half)
            thickness = float(rng.uniform(5.0, 18.0))
            offsets = (np.indices((2 * half + 1,) * 3, dtype=np.float32) - half) * voxel_size
            taper = 1 - (offsets**2).sum(0) / (size / 2) ** 2
            region = brain[box] & (depth[box] <= thickness * taper) & (labels[box] == 0)
            region[half, half, half] = True  # the anchor, so that a crescent thinner than a voxel is not empty
            texture = smooth_field(rng, region.shape, (4, 4, 4))
            level = float(rng.uniform(30.0, 45.0) if kind == "isodense_subdural" else rng.uniform(50.0, 80.0))
            params = {"span_mm": size, "thickness_mm": thickness, "hu": level, "chronic_hu": None}
            values = level + 2.0 * texture
            if kind == "subdural" and rng.random() < 0.3:
                # acute on chronic: part of the crescent is older, hypodense blood
                params["chronic_hu"] = float(rng.uniform(18.0, 35.0))
                values = np.where(texture > 0.3, params["chronic_hu"] + 2.0 * texture, values)
            hu[box][region] = values[region]
        labels[box][region] = index + 1
        taken.append((centre, half))
        records.append({"kind": kind, "centre_mm": _world(affine, centre), **params})
    return labels, records
