"""Demo cohorts: their parameters, how subjects become slices and splits, and how a cohort is
written, found again and reused. ``docs/demo_cohort.md`` specifies the rules and the layout."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from medad_monai.data.datalist import load_anomaly_datalist, write_datalist

from .anatomy import DemoSubject, synthesize_subject
from .dicom import write_ct_series
from .lesions import draw_lesions
from .template import DEMO_MODALITIES

__all__ = [
    "DATALIST_NAME",
    "DEMO_GENERATOR_VERSION",
    "LESIONS_NAME",
    "MANIFEST_NAME",
    "DemoCohortParameters",
    "ensure_demo_cohort",
    "generate_demo_cohort",
]

#: Bump when a change alters the generated files; existing cohorts then no longer match.
DEMO_GENERATOR_VERSION = 4
MANIFEST_NAME = "manifest.json"
DATALIST_NAME = "datalist.json"
LESIONS_NAME = "lesions.json"

_SPLITS = ("training", "validation", "test")
_SPLIT_PREFIX = {"training": "train", "validation": "val", "test": "test"}
# a group that has not reached its slice count after this many subjects beyond the count is stuck
_EXTRA_SUBJECTS = 20


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
    ``.<modality>.partial-*`` folder, which nothing reads). The model and the rules are in
    ``docs/demo_cohort.md``; the counts are minimum numbers of slices, reached by adding whole subjects
    (see :class:`DemoCohortParameters`); ``manifest.json`` holds the exact counts.

    Returns:
        Absolute path of ``root_dir/<modality>/datalist.json``.

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
    # absolute, so that the datalist's paths are made relative to the cohort folder whatever the
    # working directory (a relative root used to leave paths into the temporary folder in it)
    root = Path(os.path.abspath(root_dir))
    target = root / modality
    if target.exists():
        raise FileExistsError(
            f"'{target}' already exists: ensure_demo_cohort reuses a matching cohort, or remove it to regenerate."
        )
    partial = root / f".{modality}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"
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
    cohort is reused when its manifest matches the request and every file its datalist names
    exists; it is never overwritten.

    Args:
        root_dir: folder that holds one sub-folder per modality.
        modality: ``"brain_mri"`` or ``"head_ct"``.
        seed: cohort seed.
        parameters: :class:`DemoCohortParameters` fields, passed to :func:`generate_demo_cohort`.

    Returns:
        Absolute path of ``root_dir/<modality>/datalist.json``.

    Raises:
        ValueError: ``root_dir/<modality>`` exists but is not a demo cohort, or was generated with
            another seed, generator version or parameters (the message names the folder and the
            differences).
        FileNotFoundError: the cohort's datalist, or a file it names, is missing (the message
            names the folder and the file).
        TypeError: an unknown parameter name.
    """
    seed = _check_modality_seed(modality, seed)
    params = DemoCohortParameters(**parameters)
    target = Path(os.path.abspath(root_dir)) / modality
    if not target.exists():
        try:
            return generate_demo_cohort(target.parent, modality, seed, **asdict(params))
        except FileExistsError:
            # another process (e.g. another rank) finished first: check its cohort below
            if not target.exists():
                raise
    return _reuse_cohort(target, _request(modality, seed, params))


def _reuse_cohort(target: Path, request: dict) -> Path:
    """Datalist of the cohort in ``target`` if its manifest matches ``request`` and its files exist."""
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
