"""UMIAD-EGMF: unsupervised medical image anomaly detection based on edge guidance and multi-scale flow fusion.

Li Z., Lin G., Zhang D., Huang R., Yang J. UMIAD-EGMF: unsupervised medical image anomaly detection based on
edge guidance and multi-scale flow fusion. No code is published; this implementation follows the paper, with
CFlow (Gudovskiy et al., WACV 2022) and MSFlow (Zhou et al., IEEE TNNLS 2024) deciding where it is silent.

- :mod:`.network`: :class:`UMIADEGMF` and its training output :class:`UMIADEGMFOutput`.
- :mod:`.blocks`: EGM (eq. 1-5) and its Prewitt alternative, CAB and the EAM (eq. 6-8) with Table 8's ADD / MUL,
  pyramid pooling, positional encodings, the per-scale FrEIA flows and the MFF (eq. 9).
- :mod:`.loss`: :class:`UMIADEGMFLoss` (eq. 12).
- :mod:`.scoring`: the additive and multiplicative maps and :class:`UMIADEGMFImageScore` (top-N mean).
"""

from .blocks import (
    ChannelAttention,
    EdgeAggregation,
    EdgeGuidance,
    GatedConv1x1,
    MultiScaleFlowFusion,
    PrewittEdges,
    PyramidPooling,
    conditional_flow,
    gap_gated,
    positional_encoding_2d,
    prewitt_magnitude,
)
from .loss import UMIADEGMFLoss
from .network import UMIADEGMF, UMIADEGMFOutput
from .scoring import UMIADEGMFImageScore, additive_anomaly_map, log_likelihood_map, multiplicative_anomaly_map

__all__ = [
    "UMIADEGMF",
    "ChannelAttention",
    "EdgeAggregation",
    "EdgeGuidance",
    "GatedConv1x1",
    "MultiScaleFlowFusion",
    "PrewittEdges",
    "PyramidPooling",
    "UMIADEGMFImageScore",
    "UMIADEGMFLoss",
    "UMIADEGMFOutput",
    "additive_anomaly_map",
    "conditional_flow",
    "gap_gated",
    "log_likelihood_map",
    "multiplicative_anomaly_map",
    "positional_encoding_2d",
    "prewitt_magnitude",
]
