"""Ignite handlers: checkpoints and resume, provenance, encoder calibration, anomaly metrics, thresholds, reports,
inference results, progress."""

from __future__ import annotations

from .checkpoint import (
    BestModelSaver,
    CorruptCheckpointError,
    EvaluatorBestMetric,
    LoadCheckpoint,
    ResumePointSaver,
    ResumeTraining,
    latest_checkpoint,
    read_checkpoint,
    resume_points,
)
from .encoder_calibration import CalibratableEncoder, EncoderCalibration
from .inference import InferenceFailed, InferenceResultsWriter
from .metrics import ImageAnomalyMetricHandler, MetricsFileWriter, PixelAnomalyMetricHandler
from .output import CopyBatchToOutput
from .per_kind import PerKindMetricsHandler, per_kind_metrics
from .progress import ProgressBarHandler, attach_progress_bar
from .provenance import Provenance, ProvenanceMismatchError
from .report import EvaluationReportHandler, report_markdown
from .threshold import ThresholdCalibrationHandler, calibrate_threshold
from .utils import resolve_thresholds
from .visual import VisualReportHandler, denormalize_image

__all__ = [
    "BestModelSaver",
    "CalibratableEncoder",
    "CorruptCheckpointError",
    "EncoderCalibration",
    "EvaluatorBestMetric",
    "InferenceFailed",
    "InferenceResultsWriter",
    "LoadCheckpoint",
    "Provenance",
    "ProvenanceMismatchError",
    "ResumePointSaver",
    "ResumeTraining",
    "latest_checkpoint",
    "read_checkpoint",
    "resume_points",
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
