"""Datalist builders for the public benchmarks that SP-Mamba and UMIAD-EGMF evaluate on.

Each builder reads a dataset in the folder layout it is released in and returns a
MONAI decathlon-style datalist::

    {"training": [...], "validation": [...], "test": [...]}

with one dict per image: ``image`` (absolute path), ``label`` (0 normal, 1 abnormal),
``mask`` (absolute path of a binary lesion mask) where the dataset has one, ``class``
(category, multi-class benchmarks only) and ``source`` (the original split folder, where
the dataset defines splits). ``training`` holds normal images only. ``validation`` is
drawn from images the test never sees:

- when the dataset ships a validation split and ``val_fraction`` is None, it is used as is;
- otherwise ``val_fraction`` (default :data:`DEFAULT_VAL_FRACTION`) of every label group of
  the non-test pool is carved out, seeded: the training normals (plus a shipped validation
  split) and, only where the dataset has abnormal images outside its test split, those;
  abnormal images of that pool left over stay out of the datalist.

Paths are absolute; :func:`medad_monai.data.datalist.write_datalist` makes them relative
to the JSON's folder. ``docs/datasets.md`` gives the layouts, the commands and what each
validation split contains.
"""

from __future__ import annotations

import csv
import math
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

__all__ = [
    "DATASET_BUILDERS",
    "DEFAULT_VAL_FRACTION",
    "IMAGE_EXTENSIONS",
    "build_bmad_datalist",
    "build_busi_datalist",
    "build_chexpert_datalist",
    "build_datalist",
    "build_head_ct_datalist",
    "build_zhanglab_datalist",
]

DatalistItem = dict[str, Any]
Datalist = dict[str, list[DatalistItem]]
FolderNames = str | Sequence[str]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
DEFAULT_VAL_FRACTION = 0.1
NORMAL, ABNORMAL = 0, 1
SPLIT_KEYS = ("training", "validation", "test")

# BMAD / Uni-Medical: the normal state folder; every other state folder is abnormal.
BMAD_NORMAL_STATE = "good"
# BUSI: category folder -> image label.
BUSI_CATEGORIES = {"normal": NORMAL, "benign": ABNORMAL, "malignant": ABNORMAL}
_BUSI_MASK = re.compile(r"^(?P<image>.+)_mask(?:_\d+)?$")


# ----------------------------------------------------------------------------- file helpers
def _require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise FileNotFoundError(f"{what} folder not found: {path}")
    return path


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def _list_images(folder: Path, what: str) -> list[Path]:
    """Sorted image files of ``folder``; hidden files (``.DS_Store``) are OS metadata and ignored.

    Raises:
        FileNotFoundError: ``folder`` does not exist.
        ValueError: ``folder`` holds something other than images, or no image.
    """
    _require_dir(folder, what)
    images = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if not (entry.is_file() and _is_image(entry)):
            raise ValueError(
                f"unexpected entry {entry} in {what} folder (expected image files {', '.join(IMAGE_EXTENSIONS)})"
            )
        images.append(entry)
    if not images:
        raise ValueError(f"{what} folder has no images: {folder}")
    return images


def _find_folder(parent: Path, names: FolderNames, what: str, required: bool) -> Path | None:
    """The one folder of ``parent`` named by ``names`` (one name, or candidates of which one may exist).

    Raises:
        FileNotFoundError: ``required`` and no candidate exists.
        ValueError: more than one candidate exists, so the layout is ambiguous.
    """
    candidates = [names] if isinstance(names, str) else list(names)
    found = [parent / name for name in candidates if (parent / name).is_dir()]
    if len(found) > 1:
        raise ValueError(f"ambiguous {what} folder in {parent}: found {[p.name for p in found]}, name one explicitly.")
    if not found:
        if required:
            raise FileNotFoundError(f"{what} folder not found: none of {candidates} in {parent}")
        return None
    return found[0]


