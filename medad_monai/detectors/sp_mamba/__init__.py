"""SP-Mamba: Spatial-Perception State Space Model for unsupervised medical anomaly detection.

Pan R., Lu R. SP-Mamba: Spatial-Perception State Space Model for Unsupervised Medical Anomaly
Detection. ACM MM 2025. doi:10.1145/3746027.3755641. Official code: github.com/Ray-RuiPan/SP-Mamba.

- :mod:`.network`: :class:`SPMamba` and its training output :class:`SPMambaOutput`.
- :mod:`.blocks`: window-sliding medical prototypes (eq. 1), the SPSS decoder block, patch expanding.
- :mod:`.loss`: :class:`SPMambaLoss` (eq. 2).
- :mod:`.convert`: loading checkpoints of the official implementation.
- :mod:`.scoring`: concentration (eq. 4) and contrast (eq. 5) terms and :class:`SPMambaImageScore` (eq. 7).
"""

from .blocks import MambaLayer, MedicalPrototypes, PatchExpand, SPSSBlock, window_prototype_distance
from .loss import SPMambaLoss
from .network import SPMamba, SPMambaOutput, stage_blocks
from .scoring import SPMambaImageScore, concentration_score, contrast_score, difference_of_gaussians

__all__ = [
    "MambaLayer",
    "MedicalPrototypes",
    "PatchExpand",
    "SPMamba",
    "SPMambaImageScore",
    "SPMambaLoss",
    "SPMambaOutput",
    "SPSSBlock",
    "concentration_score",
    "contrast_score",
    "difference_of_gaussians",
    "stage_blocks",
    "window_prototype_distance",
]
