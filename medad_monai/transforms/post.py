"""Post-processing transforms for detector outputs."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Hashable, Mapping
from pathlib import Path
from typing import Any

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

from medad_monai.transforms.io import image_source

__all__ = ["ImageScored", "ThresholdAnomalyMapd", "UnpackOutputd", "read_threshold"]


def read_threshold(path: str | os.PathLike, key: str = "threshold") -> float:
    """Read a calibrated threshold from the JSON file written by the threshold-calibration handler.

    Raises:
        FileNotFoundError: ``path`` does not exist (the bundle has not been trained).
        KeyError: the file has no ``key`` entry.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"threshold file not found: {path}. Run the bundle's train.json first.")
    data = json.loads(path.read_text())
    if key not in data:
        raise KeyError(f"threshold file {path} has no {key!r} entry (keys: {sorted(data)}).")
    return float(data[key])


class UnpackOutputd(MapTransform):
    """Move the entries of a dict-valued output to the top level; the entry named like its key replaces it.

    ``{"pred": {"pred": map, "pred_network": network_map}}`` (e.g. from
    :class:`~medad_monai.inferers.ImageInferer` with ``network_map_key="pred_network"``) becomes
    ``{"pred": map, "pred_network": network_map}``. A value that is not a dict is left as it is, so
    the same post-processing serves inferers that return one map. Entries that would overwrite
    another key raise ``KeyError``.
    """

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            value = d[key]
            if not isinstance(value, Mapping):
                continue
            if key not in value:
                raise KeyError(f"{key!r} holds a dict without a {key!r} entry (entries: {sorted(value)}).")
            clash = [k for k in value if k != key and k in d]
            if clash:
                raise KeyError(f"entries {clash} of {key!r} would overwrite keys of the same name.")
            d.update(value)
        return d


class ImageScored(MapTransform):
    """Add the image-level anomaly score of an anomaly map to the data dictionary.

    A 2D map ``(1, H, W)`` is scored directly. A 3D map ``(1, D0, D1, D2)`` (slice-wise
    inference on a volume) is scored slice by slice along ``slice_axis`` and the volume's
    score is the largest slice score: a volume is as abnormal as its most abnormal slice.

    Args:
        keys: key of the anomaly map ``(1, H, W)`` or ``(1, D0, D1, D2)`` (one decollated item).
        scorer: callable mapping maps ``(B, 1, H, W)`` to scores ``(B,)``, e.g.
            :class:`medad_monai.scoring.AnomalyImageScore`.
        output_key: key the 0-d score tensor is written to.
        slice_axis: spatial axis (0, 1, 2) of 3D maps that slices are taken along.
    """

    def __init__(
        self,
        keys: KeysCollection,
        scorer: Callable[[torch.Tensor], torch.Tensor],
        output_key: str = "score",
        slice_axis: int = 2,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if len(self.keys) != 1:
            raise ValueError(f"ImageScored scores one anomaly map; got keys {self.keys}.")
        self.scorer = scorer
        self.output_key = output_key
        self.slice_axis = slice_axis

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            amap = torch.as_tensor(d[key])
            if amap.ndim not in (3, 4) or amap.shape[0] != 1:
                raise ValueError(
                    f"{key!r} from {image_source(d[key])} must be one anomaly map of shape (1, H, W) or "
                    f"(1, D0, D1, D2), got {tuple(amap.shape)}."
                )
            try:
                if amap.ndim == 3:
                    d[self.output_key] = self.scorer(amap.unsqueeze(0)).reshape(())
                else:
                    slices = amap.movedim(self.slice_axis + 1, 0)  # (D, 1, *two other axes)
                    d[self.output_key] = self.scorer(slices).max()
            except ValueError as err:
                raise ValueError(f"cannot score {key!r} from {image_source(d[key])}: {err}") from err
        return d


class ThresholdAnomalyMapd(MapTransform):
    """Binary anomaly mask ``map > threshold`` written to ``output_key`` (uint8, same geometry and metadata).

    Args:
        keys: key of the anomaly map.
        threshold: pixel threshold, or the path of the thresholds JSON written by the calibration handler,
            read at the first call (so a config that builds this transform resolves before training).
        output_key: key of the mask.
        threshold_key: entry of the JSON file to read (the validation-calibrated ``pixel_threshold``).
    """

    def __init__(
        self,
        keys: KeysCollection,
        threshold: float | str | os.PathLike,
        output_key: str = "pred_mask",
        threshold_key: str = "pixel_threshold",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.threshold_source = threshold
        self.threshold = None if isinstance(threshold, (str, os.PathLike)) else float(threshold)
        self.output_key = output_key
        self.threshold_key = threshold_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        if self.threshold is None:
            self.threshold = read_threshold(self.threshold_source, self.threshold_key)
        d = dict(data)
        for key in self.key_iterator(d):
            d[self.output_key] = (d[key] > self.threshold).to(torch.uint8)
        return d
