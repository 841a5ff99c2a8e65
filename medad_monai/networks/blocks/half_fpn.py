"""Half-FPN bottleneck shared by SP-Mamba and Wave-MambaAD."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.blocks import Convolution
from monai.networks.nets.resnet import ResNetBlock
from torch import nn

__all__ = ["HalfFPNBottleneck"]


class HalfFPNBottleneck(nn.Module):
    """Fuses the encoder's multi-scale features into the decoder's input.

    Following MambaAD's Half-FPN: every shallower scale is brought down to the
    deepest encoder scale by stride-2 3x3 convolutions (conv-BN-ReLU, doubling
    channels at each step up to the deepest scale's width), the aligned maps are
    concatenated, and a stack of ResNet basic blocks (the first one with stride
    2) fuses them into ``out_channels`` at half the deepest resolution. Only the
    top-down half of an FPN is kept: information flows from fine to coarse.

    Args:
        in_channels: channels of the encoder features, shallow to deep, e.g. (64, 128, 256).
        out_channels: channels of the fused map.
        num_blocks: ResNet basic blocks in the fusion stack.

    Input: features ``[(B, in_channels[i], H_i, W_i)]`` with ``H_i = 2 * H_{i+1}``.
    Output: ``(B, out_channels, H_last / 2, W_last / 2)``.
    """

    def __init__(self, in_channels: Sequence[int] = (64, 128, 256), out_channels: int = 512, num_blocks: int = 1) -> None:
        super().__init__()
        if len(in_channels) < 1 or num_blocks < 1:
            raise ValueError(f"need at least one input scale and one block, got {in_channels=}, {num_blocks=}.")
        deepest = in_channels[-1]
        self.align = nn.ModuleList()
        for ch in in_channels[:-1]:
            steps = []
            for _ in range(len(in_channels) - 1 - len(self.align)):
                out_ch = min(ch * 2, deepest)
                steps.append(Convolution(2, ch, out_ch, strides=2, kernel_size=3, act="relu", norm="batch", bias=False))
                ch = out_ch
            self.align.append(nn.Sequential(*steps))
        fused = sum(min(c * 2 ** (len(in_channels) - 1 - i), deepest) for i, c in enumerate(in_channels))
        downsample = nn.Sequential(nn.Conv2d(fused, out_channels, 1, stride=2, bias=False), nn.BatchNorm2d(out_channels))
        blocks = [ResNetBlock(fused, out_channels, spatial_dims=2, stride=2, downsample=downsample)]
        blocks += [ResNetBlock(out_channels, out_channels, spatial_dims=2) for _ in range(num_blocks - 1)]
        self.fuse = nn.Sequential(*blocks)
        self.in_channels = tuple(in_channels)
        self.out_channels = out_channels

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        if len(features) != len(self.in_channels):
            raise ValueError(f"expected {len(self.in_channels)} feature maps, got {len(features)}.")
        aligned = [align(f) for align, f in zip(self.align, features[:-1])] + [features[-1]]
        return self.fuse(torch.cat(aligned, dim=1))
