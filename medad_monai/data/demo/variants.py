"""Normal anatomical variants of the demo subjects: what is bright in a normal brain.

Brain MRI (FLAIR-like): periventricular caps at the frontal horns and the atria, the
hyperintense corticospinal tracts and a few punctate white-matter hyperintensities. Head CT: the
falx and the physiological calcifications of the pineal gland, the choroid plexus and the falx.
Every normal and abnormal subject draws them from the same distributions; the prevalences and
their sources are in ``docs/demo_cohort.md``.

Each variant is a smooth function of the template position (RAS mm) of the subject's brain
voxels, so it follows the subject's deformation without resampling another volume.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .template import TemplateLandmarks

__all__ = ["ct_variants", "flair_variants"]

# prevalences in normal adults (sources in docs/demo_cohort.md)
_FRONTAL_CAP_PREVALENCE = 0.90
_OCCIPITAL_CAP_PREVALENCE = 0.77
_CAP_ASYMMETRY = 0.54
_PINEAL_CALCIFICATION = 0.71
_CHOROID_CALCIFICATION = 0.66
_FALX_CALCIFICATION = 0.073
# the corticospinal tract: through the posterior limb of the internal capsule towards the
# centrum semiovale (our reading of the template), hyperintense over 5-55 mm of its length
_CST_POINT_MM = np.array([21.0, -10.0, 0.0])
_CST_DIRECTION = np.array([4.0, -12.0, 40.0]) / np.linalg.norm([4.0, -12.0, 40.0])
_CST_CENTRE_Z_MM = 5.0


def _add_blob(target: np.ndarray, points_mm: np.ndarray, centre_mm: np.ndarray, sigma_mm: float, amplitude: float) -> None:
    """Add a Gaussian profile of peak ``amplitude`` around ``centre_mm`` to ``target`` (N,) at
    ``points_mm`` (N, 3), in place; only the points within 4 sigma per axis are computed."""
    near = np.flatnonzero((np.abs(points_mm - centre_mm) < 4 * sigma_mm).all(1))
    target[near] += amplitude * np.exp(-0.5 * ((points_mm[near] - centre_mm) ** 2).sum(1) / sigma_mm**2)


def _side_weights(rng: np.random.Generator, asymmetry: float) -> np.ndarray:
    """Amplitude factors of the right and left structures: equal, or one of them 0.3-0.8 of the other."""
    weights = np.ones(2)
    if rng.random() < asymmetry:
        weights[rng.integers(2)] = rng.uniform(0.3, 0.8)
    return weights


def flair_variants(
    rng: np.random.Generator,
    points_mm: np.ndarray,
    white: np.ndarray,
    quantiles: Mapping[str, float],
    landmarks: TemplateLandmarks,
) -> tuple[np.ndarray, dict]:
    """Relative FLAIR change of each brain voxel from its normal variants.

    Args:
        rng: the subject's generator.
        points_mm: template position (RAS mm) of each brain voxel, (N, 3).
        white: white-matter probability of each brain voxel, (N,).
        quantiles: the subject's ``frontal_caps``, ``occipital_caps``, ``cst`` and ``wmh``
            quantiles in [0, 1): presence and extent of the variants (stratified over a split's
            subjects by the cohort).
        landmarks: from :func:`~medad_monai.data.demo.template.load_template_landmarks`.

    Returns:
        ``(change, record)``: the image is multiplied by ``1 + change`` (N,), zero where there is
        no white matter; ``record`` holds the drawn amplitudes and counts.
    """
    change = np.zeros(len(points_mm), np.float32)
    record: dict = {}
    for name, tips, offset, prevalence in (
        ("frontal_caps", landmarks.frontal_horns_mm, np.array([0.0, 4.0, 0.0]), _FRONTAL_CAP_PREVALENCE),
        ("occipital_caps", landmarks.atria_mm, np.array([0.0, -4.0, 0.0]), _OCCIPITAL_CAP_PREVALENCE),
    ):
        sides = _side_weights(rng, _CAP_ASYMMETRY)
        amplitude, sigma = rng.uniform(0.15, 0.45), rng.uniform(3.0, 5.0)
        present = quantiles[name] < prevalence
        if present:
            for tip, side in zip(tips, sides):
                _add_blob(change, points_mm, tip + offset, sigma, amplitude * side)
        record[name] = float(amplitude) * present
    # corticospinal tracts: a tube of sigma 2.5 mm on each side, hyperintense over a length in z
    length = 5.0 + 50.0 * quantiles["cst"]
    amplitude = rng.uniform(0.05, 0.15)
    for sign in (1.0, -1.0):
        point = _CST_POINT_MM * np.array([sign, 1.0, 1.0])
        direction = _CST_DIRECTION * np.array([sign, 1.0, 1.0])
        offsets = points_mm - point
        across = offsets - np.outer(offsets @ direction, direction)
        along = np.abs(points_mm[:, 2] - _CST_CENTRE_Z_MM) / (length / 2)
        change += amplitude * np.exp(-0.5 * (across**2).sum(1) / 2.5**2) * np.clip(1.5 - along, 0.0, 1.0)
    record["cst_length_mm"] = float(length)
    # punctate white-matter hyperintensities: 0-3, 2-5 mm across, in deep white matter
    count = int(4 * quantiles["wmh"])
    deep = np.flatnonzero(white >= 0.8)
    for centre in points_mm[rng.choice(deep, size=min(count, len(deep)), replace=False)]:
        _add_blob(change, points_mm, centre, rng.uniform(0.8, 1.6), rng.uniform(0.2, 0.5))
    record["wmh_count"] = count
    return change * white, record


def ct_variants(
    rng: np.random.Generator,
    points_mm: np.ndarray,
    csf: np.ndarray,
    quantiles: Mapping[str, float],
    landmarks: TemplateLandmarks,
) -> tuple[np.ndarray, dict]:
    """Hounsfield units that the falx and physiological calcifications add to each brain voxel.

    Args:
        rng: the subject's generator.
        points_mm: template position (RAS mm) of each brain voxel, (N, 3).
        csf: CSF share of each brain voxel, (N,): the falx runs in the interhemispheric CSF.
        quantiles: the subject's ``pineal``, ``choroid`` and ``falx`` quantiles in [0, 1): a
            calcification is present when its quantile is below its prevalence.
        landmarks: from :func:`~medad_monai.data.demo.template.load_template_landmarks`.

    Returns:
        ``(added_hu, record)``: (N,) HU to add before the blur, and the drawn parameters.
    """
    x, z = points_mm[:, 0], points_mm[:, 2]
    falx_hu = rng.uniform(15.0, 30.0)
    added = (falx_hu * np.exp(-0.5 * (x / 0.8) ** 2) * np.clip(csf / 0.3, 0.0, 1.0) * (z > -20.0)).astype(np.float32)
    record: dict = {"falx_hu": float(falx_hu)}

    def calcify(centre_mm: np.ndarray) -> None:
        # a nodule 3-8 mm across whose peak is 80-250 HU above the tissue
        _add_blob(added, points_mm, centre_mm + rng.uniform(-1.5, 1.5, 3), rng.uniform(0.75, 2.0), rng.uniform(80.0, 250.0))

    record["pineal_calcified"] = bool(quantiles["pineal"] < _PINEAL_CALCIFICATION)
    if record["pineal_calcified"]:
        calcify(landmarks.pineal_mm)
    sides = [0, 1] if rng.random() < 0.8 else [int(rng.integers(2))]
    record["choroid_calcified"] = bool(quantiles["choroid"] < _CHOROID_CALCIFICATION)
    if record["choroid_calcified"]:
        for side in sides:
            calcify(landmarks.atria_mm[side] + np.array([0.0, 3.0, -2.0]))
    plaque = np.array([0.0, rng.uniform(-60.0, 40.0), rng.uniform(0.0, 30.0)])
    record["falx_calcified"] = bool(quantiles["falx"] < _FALX_CALCIFICATION)
    if record["falx_calcified"]:
        calcify(plaque)
    return added, record