def _match_masks(images: Sequence[Path], mask_dir: Path, what: str) -> dict[Path, Path]:
    """Pair each image with the mask of ``mask_dir`` named ``<stem>.<ext>`` or ``<stem>_mask.<ext>``.

    Raises:
        ValueError: an image has no mask, or two, or a mask has no image.
    """
    masks = _list_images(mask_dir, f"{what} mask")
    by_stem: dict[str, list[Path]] = {}
    for mask in masks:
        stem = mask.stem[: -len("_mask")] if mask.stem.endswith("_mask") else mask.stem
        by_stem.setdefault(stem, []).append(mask)
    paired = {}
    for image in images:
        found = by_stem.pop(image.stem, [])
        if len(found) != 1:
            problem = "no mask" if not found else f"several masks {[m.name for m in found]}"
            raise ValueError(f"{what} image {image} has {problem} in {mask_dir}")
        paired[image] = found[0]
    if by_stem:
        orphans = sorted(m.name for ms in by_stem.values() for m in ms)
        raise ValueError(f"{what} masks without an image in {mask_dir}: {orphans[:5]}")
    return paired


def _item(image: Path, label: int, mask: Path | None = None, **fields: str) -> DatalistItem:
    item: DatalistItem = {"image": str(image), "label": label}
    if mask is not None:
        item["mask"] = str(mask)
    item.update(fields)
    return item


def _absolute_root(root: str | os.PathLike) -> Path:
    # absolute() rather than resolve(): a symlinked dataset keeps the path the user gave.
    return _require_dir(Path(root).expanduser().absolute(), "dataset root")


# ----------------------------------------------------------------------------- splitting
def _check_val_fraction(val_fraction: float | None) -> None:
    if val_fraction is not None and not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}.")


def _carve(
    items: Sequence[DatalistItem], fraction: float, rng: np.random.Generator
) -> tuple[list[DatalistItem], list[DatalistItem]]:
    """Move ceil(fraction * n) items of each label group, drawn by ``rng``, out of ``items``.

    Hand-written rather than sklearn's ``train_test_split(stratify=...)``, which needs two
    members per label and a non-empty remainder: an abnormal pool may hold one image, and
    all of it may go to validation since abnormal images never train.

    Returns:
        ``(kept, carved)`` lists of items.
    """
    kept, carved = [], []
    for label in sorted({item["label"] for item in items}):
        group = [item for item in items if item["label"] == label]
        # round() first: 0.1 * 30 is 3.0000000000000004 in floating point.
        n_carved = math.ceil(round(fraction * len(group), 6))
        order = rng.permutation(len(group))
        carved += [group[i] for i in order[:n_carved]]
        kept += [group[i] for i in order[n_carved:]]
    return kept, carved


def _split_validation(
    train_normal: Sequence[DatalistItem],
    provided_val: Sequence[DatalistItem],
    extra_abnormal: Sequence[DatalistItem],
    val_fraction: float | None,
    rng: np.random.Generator,
) -> tuple[list[DatalistItem], list[DatalistItem]]:
    """Training normals and validation items from the non-test pool (see the module docstring).

    Args:
        train_normal: normal images of the training split.
        provided_val: the dataset's own validation split, empty where it has none.
        extra_abnormal: abnormal images outside the test split (e.g. ZhangLab train/PNEUMONIA).
        val_fraction: None to use ``provided_val`` where there is one, else the fraction to carve.
        rng: draws the carved items.

    Returns:
        ``(training, validation)``; abnormal images not carved into validation are left out.
    """
    _check_val_fraction(val_fraction)
    if val_fraction is None and provided_val:
        return list(train_normal), list(provided_val)
    fraction = DEFAULT_VAL_FRACTION if val_fraction is None else val_fraction
    kept, validation = _carve([*train_normal, *provided_val, *extra_abnormal], fraction, rng)
    training = [item for item in kept if item["label"] == NORMAL]
    if not training:
        raise ValueError(f"val_fraction={fraction} leaves no normal image for training.")
    return training, validation


def _hold_out_normals(
    normals: Sequence[DatalistItem], n_test_normal: int, rng: np.random.Generator
) -> tuple[list[DatalistItem], list[DatalistItem]]:
    """Split normals into (train, test) with ``n_test_normal`` drawn by ``rng`` for the test."""
    if not 0 < n_test_normal < len(normals):
        raise ValueError(
            f"n_test_normal must be in [1, {len(normals) - 1}] for {len(normals)} normal images, got {n_test_normal}."
        )
    order = rng.permutation(len(normals))
    return [normals[i] for i in order[n_test_normal:]], [normals[i] for i in order[:n_test_normal]]


