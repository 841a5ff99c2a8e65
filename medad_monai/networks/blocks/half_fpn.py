"""Half-FPN bottleneck shared by SP-Mamba and Wave-MambaAD."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.blocks import Convolution
from monai.networks.nets.resnet import ResNetBlock, ResNetBottleneck
from torch import nn

__all__ = ["HALF_FPN_STYLES", "HalfFPNBottleneck"]

#: ``"mambaad"``: MambaAD's fusion (its ``MFF_OCE``), which SP-Mamba's and Wave-MambaAD's official code use;
#: ``"concat"``: this project's earlier variant (scales concatenated, ResNet basic blocks).
HALF_FPN_STYLES = ("mambaad", "concat")


class HalfFPNBottleneck(nn.Module):
    """Fuses the encoder's multi-scale features into the decoder's input.

    Only the top-down half of an FPN is kept: information flows from fine to coarse, and
    the fused map has half the deepest scale's resolution.

    ``style="mambaad"`` (default; MambaAD's multi-scale feature fusion, ``MFF_OCE`` in its
    code, which SP-Mamba and Wave-MambaAD reuse): the finest map is brought down one scale at
    a time by stride-2 3x3 conv-BN-ReLU steps (``down[i]``: ``C_i -> C_{i+1}``) and added to
    each deeper scale after a 1x1 conv-BN-ReLU (``lateral``); the sum at the deepest scale
    goes through a 1x1 conv-BN-ReLU (``mix``), then ``num_blocks`` (3) ResNet bottleneck blocks
    (expansion 4, the first with stride 2 and a 1x1 projection shortcut) give ``out_channels``.
    With the encoder channels (64, 128, 256) and 512 output channels that is 1,458,304
    parameters, MambaAD's count.

    ``style="concat"`` (this project's earlier variant, kept for its users): every shallower
    scale is brought down to the deepest one by stride-2 3x3 conv-BN-ReLU steps (doubling
    channels at each step up to the deepest scale's width), the aligned maps are
    concatenated, and ``num_blocks`` (1) ResNet basic blocks (the first with stride 2) fuse
    them into ``out_channels``.

    Args:
        in_channels: channels of the encoder features, shallow to deep, e.g. (64, 128, 256).
        out_channels: channels of the fused map (a multiple of 4 for ``"mambaad"``).
        num_blocks: residual blocks of the fusion stack; ``None``: 3 for ``"mambaad"``, 1 for ``"concat"``.
        style: ``"mambaad"`` or ``"concat"``, see above.

    Input: features ``[(B, in_channels[i], H_i, W_i)]`` with ``H_i = 2 * H_{i+1}``.
    Output: ``(B, out_channels, H_last / 2, W_last / 2)``.
    """

    def __init__(
        self,
        in_channels: Sequence[int] = (64, 128, 256),
        out_channels: int = 512,
        num_blocks: int | None = None,
        style: str = "mambaad",
    ) -> None:
        super().__init__()
        if style not in HALF_FPN_STYLES:
            raise ValueError(f"style must be one of {HALF_FPN_STYLES}, got {style!r}.")
        num_blocks = (3 if style == "mambaad" else 1) if num_blocks is None else num_blocks
        if len(in_channels) < 1 or num_blocks < 1:
            raise ValueError(f"need at least one input scale and one block, got {in_channels=}, {num_blocks=}.")
        self.in_channels = tuple(in_channels)
        self.out_channels = out_channels
        self.style = style
        if style == "mambaad":
            self._build_mambaad(num_blocks)
        else:
            self._build_concat(num_blocks)

    def _build_mambaad(self, num_blocks: int) -> None:
        channels, out = self.in_channels, self.out_channels
        if out % ResNetBottleneck.expansion:
            raise ValueError(f"out_channels must be a multiple of {ResNetBottleneck.expansion} for style 'mambaad', got {out}.")

        def conv_bn_relu(cin: int, cout: int, kernel: int, stride: int, bias: bool) -> Convolution:
            return Convolution(2, cin, cout, strides=stride, kernel_size=kernel, act="relu", norm="batch", bias=bias)

        self.down = nn.ModuleList(conv_bn_relu(c, c_next, 3, 2, False) for c, c_next in zip(channels[:-1], channels[1:]))
        self.lateral = nn.ModuleList(conv_bn_relu(c, c, 1, 1, True) for c in channels[1:])
        self.mix = conv_bn_relu(channels[-1], channels[-1], 1, 1, True)
        planes = out // ResNetBottleneck.expansion
        shortcut = nn.Sequential(nn.Conv2d(channels[-1], out, 1, stride=2, bias=False), nn.BatchNorm2d(out))
        blocks = [ResNetBottleneck(channels[-1], planes, spatial_dims=2, stride=2, downsample=shortcut)]
        blocks += [ResNetBottleneck(out, planes, spatial_dims=2) for _ in range(num_blocks - 1)]
        self.fuse = nn.Sequential(*blocks)
        for m in self.modules():  # MambaAD's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _build_concat(self, num_blocks: int) -> None:
        in_channels, out_channels = self.in_channels, self.out_channels
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

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        if len(features) != len(self.in_channels):
            raise ValueError(f"expected {len(self.in_channels)} feature maps, got {len(features)}.")
        if self.style == "concat":
            aligned = [align(f) for align, f in zip(self.align, features[:-1])] + [features[-1]]
            return self.fuse(torch.cat(aligned, dim=1))
        fused = features[0]
        for down, lateral, f in zip(self.down, self.lateral, features[1:]):
            fused = lateral(f) + down(fused)
        return self.fuse(self.mix(fused))
