"""Lesions of the demo cohort: which are drawn, where they go and how they are painted.

The lesion model (kinds, sizes, contrasts, placement) is specified in ``docs/demo_cohort.md``.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi
from scipy.spatial.transform import Rotation

from .fields import depth_mm, smooth_field
from .template import DEMO_MODALITIES

__all__ = ["add_ct_lesions", "add_mri_lesions", "draw_lesions", "lesion_kinds", "pick_lesion_centre"]

# a tumour's oedema ring: at least 2 voxels thick (the blur takes half or more off the contrast of
# a 1-voxel ring next to an opposite-signed core) and of contrast at least -0.15 (its blurred edges
# stay near -0.1)
_MIN_OEDEMA_VOXELS = 2
_MIN_OEDEMA_CONTRAST = 0.15

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


def lesion_kinds(modality: str) -> set[str]:
    """Names of the lesion kinds of ``modality`` (the ``kind`` of :func:`draw_lesions`' draws)."""
    if modality not in DEMO_MODALITIES:
        raise ValueError(f"modality must be one of {DEMO_MODALITIES}, got {modality!r}.")
    return {kind for table in _LESION_TABLE[modality].values() for kind, *_ in table}


def draw_lesions(rng: np.random.Generator, modality: str) -> list[tuple[str, float]]:
    """(kind, size in mm) of the lesions of one random abnormal subject of ``modality``.

    A primary lesion, then with probability 1/2 one to three secondary ones, drawn from the
    kinds and size ranges of ``docs/demo_cohort.md``.
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
    erosion = 0.25 * 0.5 * (1 + np.tanh(smooth_field(rng, (size,) * 3, (4, 4, 4))))
    blob = np.sqrt((local**2).sum(0)) < 1 - erosion
    blob[half, half, half] = True
    components, _ = ndi.label(blob)
    return components == components[half, half, half]


def _box(centre: np.ndarray, half: int) -> tuple[slice, slice, slice]:
    """Index box of side ``2 * half + 1`` around ``centre``."""
    return tuple(slice(int(c) - half, int(c) + half + 1) for c in centre)


def pick_lesion_centre(
    rng: np.random.Generator, allowed: np.ndarray, half: int, taken: list[tuple[np.ndarray, int]]
) -> np.ndarray:
    """Random voxel of ``allowed`` whose box of half-side ``half`` lies in the grid, clear of the ``taken`` lesions.

    Every axial plane (last axis) holding candidates is equally likely, whatever its number of
    candidates: lesions spread over the brain's height instead of crowding the levels where white
    matter is widest, so abnormal slices come from the same levels as normal ones and a detector
    cannot tell them apart by level alone.

    Args:
        rng: draws the candidates.
        allowed: boolean (X, Y, Z), the voxels a centre may take.
        half: half-side (voxels) of the lesion's box.
        taken: (centre, half-side) of the lesions already placed; a new centre is farther than
            the sum of the half-sides plus one voxel from each.

    Returns:
        The centre's voxel index, (3,).

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
    texture = 1 + 0.02 * smooth_field(rng, region.shape, (4, 4, 4))
    contrast = float(rng.uniform(0.1, 0.6))
    if kind == "tumour":
        contrast *= float(rng.choice([-1.0, 1.0]))
        depth = depth_mm(region, voxel_size)
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


def _world(affine: np.ndarray, index: np.ndarray) -> list[float]:
    """World (RAS mm) position of voxel ``index``, rounded to 0.1 mm for the records."""
    return [round(float(x), 1) for x in nib.affines.apply_affine(affine, index)]


def add_mri_lesions(
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

    Args:
        rng: the lesions' own random stream.
        clean: noise-free MRI, float32 (X, Y, Z), changed in place.
        brain: boolean brain mask, (X, Y, Z).
        tissue: grey plus white matter probability, (X, Y, Z).
        white: white matter probability, (X, Y, Z).
        affine: voxel to world (RAS mm) of the grid.
        drawn: (kind, diameter in mm) of each lesion.

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
        centre = pick_lesion_centre(rng, (depth > (half + 1) * voxel_size) & (white >= 0.5), half, taken)
        box = _box(centre, half)
        # lesions change tissue: a blob over a sulcus or ventricle leaves its fluid as it is
        region = blob & parenchyma[box]
        params = _paint_mri_lesion(rng, clean[box], region, kind, diameter, voxel_size)
        labels[box][region] = index + 1
        taken.append((centre, half))
        records.append({"kind": kind, "centre_mm": _world(affine, centre), "diameter_mm": diameter, **params})
    return labels, records


def add_ct_lesions(
    rng: np.random.Generator,
    hu: np.ndarray,
    brain: np.ndarray,
    tissue: np.ndarray,
    affine: np.ndarray,
    drawn: list[tuple[str, float]],
) -> tuple[np.ndarray, list[dict]]:
    """Paint the ``drawn`` (kind, size) haemorrhages into the noise-free CT ``hu`` (X, Y, Z), in place.

    Args:
        rng: the lesions' own random stream.
        hu: noise-free CT in HU, float32 (X, Y, Z), changed in place.
        brain: boolean brain mask (brain and CSF), (X, Y, Z).
        tissue: grey plus white matter probability, (X, Y, Z).
        affine: voxel to world (RAS mm) of the grid.
        drawn: (kind, size in mm) of each lesion: a haemorrhage's diameter or a subdural
            haematoma's span.

    Returns:
        The lesion label volume (int16, ``i + 1`` on lesion ``i``) and the lesion parameters.
    """
    voxel_size = float(affine[2, 2])
    depth = depth_mm(brain, voxel_size)
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
            centre = pick_lesion_centre(rng, (depth > (half + 1) * voxel_size) & (tissue >= 0.5), half, taken)
            box = _box(centre, half)
            region = blob & brain[box]
            params = {"diameter_mm": size, "hu": float(rng.uniform(50.0, 90.0))}
        else:
            half = int(np.ceil(size / 2 / voxel_size))
            centre = pick_lesion_centre(rng, convexity, half, taken)
            box = _box(centre, half)
            thickness = float(rng.uniform(3.0, 10.0))
            offsets = (np.indices((2 * half + 1,) * 3, dtype=np.float32) - half) * voxel_size
            taper = 1 - (offsets**2).sum(0) / (size / 2) ** 2
            region = brain[box] & (depth[box] <= thickness * taper)
            region[half, half, half] = True  # the anchor, so that a crescent thinner than a voxel is not empty
            params = {"span_mm": size, "thickness_mm": thickness, "hu": float(rng.uniform(50.0, 80.0))}
        texture = 2.0 * smooth_field(rng, region.shape, (4, 4, 4))
        hu[box][region] = params["hu"] + texture[region]
        labels[box][region] = index + 1
        taken.append((centre, half))
        records.append({"kind": kind, "centre_mm": _world(affine, centre), **params})
    return labels, records