def _datalist(training: list[DatalistItem], validation: list[DatalistItem], test: list[DatalistItem]) -> Datalist:
    """Assemble the datalist with each split sorted by image path.

    Raises:
        ValueError: an image is in two splits (e.g. two split arguments name one folder).
    """
    splits = dict(zip(SPLIT_KEYS, (training, validation, test)))
    seen: dict[str, str] = {}
    for key, items in splits.items():
        for item in items:
            if seen.setdefault(item["image"], key) != key:
                raise ValueError(f"image {item['image']} is in both {seen[item['image']]} and {key}.")
    return {key: sorted(items, key=lambda item: item["image"]) for key, items in splits.items()}


# ----------------------------------------------------------------------------- chest X-ray
def _class_folder_items(
    split_dir: Path, names: FolderNames, label: int, what: str, required: bool
) -> list[DatalistItem]:
    """Items of the ``<split>/<class>`` folder named by ``names``; empty when it is absent and not required."""
    what = f"{split_dir.name} {what}"
    folder = _find_folder(split_dir, names, what, required)
    if folder is None:
        return []
    return [_item(path, label, source=split_dir.name) for path in _list_images(folder, what)]


def _build_split_folders(
    root: str | os.PathLike,
    train_dir: FolderNames,
    val_dir: FolderNames,
    test_dir: FolderNames,
    normal_dir: FolderNames,
    abnormal_dir: FolderNames,
    val_fraction: float | None,
    seed: int,
) -> Datalist:
    """Datalist of a ``<split>/<class>/<image>`` tree; each folder argument is one name or candidates.

    ``<train>/<normal>``, ``<test>/<normal>`` and ``<test>/<abnormal>`` are required;
    ``<train>/<abnormal>`` and the validation split are optional.
    """
    root_path = _absolute_root(root)
    train = _find_folder(root_path, train_dir, "train split", required=True)
    val = _find_folder(root_path, val_dir, "validation split", required=False)
    test = _find_folder(root_path, test_dir, "test split", required=True)
    train_normal = _class_folder_items(train, normal_dir, NORMAL, "normal", required=True)
    train_abnormal = _class_folder_items(train, abnormal_dir, ABNORMAL, "abnormal", required=False)
    provided_val: list[DatalistItem] = []
    if val is not None:
        provided_val = _class_folder_items(val, normal_dir, NORMAL, "normal", required=False)
        provided_val += _class_folder_items(val, abnormal_dir, ABNORMAL, "abnormal", required=False)
        if not provided_val:
            raise FileNotFoundError(f"validation split {val} has neither a normal nor an abnormal folder.")
    test_items = _class_folder_items(test, normal_dir, NORMAL, "normal", required=True)
    test_items += _class_folder_items(test, abnormal_dir, ABNORMAL, "abnormal", required=True)
    training, validation = _split_validation(
        train_normal, provided_val, train_abnormal, val_fraction, np.random.default_rng(seed)
    )
    return _datalist(training, validation, test_items)


def build_zhanglab_datalist(
    root: str | os.PathLike,
    val_fraction: float | None = None,
    seed: int = 0,
    train_dir: FolderNames = "train",
    val_dir: FolderNames = "val",
    test_dir: FolderNames = "test",
    normal_dir: FolderNames = ("NORMAL", "normal_256", "normal"),
    abnormal_dir: FolderNames = ("PNEUMONIA", "pneumonia_256", "pneumonia", "abnormal"),
) -> Datalist:
    """ZhangLab chest X-ray (Kermany et al. 2018), normal vs pneumonia.

    Layout: ``root/{train,val,test}/{NORMAL,PNEUMONIA}`` (Mendeley and Kaggle releases;
    Mendeley has no ``val``) or ``root/{train,val,test}/{normal_256,pneumonia_256}`` (the
    SQUID release, whose ``val`` holds normal and pneumonia images split off the official
    training set, leaving the 1249 training normals SP-Mamba uses). The test split is the
    official one: 234 normal + 390 pneumonia images. Kaggle's ``val`` has only 8 + 8 images.

    Validation: the ``val`` split where there is one and ``val_fraction`` is None, else
    ``val_fraction`` of the training normals (plus ``val``) and of ``train/PNEUMONIA``.

    Args:
        root: folder holding the split folders.
        val_fraction: None for the default above, else the fraction of each class to carve.
        seed: seed of the carved validation split.
        train_dir, val_dir, test_dir: split folder name, or candidate names of which one exists.
        normal_dir, abnormal_dir: class folder name inside each split, or candidates.
    """
    return _build_split_folders(root, train_dir, val_dir, test_dir, normal_dir, abnormal_dir, val_fraction, seed)


