"""Ignite handlers for anomaly-detection evaluation: metrics, threshold calibration, reports and progress bars."""

from __future__ import annotations

from .metrics import ImageAnomalyMetricHandler, MetricsFileWriter, PixelAnomalyMetricHandler
from .output import CopyBatchToOutput
from .progress import ProgressBarHandler, attach_progress_bar
from .report import EvaluationReportHandler, report_markdown
from .threshold import ThresholdCalibrationHandler, calibrate_threshold
from .utils import resolve_thresholds
from .visual import VisualReportHandler, denormalize_image

__all__ = [
    "CopyBatchToOutput",
    "EvaluationReportHandler",
    "ImageAnomalyMetricHandler",
    "MetricsFileWriter",
    "PixelAnomalyMetricHandler",
    "ProgressBarHandler",
    "ThresholdCalibrationHandler",
    "VisualReportHandler",
    "attach_progress_bar",
    "calibrate_threshold",
    "denormalize_image",
    "report_markdown",
    "resolve_thresholds",
]
