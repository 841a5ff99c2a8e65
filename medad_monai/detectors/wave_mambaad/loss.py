"""Wave-MambaAD's training loss: the multi-scale feature MSE (sec. 3.2, 4.1)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.modules.loss import _Loss

from medad_monai.detectors.wave_mambaad.network import WaveMambaADOutput

__all__ = ["WaveMambaADLoss"]


class WaveMambaADLoss(_Loss):
    """``L = sum_l mean((f^l - f_rec^l)^2)``: the sum over the three scales of the feature MSE.

    Called as ``loss(outputs, target)`` so it plugs into MONAI's ``SupervisedTrainer``: ``outputs`` is
    the dict returned by ``WaveMambaAD`` in training mode (:class:`WaveMambaADOutput`); ``target`` is
    ignored (training images are all normal). Returns a scalar.
    """

    def forward(self, outputs: WaveMambaADOutput, target: Any = None) -> torch.Tensor:
        if not isinstance(outputs, dict) or "features" not in outputs or "reconstructions" not in outputs:
            raise TypeError(
                "WaveMambaADLoss expects the training-mode output dict of WaveMambaAD (keys 'features', "
                f"'reconstructions'); got {type(outputs).__name__}. Is the network in eval() mode?"
            )
        return sum(F.mse_loss(r, f) for f, r in zip(outputs["features"], outputs["reconstructions"]))