def build_chexpert_datalist(
    root: str | os.PathLike,
    val_fraction: float | None = None,
    seed: int = 0,
    train_dir: FolderNames = ("train_256_pa", "train"),
    val_dir: FolderNames = ("val_256_pa", "val", "valid"),
    test_dir: FolderNames = ("our_test_256_pa", "test"),
    normal_dir: FolderNames = ("normal_256", "normal"),
    abnormal_dir: FolderNames = ("abnormal_256", "abnormal"),
) -> Datalist:
    """CheXpert (Irvin et al. 2019) in the SQUID split: PA views, 4499 training normals, 250 + 250 test.

    Layout (the SQUID release): ``root/train_256_pa/normal_256``,
    ``root/val_256_pa/{normal_256,abnormal_256}`` (from the official validation set) and
    ``root/our_test_256_pa/{normal_256,abnormal_256}`` (SQUID's balanced test split).
    Plain ``train``/``val``/``test`` with ``normal``/``abnormal`` folders (e.g. the WSCXR
    release's ``images/`` folder) are accepted too.

    Validation: ``val_256_pa`` where there is one and ``val_fraction`` is None, else
    ``val_fraction`` of the training normals (plus the validation split) and of any
    ``train_256_pa/abnormal_256``.

    Args:
        root: folder holding the split folders.
        val_fraction: None for the default above, else the fraction of each class to carve.
        seed: seed of the carved validation split.
        train_dir, val_dir, test_dir: split folder name, or candidate names of which one exists.
        normal_dir, abnormal_dir: class folder name inside each split, or candidates.
    """
    return _build_split_folders(root, train_dir, val_dir, test_dir, normal_dir, abnormal_dir, val_fraction, seed)


# ----------------------------------------------------------------------------- BMAD / Uni-Medical
def _bmad_mask_dir(state_dir: Path, class_dir: Path, split: str) -> Path | None:
    """``<state>/label`` (BMAD), else ``<class>/ground_truth/<state>`` for the test split (ADer Uni-Medical)."""
    if (state_dir / "label").is_dir():
        return state_dir / "label"
    ground_truth = class_dir / "ground_truth" / state_dir.name
    return ground_truth if split == "test" and ground_truth.is_dir() else None


def _bmad_split_items(class_dir: Path, split: str, require_masks: bool) -> list[DatalistItem]:
    """Items of ``<class>/<split>/<state>``: state ``good`` is normal, every other state abnormal.

    Images lie in ``<state>/img`` where that exists, else in ``<state>``. Abnormal images
    need a mask when ``require_masks`` (validation and test splits only).
    """
    split_dir = _require_dir(class_dir / split, f"{class_dir.name} {split} split")
    states = sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not states:
        raise ValueError(f"{class_dir.name} {split} split has no state folder (e.g. {BMAD_NORMAL_STATE}): {split_dir}")
    items = []
    for state_dir in states:
        label = NORMAL if state_dir.name == BMAD_NORMAL_STATE else ABNORMAL
        what = f"{class_dir.name} {split}/{state_dir.name}"
        image_dir = state_dir / "img" if (state_dir / "img").is_dir() else state_dir
        images = _list_images(image_dir, what)
        mask_dir = _bmad_mask_dir(state_dir, class_dir, split)
        if mask_dir is None and label == ABNORMAL and require_masks and split != "train":
            raise FileNotFoundError(
                f"{what} has no masks: expected {state_dir / 'label'} or {class_dir / 'ground_truth' / state_dir.name}"
                " (pass require_masks=False for image-level-only classes)."
            )
        masks = {} if mask_dir is None else _match_masks(images, mask_dir, what)
        items += [_item(p, label, masks.get(p), **{"class": class_dir.name, "source": split}) for p in images]
    return items


