"""Selective state-space layers shared by the Mamba detectors: a stack of S6 scans (``SelectiveSSM``) and
the 2D selective-scan mixer built on it (SS2D, VMamba / MambaAD style) with pluggable scan orders."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from medad_monai.ops.scan_orders import scan_directions
from medad_monai.ops.selective_scan import selective_scan_fn

__all__ = ["SS2D", "SelectiveSSM"]


class SelectiveSSM(nn.Module):
    """``K`` independent selective state-space layers (Mamba's S6), one per sequence of a stack.

    For each sequence ``k`` the input-dependent step ``delta``, ``B`` and ``C`` come from its own
    projections (``x_proj``, then the low-rank ``dt_proj``) and it has its own ``A`` and skip ``D``
    (S4D-real initialisation, step sizes drawn log-uniformly in ``[dt_min, dt_max]``, as Mamba). All
    ``K`` scans run in one :func:`medad_monai.ops.selective_scan_fn` call.

    Args:
        num_sequences: ``K``.
        d_inner: features per sequence position ``D``.
        d_state: state size ``N``.
        dt_rank: rank of the step projection.
        dt_min, dt_max: range of the initial step sizes.
        backend: selective-scan backend (``None``: automatic).

    Input and output ``(B, K, D, L)``.
    """

    def __init__(
        self,
        num_sequences: int,
        d_inner: int,
        d_state: int = 16,
        dt_rank: int = 1,
        dt_min: float = 1e-3,
        dt_max: float = 0.1,
        backend: str | None = None,
    ) -> None:
        super().__init__()
        k, self.d_state, self.dt_rank, self.backend = num_sequences, d_state, dt_rank, backend
        self.x_proj_weight = nn.Parameter(torch.randn(k, dt_rank + 2 * d_state, d_inner) / math.sqrt(d_inner))
        dt_init_std = dt_rank**-0.5
        self.dt_proj_weight = nn.Parameter(torch.empty(k, d_inner, dt_rank).uniform_(-dt_init_std, dt_init_std))
        dt = torch.exp(torch.rand(k, d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        self.dt_proj_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
        self.a_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32).repeat(k * d_inner, 1)))
        self.d_skip = nn.Parameter(torch.ones(k * d_inner))

    def forward(self, seqs: torch.Tensor) -> torch.Tensor:
        b, k, d, length = seqs.shape
        proj = torch.einsum("bkdl,kcd->bkcl", seqs, self.x_proj_weight)
        dts, b_ssm, c_ssm = proj.split([self.dt_rank, self.d_state, self.d_state], dim=2)
        dts = torch.einsum("bkrl,kdr->bkdl", dts, self.dt_proj_weight)
        y = selective_scan_fn(
            seqs.reshape(b, k * d, length),
            dts.reshape(b, k * d, length),
            -torch.exp(self.a_log.float()),
            b_ssm.contiguous(),
            c_ssm.contiguous(),
            D=self.d_skip.float(),
            delta_bias=self.dt_proj_bias.reshape(-1).float(),
            delta_softplus=True,
            backend=self.backend,
        )
        return y.view(b, k, d, length)


class SS2D(nn.Module):
    """Selective-scan mixing of a 2D feature map along several scan directions.

    The map is projected to ``d_inner = expand * channels`` features and a gate,
    mixed locally by a depthwise convolution, flattened into ``K`` sequences (one
    per scan direction, see :func:`medad_monai.ops.scan_orders.scan_directions`),
    each sequence is run through its own input-dependent selective scan
    (:class:`SelectiveSSM`), the outputs are put back on the grid and summed,
    normalised, gated and projected back to ``channels``.

    Args:
        channels: input and output channels ``C``.
        scan: scan-order kind, e.g. ``"circular_hilbert"`` (SP-Mamba), ``"hilbert"`` or ``"raster"``.
        num_directions: number of scan directions ``K`` (valid values depend on ``scan``).
        d_state: SSM state size ``N``.
        expand: ``d_inner / channels``.
        dt_rank: rank of the step-size projection; ``None`` gives ``ceil(C / 16)``.
        d_conv: depthwise convolution kernel size.
        dt_min, dt_max: range of the initial step sizes (Mamba's initialisation).
        backend: selective-scan backend (``None``: automatic, see :mod:`medad_monai.ops.selective_scan`).

    Input and output ``(B, C, H, W)``.
    """

    def __init__(
        self,
        channels: int,
        scan: str = "circular_hilbert",
        num_directions: int = 8,
        d_state: int = 16,
        expand: float = 2.0,
        dt_rank: int | None = None,
        d_conv: int = 3,
        dt_min: float = 1e-3,
        dt_max: float = 0.1,
        backend: str | None = None,
    ) -> None:
        super().__init__()
        d_inner = int(expand * channels)
        self.scan, self.num_directions = scan, num_directions
        self.in_proj = nn.Linear(channels, 2 * d_inner, bias=False)
        self.conv = nn.Conv2d(d_inner, d_inner, d_conv, padding=d_conv // 2, groups=d_inner)
        self.ssm = SelectiveSSM(
            num_directions, d_inner, d_state, dt_rank or math.ceil(channels / 16), dt_min, dt_max, backend
        )
        self.out_norm = nn.LayerNorm(d_inner)
        self.out_proj = nn.Linear(d_inner, channels, bias=False)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # checkpoints written before SS2D delegated its scans (sp_mamba bundle <= 0.4.0) hold the
        # SSM parameters directly under the SS2D's prefix.
        for name in ("x_proj_weight", "dt_proj_weight", "dt_proj_bias", "a_log", "d_skip"):
            if prefix + name in state_dict and prefix + "ssm." + name not in state_dict:
                state_dict[prefix + "ssm." + name] = state_dict.pop(prefix + name)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        x_in, z = self.in_proj(x.permute(0, 2, 3, 1)).chunk(2, dim=-1)
        x_in = F.silu(self.conv(x_in.permute(0, 3, 1, 2)))  # (B, d, H, W)
        d, length = x_in.shape[1], h * w
        order = scan_directions(h, w, self.scan, self.num_directions).to(x.device)  # (K, L)
        y = self.ssm(x_in.flatten(2)[:, :, order].transpose(1, 2))  # (B, K, d, L)
        # back onto the grid: scatter each direction's outputs to the positions it visited, summed over K.
        grid = y.new_zeros(b, d, length).index_add_(2, order.reshape(-1), y.permute(0, 2, 1, 3).reshape(b, d, -1))
        grid = self.out_norm(grid.transpose(1, 2)).view(b, h, w, d) * F.silu(z)
        return self.out_proj(grid).permute(0, 3, 1, 2)
