"""Reading and writing anomaly-detection datalists.

A datalist is a MONAI decathlon-style JSON file whose keys map to lists of items::

    {
        "training": [{"image": "slices/a.nii.gz", "label": 0}, ...],
        "validation": [{"image": "slices/b.nii.gz", "label": 1, "mask": "slices/b_mask.nii.gz"}, ...],
        "test": [...]
    }

``image`` and ``mask`` are paths relative to the datalist's folder, ``label`` is the
image label (0 normal, 1 abnormal). Other keys of an item are kept as they are.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["PATH_KEYS", "load_anomaly_datalist", "write_datalist"]

#: Item keys that hold file paths: resolved on loading, made relative on writing.
PATH_KEYS = ("image", "mask")


def _check_item(item: Any, where: str, require_label: bool = True) -> None:
    """Raise if ``item`` is not a dict with an ``image`` path and (``require_label``, or when present)
    an int ``label`` in {0, 1}."""
    if not isinstance(item, Mapping):
        raise TypeError(f"{where} must be a dict with 'image' and 'label', got {type(item).__name__}.")
    if "image" not in item:
        raise ValueError(f"{where} has no 'image' key (keys: {sorted(item)}).")
    label = item.get("label")
    # bool is an int subclass, but True/False in a datalist is a writing mistake
    valid = not isinstance(label, bool) and isinstance(label, int) and label in (0, 1)
    if (require_label or "label" in item) and not valid:
        raise ValueError(f"{where} must have an int 'label' of 0 or 1, got {label!r}.")
    for key in PATH_KEYS:
        if key in item and not isinstance(item[key], (str, os.PathLike)):
            raise TypeError(f"{where} key '{key}' must be a path, got {type(item[key]).__name__}.")


def load_anomaly_datalist(
    datalist_path: str | os.PathLike,
    data_list_key: str = "training",
    base_dir: str | os.PathLike | None = None,
    require_labels: bool = True,
    normal_only: bool = False,
    allow_empty: bool = True,
    require_files: bool = True,
) -> list[dict]:
    """Load one split of an anomaly-detection datalist with absolute, checked paths.

    Args:
        datalist_path: the datalist JSON file.
        data_list_key: the split to load, e.g. ``"training"``, ``"validation"``, ``"test"``.
        base_dir: folder the ``image`` and ``mask`` paths are relative to; defaults to the
            datalist's folder. Absolute paths in the file are kept.
        require_labels: every item needs a ``label`` (``False`` for inference lists: a label given
            is still checked).
        normal_only: every item must be normal (label 0), as training on normal images requires.
        allow_empty: ``False`` raises for a split without items.
        require_files: every ``image`` and ``mask`` file must exist (``False`` for inference, where a
            missing file fails as one item, named, instead of stopping the run).

    Returns:
        The split's items as new dicts, ``image`` and ``mask`` (where present) as absolute
        path strings, every other key unchanged.

    Raises:
        FileNotFoundError: the datalist, or a file an item references, does not exist.
        ValueError: the JSON is not an object, ``data_list_key`` is missing (the message
            lists the keys there are), an item lacks ``image`` or a 0/1 int ``label``, an item is
            abnormal with ``normal_only``, or the split is empty without ``allow_empty``.
        TypeError: the split is not a list, or an item is not a dict.
    """
    datalist_path = Path(datalist_path)
    if not datalist_path.is_file():
        raise FileNotFoundError(f"datalist_path '{datalist_path}' is not a file.")
    with open(datalist_path) as f:
        content = json.load(f)
    if not isinstance(content, dict):
        raise ValueError(f"datalist '{datalist_path}' must hold a JSON object, got {type(content).__name__}.")
    if data_list_key not in content:
        raise ValueError(
            f"data_list_key '{data_list_key}' not in datalist '{datalist_path}'; available keys: {sorted(content)}."
        )
    items = content[data_list_key]
    if not isinstance(items, list):
        raise TypeError(f"'{data_list_key}' of datalist '{datalist_path}' must be a list, got {type(items).__name__}.")
    if not items and not allow_empty:
        raise ValueError(f"'{data_list_key}' of datalist '{datalist_path}' has no items: add images to it.")
    base = Path(base_dir) if base_dir is not None else datalist_path.parent

    loaded = []
    for index, item in enumerate(items):
        where = f"item {index} of '{data_list_key}' in '{datalist_path}'"
        _check_item(item, where, require_labels)
        if normal_only and item.get("label") != 0:
            raise ValueError(
                f"{where} ({item['image']}) has label {item.get('label')!r}: '{data_list_key}' must hold normal images "
                "only (label 0), the detector learns what normal looks like; move abnormal images to "
                "'validation' or 'test'."
            )
        resolved = dict(item)
        for key in PATH_KEYS:
            if key in item:
                path = Path(os.path.abspath(base / item[key]))
                if require_files and not path.exists():
                    raise FileNotFoundError(f"{where} ({key}='{item[key]}'): file '{path}' does not exist.")
                resolved[key] = str(path)
        loaded.append(resolved)
    return loaded


def _relative(path: str | os.PathLike, folder: Path) -> str:
    """``path`` relative to ``folder`` with '/' separators; relative inputs are taken as relative to ``folder``."""
    path = Path(path)
    if path.is_absolute():
        path = Path(os.path.relpath(path, folder.resolve()))
    return path.as_posix()


def write_datalist(path: str | os.PathLike, splits: Mapping[str, Sequence[Mapping[str, Any]]]) -> Path:
    """Write ``splits`` as a datalist JSON with ``image`` and ``mask`` relative to the file's folder.

    Args:
        path: the JSON file to write; its folder is created if needed.
        splits: split name (e.g. ``"training"``) to its items; each item needs ``image`` and an
            int ``label`` in {0, 1}. Absolute paths are made relative to ``path``'s folder,
            relative paths are taken as already relative to it. Other keys are written as given.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        TypeError: ``splits`` is not a mapping of str to lists of dicts.
        ValueError: an item lacks ``image`` or a 0/1 int ``label``.
    """
    path = Path(path)
    if not isinstance(splits, Mapping):
        raise TypeError(f"splits must be a mapping of split name to items, got {type(splits).__name__}.")
    folder = path.parent
    content: dict[str, list[dict]] = {}
    for name, items in splits.items():
        if not isinstance(name, str):
            raise TypeError(f"split names must be str, got {name!r}.")
        if isinstance(items, (str, bytes)) or not isinstance(items, Sequence):
            raise TypeError(f"splits['{name}'] must be a list of items, got {type(items).__name__}.")
        content[name] = []
        for index, item in enumerate(items):
            _check_item(item, f"item {index} of splits['{name}']")
            written = dict(item)
            for key in PATH_KEYS:
                if key in item:
                    written[key] = _relative(item[key], folder)
            content[name].append(written)
    folder.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        json.dump(content, f, indent=1)
        f.write("\n")
    return path