def build_bmad_datalist(
    root: str | os.PathLike,
    classes: Sequence[str] | None = None,
    val_fraction: float | None = None,
    seed: int = 0,
    require_masks: bool = True,
) -> Datalist:
    """BMAD (Bao et al. 2024) and its Uni-Medical subset (brain MRI, liver CT, retinal OCT; MambaAD/ADer).

    Layout, one folder per class (``root/<class>``, e.g. ``brain``, ``liver``, ``retinal``):

    - BMAD release: ``train/good/img``, ``valid/{good,Ungood}/img``, ``valid/Ungood/label``,
      ``test/{good,Ungood}/img``, ``test/Ungood/label``; image-level classes (camelyon16,
      chest) put images straight into the state folders and have no ``label``.
    - ADer Uni-Medical release: ``train/good``, ``test/{good,Ungood}``, ``ground_truth/Ungood``.

    State ``good`` is normal, any other state (``Ungood``) abnormal. A mask pairs with the
    image of the same stem (``<stem>.png`` or ``<stem>_mask.png``); ``good`` images get a
    mask only where a ``good/label`` folder exists. Every item carries ``class`` (the class
    folder name) and ``source`` (``train``, ``valid`` or ``test``).

    Validation, per class: ``valid`` where there is one and ``val_fraction`` is None, else
    ``val_fraction`` of the training normals (plus ``valid``), seeded independently of
    which other classes are selected.

    Args:
        root: folder holding the class folders.
        classes: class folder names to include; None for every sub-folder of ``root``.
        val_fraction: None for the default above, else the fraction of each label to carve.
        seed: seed of the carved validation split.
        require_masks: abnormal validation/test images must have masks (False for image-level classes).
    """
    if isinstance(classes, str):
        raise TypeError(f"classes must be a sequence of class folder names, got the string {classes!r}.")
    root_path = _absolute_root(root)
    available = sorted(p.name for p in root_path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if classes is None:
        classes = available
    if not classes:
        raise ValueError(f"no class folder selected in {root_path}; available: {available}")
    training, validation, test = [], [], []
    for name in classes:
        class_dir = root_path / name
        if not class_dir.is_dir():
            raise FileNotFoundError(f"class folder not found: {class_dir}; available classes: {available}")
        train_items = _bmad_split_items(class_dir, "train", require_masks)
        provided_val = _bmad_split_items(class_dir, "valid", require_masks) if (class_dir / "valid").is_dir() else []
        train_normal = [item for item in train_items if item["label"] == NORMAL]
        if not train_normal:
            raise ValueError(f"{name} train split has no {BMAD_NORMAL_STATE} images: {class_dir / 'train'}")
        train_abnormal = [item for item in train_items if item["label"] == ABNORMAL]
        class_training, class_validation = _split_validation(
            train_normal, provided_val, train_abnormal, val_fraction, np.random.default_rng(seed)
        )
        training += class_training
        validation += class_validation
        test += _bmad_split_items(class_dir, "test", require_masks)
    return _datalist(training, validation, test)


# ----------------------------------------------------------------------------- BUSI
def _merge_masks(masks: Sequence[Path], out_path: Path) -> Path:
    """Write the union of binary masks (any pixel > 0) as a 0/255 uint8 PNG at ``out_path``."""
    arrays = [np.asarray(Image.open(mask).convert("L")) > 0 for mask in masks]
    shapes = {array.shape for array in arrays}
    if len(shapes) != 1:
        raise ValueError(f"masks to merge differ in size {sorted(shapes)}: {[str(m) for m in masks]}")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.logical_or.reduce(arrays).astype(np.uint8) * 255).save(out_path)
    return out_path


