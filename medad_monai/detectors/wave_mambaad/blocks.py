"""Blocks only Wave-MambaAD uses (sec. 3.3-3.4): WDSS (eq. 4) with HFSS (eq. 5) and LFSS / Channel Mamba
(eq. 6-7), DSE (eq. 8) and the Wavelet-Mamba module that chains WDSS and DSE.

Shapes: the high bands travel as one tensor ``(B, 3, C, h, w)`` in the order ``(LH, HL, HH)`` of
:func:`medad_monai.ops.haar_dwt2d` (horizontal, vertical, diagonal detail); every other map is
``(B, C, H, W)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.layers import DropPath
from torch import nn

from medad_monai.networks.blocks.norm import ChannelLayerNorm
from medad_monai.networks.blocks.ss2d import SS2D, SelectiveSSM
from medad_monai.ops.scan_orders import SCAN_NUM_DIRECTIONS, inverse_scan_directions, scan_directions
from medad_monai.ops.wavelet import haar_dwt2d, haar_iwt2d

__all__ = [
    "HFSS_SCANS",
    "BiChannelSSM",
    "ChannelMLP",
    "ChannelMamba",
    "DSE",
    "HFSS",
    "LFSS",
    "WDSS",
    "WaveletMambaModule",
    "channel_shuffle",
]

#: the paper's directional scans for the (LH, HL, HH) bands: each band is read along its own edges.
HFSS_SCANS = ("horizontal", "vertical", "diagonal")


class HFSS(nn.Module):
    """High-frequency state space model (eq. 5) with the directional selective scan (DSS).

    ``F1 = LN(DSS(SiLU(DWC(Linear(F))))), F2 = SiLU(Linear(F)), out = Linear(F1 * F2)``: VSSM's
    block, with its projections, depthwise convolution and norm shared by the three bands. In the
    DSS each band is serialised by its own scan kind (``scans[i]`` for band ``i``: horizontal for
    LH, vertical for HL, diagonal for HH), ``num_directions`` sequences per band (the scan and its
    reverse for 2); every (band, direction) sequence has its own selective-scan parameters, as
    VSSM gives every scan direction its own. Each output is put back in image order with the
    inverse permutation and a band's directions are summed.

    Args:
        channels: ``C``.
        scans: three scan kinds of :mod:`medad_monai.ops.scan_orders`, for LH, HL and HH.
        num_directions: sequences per band, a valid count for every kind in ``scans``.
        d_state, expand, d_conv: state size, ``d_inner / C`` (2, as VSSM) and depthwise kernel.
        dt_rank: step-projection rank, ``None`` gives ``ceil(C / 16)``.
        backend: selective-scan backend (``None``: automatic).

    Input and output ``(B, 3, C, h, w)``.
    """

    def __init__(
        self,
        channels: int,
        scans: Sequence[str] = HFSS_SCANS,
        num_directions: int = 2,
        d_state: int = 16,
        expand: float = 2.0,
        d_conv: int = 3,
        dt_rank: int | None = None,
        backend: str | None = None,
    ) -> None:
        super().__init__()
        self.scans = tuple(scans)
        if len(self.scans) != 3:
            raise ValueError(f"scans must name one scan kind for each of the LH, HL, HH bands, got {scans!r}.")
        for kind in self.scans:
            if num_directions not in SCAN_NUM_DIRECTIONS.get(kind, ()):
                raise ValueError(
                    f"scans: kind {kind!r} does not offer {num_directions} directions; valid kinds and counts: "
                    f"{SCAN_NUM_DIRECTIONS}."
                )
        self.num_directions = num_directions
        d_inner = int(expand * channels)
        self.in_proj = nn.Linear(channels, 2 * d_inner, bias=False)
        self.conv = nn.Conv2d(d_inner, d_inner, d_conv, padding=d_conv // 2, groups=d_inner)
        self.ssm = SelectiveSSM(
            3 * num_directions, d_inner, d_state, dt_rank or math.ceil(channels / 16), backend=backend
        )
        self.out_norm = nn.LayerNorm(d_inner)
        self.out_proj = nn.Linear(d_inner, channels, bias=False)

    def orders(self, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Scan permutations and their inverses, each ``(3, K, h * w)``."""
        perms = torch.stack([scan_directions(height, width, kind, self.num_directions) for kind in self.scans])
        inverse = torch.stack([inverse_scan_directions(height, width, kind, self.num_directions) for kind in self.scans])
        return perms, inverse

    def forward(self, bands: torch.Tensor) -> torch.Tensor:
        if bands.ndim != 5 or bands.shape[1] != 3:
            raise ValueError(f"HFSS expects the high bands stacked as (B, 3, C, h, w), got {tuple(bands.shape)}.")
        b, _, _, h, w = bands.shape
        k, length = self.num_directions, h * w
        x, z = self.in_proj(bands.permute(0, 1, 3, 4, 2)).chunk(2, dim=-1)  # (B, 3, h, w, d) each
        d = x.shape[-1]
        x = F.silu(self.conv(x.reshape(3 * b, h, w, d).permute(0, 3, 1, 2))).reshape(b, 3, d, length)
        perms, inverse = (t.to(bands.device) for t in self.orders(h, w))
        seqs = torch.stack([x[:, i][:, :, perms[i]] for i in range(3)], dim=1)  # (B, 3, d, K, L)
        y = self.ssm(seqs.transpose(2, 3).reshape(b, 3 * k, d, length)).view(b, 3, k, d, length)
        # back to image order: position p of direction k sits at inverse[band, k, p] of its sequence.
        y = y.gather(-1, inverse[None, :, :, None, :].expand_as(y)).sum(dim=2)  # (B, 3, d, L)
        y = self.out_norm(y.transpose(-1, -2)).view(b, 3, h, w, d) * F.silu(z)
        return self.out_proj(y).permute(0, 1, 4, 2, 3)


