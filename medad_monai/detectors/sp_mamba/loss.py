"""SP-Mamba's training loss (eq. 2)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.modules.loss import _Loss

from medad_monai.detectors.sp_mamba.network import SPMambaOutput

__all__ = ["SPMambaLoss"]


class SPMambaLoss(_Loss):
    """SP-Mamba's eq. 2: multi-scale feature MSE plus ``eps`` times the mean prototype distance.

    ``L = sum_l mean((f_org^l - f_rec^l)^2) + eps * mean(D)``.

    Called as ``loss(outputs, target)`` so it plugs into MONAI's
    ``SupervisedTrainer``: ``outputs`` is the dict returned by
    ``SPMamba`` in training mode (:class:`SPMambaOutput`); ``target`` is
    ignored (training images are all normal).

    Args:
        prototype_weight: ``eps`` (25 in the paper).
    """

    def __init__(self, prototype_weight: float = 25.0) -> None:
        super().__init__()
        self.prototype_weight = prototype_weight

    def forward(self, outputs: SPMambaOutput, target: Any = None) -> torch.Tensor:
        if not isinstance(outputs, dict) or "features" not in outputs or "reconstructions" not in outputs:
            raise TypeError(
                "SPMambaLoss expects the training-mode output dict of SPMamba (keys 'features', 'reconstructions', "
                f"'prototype_distance'); got {type(outputs).__name__}. Is the network in eval() mode?"
            )
        loss = sum(F.mse_loss(r, f) for f, r in zip(outputs["features"], outputs["reconstructions"]))
        distance = outputs.get("prototype_distance")
        if distance is not None and self.prototype_weight:
            loss = loss + self.prototype_weight * distance.mean()
        return loss
