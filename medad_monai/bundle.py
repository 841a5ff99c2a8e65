"""Helpers that the MONAI bundles under ``bundles/`` call from their configs."""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["find_bundle_root", "read_threshold"]


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


def read_threshold(path: str | Path, key: str = "threshold") -> float:
    """Read a calibrated threshold from the JSON file written by the threshold-calibration handler."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"threshold file not found: {path}. Run the bundle's train.json first.")
    data = json.loads(path.read_text())
    if key not in data:
        raise KeyError(f"threshold file {path} has no {key!r} entry (keys: {sorted(data)}).")
    return float(data[key])