def _busi_category_items(folder: Path, label: int, merged_mask_dir: Path | None) -> list[DatalistItem]:
    """Items of one BUSI category folder: ``<name>.png`` with masks ``<name>_mask.png``, ``<name>_mask_1.png``..."""
    images: dict[str, Path] = {}
    masks: dict[str, list[Path]] = {}
    for path in _list_images(folder, f"BUSI {folder.name}"):
        match = _BUSI_MASK.match(path.stem)
        if match is None:
            images[path.stem] = path
        else:
            masks.setdefault(match["image"], []).append(path)
    orphans = sorted(set(masks) - set(images))
    if orphans:
        raise ValueError(f"BUSI masks without an image in {folder}: {orphans[:5]}")
    items = []
    for stem, image in sorted(images.items()):
        image_masks = sorted(masks.get(stem, []))
        if not image_masks:
            raise ValueError(f"BUSI image {image} has no mask ({stem}_mask.png)")
        if len(image_masks) > 1:
            if merged_mask_dir is None:
                raise ValueError(
                    f"BUSI image {image} has {len(image_masks)} masks; pass merged_mask_dir to write their union."
                )
            image_masks = [_merge_masks(image_masks, merged_mask_dir / folder.name / f"{stem}_mask.png")]
        items.append(_item(image, label, image_masks[0]))
    return items


def build_busi_datalist(
    root: str | os.PathLike,
    merged_mask_dir: str | os.PathLike | None = None,
    n_test_normal: int = 34,
    val_fraction: float | None = None,
    seed: int = 0,
) -> Datalist:
    """BUSI breast ultrasound (Al-Dhabyani et al. 2020): ``root/{normal,benign,malignant}``.

    Each folder holds ``<name>.png`` and its mask ``<name>_mask.png``; an image with
    several lesions also has ``<name>_mask_1.png``, ... Those are merged (pixel-wise union)
    into ``merged_mask_dir/<category>/<name>_mask.png``, which the item's ``mask`` points
    to; every other item points at the original mask. Normal images have (empty) masks too.

    BUSI has no official split. As UMIAD-EGMF does (99 training normals, 34 normal + 647
    abnormal test images), ``n_test_normal`` normals drawn with ``seed`` and every benign and
    malignant image form the test split. Validation holds ``val_fraction`` (default
    :data:`DEFAULT_VAL_FRACTION`) of the remaining normals: normal-only, for thresholds
    calibrated at a target false-positive rate; ``val_fraction=0`` keeps all 99 for training.

    Args:
        root: the ``Dataset_BUSI_with_GT`` folder.
        merged_mask_dir: where merged masks go; required when an image has several masks.
        n_test_normal: normal images held out for the test split.
        val_fraction: fraction of the remaining normals for validation.
        seed: seed of the test and validation draws.
    """
    _check_val_fraction(val_fraction)
    root_path = _absolute_root(root)
    merged = None if merged_mask_dir is None else Path(merged_mask_dir).expanduser().absolute()
    items = {
        name: _busi_category_items(_require_dir(root_path / name, f"BUSI {name}"), label, merged)
        for name, label in BUSI_CATEGORIES.items()
    }
    normals = [item for name, label in BUSI_CATEGORIES.items() if label == NORMAL for item in items[name]]
    abnormals = [item for name, label in BUSI_CATEGORIES.items() if label == ABNORMAL for item in items[name]]
    rng = np.random.default_rng(seed)
    train_normal, test_normal = _hold_out_normals(normals, n_test_normal, rng)
    training, validation = _split_validation(train_normal, [], [], val_fraction, rng)
    return _datalist(training, validation, test_normal + abnormals)


# ----------------------------------------------------------------------------- Head CT
def _read_head_ct_labels(csv_path: Path) -> dict[int, int]:
    """``id -> hemorrhage`` from the Kaggle ``labels.csv`` (header ``id, hemorrhage``)."""
    if not csv_path.is_file():
        raise FileNotFoundError(f"Head CT labels file not found: {csv_path}")
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f, skipinitialspace=True)
        columns = [name.strip() for name in reader.fieldnames or []]
        if not {"id", "hemorrhage"} <= set(columns):
            raise ValueError(f"{csv_path} needs columns 'id' and 'hemorrhage', found {columns}")
        reader.fieldnames = columns
        labels: dict[int, int] = {}
        for line, row in enumerate(reader, start=2):
            try:
                image_id, hemorrhage = int(row["id"]), int(row["hemorrhage"])
            except (TypeError, ValueError) as err:
                raise ValueError(f"{csv_path} line {line}: id and hemorrhage must be integers, got {row}") from err
            if hemorrhage not in (NORMAL, ABNORMAL):
                raise ValueError(f"{csv_path} line {line}: hemorrhage must be 0 or 1, got {hemorrhage}")
            if image_id in labels:
                raise ValueError(f"{csv_path} line {line}: duplicate id {image_id}")
            labels[image_id] = hemorrhage
    if not labels:
        raise ValueError(f"{csv_path} has no rows")
    return labels


