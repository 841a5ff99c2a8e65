"""Demo cohorts: their parameters, how subjects become slices and splits, and how a cohort is
written, found again and reused. ``docs/demo_cohort.md`` specifies the rules and the layout."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from medad_monai.data.datalist import load_anomaly_datalist, write_datalist

from .anatomy import NUISANCES, DemoSubject, synthesize_subject
from .dicom import write_ct_series
from .lesions import HARD_KINDS, draw_lesions
from .template import DEMO_MODALITIES

__all__ = [
    "DATALIST_NAME",
    "DEMO_GENERATOR_VERSION",
    "LESIONS_NAME",
    "MANIFEST_NAME",
    "DemoCohortParameters",
    "ensure_demo_cohort",
    "generate_demo_cohort",
    "subject_quantiles",
]

#: Bump when a change alters the generated files: a cohort of an older version is regenerated.
DEMO_GENERATOR_VERSION = 5
MANIFEST_NAME = "manifest.json"
DATALIST_NAME = "datalist.json"
LESIONS_NAME = "lesions.json"

_SPLITS = ("training", "validation", "test")
_SPLIT_PREFIX = {"training": "train", "validation": "val", "test": "test"}
# a group that has not reached its slice count after this many subjects beyond the count is stuck
_EXTRA_SUBJECTS = 20
# stratified quantiles of a subject beyond its nuisances: its primary lesion's level, whether it
# belongs to the harder subset, and which of its levels a normal subject exports
_COHORT_QUANTILES = ("level", "hard", "slices")
# steps of the Kronecker sequence of the quantiles: fractional parts of the square roots of the
# first primes (quadratic irrationals: any 32 consecutive points put 4 +/- 2 in every eighth of [0, 1))
_QUANTILE_STEPS = np.sqrt([2.0, 3.0, 5.0, 7.0, 11.0, 13.0, 17.0, 19.0, 23.0, 29.0, 31.0, 37.0]) % 1.0


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
        slice_stride: export every ``slice_stride``-th axial plane of the band.
        band_lo_mm: the exported axial planes lie at world z (RAS mm, the template's space) in
            ``[band_lo_mm, band_hi_mm)``: the band of levels BMAD takes from BraTS.
        band_hi_mm: see ``band_lo_mm``.
        min_lesion_area_mm2: a plane of a benchmark-lesion subject is abnormal iff its lesion
            mask covers at least this area; planes of abnormal subjects below it are dropped.
        min_hard_lesion_area_mm2: the same for the subjects of the harder subset, whose lesions
            (small foci, cavities, small haemorrhages) are small by design.
        max_subject_slices: a validation or test subject exports at most this many planes, spread
            evenly: a normal subject over the band, an abnormal one over its abnormal planes. Every
            subject of a split then weighs about the same, so the split's slices keep the balance
            of its subjects' stratified nuisances, and no single subject's anatomy dominates it.
            Training subjects export every plane of the band, as BMAD's do.
        hard_fraction: share of the abnormal subjects whose lesions are of the harder subset.
    """

    num_train: int = 300
    num_val_normal: int = 40
    num_val_abnormal: int = 40
    num_test_normal: int = 100
    num_test_abnormal: int = 100
    voxel_size: float = 2.0
    slice_stride: int = 2
    band_lo_mm: float = -12.0
    band_hi_mm: float = 28.0
    min_lesion_area_mm2: float = 100.0
    min_hard_lesion_area_mm2: float = 16.0
    max_subject_slices: int = 4
    hard_fraction: float = 0.25

    def __post_init__(self) -> None:
        for name in ("num_train", "num_val_normal", "num_val_abnormal", "num_test_normal", "num_test_abnormal"):
            minimum = 1 if name == "num_train" else 0
            object.__setattr__(self, name, _check_int(name, getattr(self, name), minimum))
        object.__setattr__(self, "slice_stride", _check_int("slice_stride", self.slice_stride, minimum=1))
        object.__setattr__(self, "max_subject_slices", _check_int("max_subject_slices", self.max_subject_slices, minimum=1))
        for name, low, high in (
            ("voxel_size", 1.0, np.inf),
            ("band_lo_mm", -np.inf, np.inf),
            ("band_hi_mm", -np.inf, np.inf),
            ("min_lesion_area_mm2", 0.0, np.inf),
            ("min_hard_lesion_area_mm2", 0.0, np.inf),
            ("hard_fraction", 0.0, 1.0),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not low <= value <= high:
                raise ValueError(f"{name} must be a number in [{low}, {high}], got {value!r}.")
            # stored as float so that a manifest written from 2 matches a request of 2.0
            object.__setattr__(self, name, float(value))
        if self.min_lesion_area_mm2 == 0.0 or self.min_hard_lesion_area_mm2 == 0.0:
            raise ValueError("min_lesion_area_mm2 and min_hard_lesion_area_mm2 must be positive.")
        if not self.band_lo_mm < self.band_hi_mm:
            raise ValueError(f"band_lo_mm must be below band_hi_mm, got {self.band_lo_mm} and {self.band_hi_mm}.")


def _check_int(name: str, value: Any, minimum: int) -> int:
    """``value`` as a Python int; ValueError unless it is an integer (not bool) of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}.")
    return int(value)


def _band_planes(affine: np.ndarray, depth: int, params: DemoCohortParameters) -> np.ndarray:
    """Indices k of the exported planes ``volume[:, :, k]``: world z in the band, every ``slice_stride``-th."""
    z = affine[2, 2] * np.arange(depth) + affine[2, 3]
    return np.flatnonzero((z >= params.band_lo_mm) & (z < params.band_hi_mm))[:: params.slice_stride]


def subject_quantiles(seed: int, modality: str, split: str, index: int) -> dict[str, float]:
    """Stratified quantiles in [0, 1) of the subject ``index`` of a split, normal or abnormal.

    They set the subject's nuisances (``NUISANCES``), its primary lesion's level (``level``),
    whether an abnormal subject is in the harder subset (``hard``) and which planes a validation
    or test subject exports (``slices``).

    Point ``index + 1`` of a Kronecker low-discrepancy sequence (one irrational step per
    quantile), shifted at random per (seed, modality, split): the normal and abnormal subjects of
    a split take the same points, so they cover the same sizes, intensity scales, noise levels,
    variants and levels, evenly, and no nuisance tells the groups apart by chance.
    """
    if modality not in DEMO_MODALITIES or split not in _SPLITS:
        raise ValueError(f"modality and split must be in {DEMO_MODALITIES} and {_SPLITS}, got {modality!r}, {split!r}.")
    names = NUISANCES[modality] + _COHORT_QUANTILES
    alpha = _QUANTILE_STEPS[: len(names)]
    key = (DEMO_MODALITIES.index(modality), _SPLITS.index(split), 2)  # label 2: shared by both groups
    shift = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key)).random(len(names))
    return dict(zip(names, ((shift + (index + 1) * alpha) % 1.0).tolist()))


def _lesion_level(params: DemoCohortParameters, drawn: list[tuple[str, float]], quantile: float) -> float | None:
    """World z of the primary lesion's centre: ``quantile`` of the band widened by a third of the
    lesion's size on both sides, moved to the nearest exported level; None without lesions.

    A lesion covers the levels within about a third of its size from its centre (its blob's axes
    are 0.7-1 times its size, randomly oriented), so centres spread evenly over the widened band
    cover the band's levels evenly: abnormal slices come from the same levels as normal ones,
    not more often from the band's middle. On an exported level, a lesion smaller than the
    spacing of the exported planes is not missed by them.
    """
    if not drawn:
        return None
    margin = drawn[0][1] / 3
    level = params.band_lo_mm - margin + quantile * (params.band_hi_mm - params.band_lo_mm + 2 * margin)
    spacing = params.slice_stride * params.voxel_size
    return params.band_lo_mm + round((level - params.band_lo_mm) / spacing) * spacing


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


def _slice_kind(subject: DemoSubject, k: int) -> str:
    """Kind of the lesion covering most of plane ``k``, ``"normal"`` on a lesion-free plane."""
    counts = np.bincount(subject.lesion_labels[:, :, k].ravel())
    counts[0] = 0
    return subject.lesions[int(np.argmax(counts)) - 1]["kind"] if counts.any() else "normal"


def _subset(modality: str, kind: str) -> str:
    """``"normal"``, ``"hard"`` (a kind of :data:`~medad_monai.data.demo.lesions.HARD_KINDS`) or ``"benchmark"``."""
    return "normal" if kind == "normal" else "hard" if kind in HARD_KINDS[modality] else "benchmark"


def _export_subject(
    folder: Path,
    modality: str,
    seed: int,
    split: str,
    label: int,
    subject_id: str,
    subject: DemoSubject,
    params: DemoCohortParameters,
    slices_quantile: float,
) -> tuple[list[dict], dict, int]:
    """Write one subject's volume, mask and exported slices under ``folder``.

    A training subject exports every plane of the band. A validation or test subject exports
    at most ``max_subject_slices`` planes, evenly spaced from an offset set by
    ``slices_quantile``: a normal subject's from the band, an abnormal subject's from its planes
    whose lesion area reaches the threshold of its subset (its other planes are dropped).

    Returns:
        The slice items (absolute paths), the volume item and the number of dropped planes (an
        abnormal subject's band planes without enough lesion).
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
    kind = subject.lesions[0]["kind"] if subject.lesions else "normal"
    subset = _subset(modality, kind)
    volume_item = {"image": image_path, "label": label, "mask": mask_path, "subject": subject_id, "kind": kind, "subset": subset}

    band = _band_planes(subject.affine, subject.image.shape[2], params)
    if len(band) == 0:
        raise ValueError(f"no axial plane of {subject_id} lies in the band [{params.band_lo_mm}, {params.band_hi_mm}) mm.")
    min_area = params.min_hard_lesion_area_mm2 if subset == "hard" else params.min_lesion_area_mm2
    lesion_area = subject.mask.sum(axis=(0, 1))[band] * params.voxel_size**2
    # abnormal subjects give abnormal slices only: their lesion-free and sub-threshold slices are dropped
    levels = band[lesion_area >= min_area] if label else band
    dropped = len(band) - len(levels)
    if split != "training" and len(levels) > params.max_subject_slices:
        spread = (slices_quantile + np.arange(params.max_subject_slices)) * len(levels) / params.max_subject_slices
        levels = levels[spread.astype(int)]
    items = []
    for k in levels:
        stem = folder / "slices" / subject_id / f"{subject_id}_z{k:03d}"
        plane = _plane_affine(subject.affine, int(k))
        slice_kind = _slice_kind(subject, int(k))
        item = {"image": stem.with_name(stem.name + "_image.nii.gz"), "label": label, "kind": slice_kind}
        item["subset"] = _subset(modality, slice_kind)
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
                    "requested: lower min_lesion_area_mm2 or voxel_size, or widen the band."
                )
            subject_id = _subject_id(split, label, index)
            rng = _subject_rng(seed, modality, split, label, index)
            quantiles = subject_quantiles(seed, modality, split, index)
            drawn = draw_lesions(rng, modality, quantiles["hard"] < params.hard_fraction) if label else []
            subject = synthesize_subject(
                modality,
                rng,
                drawn,
                params.voxel_size,
                nuisance={name: quantiles[name] for name in NUISANCES[modality]},
                lesion_level_mm=_lesion_level(params, drawn, quantiles["level"]),
            )
            items, volume_item, subject_dropped = _export_subject(
                folder, modality, seed, split, label, subject_id, subject, params, quantiles["slices"]
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
    kinds = {split: dict(sorted(Counter(item["kind"] for item in datalist[split]).items())) for split in _SPLITS}
    manifest = {
        **_request(modality, seed, params),
        "template": "MNI ICBM152 2009a nonlinear symmetric (nilearn.datasets.load_mni152_*)",
        "counts": {"subjects": subjects, "slices": slices, "slices_by_kind": kinds, "dropped_slices": dropped},
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


def _build(root: Path, modality: str, seed: int, params: DemoCohortParameters) -> Path:
    """Write a complete cohort into a new hidden folder of ``root`` and return that folder.

    A killed run leaves a ``.<modality>.partial-*`` folder, which nothing reads; any other failure
    removes it.
    """
    partial = root / f".{modality}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    partial.mkdir(parents=True)
    try:
        _write_cohort(partial, modality, seed, params)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return partial


def generate_demo_cohort(
    root_dir: str | os.PathLike, modality: str = "brain_mri", seed: int = 0, **parameters: Any
) -> Path:
    """Generate a demo cohort of ``modality`` into ``root_dir/<modality>/`` and return its datalist path.

    The cohort is written into a hidden sibling folder that is renamed into place once complete,
    so an interrupted run never leaves a cohort that looks complete. The model and the rules are
    in ``docs/demo_cohort.md``; the counts are minimum numbers of slices, reached by adding whole
    subjects (see :class:`DemoCohortParameters`); ``manifest.json`` holds the exact counts.

    Args:
        root_dir: folder that receives one sub-folder per modality.
        modality: ``"brain_mri"`` or ``"head_ct"``.
        seed: cohort seed.
        parameters: :class:`DemoCohortParameters` fields.

    Returns:
        Absolute path of ``root_dir/<modality>/datalist.json``.

    Raises:
        FileExistsError: ``root_dir/<modality>`` exists (use :func:`ensure_demo_cohort` to reuse it).
        ValueError: an argument is out of range.
        TypeError: an unknown parameter name.
    """
    seed = _check_modality_seed(modality, seed)
    params = DemoCohortParameters(**parameters)
    # absolute, so that the datalist's paths are made relative to the cohort folder whatever the
    # working directory (a relative root used to leave paths into the temporary folder in it)
    root = Path(os.path.abspath(root_dir))
    target = root / modality
    if target.exists():
        raise FileExistsError(
            f"'{target}' already exists: ensure_demo_cohort reuses a matching cohort, or remove it to regenerate."
        )
    partial = _build(root, modality, seed, params)
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
    cohort is reused when its manifest matches the request and every file its datalist names
    exists. A cohort written by another generator version is a stale cache: it is replaced by a
    new one (the new one is complete before the old one goes). Nothing else is ever overwritten.

    Args:
        root_dir: folder that holds one sub-folder per modality.
        modality: ``"brain_mri"`` or ``"head_ct"``.
        seed: cohort seed.
        parameters: :class:`DemoCohortParameters` fields, passed to :func:`generate_demo_cohort`.

    Returns:
        Absolute path of ``root_dir/<modality>/datalist.json``.

    Raises:
        ValueError: ``root_dir/<modality>`` exists but is not a demo cohort, or was generated with
            another seed or parameters (the message names the folder and the differences).
        FileNotFoundError: the cohort's datalist, or a file it names, is missing (the message
            names the folder and the file).
        TypeError: an unknown parameter name.
    """
    seed = _check_modality_seed(modality, seed)
    params = DemoCohortParameters(**parameters)
    target = Path(os.path.abspath(root_dir)) / modality
    request = _request(modality, seed, params)
    if not target.exists():
        try:
            return generate_demo_cohort(target.parent, modality, seed, **asdict(params))
        except FileExistsError:
            # another process (e.g. another rank) finished first: check its cohort below
            if not target.exists():
                raise
    elif _read_manifest(target).get("generator_version") != DEMO_GENERATOR_VERSION:
        _replace_stale(target, modality, seed, params)
    return _reuse_cohort(target, request)


def _read_manifest(target: Path) -> dict:
    """The manifest of the cohort in ``target``; ValueError if ``target`` holds none (not a cohort)."""
    manifest_path = target / MANIFEST_NAME
    if not manifest_path.is_file():
        raise ValueError(
            f"'{target}' exists but holds no {MANIFEST_NAME}, so it is not a demo cohort: "
            "move it away or choose another root_dir."
        )
    with open(manifest_path) as f:
        manifest = json.load(f)
    if not isinstance(manifest, dict) or "generator_version" not in manifest:
        raise ValueError(f"'{manifest_path}' is not a demo cohort manifest: move '{target}' away or choose another root_dir.")
    return manifest


def _differences(manifest: dict, request: dict) -> list[str]:
    """``key: requested ..., found ...`` for each field of ``request`` that ``manifest`` does not match."""
    differences = [
        f"{key}: requested {value!r}, found {manifest.get(key)!r}"
        for key, value in request.items()
        if key != "parameters" and manifest.get(key) != value
    ]
    found_parameters = manifest.get("parameters", {})
    return differences + [
        f"{key}: requested {value!r}, found {found_parameters.get(key)!r}"
        for key, value in request["parameters"].items()
        if found_parameters.get(key) != value
    ]


def _replace_stale(target: Path, modality: str, seed: int, params: DemoCohortParameters) -> None:
    """Replace the cohort of another generator version in ``target`` by a new one.

    The new cohort is built beside it first, then swapped in. Processes that do this at once
    (e.g. the ranks of a multi-GPU run) all end with one complete new cohort: a process finding
    the old one already moved away, or a new one already in place, keeps that one.
    """
    partial = _build(target.parent, modality, seed, params)
    stale = target.parent / f".{modality}.stale-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        if target.exists() and _read_manifest(target).get("generator_version") == DEMO_GENERATOR_VERSION:
            return  # another process's new cohort is already in place
        try:
            os.rename(target, stale)
        except FileNotFoundError:
            pass  # another process moved the old cohort away; its new one follows
        try:
            os.rename(partial, target)
        except OSError:
            if not target.exists():
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
        shutil.rmtree(stale, ignore_errors=True)


def _reuse_cohort(target: Path, request: dict) -> Path:
    """Datalist of the cohort in ``target`` if its manifest matches ``request`` and its files exist."""
    differences = _differences(_read_manifest(target), request)
    if differences:
        raise ValueError(
            f"the demo cohort in '{target}' does not match the request ({'; '.join(differences)}): "
            "remove it to regenerate, or choose another root_dir."
        )
    datalist = target / DATALIST_NAME
    if not datalist.is_file():
        raise FileNotFoundError(f"demo cohort '{target}' has a manifest but no {DATALIST_NAME}.")
    with open(datalist) as f:
        keys = list(json.load(f))
    try:
        for key in keys:
            load_anomaly_datalist(datalist, key)
    except FileNotFoundError as error:
        raise FileNotFoundError(
            f"demo cohort '{target}' is incomplete ({error}): remove it to regenerate, or choose another root_dir."
        ) from error
    return datalist
