"""Metrics per lesion kind: normal images against each kind of abnormality, beside the overall figures."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from ignite import distributed as idist
from ignite.engine import Engine, Events
from monai.handlers import from_engine

from medad_monai.handlers.utils import per_item_scalars
from medad_monai.metrics.functional import average_precision, f1_max, image_auroc, pixel_metrics

__all__ = ["PerKindMetricsHandler", "per_kind_metrics"]


def per_kind_metrics(
    scores: np.ndarray,
    labels: np.ndarray,
    kinds: Sequence[str],
    maps: np.ndarray | None = None,
    masks: np.ndarray | None = None,
    normal_kind: str = "normal",
) -> dict[str, dict[str, float | int]]:
    """Image and pixel metrics of every lesion kind against the normal images.

    For each kind ``k`` other than ``normal_kind`` the metrics are computed on the normal images plus
    the images of kind ``k``: ``count``, ``image_auroc``, ``image_ap``, ``image_f1_max`` and, when maps
    and masks are given, ``pixel_auroc``, ``pixel_ap`` and ``aupro``. A detector that finds tumours
    but misses small foci shows it here, where the overall figures would average it away.

    Args:
        scores: image scores ``(N,)``.
        labels: image labels ``(N,)``, 0 normal and 1 abnormal.
        kinds: ``N`` kind names; normal images must carry ``normal_kind`` and abnormal ones another name.
        maps: anomaly maps ``(N, H, W)`` or ``(N, 1, H, W)``, or None for image metrics only.
        masks: lesion masks of the same shape as ``maps``.
        normal_kind: the kind name of normal images.

    Returns:
        ``{kind: {metric: value}}``, kinds in sorted order.

    Raises:
        ValueError: when the lengths differ, a label disagrees with its kind, or there are no normal images.
    """
    kinds = [str(k) for k in kinds]
    if not len(scores) == len(labels) == len(kinds):
        raise ValueError(f"scores, labels and kinds must have one entry per image, got {len(scores)}, {len(labels)}, {len(kinds)}.")
    kinds_arr = np.asarray(kinds)
    is_normal = kinds_arr == normal_kind
    mismatched = np.flatnonzero(is_normal != (np.asarray(labels) == 0))
    if mismatched.size:
        i = int(mismatched[0])
        raise ValueError(f"image {i} has label {labels[i]} but kind {kinds[i]!r}: normal images (label 0) must have kind {normal_kind!r}.")
    if not is_normal.any():
        raise ValueError(f"per-kind metrics need normal images (kind {normal_kind!r}); got kinds {sorted(set(kinds))}.")
    result: dict[str, dict[str, float | int]] = {}
    for kind in sorted(set(kinds) - {normal_kind}):
        subset = is_normal | (kinds_arr == kind)
        entry: dict[str, float | int] = {
            "count": int((kinds_arr == kind).sum()),
            "image_auroc": float(image_auroc(scores[subset], labels[subset])),
            "image_ap": float(average_precision(scores[subset], labels[subset])),
            "image_f1_max": float(f1_max(scores[subset], labels[subset])[0]),
        }
        if maps is not None and masks is not None:
            pixel = pixel_metrics(maps[subset], masks[subset])
            entry.update({k: float(pixel[k]) for k in ("pixel_auroc", "pixel_ap", "aupro")})
        result[kind] = entry
    return result


class PerKindMetricsHandler:
    """Computes :func:`per_kind_metrics` at the end of an evaluation into ``engine.state.per_kind_metrics``.

    The kinds come from the batch entry ``kind_key`` (the demo cohort's datalists carry ``"kind"``:
    ``"normal"`` or a lesion kind); a datalist without it falls back to ``"normal"`` / ``"abnormal"``
    from the labels, which repeats the overall figures. :class:`EvaluationReportHandler` writes the
    result into the report when it is attached after this handler.

    Args:
        output_transform: maps ``engine.state.output`` to ``(scores, labels, maps, masks)``; each a batch-first
            tensor or a list of per-item values; ``maps``/``masks`` ``(B, 1, H, W)`` may be None (image metrics only).
        kind_key: batch key of the kind names.
        normal_kind: the kind of normal images.

    Raises:
        RuntimeError: in a distributed run (evaluate on one process; the per-item kinds are strings).
    """

    def __init__(
        self,
        output_transform: Callable = from_engine(["score", "label", "pred", "mask"]),
        kind_key: str = "kind",
        normal_kind: str = "normal",
    ) -> None:
        self.output_transform = output_transform
        self.kind_key = kind_key
        self.normal_kind = normal_kind
        self.logger = logging.getLogger(__name__)
        self._reset(None)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def _reset(self, _engine: Engine | None) -> None:
        self._scores: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []
        self._kinds: list[str] = []
        self._maps: list[np.ndarray] = []
        self._masks: list[np.ndarray] = []

    def _collect(self, engine: Engine) -> None:
        if idist.get_world_size() > 1:
            raise RuntimeError("PerKindMetricsHandler runs on one process: evaluate without torchrun.")
        scores, labels, maps, masks = self.output_transform(engine.state.output)
        scores, labels = per_item_scalars(scores, "score"), per_item_scalars(labels, "label")
        self._scores.append(scores)
        self._labels.append(labels)
        kinds = _batch_values(engine.state.batch, self.kind_key)
        if kinds is None:
            kinds = [self.normal_kind if label == 0 else "abnormal" for label in labels]
        self._kinds.extend(str(k) for k in kinds)
        if maps is not None and masks is not None:
            self._maps.append(_stack(maps))
            self._masks.append(_stack(masks))

    def __call__(self, engine: Engine) -> None:
        maps = np.concatenate(self._maps) if self._maps else None
        masks = np.concatenate(self._masks) if self._masks else None
        result = per_kind_metrics(
            np.concatenate(self._scores), np.concatenate(self._labels), self._kinds, maps, masks, self.normal_kind
        )
        engine.state.per_kind_metrics = result
        for kind, entry in result.items():
            figures = ", ".join(f"{k} {v:.4f}" for k, v in entry.items() if k != "count")
            self.logger.info(f"{kind} ({entry['count']} images) vs normal: {figures}")


def _batch_values(batch: Any, key: str) -> list | None:
    """``batch[key]`` of a collated batch (a dict) or of a decollated one (a list of dicts, as MONAI's
    evaluators leave it after post-processing); None when the key is absent."""
    if isinstance(batch, Mapping):
        return batch.get(key)
    if isinstance(batch, Sequence) and batch and all(isinstance(item, Mapping) for item in batch):
        values = [item.get(key) for item in batch]
        return None if any(v is None for v in values) else values
    return None


def _stack(values: Any) -> np.ndarray:
    """Per-item maps (a batch tensor or a list of ``(1, H, W)`` tensors) as one ``(B, H, W)`` float32 array."""
    if isinstance(values, torch.Tensor):
        return values.detach().float().cpu().numpy().reshape(values.shape[0], *values.shape[-2:])
    return np.stack([torch.as_tensor(v).detach().float().cpu().numpy().reshape(v.shape[-2:]) for v in values])