class BiChannelSSM(nn.Module):
    """Bidirectional channel SSM (``CSSM_Bi`` of eq. 7): a Mamba block whose sequence runs over channels.

    The tokens are the ``T`` channels of a group, each described by a pooled spatial profile of
    ``S`` values. ``x, z = Linear(P)``; ``x`` is mixed along the channel sequence by a depthwise
    convolution and SiLU, scanned forward and backward (each direction with its own selective-scan
    parameters, the backward scan run on the reversed sequence and flipped back), the two summed,
    gated by ``SiLU(z)`` and projected back to ``S`` values per channel: Vision Mamba's bidirectional
    block. There is no output norm, as in Mamba: a LayerNorm over ``d_inner`` features would map a
    profile of length 1 (a 1 x 1 low band) to a constant.

    Args:
        features: profile length ``S``.
        d_state, expand, d_conv: state size, ``d_inner / S`` and convolution kernel (odd).
        dt_rank: step-projection rank, ``None`` gives ``ceil(S / 16)``.
        backend: selective-scan backend (``None``: automatic).

    Input and output ``(B, T, S)``.
    """

    def __init__(
        self,
        features: int,
        d_state: int = 16,
        expand: float = 1.0,
        d_conv: int = 3,
        dt_rank: int | None = None,
        backend: str | None = None,
    ) -> None:
        super().__init__()
        if d_conv < 1 or d_conv % 2 == 0:
            raise ValueError(f"d_conv must be a positive odd kernel size, got {d_conv}.")
        d_inner = max(1, int(expand * features))
        self.features = features
        self.in_proj = nn.Linear(features, 2 * d_inner, bias=False)
        self.conv = nn.Conv1d(d_inner, d_inner, d_conv, padding=d_conv // 2, groups=d_inner)
        self.ssm = SelectiveSSM(2, d_inner, d_state, dt_rank or math.ceil(features / 16), backend=backend)
        self.out_proj = nn.Linear(d_inner, features, bias=False)

    def forward(self, profiles: torch.Tensor) -> torch.Tensor:
        if profiles.ndim != 3 or profiles.shape[-1] != self.features:
            raise ValueError(
                f"BiChannelSSM expects profiles (B, T, {self.features}), got {tuple(profiles.shape)}: the map size "
                "must match the size the network was built for."
            )
        x, z = self.in_proj(profiles).chunk(2, dim=-1)  # (B, T, d) each
        x = F.silu(self.conv(x.transpose(1, 2)))  # (B, d, T)
        y = self.ssm(torch.stack([x, x.flip(-1)], dim=1))  # (B, 2, d, T)
        y = y[:, 0] + y[:, 1].flip(-1)
        return self.out_proj(y.transpose(1, 2) * F.silu(z))


class ChannelMamba(nn.Module):
    """Channel Mamba (eq. 7): axis pooling, then a bidirectional SSM across channels, twice.

    ``F' = CSSM_Bi(GAP_H(X)) * X`` and ``out = CSSM_Bi(GAP_W(F')) * X``. ``GAP_H`` averages over the
    width and keeps the profile along the height, ``(B, C, H)``; the first SSM turns it into a
    per-(channel, row) factor broadcast over the width. ``GAP_W`` keeps the profile along the
    width, ``(B, C, W)``, whose factor is broadcast over the height and multiplies the input ``X``
    (not ``F'``), as eq. 7 writes it.

    Args:
        height, width: the map size ``(H, W)`` (the profile lengths).
        d_state, expand: of both :class:`BiChannelSSM`.
        backend: selective-scan backend (``None``: automatic).

    Input and output ``(B, C, H, W)``.
    """

    def __init__(
        self, height: int, width: int, d_state: int = 16, expand: float = 1.0, backend: str | None = None
    ) -> None:
        super().__init__()
        self.ssm_h = BiChannelSSM(height, d_state, expand, backend=backend)
        self.ssm_w = BiChannelSSM(width, d_state, expand, backend=backend)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gated = self.ssm_h(x.mean(dim=3)).unsqueeze(3) * x
        return self.ssm_w(gated.mean(dim=2)).unsqueeze(2) * x


class LFSS(nn.Module):
    """Low-frequency state space model (eq. 6).

    ``out = Conv1x1([M(F^1), ..., M(F^n)]) + F`` with ``F^1..F^n = Split(DWConv(F))``: a 3x3 depthwise
    convolution, ``groups`` equal channel groups, one mixer ``M`` shared by all groups (they run as one
    batch), concatenation, a 1x1 convolution and a residual. ``M`` is :class:`ChannelMamba`
    (``scan="channel"``, the paper) or, for the "LFSS (spatial-wise)" ablation, an
    :class:`~medad_monai.networks.blocks.SS2D` that scans the group's positions in VMamba's four
    raster directions (``scan="spatial"``).

    Args:
        channels: ``C``, divisible by ``groups``.
        size: the low band's ``(h, w)``.
        groups: number of channel groups ``n``.
        d_state: SSM state size.
        scan: ``"channel"`` or ``"spatial"``.
        channel_expand: ``d_inner / S`` of the channel SSMs.
        spatial_expand: ``d_inner / (C / n)`` of the spatial SS2D.
        backend: selective-scan backend (``None``: automatic).

    Input and output ``(B, C, h, w)``.
    """

    def __init__(
        self,
        channels: int,
        size: Sequence[int],
        groups: int,
        d_state: int = 16,
        scan: str = "channel",
        channel_expand: float = 1.0,
        spatial_expand: float = 2.0,
        backend: str | None = None,
    ) -> None:
        super().__init__()
        if groups < 1 or channels % groups:
            raise ValueError(f"groups must divide channels, got groups={groups} for {channels} channels.")
        self.groups = groups
        self.dwconv = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
        if scan == "channel":
            self.mamba: nn.Module = ChannelMamba(size[0], size[1], d_state, channel_expand, backend)
        elif scan == "spatial":
            self.mamba = SS2D(channels // groups, "raster", 4, d_state=d_state, expand=spatial_expand, backend=backend)
        else:
            raise ValueError(f"scan must be 'channel' or 'spatial', got {scan!r}.")
        self.proj = nn.Conv2d(channels, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        groups = self.dwconv(x).reshape(b * self.groups, c // self.groups, h, w)
        return self.proj(self.mamba(groups).reshape(b, c, h, w)) + x


class WDSS(nn.Module):
    """Wavelet-based dual state space block (eq. 4).

    ``LL, (LH, HL, HH) = DWT(LN(F))``; the high bands go through :class:`HFSS`, the low band
    through :class:`LFSS`; ``F_wdss = IWT(...) + F``. With a branch switched off its bands pass
    through unchanged, so with both off the block is ``LN(F) + F`` (the DWT / IWT pair is exact).

    Args:
        channels: ``C``.
        size: the input map's ``(H, W)``, both even.
        lfss_groups: channel groups of the LFSS.
        d_state: SSM state size of both branches.
        hfss_scans, hfss_directions, hfss_expand: see :class:`HFSS`.
        lfss_scan, channel_expand: see :class:`LFSS` (``spatial_expand`` is ``hfss_expand``).
        use_hfss, use_lfss: the "w/o HFSS" / "w/o LFSS" ablations when False.
        drop_path: stochastic-depth rate of the wavelet branch (before the residual).
        backend: selective-scan backend (``None``: automatic).

    Input and output ``(B, C, H, W)``.
    """

    def __init__(
        self,
        channels: int,
        size: Sequence[int],
        lfss_groups: int,
        d_state: int = 16,
        hfss_scans: Sequence[str] = HFSS_SCANS,
        hfss_directions: int = 2,
        hfss_expand: float = 2.0,
        lfss_scan: str = "channel",
        channel_expand: float = 1.0,
        use_hfss: bool = True,
        use_lfss: bool = True,
        drop_path: float = 0.0,
        backend: str | None = None,
    ) -> None:
        super().__init__()
        if len(size) != 2 or size[0] % 2 or size[1] % 2:
            raise ValueError(f"WDSS needs an even map size for the Haar DWT, got {tuple(size)}.")
        self.norm = ChannelLayerNorm(channels)
        self.hfss = (
            HFSS(channels, hfss_scans, hfss_directions, d_state, hfss_expand, backend=backend) if use_hfss else None
        )
        low_size = (size[0] // 2, size[1] // 2)
        self.lfss = (
            LFSS(channels, low_size, lfss_groups, d_state, lfss_scan, channel_expand, hfss_expand, backend)
            if use_lfss
            else None
        )
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ll, lh, hl, hh = haar_dwt2d(self.norm(x))
        if self.hfss is not None:
            lh, hl, hh = self.hfss(torch.stack([lh, hl, hh], dim=1)).unbind(1)
        if self.lfss is not None:
            ll = self.lfss(ll)
        return self.drop_path(haar_iwt2d(ll, lh, hl, hh)) + x


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet's channel shuffle of ``(B, C, H, W)``: channel ``g * (C / groups) + i`` moves to ``i * groups + g``."""
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


class DSE(nn.Module):
    """Dynamic spatial enhancement block (eq. 8).

    ``F_d = DWConv(CS(Conv1x1(LN(F))))``, ``F1, F2 = Split(F_d)``, then the crossed GELU gates read
    in eq. 8's order, ``F1 <- GELU(F2) * F1`` and ``F2 <- GELU(F1) * F2`` (the second gate uses the
    updated ``F1``), and ``out = Conv1x1(F1 + F2) + F``. ``CS`` is a channel shuffle with two groups,
    the 3x3 depthwise convolution acts on all ``2 * hidden`` channels, ``hidden = int(expansion * C)``.

    Args:
        channels: ``C``.
        expansion: hidden width ratio (2.66, from the official code; the paper gives none).

    Input and output ``(B, C, H, W)``.
    """

    def __init__(self, channels: int, expansion: float = 2.66) -> None:
        super().__init__()
        hidden = int(channels * expansion)
        if hidden < 1:
            raise ValueError(f"expansion {expansion} leaves no hidden channels for {channels} channels.")
        self.norm = ChannelLayerNorm(channels)
        self.project_in = nn.Conv2d(channels, 2 * hidden, 1, bias=False)
        self.dwconv = nn.Conv2d(2 * hidden, 2 * hidden, 3, padding=1, groups=2 * hidden, bias=False)
        self.project_out = nn.Conv2d(hidden, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f1, f2 = self.dwconv(channel_shuffle(self.project_in(self.norm(x)), 2)).chunk(2, dim=1)
        f1 = F.gelu(f2) * f1
        f2 = F.gelu(f1) * f2
        return self.project_out(f1 + f2) + x


class ChannelMLP(nn.Module):
    """The "DSE -> MLP" ablation: ``out = Conv1x1(GELU(Conv1x1(LN(F)))) + F`` with ``ratio * C`` hidden channels.

    Input and output ``(B, C, H, W)``.
    """

    def __init__(self, channels: int, ratio: float = 4.0) -> None:
        super().__init__()
        hidden = int(channels * ratio)
        self.norm = ChannelLayerNorm(channels)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(self.norm(x)))) + x


class WaveletMambaModule(nn.Module):
    """A WDSS block followed by a DSE block (or, for the ablation, an MLP).

    Args:
        channels, size: ``C`` and the map's ``(H, W)``.
        mixer: ``"dse"`` (paper) or ``"mlp"``.
        dse_expansion: see :class:`DSE`.
        **wdss_args: the remaining :class:`WDSS` arguments.

    Input and output ``(B, C, H, W)``.
    """

    def __init__(self, channels: int, size: Sequence[int], mixer: str = "dse", dse_expansion: float = 2.66, **wdss_args) -> None:
        super().__init__()
        if mixer not in ("dse", "mlp"):
            raise ValueError(f"mixer must be 'dse' or 'mlp', got {mixer!r}.")
        self.wdss = WDSS(channels, size, **wdss_args)
        self.mixer = DSE(channels, dse_expansion) if mixer == "dse" else ChannelMLP(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mixer(self.wdss(x))
