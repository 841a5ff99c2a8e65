"""UMIAD-EGMF's training loss (eq. 12): CFlow's negative log-likelihood per scale, normalised per dimension."""

from __future__ import annotations

from typing import Any

import torch
from torch.nn.modules.loss import _Loss

from medad_monai.detectors.umiad_egmf.network import UMIADEGMFOutput

__all__ = ["UMIADEGMFLoss"]


class UMIADEGMFLoss(_Loss):
    """Eq. 12: ``L = 1/K sum_k (||u^k||^2 / 2 - log |det J^k|) / D_k``, averaged over the batch.

    ``u^k`` are the latents of scale ``k`` and ``log |det J^k|`` the log-determinant of ``z^k -> u^k``
    (:class:`~medad_monai.detectors.umiad_egmf.network.UMIADEGMFOutput`); ``D_k = C_k h_k w_k``. Dividing by
    ``D_k`` makes every scale's term a per-dimension negative log-likelihood (up to the constant
    ``log(2 pi) / 2``), so scales of very different sizes weigh alike and the value does not grow with the
    image size. The squared norms are sums of squares and the log-determinants sums of clamped log-scales:
    nothing is exponentiated, so the loss is finite whenever the latents are.

    Called as ``loss(output, target)`` like MONAI's ``SupervisedTrainer`` does; ``target`` is ignored
    (training images are all normal).

    Args:
        reduction: ``"mean"`` (default) or ``"sum"`` over the batch, or ``"none"`` for a ``(B,)`` tensor.
    """

    def __init__(self, reduction: str = "mean") -> None:
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}.")
        super().__init__(reduction=reduction)

    def forward(self, outputs: UMIADEGMFOutput, target: Any = None) -> torch.Tensor:
        if not isinstance(outputs, dict) or "latents" not in outputs or "log_jac_det" not in outputs:
            raise TypeError(
                "UMIADEGMFLoss expects the training-mode output dict of UMIADEGMF (keys 'latents', 'flow_outputs', "
                f"'log_jac_det'); got {type(outputs).__name__}. Is the network in eval() mode?"
            )
        latents, log_dets = outputs["latents"], outputs["log_jac_det"]
        if len(latents) == 0 or len(latents) != len(log_dets):
            raise ValueError(f"need one log-determinant per scale, got {len(latents)} latents and {len(log_dets)}.")
        per_scale = [
            (0.5 * u.flatten(1).square().sum(dim=1) - log_det) / u[0].numel() for u, log_det in zip(latents, log_dets)
        ]
        loss = torch.stack(per_scale, dim=1).mean(dim=1)
        if self.reduction == "mean":
            return loss.mean()
        if self.reduction == "sum":
            return loss.sum()
        return loss
