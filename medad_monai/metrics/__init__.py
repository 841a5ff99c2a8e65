"""Anomaly-detection metrics: functional (arrays in, floats out) and MONAI cumulative metrics."""

from medad_monai.metrics.anomaly import (
    ImageAnomalyMetrics,
    PerClassAnomalyMetrics,
    PixelAnomalyMetrics,
    per_class_metrics,
)
from medad_monai.metrics.functional import (
    accuracy_at,
    aupro,
    average_precision,
    binned_error_bounds,
    binned_pixel_metrics,
    f1_max,
    fpr_threshold,
    image_auroc,
    label_regions,
    mad,
    pixel_metrics,
)

__all__ = [
    "ImageAnomalyMetrics",
    "PixelAnomalyMetrics",
    "PerClassAnomalyMetrics",
    "per_class_metrics",
    "image_auroc",
    "average_precision",
    "f1_max",
    "accuracy_at",
    "fpr_threshold",
    "mad",
    "aupro",
    "pixel_metrics",
    "label_regions",
    "binned_pixel_metrics",
    "binned_error_bounds",
]
