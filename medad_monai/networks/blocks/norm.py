"""Normalisation layers for channel-first feature maps."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ChannelLayerNorm"]


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channel axis of a ``(B, C, H, W)`` map."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