def build_head_ct_datalist(
    root: str | os.PathLike,
    n_test_normal: int = 10,
    val_fraction: float | None = None,
    seed: int = 0,
    image_dir: str = "head_ct",
    labels_csv: str = "labels.csv",
) -> Datalist:
    """Kaggle "Head CT - hemorrhage" (Kitamura 2018): ``root/head_ct/NNN.png`` and ``root/labels.csv``.

    ``labels.csv`` has columns ``id`` (the integer in the image file name, ``000.png`` is
    id 0) and ``hemorrhage`` (0 or 1). No masks. There is no official split: as UMIAD-EGMF
    does (90 training normals, 10 normal + 100 hemorrhage test images), ``n_test_normal``
    normals drawn with ``seed`` and every hemorrhage image form the test split; validation
    holds ``val_fraction`` (default :data:`DEFAULT_VAL_FRACTION`) of the remaining normals
    (normal-only).

    Args:
        root: dataset folder.
        n_test_normal: normal images held out for the test split.
        val_fraction: fraction of the remaining normals for validation.
        seed: seed of the test and validation draws.
        image_dir: image folder relative to ``root`` (some downloads nest it: ``head_ct/head_ct``).
        labels_csv: labels file relative to ``root``.
    """
    _check_val_fraction(val_fraction)
    root_path = _absolute_root(root)
    labels = _read_head_ct_labels(root_path / labels_csv)
    images: dict[int, Path] = {}
    for path in _list_images(root_path / image_dir, "Head CT image"):
        if not path.stem.isdigit():
            raise ValueError(f"Head CT image name must be its integer id (e.g. 000.png), got {path}")
        images[int(path.stem)] = path
    unlabelled = sorted(set(images) - set(labels))
    if unlabelled:
        raise ValueError(f"Head CT images without a row in {labels_csv}: {[images[i].name for i in unlabelled[:5]]}")
    missing = sorted(set(labels) - set(images))
    if missing:
        raise ValueError(f"{labels_csv} ids without an image in {root_path / image_dir}: {missing[:5]}")
    items = [_item(images[i], labels[i]) for i in sorted(images)]
    normals = [item for item in items if item["label"] == NORMAL]
    abnormals = [item for item in items if item["label"] == ABNORMAL]
    if not abnormals:
        raise ValueError(f"{labels_csv} marks no image as hemorrhage")
    rng = np.random.default_rng(seed)
    train_normal, test_normal = _hold_out_normals(normals, n_test_normal, rng)
    training, validation = _split_validation(train_normal, [], [], val_fraction, rng)
    return _datalist(training, validation, test_normal + abnormals)


# ----------------------------------------------------------------------------- registry
DATASET_BUILDERS: dict[str, Callable[..., Datalist]] = {
    "zhanglab": build_zhanglab_datalist,
    "chexpert": build_chexpert_datalist,
    "bmad": build_bmad_datalist,
    "busi": build_busi_datalist,
    "head_ct": build_head_ct_datalist,
}


def build_datalist(name: str, root: str | os.PathLike, **kwargs: Any) -> Datalist:
    """Build the datalist of the benchmark ``name`` (a key of :data:`DATASET_BUILDERS`) found at ``root``.

    ``kwargs`` go to the builder. Paths in the result are absolute:
    :func:`medad_monai.data.datalist.write_datalist` makes them relative to the JSON's folder.
    """
    if name not in DATASET_BUILDERS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {sorted(DATASET_BUILDERS)}")
    return DATASET_BUILDERS[name](root, **kwargs)

