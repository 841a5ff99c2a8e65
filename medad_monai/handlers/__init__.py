"""Ignite handlers: checkpoints and resume, encoder calibration, anomaly metrics, thresholds, reports, progress."""

from __future__ import annotations

from .checkpoint import BestModelSaver, EvaluatorBestMetric, LoadCheckpoint, ResumeTraining, latest_checkpoint
from .encoder_calibration import CalibratableEncoder, EncoderCalibration
from .metrics import ImageAnomalyMetricHandler, MetricsFileWriter, PixelAnomalyMetricHandler
from .output import CopyBatchToOutput
from .per_kind import PerKindMetricsHandler, per_kind_metrics
from .progress import ProgressBarHandler, attach_progress_bar
from .report import EvaluationReportHandler, report_markdown
from .threshold import ThresholdCalibrationHandler, calibrate_threshold
from .utils import resolve_thresholds
from .visual import VisualReportHandler, denormalize_image

__all__ = [
    "BestModelSaver",
    "CalibratableEncoder",
    "EncoderCalibration",
    "EvaluatorBestMetric",
    "LoadCheckpoint",
    "ResumeTraining",
    "latest_checkpoint",
    "CopyBatchToOutput",
    "EvaluationReportHandler",
    "ImageAnomalyMetricHandler",
    "MetricsFileWriter",
    "PerKindMetricsHandler",
    "PixelAnomalyMetricHandler",
    "ProgressBarHandler",
    "ThresholdCalibrationHandler",
    "VisualReportHandler",
    "attach_progress_bar",
    "calibrate_threshold",
    "denormalize_image",
    "per_kind_metrics",
    "report_markdown",
    "resolve_thresholds",
]
