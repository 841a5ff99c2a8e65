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

    ``L = w * sum_l mean((f_org^l - f_rec^l)^2) + eps * mean(D)``, ``w = 1`` in eq. 2.

    Eq. 2 averages ``D`` after upsampling it to the image size; the bilinear upsampling with
    half-pixel centres that :class:`SPMamba` uses, by the integer factor 32, has exactly the
    mean of the map it upsamples, so the mean is taken on the bottleneck grid. The official
    trainer weights the MSE sum by 5 (its ``L2Loss(lam=5.0)``) and the distance by 25:
    ``reconstruction_weight=5`` reproduces it.

    Called as ``loss(outputs, target)`` so it plugs into MONAI's
    ``SupervisedTrainer``: ``outputs`` is the dict returned by
    ``SPMamba`` in training mode (:class:`SPMambaOutput`); ``target`` is
    ignored (training images are all normal).

    Args:
        prototype_weight: ``eps`` (25 in the paper).
        reconstruction_weight: ``w`` (1 in the paper, 5 in the official trainer).
    """

    def __init__(self, prototype_weight: float = 25.0, reconstruction_weight: float = 1.0) -> None:
        super().__init__()
        self.prototype_weight = prototype_weight
        self.reconstruction_weight = reconstruction_weight

    def forward(self, outputs: SPMambaOutput, target: Any = None) -> torch.Tensor:
        if not isinstance(outputs, dict) or "features" not in outputs or "reconstructions" not in outputs:
            raise TypeError(
                "SPMambaLoss expects the training-mode output dict of SPMamba (keys 'features', 'reconstructions', "
                f"'prototype_distance'); got {type(outputs).__name__}. Is the network in eval() mode?"
            )
        loss = sum(F.mse_loss(r, f) for f, r in zip(outputs["features"], outputs["reconstructions"]))
        if self.reconstruction_weight != 1:
            loss = self.reconstruction_weight * loss
        distance = outputs.get("prototype_distance")
        if distance is not None and self.prototype_weight:
            loss = loss + self.prototype_weight * distance.mean()
        return loss
