"""Calibration of the image and pixel operating thresholds on the validation set."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from ignite import distributed as idist
from ignite.engine import Engine, Events
from monai.handlers import from_engine

from medad_monai.handlers.utils import gather_1d, per_item_scalars, write_json
from medad_monai.metrics.functional import f1_max, fpr_threshold

__all__ = ["ThresholdCalibrationHandler", "calibrate_threshold"]

_METHODS = ("auto", "f1_max", "fpr")
_RECORD_KEYS = (
    "threshold",
    "method",
    "target_fpr",
    "f1",
    "fpr",
    "num_normal",
    "num_abnormal",
    "pixel_threshold",
    "pixel_method",
    "pixel_target_fpr",
    "pixel_f1",
    "pixel_fpr",
    "num_pixels",
    "epoch",
)


def calibrate_threshold(scores: np.ndarray, labels: np.ndarray, method: str, target_fpr: float) -> dict:
    """
    Choose an operating threshold from validation scores; a value is called anomalous when ``value >= threshold``.

    ``"f1_max"`` takes the threshold maximising F1 over the labelled anomalies; ``"fpr"`` the threshold at which a
    fraction ``target_fpr`` of the normal (label 0) values is flagged; ``"auto"`` uses ``"f1_max"`` when any
    anomaly is present and ``"fpr"`` otherwise (the usual case for unsupervised training: normal-only validation).

    Args:
        scores: values of shape (N,): image scores, or flattened pixel values of anomaly maps.
        labels: matching 0/1 labels of shape (N,): image labels, or flattened mask pixels.
        method: ``"auto"``, ``"f1_max"`` or ``"fpr"``.
        target_fpr: false-positive rate on normal values for ``"fpr"``, in (0, 1).

    Returns:
        ``threshold``, the ``method`` used, ``target_fpr`` (None unless ``"fpr"``), and the validation ``f1`` (None
        without anomalies) and ``fpr`` (None without normal values) at that threshold.

    Raises:
        ValueError: when the inputs are empty, labels are not 0/1, or the method needs values that are absent.
    """
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}.")
    if scores.shape != labels.shape or scores.ndim != 1 or scores.size == 0:
        raise ValueError(
            f"scores and labels must be non-empty and of equal shape (N,), got {scores.shape} and {labels.shape}."
        )
    if not np.isin(labels, (0, 1)).all():
        raise ValueError(f"labels must be 0 or 1, got values {np.unique(labels)[:10].tolist()}.")
    positive = labels == 1
    has_anomalies, has_normals = bool(positive.any()), bool((~positive).any())
    if method == "auto":
        method = "f1_max" if has_anomalies else "fpr"
    if method == "f1_max":
        if not has_anomalies:
            raise ValueError("method 'f1_max' needs labelled anomalies (label 1) in the validation data, found none.")
        f1, threshold = f1_max(scores, labels)
    else:
        if not has_normals:
            raise ValueError("method 'fpr' needs normal values (label 0) in the validation data, found none.")
        threshold = fpr_threshold(scores[~positive], target_fpr)
    threshold = float(threshold)
    predicted = scores >= threshold
    f1 = None
    if has_anomalies:
        tp = float(np.sum(predicted & positive))
        f1 = 2 * tp / (float(predicted.sum()) + float(positive.sum()))
    fpr = float(predicted[~positive].mean()) if has_normals else None
    return {
        "threshold": threshold,
        "method": method,
        "target_fpr": float(target_fpr) if method == "fpr" else None,
        "f1": f1,
        "fpr": fpr,
    }


class ThresholdCalibrationHandler:
    """
    Ignite handler for the VALIDATION evaluator that calibrates the operating thresholds at every evaluation.

    Image threshold: F1-max over the validation image scores when labelled validation anomalies exist, else the
    score that flags ``target_fpr`` of the normal validation images (see :func:`calibrate_threshold`; ``method``
    forces one rule). Pixel threshold (for the thresholded anomaly mask), only when ``pixel_output_transform``
    is given: pixel F1-max over the validation maps when validation masks hold lesion pixels, else the value that
    flags ``pixel_target_fpr`` of the normal pixels (mask 0; without masks: every pixel of the normal validation
    images, those of abnormal images having no pixel label are left out).
    The test split must never be given to this handler: it chooses the operating point.

    The result goes into ``engine.state.metrics["threshold"]`` (and ``["pixel_threshold"]``), is kept on the
    handler (``threshold``, ``pixel_threshold``, ``record``) and is written to ``save_path`` as JSON, the file
    inference configs read. ``state_dict()``/``load_state_dict()`` make the handler a checkpoint object: add it
    to the ``save_dict`` of ``CheckpointSaver`` (e.g. under ``"threshold"``) and to the ``load_dict`` of
    ``CheckpointLoader`` to restore the threshold with the model.

    Handler order does not matter for checkpoints: ``state_dict()`` finishes a pending calibration first, so a
    ``CheckpointSaver`` that runs at ``EPOCH_COMPLETED`` before this handler still saves the threshold of the same
    evaluation. Loggers read ``engine.state.metrics`` when they run: list this handler before ``StatsHandler``,
    ``TensorBoardStatsHandler`` and ``MetricsFileWriter`` to have the thresholds logged (the values of the
    previous evaluation are removed at ``EPOCH_STARTED``, so a logger listed earlier never reports stale ones).
    With ``save_best_only`` the JSON is only rewritten when the evaluator's key metric improved at this
    evaluation (``engine.state.best_metric_epoch == engine.state.epoch``, the rule ``CheckpointSaver`` uses with
    ``save_key_metric=True`` and the default ``key_metric_greater_or_equal=False``), so the JSON always matches
    the best checkpoint; the file of a re-run is replaced.

    Example (bundle config, in the validator's ``val_handlers``)::

        {"_target_": "medad_monai.handlers.ThresholdCalibrationHandler",
         "pixel_output_transform": "$monai.handlers.from_engine(['pred', 'mask'])",
         "save_path": "$@bundle_root + '/models/threshold.json'"}

    When the validation data have no masks, pass ``"$lambda out: ([o['pred'] for o in out], None)"`` as
    ``pixel_output_transform``: the pixels of normal images (image label 0) are then used.

    Args:
        output_transform: maps ``engine.state.output`` to ``(scores, labels)``: per-image scores and 0/1 labels,
            each a (B,) tensor or a list of B one-element values.
        pixel_output_transform: maps ``engine.state.output`` to ``(maps, masks)``: anomaly maps of shape
            (B, 1, H, W) or a list of (1, H, W), and matching binary masks or None. None disables pixel calibration.
        method: image rule: ``"auto"``, ``"f1_max"`` or ``"fpr"``.
        target_fpr: image false-positive rate on normal validation images for ``"fpr"``.
        pixel_method: pixel rule: ``"auto"``, ``"f1_max"`` or ``"fpr"``.
        pixel_target_fpr: pixel false-positive rate on normal validation pixels for ``"fpr"``.
        save_path: JSON file to write the calibration record to; None writes nothing.
        save_best_only: only write ``save_path`` when the key metric improved (needs an evaluator with
            ``key_val_metric``); False writes it after every evaluation.
        name: logger name; None uses ``engine.logger``.

    Note:
        Pixel calibration keeps every used validation pixel in memory (4 bytes each, twice with masks) and sorts
        them (``medad_monai.metrics.functional.f1_max`` / ``fpr_threshold``); it is exact, not binned.
    """

    def __init__(
        self,
        output_transform: Callable = from_engine(["score", "label"]),
        pixel_output_transform: Callable | None = None,
        method: str = "auto",
        target_fpr: float = 0.05,
        pixel_method: str = "auto",
        pixel_target_fpr: float = 0.01,
        save_path: str | None = None,
        save_best_only: bool = True,
        name: str | None = None,
    ) -> None:
        for arg, value in (("method", method), ("pixel_method", pixel_method)):
            if value not in _METHODS:
                raise ValueError(f"{arg} must be one of {_METHODS}, got {value!r}.")
        for arg, value in (("target_fpr", target_fpr), ("pixel_target_fpr", pixel_target_fpr)):
            if not 0.0 < value < 1.0:
                raise ValueError(f"{arg} must be in (0, 1), got {value}.")
        self.output_transform = output_transform
        self.pixel_output_transform = pixel_output_transform
        self.method = method
        self.target_fpr = target_fpr
        self.pixel_method = pixel_method
        self.pixel_target_fpr = pixel_target_fpr
        self.save_path = save_path
        self.save_best_only = save_best_only
        self.logger = logging.getLogger(name)
        self._name = name
        self._engine: Engine | None = None
        self.record: dict[str, Any] = dict.fromkeys(_RECORD_KEYS)
        self._reset()

    @property
    def threshold(self) -> float | None:
        """Calibrated image-score threshold (anomalous when ``score >= threshold``); None before calibration."""
        return self.record["threshold"]

    @property
    def pixel_threshold(self) -> float | None:
        """Calibrated anomaly-map threshold for the predicted mask; None before or without pixel calibration."""
        return self.record["pixel_threshold"]

    def attach(self, engine: Engine) -> None:
        """
        Args:
            engine: the validation evaluator.

        Raises:
            ValueError: when ``save_best_only`` is set but the engine has no key metric.
        """
        has_key_metric = getattr(engine.state, "key_metric_name", None) is not None
        if self.save_path is not None and self.save_best_only and not has_key_metric:
            raise ValueError(
                "save_best_only=True needs an evaluator with a key_val_metric to know the best evaluation; "
                "set save_best_only=False to write the threshold after every evaluation."
            )
        if self._name is None:
            self.logger = engine.logger
        self._engine = engine
        engine.add_event_handler(Events.EPOCH_STARTED, self._started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, lambda _: self._calibrate_pending())

    def state_dict(self) -> dict[str, Any]:
        """The calibration record (JSON-serialisable numbers and strings), after finishing a pending calibration."""
        self._calibrate_pending()
        return dict(self.record)

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """
        Restore a record saved by :meth:`state_dict` (e.g. by ``CheckpointLoader``).

        Raises:
            ValueError: when ``state_dict`` lacks the ``threshold`` key.
        """
        if "threshold" not in state_dict:
            raise ValueError(f"threshold state_dict must contain 'threshold', got keys {sorted(state_dict)}.")
        self.record = dict.fromkeys(_RECORD_KEYS)
        self.record.update(state_dict)
        self._pending = False

    def _started(self, engine: Engine) -> None:
        # drop the previous evaluation's values so no logger reports them under this epoch
        engine.state.metrics.pop("threshold", None)
        engine.state.metrics.pop("pixel_threshold", None)
        self._reset()

    def _reset(self) -> None:
        self._scores: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []
        self._pixels: list[np.ndarray] = []
        self._pixel_labels: list[np.ndarray] = []
        self._has_masks: bool | None = None
        self._pending = False

    def _collect(self, engine: Engine) -> None:
        scores, labels = self.output_transform(engine.state.output)
        scores = per_item_scalars(scores, "score")
        labels = per_item_scalars(labels, "label")
        if scores.shape != labels.shape:
            raise ValueError(f"got {scores.size} scores but {labels.size} labels in one iteration.")
        self._scores.append(scores)
        self._labels.append(labels)
        if self.pixel_output_transform is not None:
            self._collect_pixels(engine, labels)
        self._pending = True

    def _collect_pixels(self, engine: Engine, image_labels: np.ndarray) -> None:
        maps, masks = self.pixel_output_transform(engine.state.output)
        if len(maps) != image_labels.size or (masks is not None and len(masks) != len(maps)):
            raise ValueError("pixel_output_transform must return one map (and mask) per image of the batch.")
        if self._has_masks is None:
            self._has_masks = masks is not None
        elif self._has_masks != (masks is not None):
            raise ValueError("pixel_output_transform must return masks for every batch or for none (None).")
        for i, amap in enumerate(maps):
            values = torch.as_tensor(amap).detach().float().cpu().reshape(-1).numpy()
            if masks is None:
                # without masks only the pixels of normal images have a known (normal) pixel label
                if image_labels[i] == 0:
                    self._pixels.append(values)
                continue
            mask = torch.as_tensor(masks[i]).detach().float().cpu().reshape(-1).numpy()
            if mask.size != values.size:
                raise ValueError(f"mask {i} has {mask.size} pixels but its anomaly map has {values.size}.")
            self._pixels.append(values)
            self._pixel_labels.append(mask)

    def _calibrate_pending(self) -> None:
        if not self._pending:
            return
        self._pending = False
        engine = self._engine
        scores, labels = gather_1d(np.concatenate(self._scores)), gather_1d(np.concatenate(self._labels))
        record = dict.fromkeys(_RECORD_KEYS)
        record.update(calibrate_threshold(scores, labels, self.method, self.target_fpr))
        record["num_normal"] = int(np.sum(labels == 0))
        record["num_abnormal"] = int(np.sum(labels == 1))
        record["epoch"] = int(engine.state.epoch)
        engine.state.metrics["threshold"] = record["threshold"]
        if self.pixel_output_transform is not None:
            record.update(self._calibrate_pixels())
            engine.state.metrics["pixel_threshold"] = record["pixel_threshold"]
        self.record = record
        message = (
            f"calibrated threshold {record['threshold']:.6g} ({record['method']}) on {record['num_normal']} normal "
            f"and {record['num_abnormal']} abnormal validation images"
        )
        if record["pixel_threshold"] is not None:
            message += f", pixel threshold {record['pixel_threshold']:.6g} ({record['pixel_method']})"
        self.logger.info(message)
        is_best = getattr(engine.state, "best_metric_epoch", -1) == engine.state.epoch
        if self.save_path is not None and (is_best or not self.save_best_only) and idist.get_rank() == 0:
            write_json(self.save_path, record)

    def _calibrate_pixels(self) -> dict[str, Any]:
        if not self._pixels:
            raise ValueError("pixel calibration without masks needs normal validation images (label 0), found none.")
        values = gather_1d(np.concatenate(self._pixels))
        if self._has_masks:
            labels = gather_1d(np.concatenate(self._pixel_labels))
        else:
            labels = np.zeros_like(values)
        result = calibrate_threshold(values, labels, self.pixel_method, self.pixel_target_fpr)
        return {
            "pixel_threshold": result["threshold"],
            "pixel_method": result["method"],
            "pixel_target_fpr": result["target_fpr"],
            "pixel_f1": result["f1"],
            "pixel_fpr": result["fpr"],
            "num_pixels": int(values.size),
        }
