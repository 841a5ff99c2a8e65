"""Blocks only SP-Mamba uses: window-sliding medical prototypes (sec. 3.2, eq. 1), the SPSS decoder
block (sec. 3.1, 3.3) and the decoder's patch-expanding upsampling."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.layers import DropPath
from torch import nn

from medad_monai.networks.blocks.norm import ChannelLayerNorm
from medad_monai.networks.blocks.ss2d import SS2D

__all__ = ["MambaLayer", "MedicalPrototypes", "PatchExpand", "SPSSBlock", "window_prototype_distance"]


def window_prototype_distance(
    features: torch.Tensor, prototypes: torch.Tensor, window: int = 3
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 1 of SP-Mamba, vectorised over batch, prototypes and grid positions.

    For every prototype ``k`` and grid position ``(i, j)`` the prototype patch
    ``m_k*`` (a ``C``-vector) is compared by cosine similarity with every feature
    patch inside the ``window x window`` neighbourhood centred on ``(i, j)``;
    windows are clipped at the borders, so a corner sees ``((p+1)/2)**2`` patches,
    an edge ``p (p+1) / 2`` and the interior ``p**2``. ``D_k = 1 - max`` over the
    window and ``D = min_k D_k``.

    Args:
        features: ``(B, C, H, W)``.
        prototypes: ``(K, C, H, W)``, one prototype map per ``k`` over the same grid.
        window: odd side length ``p`` of the sliding window.

    Returns:
        ``distance`` ``(B, 1, H, W)`` and ``nearest`` ``(B, H, W)``, the index of the
        prototype reaching the minimum at each position.
    """
    if window < 1 or window % 2 == 0:
        raise ValueError(f"window must be a positive odd integer, got {window}.")
    if features.ndim != 4 or prototypes.ndim != 4 or features.shape[1:] != prototypes.shape[1:]:
        raise ValueError(
            f"features (B, C, H, W) and prototypes (K, C, H, W) must share C, H, W; "
            f"got features {tuple(features.shape)} and prototypes {tuple(prototypes.shape)}."
        )
    b, c, h, w = features.shape
    pad = window // 2
    unfolded = F.unfold(F.normalize(features, dim=1), window, padding=pad).view(b, c, window * window, h, w)
    # window cells that fall outside the grid are padding: they must never win the max.
    inside = F.unfold(features.new_ones(1, 1, h, w), window, padding=pad).view(1, 1, window * window, h, w) > 0
    similarity = torch.einsum("kcij,bcrij->bkrij", F.normalize(prototypes, dim=1), unfolded)
    similarity = similarity.masked_fill(~inside, float("-inf"))
    per_prototype = 1.0 - similarity.amax(dim=2)
    distance, nearest = per_prototype.min(dim=1, keepdim=True)
    return distance, nearest.squeeze(1)


class MedicalPrototypes(nn.Module):
    """Learnable medical prototypes over the bottleneck grid and the feature-to-prototype distance (eq. 1).

    The module holds ``K`` prototype maps of shape ``(C, H, W)``, one ``C``-vector per grid
    position, initialised from a standard normal distribution (as the official code).
    At every grid position the distance to the best-matching prototype patch inside the
    sliding window is the distance map ``D`` of eq. 1, which enters the loss (eq. 2) and
    the anomaly map (eq. 7). The features themselves pass to the decoder unchanged, as in
    the official code (the paper's "aggregated features" are the fused bottleneck map).

    Args:
        channels: feature channels ``C``.
        grid_size: bottleneck grid ``(H, W)`` (8 x 8 for 256 x 256 inputs).
        num_prototypes: ``K`` (10 in the paper).
        window: sliding-window side ``p`` (3 in the paper).

    Input ``(B, C, H, W)``; output the distance ``(B, 1, H, W)``.
    """

    def __init__(self, channels: int, grid_size: tuple[int, int], num_prototypes: int = 10, window: int = 3) -> None:
        super().__init__()
        if num_prototypes < 1:
            raise ValueError(f"num_prototypes must be >= 1, got {num_prototypes}.")
        self.grid_size = tuple(int(s) for s in grid_size)
        self.window = window
        self.prototypes = nn.Parameter(torch.randn(num_prototypes, channels, *self.grid_size))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if tuple(features.shape[2:]) != self.grid_size:
            raise ValueError(
                f"bottleneck grid {tuple(features.shape[2:])} does not match the prototype grid {self.grid_size}: "
                "the network's image_size must equal the size of the images it is given."
            )
        return window_prototype_distance(features, self.prototypes, self.window)[0]


