"""Helpers that the MONAI bundles under ``bundles/`` call from their configs."""

from __future__ import annotations

import json
from pathlib import Path

from medad_monai.data.datalist import load_anomaly_datalist
from medad_monai.transforms.post import read_threshold

__all__ = ["IMAGE_SUFFIXES", "find_bundle_root", "inference_items", "read_threshold"]

#: File suffixes taken as images when inference runs on a folder (a sub-folder is a DICOM series).
IMAGE_SUFFIXES = (".nii", ".nii.gz", ".dcm", ".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".mha", ".mhd", ".nrrd")


def find_bundle_root(name: str) -> str:
    """The folder of bundle ``name``, for configs run from the bundle itself or from the repository root.

    ``python -m monai.bundle run --config_file bundles/<name>/configs/train.json`` (repository root) and
    ``python -m monai.bundle run --config_file configs/train.json`` (inside the bundle) both work; anywhere
    else, pass ``--bundle_root /path/to/bundle`` explicitly.
    """
    cwd = Path.cwd()
    for candidate in (cwd, cwd / "bundles" / name):
        metadata = candidate / "configs" / "metadata.json"
        if metadata.is_file() and json.loads(metadata.read_text()).get("name", "").replace(" ", "_").lower() == name:
            return str(candidate)
    raise FileNotFoundError(
        f"cannot find the {name!r} bundle from {cwd}: run from the repository root or the bundle folder, "
        "or pass --bundle_root /path/to/bundle."
    )


def inference_items(source: str | Path, data_list_key: str = "test") -> list[dict[str, str]]:
    """Items ``{"image": path}`` to run inference on, from a datalist JSON, a folder or one file.

    Args:
        source: a datalist JSON (items of ``data_list_key``), a folder (every image file with a
            suffix in :data:`IMAGE_SUFFIXES`, and every sub-folder as one DICOM series), or one
            image file or DICOM series folder.
        data_list_key: split to read from a datalist.

    Raises:
        FileNotFoundError: ``source`` does not exist, or a folder holds no image.
        ValueError: a folder holds files that are not images (named in the message): nothing is
            skipped silently.
    """
    path = Path(source)
    if path.suffix == ".json":
        return [{"image": item["image"]} for item in load_anomaly_datalist(path, data_list_key)]
    if path.is_file():
        return [{"image": str(path)}]
    if not path.is_dir():
        raise FileNotFoundError(f"inference input not found: {path}")
    entries = sorted(path.iterdir())
    if entries and all(e.is_file() and e.suffix.lower() == ".dcm" for e in entries):
        return [{"image": str(path)}]  # the folder itself is one DICOM series
    images, others = [], []
    for entry in entries:
        name = entry.name.lower()
        if entry.is_dir() or any(name.endswith(suffix) for suffix in IMAGE_SUFFIXES):
            images.append({"image": str(entry)})
        elif not name.startswith("."):
            others.append(entry.name)
    if others:
        raise ValueError(f"inference folder {path} holds files that are not images: {others[:10]}; move them away.")
    if not images:
        raise FileNotFoundError(f"inference folder {path} holds no image (suffixes {IMAGE_SUFFIXES}).")
    return images
