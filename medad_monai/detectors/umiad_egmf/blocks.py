"""Blocks only UMIAD-EGMF uses: edge guidance (EGM, eq. 1-5), its Prewitt alternative, channel attention (CAB),
edge aggregation (EAM, eq. 6-8, and the ADD / MUL alternatives of Table 8), pyramid pooling, the positional-encoding
conditions ``c^k``, the per-scale conditional flow ``g^k`` (eight FrEIA affine coupling blocks) and the multi-scale
flow fusion (MFF, eq. 9).

Shapes use the paper's 256 x 256 example (Table 2): encoder features ``F1 (64, 64, 64)``, ``F2 (128, 32, 32)``,
``F3 (256, 16, 16)``, ``F4 (512, 8, 8)``; after pyramid pooling ``z^1 (64, 32, 32)`` ... ``z^4 (512, 4, 4)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import FrEIA.framework as Ff
import FrEIA.modules as Fm
import torch
import torch.nn.functional as F
from torch import nn

from medad_monai.networks.blocks.norm import ChannelLayerNorm

__all__ = [
    "ChannelAttention",
    "EdgeAggregation",
    "EdgeGuidance",
    "GatedConv1x1",
    "MultiScaleFlowFusion",
    "PrewittEdges",
    "PyramidPooling",
    "conditional_flow",
    "gap_gated",
    "positional_encoding_2d",
    "prewitt_magnitude",
]


def positional_encoding_2d(
    channels: int, height: int, width: int, device: torch.device | None = None, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """Sinusoidal 2D positional encoding, the condition ``c^k`` of CFlow / MSFlow.

    With ``D = channels / 2`` and frequencies ``w_i = 10000^(-2 i / D)``, ``i = 0 .. D/2 - 1``:
    ``P[2i] = sin(x w_i)``, ``P[2i+1] = cos(x w_i)`` (the column ``x``) and ``P[D+2i] = sin(y w_i)``,
    ``P[D+2i+1] = cos(y w_i)`` (the row ``y``).

    Returns:
        ``(channels, height, width)``; ``channels`` must be a positive multiple of 4.
    """
    if channels <= 0 or channels % 4:
        raise ValueError(f"channels must be a positive multiple of 4 for a 2D sin/cos encoding, got {channels}.")
    half = channels // 2
    freq = torch.exp(torch.arange(0, half, 2, device=device, dtype=torch.float64) * (-math.log(1e4) / half))
    x = torch.arange(width, device=device, dtype=torch.float64)[:, None] * freq  # (W, D/2)
    y = torch.arange(height, device=device, dtype=torch.float64)[:, None] * freq  # (H, D/2)
    pe = torch.empty(channels, height, width, device=device, dtype=torch.float64)
    pe[0:half:2] = torch.sin(x).T[:, None, :]
    pe[1:half:2] = torch.cos(x).T[:, None, :]
    pe[half::2] = torch.sin(y).T[:, :, None]
    pe[half + 1 :: 2] = torch.cos(y).T[:, :, None]
    return pe.to(dtype or torch.get_default_dtype())


class GatedConv1x1(nn.Module):
    """Gated 1x1 convolution ``conv_f(x) * sigmoid(conv_g(x))`` (the EGM's ``Conv_1x1``).

    The feature branch is linear (its output feeds a softmax, eq. 3); the sigmoid gate learns
    per-position weights, as the paper describes its gated convolutions.
    Input ``(B, in_channels, H, W)``; output ``(B, out_channels, H, W)``.
    """

    def __init__(self, in_channels: int, out_channels: int = 1) -> None:
        super().__init__()
        self.feature = nn.Conv2d(in_channels, out_channels, 1)
        self.gate = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.feature(x) * torch.sigmoid(self.gate(x))


class EdgeGuidance(nn.Module):
    """Edge guidance module (EGM, eq. 1-5).

    ``F1' = P(avgpool(F1 -> size of F2))``; ``E1 = G1([F1', F2])``, ``E2 = G2([F2, F1'])`` (two gated 1x1
    convolutions, eq. 1-2); ``[E1', E2'] = softmax([E1, E2])`` over the two maps (eq. 3-4);
    ``F_edge_fusion = E1' * F1' + E2' * F2`` (eq. 5, the weights broadcast over channels).

    ``F1`` (64 channels) and ``F2`` (128) cannot be added as eq. 5 writes without matching channels, so
    ``P`` is a 1x1 projection of ``F1'`` to ``F2``'s channels (the paper names no such layer). ``E1, E2``
    are one channel each: eq. 5 multiplies them "after dimension broadcasting", i.e. one weight per
    position, and the softmax over the pair makes ``E1' + E2' = 1`` there.

    Args:
        low_channels: channels of ``F1``. mid_channels: channels of ``F2`` (and of the output).

    Input ``F1 (B, low, H1, W1)`` and ``F2 (B, mid, H2, W2)`` with ``H1, W1`` multiples of ``H2, W2``;
    output ``(B, mid, H2, W2)``.
    """

    def __init__(self, low_channels: int = 64, mid_channels: int = 128) -> None:
        super().__init__()
        self.project = nn.Conv2d(low_channels, mid_channels, 1, bias=False)
        self.gate_fine = GatedConv1x1(2 * mid_channels, 1)
        self.gate_coarse = GatedConv1x1(2 * mid_channels, 1)

    def downsample(self, f1: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        """``F1'``: ``F1`` average-pooled to ``size`` and projected to ``F2``'s channels."""
        return self.project(F.adaptive_avg_pool2d(f1, tuple(size)))

    def weights(self, f1_down: torch.Tensor, f2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``E1', E2'`` (eq. 1-4), each ``(B, 1, H2, W2)``, summing to 1 at every position."""
        e1 = self.gate_fine(torch.cat([f1_down, f2], dim=1))
        e2 = self.gate_coarse(torch.cat([f2, f1_down], dim=1))
        return torch.softmax(torch.cat([e1, e2], dim=1), dim=1).split(1, dim=1)

    def forward(self, f1: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
        f1_down = self.downsample(f1, f2.shape[-2:])
        w1, w2 = self.weights(f1_down, f2)
        return w1 * f1_down + w2 * f2


def prewitt_magnitude(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Per-channel Prewitt gradient magnitude ``sqrt(Gx^2 + Gy^2 + eps)`` with replicate padding.

    ``Gx`` is the correlation with ``[[-1, 0, 1]] * 3`` rows (``scipy.ndimage.prewitt(axis=-1)``),
    ``Gy`` its transpose; ``eps`` keeps the square root differentiable on flat regions.
    Input and output ``(B, C, H, W)``.
    """
    c = x.shape[1]
    kx = torch.tensor([[-1.0, 0.0, 1.0]] * 3, device=x.device, dtype=x.dtype)
    kernels = torch.stack([kx, kx.T])[:, None].repeat(c, 1, 1, 1)  # (2C, 1, 3, 3): gx, gy per channel
    grads = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernels, groups=c)
    gx, gy = grads[:, 0::2], grads[:, 1::2]
    return torch.sqrt(gx.square() + gy.square() + eps)


class PrewittEdges(nn.Module):
    """The Prewitt alternative to the EGM (Table 7): fixed gradients instead of learned attention.

    ``F_edge = |prewitt(F1')| + |prewitt(F2)|`` with ``F1'`` as in :class:`EdgeGuidance` (pooled and
    projected), so the output has the EGM's shape and feeds the same aggregation. The paper applies
    the operator without saying to what; applying it to the same inputs as the EGM makes the
    ablation compare only the edge extractor.

    Input ``F1 (B, low, H1, W1)``, ``F2 (B, mid, H2, W2)``; output ``(B, mid, H2, W2)``.
    """

    def __init__(self, low_channels: int = 64, mid_channels: int = 128) -> None:
        super().__init__()
        self.project = nn.Conv2d(low_channels, mid_channels, 1, bias=False)

    def forward(self, f1: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
        f1_down = self.project(F.adaptive_avg_pool2d(f1, tuple(f2.shape[-2:])))
        return prewitt_magnitude(f1_down) + prewitt_magnitude(f2)


class ChannelAttention(nn.Module):
    """Channel attention block (CAB, eq. 6): ``x * sigmoid(W2 relu(W1 GAP(x)))``, RCAN's CA layer.

    Args:
        channels: ``C``. reduction: the bottleneck is ``max(1, C // reduction)`` (16 as RCAN).

    Input and output ``(B, C, H, W)``.
    """

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.squeeze = nn.Conv2d(channels, hidden, 1)
        self.excite = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = torch.sigmoid(self.excite(F.relu(self.squeeze(x.mean(dim=(2, 3), keepdim=True)))))
        return x * w


def gap_gated(f_cat: torch.Tensor, gate: str = "sigmoid") -> torch.Tensor:
    """``g(GAP(F_cat)) * F_cat`` of eq. 8: the per-channel global mean, through ``g``, broadcast over positions.

    ``gate="sigmoid"``: ``g`` is the logistic function, a gate in ``(0, 1)``; ``gate="none"``: ``g`` is the
    identity, eq. 8 as printed, which makes the term quadratic in ``F_cat``.
    """
    pooled = f_cat.mean(dim=(2, 3), keepdim=True)
    return (torch.sigmoid(pooled) if gate == "sigmoid" else pooled) * f_cat


class EdgeAggregation(nn.Module):
    """Aggregates the edge features into the deepest scale: EAM (eq. 6-8) or Table 8's ADD / MUL.

    ``method="eam"``: ``F_att = CAB(F_edge)`` average-pooled to the grid of ``x``;
    ``F_cat = Conv3x3([F_att, x])``; ``out = g(GAP(F_cat)) * F_cat + x`` (eq. 6-8; ``g`` see ``gate``).
    ``method="add"``: ``out = x + W F_att'``; ``method="mul"``: ``out = x * W F_att'`` where ``F_att'`` is
    ``F_edge`` pooled to ``x``'s grid and ``W`` a 1x1 projection to ``x``'s channels (the edge map has
    fewer channels than ``F4``).

    ``invertible=False`` applies these equations as printed to ``x = F4``. The result is not a bijection
    of ``F4``: used as the flow's data (``z^4 = pool(out)``) its learned part can shrink the spread of
    ``z^4`` at no cost in the likelihood, which rewards exactly that (see :class:`UMIADEGMF`).

    ``invertible=True`` (default in :class:`UMIADEGMF`) turns the same computations into a conditional
    coupling of ``x = z^4`` given the edge features, with an exact log-determinant:

    - ``eam``: the channels split into halves ``a, b``; ``b <- b + g(GAP(F_cat)) * F_cat`` with
      ``F_cat = Conv3x3_b([F_att, a])``, then ``a <- a + g(GAP(F_cat')) * F_cat'`` with
      ``F_cat' = Conv3x3_a([F_att, b])``: eq. 7-8 with half of ``F4`` in the concatenation and the
      residual on the other half (additive coupling, log-determinant 0);
    - ``add``: ``x + W F_att'`` (a shift, log-determinant 0);
    - ``mul``: ``x * exp(s)``, ``s = clamp * tanh(W F_att' / clamp)`` (a positive, clamped multiplier;
      log-determinant ``sum(s)``).

    Args:
        edge_channels: channels of ``F_edge``. feature_channels: channels of ``x``.
        method: ``"eam"``, ``"add"`` or ``"mul"``. invertible: see above.
        cab_reduction: the CAB's channel reduction. clamp: bound of ``|s|`` for ``mul``.
        gate: ``g`` of eq. 8 (:func:`gap_gated`): ``"sigmoid"`` (default) or ``"none"`` (eq. 8 as printed,
            ``GAP(F_cat) * F_cat``: quadratic in ``F_cat``, so one optimiser step that scales ``F_cat`` by
            ``a`` scales the term by ``a^2``; ``scripts/bench_umiad_egmf.py`` shows it diverging).

    ``forward(x, edge, rev=False)``: ``x (B, C, h, w)``, ``edge (B, edge_channels, H2, W2)``;
    returns ``(out (B, C, h, w), log_det (B,))``. ``rev=True`` inverts (``invertible=True`` only).
    """

    def __init__(
        self,
        edge_channels: int = 128,
        feature_channels: int = 512,
        method: str = "eam",
        invertible: bool = True,
        cab_reduction: int = 16,
        clamp: float = 1.9,
        gate: str = "sigmoid",
    ) -> None:
        super().__init__()
        if method not in ("eam", "add", "mul"):
            raise ValueError(f"edge_aggregation must be 'eam', 'add' or 'mul', got {method!r}.")
        if gate not in ("sigmoid", "none"):
            raise ValueError(f"eam_gate must be 'sigmoid' or 'none', got {gate!r}.")
        self.gate = gate
        self.method = method
        self.invertible = invertible
        self.clamp = clamp
        self.split = (feature_channels - feature_channels // 2, feature_channels // 2)
        if method == "eam":
            self.attention = ChannelAttention(edge_channels, cab_reduction)
            if invertible:
                a, b = self.split
                self.conv_b = nn.Conv2d(edge_channels + a, b, 3, padding=1)
                self.conv_a = nn.Conv2d(edge_channels + b, a, 3, padding=1)
            else:
                self.conv = nn.Conv2d(edge_channels + feature_channels, feature_channels, 3, padding=1)
        else:
            self.project = nn.Conv2d(edge_channels, feature_channels, 1)

    def _log_scale(self, edge: torch.Tensor) -> torch.Tensor:
        return self.clamp * torch.tanh(self.project(edge) / self.clamp)

    def forward(self, x: torch.Tensor, edge: torch.Tensor, rev: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        if rev and not self.invertible:
            raise ValueError("EdgeAggregation(invertible=False) has no inverse.")
        log_det = x.new_zeros(x.shape[0])
        if self.method != "eam":
            edge = F.adaptive_avg_pool2d(edge, tuple(x.shape[-2:]))
            if self.method == "add":
                shift = self.project(edge)
                return (x - shift if rev else x + shift), log_det
            if not self.invertible:
                return x * self.project(edge), log_det
            s = self._log_scale(edge)
            log_det = s.sum(dim=(1, 2, 3))
            return (x * torch.exp(-s), -log_det) if rev else (x * torch.exp(s), log_det)
        att = F.adaptive_avg_pool2d(self.attention(edge), tuple(x.shape[-2:]))
        if not self.invertible:
            return x + gap_gated(self.conv(torch.cat([att, x], dim=1)), self.gate), log_det
        a, b = x.split(self.split, dim=1)
        if not rev:
            b = b + gap_gated(self.conv_b(torch.cat([att, a], dim=1)), self.gate)
            a = a + gap_gated(self.conv_a(torch.cat([att, b], dim=1)), self.gate)
        else:
            a = a - gap_gated(self.conv_a(torch.cat([att, b], dim=1)), self.gate)
            b = b - gap_gated(self.conv_b(torch.cat([att, a], dim=1)), self.gate)
        return torch.cat([a, b], dim=1), log_det


class PyramidPooling(nn.Module):
    """Pyramid pooling of every scale before its flow: a 3 x 3 window with stride 2 (MSFlow's ``pool_type``).

    Halves each map: at 256 x 256 the encoder's 64/32/16/8 grids become Table 2's 32/16/8/4.
    ``mode="avg"`` averages over the window cells inside the map (``count_include_pad=False``: zero
    padding would darken the border), ``"max"`` takes the maximum, ``"none"`` is the identity.
    """

    def __init__(self, mode: str = "avg") -> None:
        super().__init__()
        if mode not in ("avg", "max", "none"):
            raise ValueError(f"pyramid_pool must be 'avg', 'max' or 'none', got {mode!r}.")
        self.mode = mode

    @staticmethod
    def output_size(size: int, mode: str = "avg") -> int:
        """Side of the pooled map for an input side ``size``."""
        return size if mode == "none" else (size - 1) // 2 + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "avg":
            return F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)
        if self.mode == "max":
            return F.max_pool2d(x, 3, stride=2, padding=1)
        return x


class _CouplingSubnet(nn.Sequential):
    """``conv(k) -> ReLU -> conv(k)``: predicts an affine coupling's scale and shift (CFlow's ``subnet_fc`` for k=1)."""

    def __init__(self, in_channels: int, out_channels: int, hidden_channels: int, kernel_size: int = 1) -> None:
        pad = kernel_size // 2
        super().__init__(
            nn.Conv2d(in_channels, hidden_channels, kernel_size, padding=pad),
            nn.ReLU(),
            nn.Conv2d(hidden_channels, out_channels, kernel_size, padding=pad),
        )


def _fixed_permutation_buffers(block: Fm.AllInOneBlock, channels: int) -> None:
    """Replace the block's permutation matrices (parameters without gradient, drawn with NumPy) by buffers
    drawn with torch: they are not learned, so they stay out of ``parameters()`` and follow ``torch.manual_seed``.
    """
    w = torch.zeros(channels, channels)
    w[torch.arange(channels), torch.randperm(channels)] = 1.0
    del block.w_perm, block.w_perm_inv
    block.register_buffer("w_perm", w.view(channels, channels, 1, 1))
    block.register_buffer("w_perm_inv", w.T.contiguous().view(channels, channels, 1, 1))


def conditional_flow(
    channels: int,
    condition_channels: int = 128,
    num_blocks: int = 8,
    clamp: float = 1.9,
    hidden_ratio: float = 2.0,
    kernel_size: int = 1,
) -> Ff.SequenceINN:
    """The k-th decoder ``g^k``: ``num_blocks`` FrEIA ``AllInOneBlock`` affine couplings conditioned on ``c^k``.

    Each block (CFlow's coupling, the paper's ref. [25]) splits the channels, predicts the other half's
    scale and shift from one half concatenated with the condition by a subnet ``conv(k) -> ReLU -> conv(k)``
    with ``hidden_ratio * in`` hidden channels (CFlow: 1 x 1, ratio 2), clamps the log-scale to
    ``clamp * tanh(.)`` (CFlow / MSFlow: 1.9), then applies a soft-plus global affine transform and a
    fixed random channel permutation (buffers, see :func:`_fixed_permutation_buffers`).

    The flow is built for ``(channels, 1, 1)`` inputs, so it runs on any spatial size. Call
    ``flow(z, [c])`` with ``z (B, channels, h, w)`` and ``c (B, condition_channels, h, w)``; it returns
    ``(y, log_jac_det (B,))``; ``flow(y, [c], rev=True)`` inverts it.
    """
    if num_blocks < 1:
        raise ValueError(f"num_coupling_blocks must be >= 1, got {num_blocks}.")
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"subnet_kernel_size must be a positive odd integer, got {kernel_size}.")

    def subnet(dims_in: int, dims_out: int) -> nn.Module:
        return _CouplingSubnet(dims_in, dims_out, max(1, round(hidden_ratio * dims_in)), kernel_size)

    flow = Ff.SequenceINN(channels, 1, 1)
    for _ in range(num_blocks):
        flow.append(
            Fm.AllInOneBlock,
            cond=0,
            cond_shape=(condition_channels, 1, 1),
            subnet_constructor=subnet,
            affine_clamping=clamp,
            global_affine_type="SOFTPLUS",
            permute_soft=False,
        )
        _fixed_permutation_buffers(flow.module_list[-1], channels)
    return flow


class _FusionShift(nn.Module):
    """The MFF computation of eq. 9 on a list of maps, returning what is added to each.

    Every map is average-pooled to the last (coarsest) map's grid, the maps are concatenated
    (``sum(C_k)`` channels), fused by ``conv(k) -> LayerNorm -> ReLU -> conv(k)`` through
    ``sum(C_k) / reduction`` channels (Table 2: 960 -> 240 -> 960 over the two halves, see
    :class:`MultiScaleFlowFusion`), split back per scale and upsampled bilinearly to each map's grid.
    """

    def __init__(self, channels: Sequence[int], out_channels: Sequence[int], kernel_size: int = 3, reduction: int = 4) -> None:
        super().__init__()
        total, out_total = sum(channels), sum(out_channels)
        hidden = max(1, total // reduction)
        pad = kernel_size // 2
        self.out_channels = tuple(out_channels)
        self.fuse_in = nn.Conv2d(total, hidden, kernel_size, padding=pad)
        self.norm = ChannelLayerNorm(hidden)
        self.fuse_out = nn.Conv2d(hidden, out_total, kernel_size, padding=pad)

    def forward(self, xs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        grid = tuple(xs[-1].shape[-2:])
        pooled = torch.cat([F.adaptive_avg_pool2d(x, grid) for x in xs], dim=1)
        fused = self.fuse_out(F.relu(self.norm(self.fuse_in(pooled))))
        return [
            part if tuple(x.shape[-2:]) == grid else F.interpolate(part, size=x.shape[-2:], mode="bilinear", align_corners=True)
            for x, part in zip(xs, fused.split(self.out_channels, dim=1))
        ]


class MultiScaleFlowFusion(nn.Module):
    """Multi-scale flow fusion (MFF, eq. 9) as an exactly invertible cross-scale additive coupling.

    Eq. 9 pools ``y^1 .. y^3`` to ``y^4``'s grid, concatenates them with ``y^4``, fuses them with
    convolutions, splits, upsamples and adds the originals. Added to the same maps it was computed from,
    that map is not invertible and its Jacobian is intractable, so a likelihood on its output would
    reward shrinking the latents for free. Here the same computation runs as a two-step additive
    coupling, as MSFlow's fusion flow does: every ``y^k`` splits its channels into halves ``a^k, b^k``;
    ``a^k <- a^k + up(split(fuse(pool(b^1 .. b^4))))_k``, then ``b^k <- b^k + up(split(fuse'(pool(a^1 .. a^4))))_k``.
    Each step sees 480 of the 960 channels and fuses them through 120, so the two together carry
    Table 2's 960 -> 240 -> 960 channel path. The log-determinant is exactly 0.

    Args:
        channels: channels of ``y^1 .. y^K``, fine to coarse (64, 128, 256, 512).
        kernel_size: the fusion convolutions (3, the paper's text and complexity analysis; Table 2 prints 1).
        reduction: the fusion bottleneck divides the concatenated channels by this (4: 960 -> 240).

    ``forward(ys, rev=False)``: ``ys`` a list of ``(B, C_k, h_k, w_k)`` (the last the coarsest grid);
    returns ``(fused list, log_det (B,) of zeros)``; ``rev=True`` inverts.
    """

    def __init__(self, channels: Sequence[int] = (64, 128, 256, 512), kernel_size: int = 3, reduction: int = 4) -> None:
        super().__init__()
        self.splits = [(c - c // 2, c // 2) for c in channels]
        first, second = [s[0] for s in self.splits], [s[1] for s in self.splits]
        self.fuse_first = _FusionShift(second, first, kernel_size, reduction)  # updates the first halves from the second
        self.fuse_second = _FusionShift(first, second, kernel_size, reduction)

    def forward(self, ys: Sequence[torch.Tensor], rev: bool = False) -> tuple[list[torch.Tensor], torch.Tensor]:
        if len(ys) != len(self.splits):
            raise ValueError(f"MultiScaleFlowFusion was built for {len(self.splits)} scales, got {len(ys)} maps.")
        halves = [y.split(s, dim=1) for y, s in zip(ys, self.splits)]
        a, b = [h[0] for h in halves], [h[1] for h in halves]
        if not rev:
            a = [x + d for x, d in zip(a, self.fuse_first(b))]
            b = [x + d for x, d in zip(b, self.fuse_second(a))]
        else:
            b = [x - d for x, d in zip(b, self.fuse_second(a))]
            a = [x - d for x, d in zip(a, self.fuse_first(b))]
        return [torch.cat(pair, dim=1) for pair in zip(a, b)], ys[0].new_zeros(ys[0].shape[0])