class MambaLayer(nn.Module):
    """``x + drop_path(SS2D(LayerNorm(x)))``: one Mamba sub-block of an SPSS block (VMamba's VSS block).

    Args:
        channels: ``C``.
        drop_path: stochastic-depth rate of the residual branch (training only).
        ss2d_args: keyword arguments of :class:`SS2D` (scan, num_directions, d_state, expand, backend).

    Input and output ``(B, C, H, W)``.
    """

    def __init__(self, channels: int, drop_path: float = 0.0, **ss2d_args) -> None:
        super().__init__()
        self.norm = ChannelLayerNorm(channels)
        self.mixer = SS2D(channels, **ss2d_args)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop_path(self.mixer(self.norm(x)))


def _conv_in_silu(channels: int, kernel_size: int, depthwise: bool) -> nn.Sequential:
    """Conv (depthwise without bias, or 1x1 with bias) -> InstanceNorm (no affine) -> SiLU."""
    groups = channels if depthwise else 1
    conv = nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2, groups=groups, bias=not depthwise)
    return nn.Sequential(conv, nn.InstanceNorm2d(channels), nn.SiLU())


class SPSSBlock(nn.Module):
    """Spatial-Perception State Space block: a Mamba branch and a multi-kernel convolution branch.

    ``y = x + fuse([mamba(x), local_k1(x), local_k2(x), ...])``. The Mamba branch is
    ``depth`` :class:`MambaLayer` s in sequence (selective scans along ``num_directions``
    Circular-Hilbert orders); each local branch is 1x1 conv -> ``k x k`` depthwise conv ->
    1x1 conv, each followed by instance normalisation and SiLU, for ``k`` in
    ``kernel_sizes`` (5 and 7, as the official code); ``fuse`` is a 1x1 convolution of the
    concatenated branches. The official code groups a decoder stage's Mamba layers into
    blocks of 3 (or 2) that share one convolution branch; :class:`SPMamba` does the same.

    Args:
        channels: ``C``.
        depth: Mamba layers in the block.
        kernel_sizes: depthwise kernel sizes of the local branches.
        drop_path: stochastic-depth rate of every Mamba layer of the block.
        ss2d_args: keyword arguments of :class:`SS2D` (scan, num_directions, d_state, expand, backend).

    Input and output ``(B, C, H, W)``.
    """

    def __init__(
        self, channels: int, depth: int = 3, kernel_sizes: Sequence[int] = (5, 7), drop_path: float = 0.0, **ss2d_args
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}.")
        self.mamba = nn.Sequential(*(MambaLayer(channels, drop_path, **ss2d_args) for _ in range(depth)))
        self.local = nn.ModuleList(
            nn.Sequential(_conv_in_silu(channels, 1, False), _conv_in_silu(channels, k, True), _conv_in_silu(channels, 1, False))
            for k in kernel_sizes
        )
        self.fuse = nn.Conv2d((1 + len(self.local)) * channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = [self.mamba(x)] + [local(x) for local in self.local]
        return x + self.fuse(torch.cat(branches, dim=1))


class PatchExpand(nn.Module):
    """Patch-expanding upsampling: ``(B, C, H, W) -> (B, C / 2, 2H, 2W)`` (VMamba-UNet / MambaAD decoders).

    A bias-free linear map ``C -> 2C`` at every position, whose output is read as a 2 x 2
    patch of ``C / 2``-channel pixels (row of the patch slowest, channel fastest), followed
    by a LayerNorm over the ``C / 2`` channels.

    Args:
        channels: input channels ``C`` (even).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        if channels % 2:
            raise ValueError(f"channels must be even, got {channels}.")
        self.expand = nn.Linear(channels, 2 * channels, bias=False)
        self.norm = nn.LayerNorm(channels // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        y = self.expand(x.permute(0, 2, 3, 1)).view(b, h, w, 2, 2, c // 2)
        y = y.permute(0, 1, 3, 2, 4, 5).reshape(b, 2 * h, 2 * w, c // 2)
        return self.norm(y).permute(0, 3, 1, 2)
