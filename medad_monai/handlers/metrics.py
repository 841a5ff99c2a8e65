"""Ignite metric handlers for anomaly detection and a per-evaluation metrics log file."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ignite import distributed as idist
from ignite.engine import Engine, Events
from monai.handlers import IgniteMetricHandler, from_engine

from medad_monai.handlers.utils import as_scalar, resolve_thresholds
from medad_monai.metrics.anomaly import ImageAnomalyMetrics, PixelAnomalyMetrics

__all__ = ["ImageAnomalyMetricHandler", "MetricsFileWriter", "PixelAnomalyMetricHandler"]


class _DictMetricHandler(IgniteMetricHandler):
    """
    An ``IgniteMetricHandler`` whose metric aggregates to a dict of scalars.

    Every entry goes into ``engine.state.metrics`` under its own name, and the name the handler is attached with
    (the key of ``key_val_metric``/``additional_metrics``) holds the scalar entry ``key``, so the evaluator's best
    metric tracking, ``CheckpointSaver(save_key_metric=True)``, ``StatsHandler`` and ``TensorBoardStatsHandler``
    all see plain numbers. Ignite's own dict handling would store the whole dict under that name instead.
    """

    def __init__(self, metric_fn: Any, key: str, output_transform: Callable, save_details: bool) -> None:
        super().__init__(metric_fn=metric_fn, output_transform=output_transform, save_details=save_details)
        self.key = key

    def completed(self, engine: Engine, name: str) -> None:
        result = self.compute()
        if self.key not in result:
            raise KeyError(f"key {self.key!r} is not one of the metrics {sorted(result)}.")
        for k, v in result.items():
            engine.state.metrics[k] = as_scalar(v, k)
        engine.state.metrics[name] = engine.state.metrics[self.key]


class ImageAnomalyMetricHandler(_DictMetricHandler):
    """
    Image-level anomaly metrics (:class:`~medad_monai.metrics.anomaly.ImageAnomalyMetrics`) as an evaluator metric.

    Puts ``image_auroc``, ``image_ap``, ``image_f1_max``, ``image_f1_threshold``, ``image_accuracy`` and ``mad``
    into ``engine.state.metrics``, plus the name the handler is attached with, holding ``key``.

    Example (bundle config)::

        "key_val_metric": {"image_auroc": {
            "_target_": "medad_monai.handlers.ImageAnomalyMetricHandler",
            "threshold": "$@bundle_root + '/models/threshold.json'"}}

    Args:
        threshold: operating threshold for ``image_accuracy``: None (the metric's own default), or anything
            :func:`~medad_monai.handlers.utils.resolve_thresholds` accepts (a number, the calibration JSON path, the
            ``ThresholdCalibrationHandler``); resolved at every evaluation. On the test evaluator pass the
            validation-calibrated threshold so that the test split chooses nothing.
        key: the metric stored under the handler's attach name (the evaluator's key metric).
        output_transform: maps ``engine.state.output`` to ``(scores, labels)``, (B,) each or lists of B scalars.
        save_details: store the metric buffers in ``engine.state.metric_details``.
    """

    def __init__(
        self,
        threshold: Any = None,
        key: str = "image_auroc",
        output_transform: Callable = from_engine(["score", "label"]),
        save_details: bool = False,
    ) -> None:
        super().__init__(ImageAnomalyMetrics(), key, output_transform, save_details)
        self.threshold = threshold

    def compute(self) -> Any:
        if self.threshold is not None:
            self.metric_fn.threshold = resolve_thresholds(self.threshold)["threshold"]
        return super().compute()


class PixelAnomalyMetricHandler(_DictMetricHandler):
    """
    Pixel-level anomaly metrics (:class:`~medad_monai.metrics.anomaly.PixelAnomalyMetrics`) as an evaluator metric.

    Puts ``pixel_auroc``, ``pixel_ap``, ``pixel_f1_max`` and ``aupro`` into ``engine.state.metrics``, plus the
    name the handler is attached with, holding ``key``.

    Args:
        key: the metric stored under the handler's attach name.
        output_transform: maps ``engine.state.output`` to ``(maps, masks)``: (B, 1, H, W) each or lists of (1, H, W).
        save_details: store the metric buffers in ``engine.state.metric_details`` (memory heavy for maps).
        metric_kwargs: passed to ``PixelAnomalyMetrics`` (e.g. ``mode="binned"``).
    """

    def __init__(
        self,
        key: str = "pixel_auroc",
        output_transform: Callable = from_engine(["pred", "mask"]),
        save_details: bool = False,
        **metric_kwargs: Any,
    ) -> None:
        super().__init__(PixelAnomalyMetrics(**metric_kwargs), key, output_transform, save_details)


class MetricsFileWriter:
    """
    Appends one row per evaluation (``epoch``, UTC ``timestamp`` and the selected scalar metrics) to a CSV or
    JSON Lines file, so validation metrics of every epoch are kept. ``monai.handlers.MetricsSaver`` rewrites its
    ``metrics.csv`` at every evaluation (one file per run, one row per metric), which suits a single test
    evaluation but loses the history of a validation run.

    The file is started afresh at the first evaluation of a run (a re-run replaces its own log) unless
    ``append`` is set (resumed training), in which case rows are added after the existing ones; a CSV file's
    header must then match the columns. It writes what ``engine.state.metrics`` holds when it runs: list it after
    handlers that add metrics at ``EPOCH_COMPLETED`` (``ThresholdCalibrationHandler``).

    Args:
        save_path: ``.csv`` or ``.jsonl`` file.
        metrics: names of the metrics to write, or ``"*"`` for all of ``engine.state.metrics``.
        append: keep the rows of an existing file.

    Raises:
        ValueError: for another file suffix, or when the columns change between evaluations (CSV).
        KeyError: when a selected metric is missing from ``engine.state.metrics``.
        TypeError: when a metric is not a scalar.
    """

    def __init__(self, save_path: str, metrics: str | Sequence[str] = "*", append: bool = False) -> None:
        self.save_path = Path(save_path)
        if self.save_path.suffix not in (".csv", ".jsonl"):
            raise ValueError(f"save_path must end with .csv or .jsonl, got {save_path!r}.")
        self.metrics = None if metrics == "*" else [metrics] if isinstance(metrics, str) else list(metrics)
        self.append = append
        self._started = False

    def attach(self, engine: Engine) -> None:
        """
        Args:
            engine: an evaluator (or trainer) whose ``engine.state.metrics`` are written at ``EPOCH_COMPLETED``.
        """
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        names = list(engine.state.metrics) if self.metrics is None else self.metrics
        missing = [k for k in names if k not in engine.state.metrics]
        if missing:
            raise KeyError(f"metrics {missing} are not in engine.state.metrics {sorted(engine.state.metrics)}.")
        row = {"epoch": engine.state.epoch, "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        row.update({k: as_scalar(engine.state.metrics[k], k) for k in names})
        if idist.get_rank() != 0:
            return
        mode = "a" if self._started or self.append else "w"
        self._started = True
        self.save_path.parent.mkdir(parents=True, exist_ok=True)
        if self.save_path.suffix == ".jsonl":
            with open(self.save_path, mode) as f:
                f.write(json.dumps(row) + "\n")
            return
        self._write_csv_row(row, mode)

    def _write_csv_row(self, row: dict, mode: str) -> None:
        exists = mode == "a" and self.save_path.is_file() and os.path.getsize(self.save_path) > 0
        if exists:
            with open(self.save_path, newline="") as f:
                header = next(csv.reader(f))
            if header != list(row):
                raise ValueError(f"columns {list(row)} do not match the header {header} of {self.save_path}.")
        with open(self.save_path, mode, newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            if not exists:
                writer.writeheader()
            writer.writerow(row)
