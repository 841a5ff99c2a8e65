"""UMIAD-EGMF: unsupervised medical image anomaly detection based on edge guidance and multi-scale flow fusion.

Li, Lin, Zhang, Huang and Yang. A frozen ResNet18 gives ``F1 .. F4``; the edge guidance module (EGM)
fuses ``F1`` and ``F2`` into edge features, the edge aggregation module (EAM) brings them into the
deepest scale; every scale is pyramid-pooled to ``z^k`` and mapped by its own conditional normalizing
flow ``g^k`` (eight affine coupling blocks, positional-encoding conditions ``c^k``) to ``y^k``; the
multi-scale flow fusion (MFF) exchanges information between the ``y^k``. Trained by maximum likelihood
(:class:`~medad_monai.detectors.umiad_egmf.loss.UMIADEGMFLoss`); the per-scale likelihoods are
aggregated additively into the pixel map and multiplicatively into the image-level map
(:mod:`~medad_monai.detectors.umiad_egmf.scoring`). No code is published: everything here follows the
paper, with CFlow and MSFlow (the flows it extends) deciding where the paper is silent.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TypedDict

import torch
from torch import nn

from medad_monai.detectors.umiad_egmf.blocks import (
    EdgeAggregation,
    EdgeGuidance,
    MultiScaleFlowFusion,
    PrewittEdges,
    PyramidPooling,
    conditional_flow,
    positional_encoding_2d,
)
from medad_monai.detectors.umiad_egmf.scoring import (
    additive_anomaly_map,
    log_likelihood_map,
    multiplicative_anomaly_map,
)
from medad_monai.networks.blocks.encoder import ResNetFeatureEncoder
from medad_monai.networks.utils import plain_network_input
from medad_monai.ops.filters import gaussian_blur

__all__ = ["UMIADEGMF", "UMIADEGMFOutput"]

_EDGE_EXTRACTION = ("egm", "prewitt", "none")
_EDGE_INJECTION = ("coupling", "feature")
_MAP_SOURCE = ("fused", "raw")
_EVAL_MAP = ("additive", "multiplicative")


class UMIADEGMFOutput(TypedDict):
    """Training-mode output of :class:`UMIADEGMF`, consumed by :class:`~medad_monai.detectors.umiad_egmf.loss.UMIADEGMFLoss`.

    - ``latents``: ``u^k``, the standard-normal targets of the likelihood: the MFF's outputs ``y_f^k``
      (the flows' outputs when the MFF is off); four ``(B, C_k, h_k, w_k)``, fine to coarse
      (``C = 64, 128, 256, 512``; ``h_k = ceil(H / 2^(k+2))``).
    - ``flow_outputs``: ``y^k``, the per-scale flows' outputs before the MFF, the same shapes.
    - ``log_jac_det``: four ``(B,)``: ``log |det d u^k / d z^k|`` per scale: the flow's, plus the edge
      aggregation's on the deepest scale; the MFF adds 0 (volume preserving).
    """

    latents: list[torch.Tensor]
    flow_outputs: list[torch.Tensor]
    log_jac_det: list[torch.Tensor]


class UMIADEGMF(nn.Module):
    """UMIAD-EGMF detector.

    Shapes at 256 x 256 (Table 2): ``F1 (64, 64, 64)``, ``F2 (128, 32, 32)``, ``F3 (256, 16, 16)``,
    ``F4 (512, 8, 8)``; EGM output ``(128, 32, 32)``; ``z^k``, ``y^k``, ``u^k``: ``(64, 32, 32)``,
    ``(128, 16, 16)``, ``(256, 8, 8)``, ``(512, 4, 4)``; maps ``(1, 256, 256)``.

    Where the paper is ambiguous or inconsistent, and what is done here:

    1. *Grid sizes.* Table 2 puts ResNet18's ``layer1 .. layer4`` at 32/16/8/4 for a 256 input; the
       network's strides give 64/32/16/8. The paper's "multi-scale pyramid pooling" resolves it as in
       MSFlow: a 3 x 3, stride-2 pooling of every scale (:class:`PyramidPooling`) yields Table 2's
       grids for the flows. ``pyramid_pool`` picks ``"avg"`` (MSFlow's default), ``"max"`` or ``"none"``.
    2. *EGM channels.* Eq. 5 adds ``E1' * F1'`` (64 channels) to ``E2' * F2`` (128): ``F1'`` is
       projected to 128 channels by a 1x1 convolution after pooling. ``E1, E2`` are single-channel
       (eq. 5 broadcasts them) and the softmax runs over the pair, so ``E1' + E2' = 1`` per position.
       The gated convolutions are ``conv(x) * sigmoid(conv'(x))``.
    3. *EAM grids.* ``CAB(F_edge_fusion)`` lives on ``F2``'s grid and ``F4`` on a 4x coarser one; eq. 7
       concatenates them, so the CAB output is average-pooled to ``F4``'s grid. The CAB is RCAN's
       channel-attention layer (reduction 16). Eq. 8 multiplies ``F_cat`` by its raw global average,
       which is quadratic in ``F_cat``: trained with Adam at lr 1e-3, the literal EAM's negative
       log-likelihood rose to 1e9 per dimension (``scripts/bench_umiad_egmf.py --edge-injection-check``).
       The "GAP gate" here is a sigmoid of that average, linear in ``F_cat`` (``eam_gate="sigmoid"``;
       ``"none"`` is eq. 8 as printed).
    4. *How the EAM output enters the flows* (``edge_injection``). Read literally, ``z^4`` is the
       pyramid-pooled EAM output (``"feature"``). The flows' data are then a learned, non-invertible
       function of the image, and the loss is no longer a likelihood of anything fixed: it falls
       whenever the EAM contracts ``z^4``, which it can (it sees ``F4`` and can learn to cancel the
       ``F4`` residual), and no Jacobian term charges for it, so the objective is unbounded below.
       ``"coupling"`` (default) keeps the flows' data the frozen encoder's features and applies the
       EAM's computation as a conditional additive coupling of ``z^4`` given the edge features
       (:class:`EdgeAggregation`): eq. 7-8 with half of ``z^4`` in the concatenation and the gated
       result added to the other half, then the roles swapped. It is exactly invertible with
       log-determinant 0, so the loss is the negative log-likelihood of the encoder's features given
       the edges. The choice rests on that; short runs of ``"feature"`` with the sigmoid gate
       (200-400 steps, ``--edge-injection-check``) did not show a collapse.
    5. *Ablations.* ``edge_extraction="none"`` is "without EGM" (no edge path at all, as Table 6's first
       and MFF-only rows; there is no EAM without an edge input); ``edge_aggregation="add"`` is "without
       EAM" (Table 6's EGM-only row needs some aggregation; the plainest of Table 8's is used);
       ``"mul"`` is Table 8's multiplication (as a clamped positive scale with its log-determinant in
       ``"coupling"`` mode); ``use_mff=False`` is "without MFF"; ``edge_extraction="prewitt"`` is
       Table 7's Prewitt operator, applied per channel to the EGM's inputs (:class:`PrewittEdges`).
       Table 7's SAM alternative needs a segment-anything model the paper does not specify: not offered.
    6. *MFF invertibility.* Eq. 9 adds a fusion of all scales back onto the maps it came from, which is
       not invertible, so a likelihood on its output would again reward shrinking. It runs as MSFlow's
       fusion flow does, as a two-step additive coupling over channel halves
       (:class:`MultiScaleFlowFusion`): each step fuses 480 channels through 120, together Table 2's
       960 -> 240 -> 960; the log-determinant is 0. The fusion pools with adaptive averaging (Table 2's
       kernel-3 pools do not give 4 x 4 from 8 x 8) and uses 3 x 3 convolutions (the text and the
       complexity analysis; Table 2 prints 1 x 1: ``mff_kernel_size``), with MSFlow's LayerNorm + ReLU
       between them.
    7. *Coupling blocks.* The paper takes its coupling block from CFlow (ref. [25]): FrEIA's
       ``AllInOneBlock`` with a ``1x1 conv -> ReLU -> 1x1 conv`` subnet of twice the input width, a
       128-channel positional encoding and clamp 1.9. With these subnets the trainable parameters come to
       13.0 M against the paper's 14 M (``scripts/bench_umiad_egmf.py``). The complexity section's 3 x 3
       subnets are ``subnet_kernel_size=3`` (86 M trainable parameters with the same widths).
       The paper's 14 M cannot include the frozen encoder: ResNet18 up to ``layer4`` has 11.2 M and the
       literal EAM's 3 x 3 convolution 2.95 M.
    8. *Which outputs the maps use* (``map_source``): the likelihood is that of the MFF's outputs, so the
       maps use them by default (``"fused"``); ``"raw"`` uses the flows' outputs before the MFF, which the
       loss does not pull towards a standard normal when the MFF is on.
    9. *Per-position likelihood.* ``log p^k = -||u^k||^2 / (2 C_k)`` per position, as MSFlow (the coupling
       blocks' log-determinant is a per-image sum). It is ``<= 0``, so the maps need no per-image maximum
       (MSFlow's normalisation) and stay comparable across images (one threshold for all).
    10. *Two maps, one output* (``eval_map``). The paper localises with the additive map and scores
       images on the multiplicative one; the detector contract returns one map. ``"additive"`` (default)
       returns the pixel map; ``"multiplicative"`` the image-level map; :meth:`anomaly_maps` gives both, and
       :meth:`anomaly_and_score_maps` gives the returned map and the image-level map from one image, which is
       how the bundle scores images on the multiplicative map while localising with the additive one.

    Args:
        image_size: input ``(H, W)``, multiples of 32.
        in_channels: image channels given to the encoder.
        encoder_depth: 18 (paper) or 34.
        encoder_weights: ``"imagenet"``, ``"random"`` (``None`` is the same), a local torchvision-format
            checkpoint or an explicit URL; see :class:`~medad_monai.networks.blocks.ResNetFeatureEncoder`.
        edge_extraction: ``"egm"`` (paper), ``"prewitt"`` or ``"none"``.
        edge_aggregation: ``"eam"`` (paper), ``"add"`` or ``"mul"``.
        edge_injection: ``"coupling"`` (default) or ``"feature"`` (literal; see 4).
        use_mff: the multi-scale flow fusion on (paper) or off.
        pyramid_pool: ``"avg"``, ``"max"`` or ``"none"``.
        num_coupling_blocks: affine coupling blocks per flow (8).
        condition_channels: channels of the positional encoding ``c^k`` (CFlow: 128; a multiple of 4).
        affine_clamp: clamp of the coupling log-scales (1.9).
        subnet_hidden_ratio, subnet_kernel_size: coupling subnet width (x input) and kernel (2.0, 1).
        mff_kernel_size, mff_reduction: the MFF convolutions' kernel (3) and channel reduction (4).
        cab_reduction: the CAB's channel reduction (16).
        eam_gate: ``"sigmoid"`` or ``"none"`` (see 3).
        map_source: ``"fused"`` or ``"raw"`` (see 8).
        eval_map: ``"additive"`` or ``"multiplicative"`` (see 10).
        smoothing_sigma: Gaussian smoothing of the returned map in pixels (0: none, as the paper).

    ``forward`` in ``train()`` mode returns a :class:`UMIADEGMFOutput`; in ``eval()`` mode the anomaly
    map ``(B, 1, H, W)``, higher meaning more anomalous.
    """

    def __init__(
        self,
        image_size: Sequence[int] = (256, 256),
        in_channels: int = 3,
        encoder_depth: int = 18,
        encoder_weights: str | os.PathLike | None = None,
        edge_extraction: str = "egm",
        edge_aggregation: str = "eam",
        edge_injection: str = "coupling",
        use_mff: bool = True,
        pyramid_pool: str = "avg",
        num_coupling_blocks: int = 8,
        condition_channels: int = 128,
        affine_clamp: float = 1.9,
        subnet_hidden_ratio: float = 2.0,
        subnet_kernel_size: int = 1,
        mff_kernel_size: int = 3,
        mff_reduction: int = 4,
        cab_reduction: int = 16,
        eam_gate: str = "sigmoid",
        map_source: str = "fused",
        eval_map: str = "additive",
        smoothing_sigma: float = 0.0,
    ) -> None:
        super().__init__()
        self.image_size = tuple(int(s) for s in image_size)
        if len(self.image_size) != 2 or any(s < 32 or s % 32 for s in self.image_size):
            raise ValueError(
                f"image_size must be two multiples of 32 (>= 32), got {tuple(image_size)}: F4 has stride 32."
            )
        for name, value, allowed in (
            ("edge_extraction", edge_extraction, _EDGE_EXTRACTION),
            ("edge_injection", edge_injection, _EDGE_INJECTION),
            ("map_source", map_source, _MAP_SOURCE),
            ("eval_map", eval_map, _EVAL_MAP),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}.")
        self.encoder = ResNetFeatureEncoder(encoder_depth, (1, 2, 3, 4), in_channels, encoder_weights, frozen=True)
        channels = self.encoder.out_channels
        if edge_extraction == "none":
            self.edge, self.aggregation = None, None
        else:
            edge_cls = EdgeGuidance if edge_extraction == "egm" else PrewittEdges
            self.edge = edge_cls(channels[0], channels[1])
            self.aggregation = EdgeAggregation(
                channels[1],
                channels[3],
                edge_aggregation,
                edge_injection == "coupling",
                cab_reduction,
                affine_clamp,
                eam_gate,
            )
        self.edge_injection = edge_injection
        self.pool = PyramidPooling(pyramid_pool)
        self.flows = nn.ModuleList(
            conditional_flow(c, condition_channels, num_coupling_blocks, affine_clamp, subnet_hidden_ratio, subnet_kernel_size)
            for c in channels
        )
        self.fusion = MultiScaleFlowFusion(channels, mff_kernel_size, mff_reduction) if use_mff else None
        self.grids = []
        for k in range(len(channels)):
            grid = tuple(PyramidPooling.output_size(s // 2 ** (k + 2), pyramid_pool) for s in self.image_size)
            self.grids.append(grid)
            # recomputed from the arguments, not saved in checkpoints.
            self.register_buffer(f"condition_{k}", positional_encoding_2d(condition_channels, *grid), persistent=False)
        self.map_source = map_source
        self.eval_map = eval_map
        self.smoothing_sigma = smoothing_sigma

    def conditions(self, batch: int) -> list[torch.Tensor]:
        """``c^k`` for a batch: four ``(batch, condition_channels, h_k, w_k)`` views."""
        return [getattr(self, f"condition_{k}").expand(batch, -1, -1, -1) for k in range(len(self.flows))]

    def encode(self, image: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """The flows' inputs ``z^k`` (four ``(B, C_k, h_k, w_k)``) and the edge features ``(B, 128, H/8, W/8)`` or ``None``.

        With ``edge_injection="feature"`` the EAM output has already replaced ``F4`` in ``z^4``.
        """
        features = self.encoder(plain_network_input(image, self.image_size, "UMIADEGMF"))
        edge = self.edge(features[0], features[1]) if self.edge is not None else None
        if edge is not None and self.edge_injection == "feature":
            features[-1] = self.aggregation(features[-1], edge)[0]
        return [self.pool(f) for f in features], edge

    def flow(
        self, zs: Sequence[torch.Tensor], edge: torch.Tensor | None = None
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
        """The invertible part: ``z^k`` -> (``u^k``, ``y^k``, per-scale log-determinants ``(B,)``).

        In ``"coupling"`` mode the edge aggregation acts on ``z^4`` first, conditioned on ``edge``.
        """
        zs = list(zs)
        log_dets = [z.new_zeros(z.shape[0]) for z in zs]
        if edge is not None and self.edge_injection == "coupling":
            zs[-1], log_dets[-1] = self.aggregation(zs[-1], edge)
        ys = []
        for k, (z, flow, cond) in enumerate(zip(zs, self.flows, self.conditions(zs[0].shape[0]))):
            y, log_det = flow(z, [cond])
            ys.append(y)
            log_dets[k] = log_dets[k] + log_det
        latents = self.fusion(ys)[0] if self.fusion is not None else ys
        return list(latents), ys, log_dets

    def flow_inverse(self, latents: Sequence[torch.Tensor], edge: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Inverse of :meth:`flow`: ``u^k`` -> ``z^k``."""
        ys = self.fusion(list(latents), rev=True)[0] if self.fusion is not None else list(latents)
        zs = [flow(y, [cond], rev=True)[0] for y, flow, cond in zip(ys, self.flows, self.conditions(ys[0].shape[0]))]
        if edge is not None and self.edge_injection == "coupling":
            zs[-1] = self.aggregation(zs[-1], edge, rev=True)[0]
        return zs

    def latents(self, image: torch.Tensor) -> UMIADEGMFOutput:
        """The training output (see :class:`UMIADEGMFOutput`)."""
        latents, ys, log_dets = self.flow(*self.encode(image))
        return UMIADEGMFOutput(latents=latents, flow_outputs=ys, log_jac_det=log_dets)

    def anomaly_maps(self, outputs: UMIADEGMFOutput) -> tuple[torch.Tensor, torch.Tensor]:
        """The additive (pixel) and multiplicative (image-level) maps, each ``(B, 1, H, W)``, unsmoothed."""
        source = outputs["latents"] if self.map_source == "fused" else outputs["flow_outputs"]
        log_p = [log_likelihood_map(u) for u in source]
        return additive_anomaly_map(log_p, self.image_size), multiplicative_anomaly_map(log_p, self.image_size)

    def anomaly_map(self, outputs: UMIADEGMFOutput) -> torch.Tensor:
        """The map ``eval_map`` selects, smoothed by ``smoothing_sigma``: ``(B, 1, H, W)``."""
        additive, multiplicative = self.anomaly_maps(outputs)
        return gaussian_blur(additive if self.eval_map == "additive" else multiplicative, self.smoothing_sigma)

    def anomaly_and_score_maps(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The pixel map and the image-level map from one pass: each ``(B, 1, H, W)``, smoothed by ``smoothing_sigma``.

        The first is what ``forward`` returns in ``eval()`` mode (``eval_map``); the second is always the
        multiplicative map, which the paper's image score
        (:class:`~medad_monai.detectors.umiad_egmf.scoring.UMIADEGMFImageScore`) pools. This is the
        optional part of the detector contract (:mod:`medad_monai.detectors`) that the inferers call where
        they return the map image scores are computed on.
        """
        additive, multiplicative = self.anomaly_maps(self.latents(image))
        pixel = additive if self.eval_map == "additive" else multiplicative
        return gaussian_blur(pixel, self.smoothing_sigma), gaussian_blur(multiplicative, self.smoothing_sigma)

    def forward(self, image: torch.Tensor) -> torch.Tensor | UMIADEGMFOutput:
        outputs = self.latents(image)
        return outputs if self.training else self.anomaly_map(outputs)
