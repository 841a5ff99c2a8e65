"""Blocks only SP-Mamba uses: window-sliding medical prototypes (sec. 3.2, eq. 1) and the SPSS decoder block (sec. 3.3)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from medad_monai.networks.blocks.norm import ChannelLayerNorm
from medad_monai.networks.blocks.ss2d import SS2D

__all__ = ["MedicalPrototypes", "SPSSBlock", "window_prototype_distance"]


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
    """Learnable medical prototypes over the bottleneck grid and their distance map.

    The module holds ``K`` prototype maps of shape ``(C, H, W)``. At every grid
    position it picks the prototype patch that best matches the features inside
    the sliding window (eq. 1) and forms the "final prototype" from those patches.
    The paper feeds "the aggregated features" to the decoder without defining the
    aggregation; here the features and the final prototype are concatenated and
    fused by a 1x1 convolution, so anomalous positions are pulled toward normal
    patterns before reconstruction.

    Args:
        channels: feature channels ``C``.
        grid_size: bottleneck grid ``(H, W)`` (8 x 8 for 256 x 256 inputs).
        num_prototypes: ``K`` (10 in the paper).
        window: sliding-window side ``p`` (3 in the paper).

    Input ``(B, C, H, W)``; output ``(aggregated (B, C, H, W), distance (B, 1, H, W))``.
    """

    def __init__(self, channels: int, grid_size: tuple[int, int], num_prototypes: int = 10, window: int = 3) -> None:
        super().__init__()
        if num_prototypes < 1:
            raise ValueError(f"num_prototypes must be >= 1, got {num_prototypes}.")
        self.grid_size = tuple(int(s) for s in grid_size)
        self.window = window
        self.prototypes = nn.Parameter(torch.randn(num_prototypes, channels, *self.grid_size) * 0.02)
        self.aggregate = nn.Conv2d(2 * channels, channels, kernel_size=1)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if tuple(features.shape[2:]) != self.grid_size:
            raise ValueError(
                f"bottleneck grid {tuple(features.shape[2:])} does not match the prototype grid {self.grid_size}: "
                "the network's image_size must equal the size of the images it is given."
            )
        distance, nearest = window_prototype_distance(features, self.prototypes, self.window)
        # gather the winning prototype's patch at every position: (B, C, H, W).
        rows = torch.arange(self.grid_size[0], device=features.device)[:, None]
        cols = torch.arange(self.grid_size[1], device=features.device)[None, :]
        final = self.prototypes.permute(0, 2, 3, 1)[nearest, rows, cols].permute(0, 3, 1, 2)
        return self.aggregate(torch.cat([features, final], dim=1)), distance


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
