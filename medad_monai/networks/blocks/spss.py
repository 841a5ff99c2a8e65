"""Spatial-Perception State Space (SPSS) block of SP-Mamba's decoder."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from medad_monai.networks.blocks.ss2d import SS2D

__all__ = ["ChannelLayerNorm", "SPSSBlock"]


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channel axis of a ``(B, C, H, W)`` map."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class SPSSBlock(nn.Module):
    """Two-branch decoder block: global selective scan plus local multi-kernel convolutions.

    ``y = x + fuse([SS2D(norm(x)), local(x)])`` where the Mamba branch scans the
    map along ``num_directions`` orders of kind ``scan`` (Circular-Hilbert in
    SP-Mamba) and the local branch is a 1x1 projection, parallel depthwise
    convolutions of sizes ``kernel_sizes`` (summed) and a 1x1 projection; the
    two branches are concatenated and fused by a 1x1 convolution.

    Args:
        channels: ``C``.
        scan, num_directions, d_state, expand, backend: passed to :class:`SS2D`.
        kernel_sizes: depthwise kernel sizes of the local branch.

    Input and output ``(B, C, H, W)``.
    """

    def __init__(
        self,
        channels: int,
        scan: str = "circular_hilbert",
        num_directions: int = 8,
        d_state: int = 16,
        expand: float = 1.0,
        kernel_sizes: Sequence[int] = (3, 5),
        backend: str | None = None,
    ) -> None:
        super().__init__()
        self.norm = ChannelLayerNorm(channels)
        self.mamba = SS2D(channels, scan, num_directions, d_state=d_state, expand=expand, backend=backend)
        self.local_in = nn.Sequential(nn.Conv2d(channels, channels, 1, bias=False), nn.BatchNorm2d(channels), nn.SiLU())
        self.local_kernels = nn.ModuleList(
            nn.Conv2d(channels, channels, k, padding=k // 2, groups=channels) for k in kernel_sizes
        )
        self.local_out = nn.Sequential(nn.BatchNorm2d(channels), nn.SiLU(), nn.Conv2d(channels, channels, 1))
        self.fuse = nn.Conv2d(2 * channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        global_branch = self.mamba(self.norm(x))
        local = self.local_in(x)
        local = self.local_out(sum(conv(local) for conv in self.local_kernels))
        return x + self.fuse(torch.cat([global_branch, local], dim=1))
