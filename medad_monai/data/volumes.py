"""3D volumes for 2D detectors: a dataset of 2D slices (slice-wise inference is in :mod:`medad_monai.inferers`).

Orientation: volumes are channel-first ``(C, D0, D1, D2)`` as ``ReadImaged`` /
``EnsureChannelFirst`` give them, in the file's voxel order (no reorientation). ``axis`` /
``spatial_dim`` 0, 1, 2 select D0, D1, D2. For NIfTI read with ``Orientationd(axcodes="RAS")``
in the load transform, axis 2 gives axial, 1 coronal and 0 sagittal slices; for a DICOM series
folder or a multi-frame DICOM (``DicomReader``), axis 2 runs over the slices / frames.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import torch
from monai.data import CacheDataset, MetaTensor
from monai.transforms import apply_transform
from torch.utils.data import Dataset

from medad_monai.transforms.io import ReadImaged, image_source

__all__ = ["VolumeSliceDataset", "extract_slice"]


def extract_slice(volume: torch.Tensor, axis: int, index: int) -> torch.Tensor:
    """Slice ``index`` along spatial ``axis`` of ``volume``: ``(C, D0, D1, D2)`` -> ``(C, *two others)``.

    A ``MetaTensor`` keeps its metadata (``filename_or_obj`` names the volume) and gains
    ``slice_index`` and ``slice_axis``; its 4x4 affine is moved to the slice's origin, the
    convention of ``monai.transforms.SplitDim``, so the slice keeps its place in world space.
    """
    if volume.ndim != 4:
        raise ValueError(f"{image_source(volume)}: expected a (C, D0, D1, D2) volume, got shape {tuple(volume.shape)}.")
    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1 or 2, got {axis}.")
    if not 0 <= index < volume.shape[axis + 1]:
        raise ValueError(
            f"{image_source(volume)}: slice {index} out of range along axis {axis} of {tuple(volume.shape)}."
        )
    array = volume.select(axis + 1, index).clone()
    if not isinstance(volume, MetaTensor):
        return array
    shift = torch.eye(4, dtype=volume.affine.dtype)
    shift[axis, 3] = index
    meta = dict(volume.meta)
    meta.update({"slice_index": index, "slice_axis": axis, "spatial_shape": tuple(array.shape[1:])})
    meta["affine"] = volume.affine @ shift
    return MetaTensor(array.as_tensor(), meta=meta)


class VolumeSliceDataset(Dataset):
    """2D slices of 3D volumes (or frames of cines) with their masks, built on MONAI's
    ``CacheDataset``.

    The volumes are loaded once (``load_transform``, default :class:`ReadImaged` of image and
    mask) and cached (``cache_rate``); the slice index is built at construction, which reads
    every volume once. Each item is the volume's data dict with ``image`` (and ``mask``, if
    present) replaced by the slice ``(C, *2D)`` from :func:`extract_slice`, whose metadata hold
    the volume path (``filename_or_obj``), ``slice_index`` and ``slice_axis``; other keys (e.g.
    ``label``) are copied. ``transform`` (e.g. ``modality_preset(..., load=False)``) is applied last.

    Args:
        data: dicts with ``image_key`` (and optionally ``mask_key``) volume paths.
        axis: spatial axis to slice along (0, 1, 2; see the module docstring for orientation).
        transform: per-slice transform.
        load_transform: per-volume transform giving ``(C, D0, D1, D2)`` tensors.
        image_key: key of the volume.
        mask_key: key of the mask volume (may be absent).
        foreground_threshold: keep only slices with an image voxel ``> foreground_threshold``
            (``None``: all slices). A volume with no such slice raises ``ValueError``.
        cache_rate: fraction of volumes kept in memory (``CacheDataset``).
        num_workers: workers for filling the cache.
    """

    def __init__(
        self,
        data: Sequence[Mapping[Hashable, Any]],
        axis: int = 2,
        transform: Callable | None = None,
        load_transform: Callable | None = None,
        image_key: str = "image",
        mask_key: str = "mask",
        foreground_threshold: float | None = None,
        cache_rate: float = 1.0,
        num_workers: int = 0,
    ) -> None:
        if axis not in (0, 1, 2):
            raise ValueError(f"axis must be 0, 1 or 2, got {axis}.")
        self.axis, self.transform = axis, transform
        self.image_key, self.mask_key = image_key, mask_key
        self.foreground_threshold = foreground_threshold
        if load_transform is None:
            load_transform = ReadImaged([image_key, mask_key], allow_missing_keys=True)
        self.volumes = CacheDataset(
            data, load_transform, cache_rate=cache_rate, num_workers=num_workers, copy_cache=False, progress=False
        )
        self.index = [(v, s) for v in range(len(self.volumes)) for s in self._slices(v)]

    def _slices(self, v: int) -> list[int]:
        """Slice indices of volume ``v`` (foreground ones if a threshold is set)."""
        item = self.volumes[v]
        volume = item[self.image_key]
        if volume.ndim != 4:
            raise ValueError(
                f"'{self.image_key}' from {image_source(volume)}: expected a (C, D0, D1, D2) volume, "
                f"got shape {tuple(volume.shape)}."
            )
        mask = item.get(self.mask_key)
        if mask is not None and tuple(mask.shape[1:]) != tuple(volume.shape[1:]):
            raise ValueError(
                f"'{self.mask_key}' from {image_source(mask)} has spatial shape {tuple(mask.shape[1:])}, "
                f"its volume {tuple(volume.shape[1:])}."
            )
        if self.foreground_threshold is None:
            return list(range(volume.shape[self.axis + 1]))
        other = [d for d in range(volume.ndim) if d != self.axis + 1]
        keep = torch.amax(volume.as_tensor() if isinstance(volume, MetaTensor) else volume, dim=other)
        slices = torch.nonzero(keep > self.foreground_threshold).flatten().tolist()
        if not slices:
            raise ValueError(f"{image_source(volume)}: no slice has a voxel > {self.foreground_threshold}.")
        return slices

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, idx: int) -> dict[Hashable, Any]:
        v, s = self.index[idx]
        item = dict(self.volumes[v])
        for key in (self.image_key, self.mask_key):
            if key in item:
                item[key] = extract_slice(item[key], self.axis, s)
        return apply_transform(self.transform, item) if self.transform is not None else item
