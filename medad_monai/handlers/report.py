"""Evaluation report: every metric, the operating thresholds and their provenance, as JSON and Markdown."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite import distributed as idist
from ignite.engine import Engine, Events
from monai.handlers import from_engine

from medad_monai.handlers.utils import (
    gather_1d,
    per_item_scalars,
    resolve_thresholds,
    sha256_file,
    write_json,
    write_text,
)

__all__ = ["EvaluationReportHandler", "report_markdown"]

_PACKAGES = ("medad-monai", "monai", "torch", "pytorch-ignite")


def _json_value(value: Any, key: str) -> Any:
    """A metric value as JSON: numbers stay numbers, tensors and arrays become (nested) lists."""
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    raise TypeError(f"metric {key!r} of type {type(value).__name__} cannot be written to the report.")


def _package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "-" if value is None else str(value)


def report_markdown(report: Mapping[str, Any]) -> str:
    """Render the report dict written by :class:`EvaluationReportHandler` as Markdown tables."""
    counts = report["num_images"]
    lines = [
        "# Evaluation report",
        "",
        "| item | value |",
        "|---|---|",
        f"| timestamp (UTC) | {report['timestamp']} |",
        f"| evaluator epoch | {report['epoch']} |",
        f"| training epoch of the thresholds | {_fmt(report.get('thresholds_epoch'))} |",
        f"| images (normal / abnormal) | {counts['normal']} / {counts['abnormal']} |",
    ]
    lines.append(f"| encoder weights | {_fmt(report.get('encoder_weights'))} |")
    for item in ("checkpoint", "datalist"):
        entry = report[item]
        lines.append(f"| {item} | {'-' if entry is None else entry['path']} |")
        lines.append(f"| {item} sha256 | {'-' if entry is None else entry['sha256']} |")
    lines += ["", "## Metrics", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in report["metrics"].items()]
    per_kind = report.get("per_kind")
    if per_kind:
        columns = sorted({k for entry in per_kind.values() for k in entry} - {"count"})
        lines += ["", "## Per lesion kind (normal images against each kind)", ""]
        lines += ["| kind | images | " + " | ".join(columns) + " |", "|---|---|" + "---|" * len(columns)]
        lines += [
            f"| {kind} | {entry['count']} | " + " | ".join(_fmt(entry.get(c)) for c in columns) + " |"
            for kind, entry in per_kind.items()
        ]
    lines += ["", "## Thresholds", ""]
    thresholds = report["thresholds"]
    if thresholds is None:
        lines.append("No operating threshold was given.")
    else:
        lines += ["| field | value |", "|---|---|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in thresholds.items()]
    return "\n".join(lines) + "\n"


class EvaluationReportHandler:
    """
    Writes ``<filename>.json`` and ``<filename>.md`` into ``output_dir`` at the end of each evaluation.

    Contents: every entry of ``engine.state.metrics``; the operating thresholds with their calibration record and
    where they came from (``source``: a JSON path, ``"handler"`` or ``"value"``); the number of normal and
    abnormal images evaluated; the per-lesion-kind metrics of a :class:`PerKindMetricsHandler` attached before
    this handler (``engine.state.per_kind_metrics``); the encoder weights the evaluated network was built from
    (``network.encoder.weights_source``, read at report time, i.e. after the checkpoint was loaded); the
    checkpoint path and its SHA-256; the datalist path and its SHA-256; the UTC
    timestamp, the engine epoch, the training epoch recorded with the thresholds (``thresholds_epoch``, None
    without one) and the versions of medad-monai, MONAI, PyTorch and Ignite. The files of a
    re-run with the same ``output_dir`` and ``filename`` are replaced (written atomically); give another
    ``filename`` or directory to keep both.

    Example (bundle config, in the test evaluator's ``val_handlers``, after the metric handlers)::

        {"_target_": "medad_monai.handlers.EvaluationReportHandler", "output_dir": "@output_dir",
         "checkpoint_path": "@ckpt_path", "threshold_source": "@threshold_path",
         "datalist_path": "@datalist"}

    Args:
        output_dir: directory for the report files (created if needed).
        checkpoint_path: the evaluated checkpoint; hashed when the report is written.
        threshold_source: the operating thresholds, see :func:`~medad_monai.handlers.utils.resolve_thresholds`;
            None reports none.
        datalist_path: the datalist file evaluated; hashed when the report is written.
        network: the evaluated network; its ``encoder.weights_source`` is recorded (None records nothing).
        output_transform: maps ``engine.state.output`` to the per-image 0/1 labels, (B,) or a list of B scalars.
        filename: stem of the two report files.
        name: logger name; None uses ``engine.logger``.

    Raises:
        FileNotFoundError: when the checkpoint or datalist file does not exist at report time.
    """

    def __init__(
        self,
        output_dir: str,
        checkpoint_path: str | None = None,
        threshold_source: Any = None,
        datalist_path: str | None = None,
        network: torch.nn.Module | None = None,
        output_transform: Callable = from_engine(["label"]),
        filename: str = "evaluation_report",
        name: str | None = None,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.checkpoint_path = checkpoint_path
        self.threshold_source = threshold_source
        self.datalist_path = datalist_path
        self.network = network
        self.output_transform = output_transform
        self.filename = filename
        self.logger = logging.getLogger(name)
        self._name = name
        self._labels: list[np.ndarray] = []

    def attach(self, engine: Engine) -> None:
        """
        Args:
            engine: the evaluator; attach after its metrics handlers (metrics attached as
                ``key_val_metric``/``additional_metrics`` always run first).
        """
        if self._name is None:
            self.logger = engine.logger
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def _reset(self, _engine: Engine) -> None:
        self._labels = []

    def _collect(self, engine: Engine) -> None:
        self._labels.append(per_item_scalars(self.output_transform(engine.state.output), "label"))

    def build_report(self, engine: Engine) -> dict[str, Any]:
        """The report of the evaluation that ``engine`` just completed, as a JSON-serialisable dict."""
        labels = gather_1d(np.concatenate(self._labels)) if self._labels else np.zeros(0)
        thresholds = None if self.threshold_source is None else resolve_thresholds(self.threshold_source)
        return {
            "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "epoch": int(engine.state.epoch),
            # the evaluator's own epoch is 1 in a stand-alone evaluation: the training epoch whose
            # validation calibrated the thresholds (and chose the checkpoint saved with them) is the one a reader wants
            "thresholds_epoch": (thresholds or {}).get("epoch"),
            "metrics": {k: _json_value(v, k) for k, v in engine.state.metrics.items()},
            "thresholds": thresholds,
            "num_images": {
                "normal": int(np.sum(labels == 0)),
                "abnormal": int(np.sum(labels == 1)),
                "total": int(labels.size),
            },
            "per_kind": getattr(engine.state, "per_kind_metrics", None),
            "encoder_weights": getattr(getattr(self.network, "encoder", None), "weights_source", None),
            "checkpoint": self._file_entry(self.checkpoint_path),
            "datalist": self._file_entry(self.datalist_path),
            "versions": {p: _package_version(p) for p in _PACKAGES},
        }

    @staticmethod
    def _file_entry(path: str | None) -> dict[str, str] | None:
        if path is None:
            return None
        return {"path": str(Path(path).resolve()), "sha256": sha256_file(path)}

    def __call__(self, engine: Engine) -> None:
        report = self.build_report(engine)
        if idist.get_rank() != 0:
            return
        write_json(self.output_dir / f"{self.filename}.json", report)
        write_text(self.output_dir / f"{self.filename}.md", report_markdown(report))
        self.logger.info(f"wrote evaluation report to {self.output_dir / self.filename}.json/.md")
