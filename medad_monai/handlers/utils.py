"""Helpers shared by the evaluation handlers: reading engine outputs, resolving thresholds, writing files."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from ignite.engine import Engine
from monai.data import decollate_batch
from monai.utils import ImageMetaKey, evenly_divisible_all_gather, is_scalar

__all__ = [
    "as_scalar",
    "atomic_write",
    "decollated_output",
    "gather_1d",
    "item_filename",
    "per_item_scalars",
    "resolve_thresholds",
    "save_checkpoint",
    "sha256_file",
    "write_json",
    "write_text",
]

def per_item_scalars(values: Any, name: str) -> np.ndarray:
    """
    Convert per-image values taken from an engine output into a float64 vector.

    Args:
        values: a batch-first tensor/array of shape (B,) or (B, 1), or a sequence of B items that each hold
            exactly one number (python scalar, 0-d or one-element tensor, e.g. a decollated ``score``/``label``).
        name: what the values are, used in error messages.

    Returns:
        array of shape (B,).

    Raises:
        ValueError: when an item does not hold exactly one number.
    """
    if isinstance(values, (torch.Tensor, np.ndarray)):
        arr = torch.as_tensor(values).detach().cpu()
        if arr.ndim == 0 or (arr.ndim > 1 and arr[0].numel() != 1):
            raise ValueError(f"{name} must have shape (B,) or (B, 1), got {tuple(arr.shape)}.")
        return arr.reshape(-1).double().numpy()
    if not isinstance(values, Sequence):
        raise TypeError(f"{name} must be a tensor or a sequence of per-image values, got {type(values).__name__}.")
    out = np.empty(len(values), dtype=np.float64)
    for i, v in enumerate(values):
        t = torch.as_tensor(v).detach().cpu()
        if t.numel() != 1:
            raise ValueError(f"each {name} item must hold one number, item {i} has shape {tuple(t.shape)}.")
        out[i] = float(t.reshape(-1)[0])
    return out


def gather_1d(values: np.ndarray) -> np.ndarray:
    """All-gather a 1-D array across distributed ranks (identity when not distributed)."""
    return evenly_divisible_all_gather(torch.as_tensor(values), concat=True).numpy()


def decollated_output(engine: Engine) -> list[dict]:
    """``engine.state.output`` as a list of per-image dictionaries (decollating it when the engine did not)."""
    output = engine.state.output
    if isinstance(output, Mapping):
        return decollate_batch(dict(output))
    if isinstance(output, Sequence) and all(isinstance(o, Mapping) for o in output):
        return list(output)
    raise TypeError(f"engine.state.output must be a dict or a list of dicts, got {type(output).__name__}.")


def item_filename(item: Mapping, key: str) -> str | None:
    """Source file of ``item[key]``: from its MetaTensor meta, else from ``item[f"{key}_meta_dict"]``, else None."""
    meta = getattr(item.get(key), "meta", None) or item.get(f"{key}_meta_dict") or {}
    name = meta.get(ImageMetaKey.FILENAME_OR_OBJ)
    if isinstance(name, (list, tuple)):  # a meta dict that was not decollated with its image
        name = name[0] if len(name) == 1 else None
    return None if name is None else str(name)


def as_scalar(value: Any, key: str) -> float | int:
    """A metric value as a python number, raising TypeError (naming ``key``) when it is not a scalar."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    if isinstance(value, np.ndarray) and value.size == 1:
        return value.item()
    if not is_scalar(value) or isinstance(value, (str, bytes)):
        raise TypeError(f"metric {key!r} is not a scalar (got {type(value).__name__}); select scalar metrics by name.")
    return value.item() if isinstance(value, np.generic) else value


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX); a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> None:
    """Write ``path`` through ``write(file)`` so that it is either complete or untouched, whenever the process dies.

    The content goes to a temporary file in the same folder, is flushed and ``fsync``-ed, then renamed over
    ``path`` (``os.replace``, atomic on POSIX and Windows) and the folder is ``fsync``-ed. A kill at any moment
    leaves the previous ``path`` (or none) plus at most a ``.<name>.<pid>.tmp`` file, never a truncated ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a plain open() (not tempfile) so the file gets the usual umask permissions, readable by the group
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` atomically (:func:`atomic_write`): a crash never leaves a half-written file behind."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def save_checkpoint(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save(obj)`` to ``path`` atomically (:func:`atomic_write`)."""
    atomic_write(path, lambda f: torch.save(obj, f))


def write_json(path: str | os.PathLike, content: Any) -> None:
    """Write ``content`` as indented JSON, atomically (see :func:`write_text`)."""
    write_text(path, json.dumps(content, indent=2) + "\n")


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 digest of a file, read in chunks so large checkpoints do not need to fit in memory."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"file not found: {path}")
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def resolve_thresholds(source: Any) -> dict:
    """
    Read the calibrated operating point from ``source``.

    Resolved when called (not when a handler is built) so that a calibration handler restored by
    ``CheckpointLoader`` at ``Events.STARTED``, or a JSON written by an earlier run, is read in its final state.

    Args:
        source: a number (image threshold only), a mapping with ``"threshold"`` and optionally
            ``"pixel_threshold"``, a path to the JSON written by ``ThresholdCalibrationHandler``, or an object
            whose ``state_dict()`` returns such a mapping (``ThresholdCalibrationHandler``).

    Returns:
        the calibration record with at least ``threshold`` and ``pixel_threshold`` (None when absent), plus
        ``source``: ``"value"``, ``"handler"`` or the JSON path.

    Raises:
        FileNotFoundError: when a JSON path does not exist.
        ValueError: when the record has no image ``threshold``.
        TypeError: for any other kind of source.
    """
    if isinstance(source, bool):
        raise TypeError("threshold source must be a number, mapping, JSON path or calibration handler, got bool.")
    if isinstance(source, (int, float)):
        record, origin = {"threshold": float(source)}, "value"
    elif isinstance(source, Mapping):
        record, origin = dict(source), "value"
    elif isinstance(source, (str, os.PathLike)):
        if not Path(source).is_file():
            raise FileNotFoundError(f"threshold file not found: {source}")
        with open(source) as f:
            record, origin = json.load(f), str(source)
    elif callable(getattr(source, "state_dict", None)):
        record, origin = dict(source.state_dict()), "handler"
    else:
        raise TypeError(
            "threshold source must be a number, mapping, JSON path or calibration handler, "
            f"got {type(source).__name__}."
        )
    if record.get("threshold") is None:
        raise ValueError(f"threshold source ({origin}) has no calibrated 'threshold'; run the calibration first.")
    record.setdefault("pixel_threshold", None)
    record["source"] = origin
    return record
