"""SP-Mamba: Spatial-Perception State Space Model for unsupervised medical anomaly detection.

Pan and Lu, ACM MM 2025. The network reconstructs the features of a frozen
ResNet34 at three scales: encoder -> Half-FPN bottleneck -> window-sliding
medical prototypes (eq. 1) -> hierarchical decoder of SPSS blocks (Circular-
Hilbert selective scans plus local convolutions). Trained on normal images
with :class:`~medad_monai.detectors.sp_mamba.loss.SPMambaLoss` (eq. 2); at test
time the pixel anomaly map is ``S_org + alpha * S_p-dist`` (eq. 6-7) and the image
score adds the concentration and contrast terms of
:class:`~medad_monai.detectors.sp_mamba.scoring.SPMambaImageScore`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TypedDict

import torch
import torch.nn.functional as F
from torch import nn

from medad_monai.detectors.sp_mamba.blocks import MedicalPrototypes, SPSSBlock
from medad_monai.networks.blocks.encoder import ResNetFeatureEncoder
from medad_monai.networks.blocks.half_fpn import HalfFPNBottleneck
from medad_monai.networks.utils import plain_network_input
from medad_monai.ops.filters import gaussian_blur
from medad_monai.scoring import cosine_anomaly_map

__all__ = ["SPMamba", "SPMambaOutput"]


class SPMambaOutput(TypedDict):
    """Training-mode output of :class:`SPMamba`, consumed by :class:`~medad_monai.detectors.sp_mamba.loss.SPMambaLoss`.

    - ``features``: encoder features, three ``(B, C_l, H_l, W_l)`` maps, fine to coarse.
    - ``reconstructions``: the decoder's reconstructions, the same shapes as ``features``.
    - ``prototype_distance``: ``(B, 1, H/32, W/32)`` distance to the medical prototypes (eq. 1),
      ``None`` when the prototype module is off.
    """

    features: list[torch.Tensor]
    reconstructions: list[torch.Tensor]
    prototype_distance: torch.Tensor | None


class SPMamba(nn.Module):
    """SP-Mamba detector.

    Args:
        image_size: input ``(H, W)``; both must be multiples of 32 (the bottleneck stride).
        in_channels: image channels given to the encoder.
        encoder_depth: 34 (paper) or 18.
        encoder_weights: ``"imagenet"`` (torchvision's weights, hash-checked), ``"random"`` (``None`` is the same),
            a local torchvision-format checkpoint or an explicit URL; see :class:`ResNetFeatureEncoder`.
        decoder_depths: SPSS blocks per decoder stage, coarse to fine ([3, 4, 6, 3] in the paper).
        decoder_channels: channels per decoder stage, coarse to fine; the last three must equal
            the encoder's ``layer3``, ``layer2``, ``layer1`` channels, which they reconstruct.
        scan: scan-order kind of the SS2D branches (``"circular_hilbert"``; ``"raster"`` turns C-H scanning off).
        num_directions: scan directions per SS2D (8 in the paper's experiments, 16 selectable).
        d_state, expand: selective-scan state size and inner expansion of the SS2D branches.
        use_prototypes: turn the medical-prototype module on (paper) or off (ablation).
        num_prototypes: ``K`` (10). prototype_window: ``p`` (3).
        prototype_weight: ``alpha`` weighting the upsampled prototype distance in the anomaly map (1).
        smoothing_sigma: Gaussian smoothing of the anomaly map in pixels (4, as MambaAD; 0 disables).
        scan_backend: selective-scan backend override (``None``: automatic).

    ``forward`` in ``train()`` mode returns an :class:`SPMambaOutput`; in ``eval()``
    mode it returns the anomaly map ``(B, 1, H, W)``.
    """

    def __init__(
        self,
        image_size: Sequence[int] = (256, 256),
        in_channels: int = 3,
        encoder_depth: int = 34,
        encoder_weights: str | os.PathLike | None = None,
        decoder_depths: Sequence[int] = (3, 4, 6, 3),
        decoder_channels: Sequence[int] = (512, 256, 128, 64),
        scan: str = "circular_hilbert",
        num_directions: int = 8,
        d_state: int = 16,
        expand: float = 1.0,
        use_prototypes: bool = True,
        num_prototypes: int = 10,
        prototype_window: int = 3,
        prototype_weight: float = 1.0,
        smoothing_sigma: float = 4.0,
        scan_backend: str | None = None,
    ) -> None:
        super().__init__()
        self.image_size = tuple(int(s) for s in image_size)
        if len(self.image_size) != 2 or any(s < 32 or s % 32 for s in self.image_size):
            raise ValueError(
                f"image_size must be two multiples of 32 (>= 32), got {tuple(image_size)}: the bottleneck "
                "downsamples by 32 and the prototype grid is fixed by it."
            )
        if len(decoder_depths) != len(decoder_channels) or len(decoder_channels) != 4:
            raise ValueError(
                f"decoder_depths and decoder_channels need four stages each, got {decoder_depths} and {decoder_channels}."
            )
        self.encoder = ResNetFeatureEncoder(encoder_depth, (1, 2, 3), in_channels, encoder_weights, frozen=True)
        if tuple(decoder_channels[1:]) != tuple(reversed(self.encoder.out_channels)):
            raise ValueError(
                f"decoder_channels[1:] must equal the encoder channels fine-to-coarse reversed "
                f"{tuple(reversed(self.encoder.out_channels))}, got {tuple(decoder_channels[1:])}."
            )
        self.bottleneck = HalfFPNBottleneck(self.encoder.out_channels, decoder_channels[0])
        grid = (self.image_size[0] // 32, self.image_size[1] // 32)
        self.prototypes = (
            MedicalPrototypes(decoder_channels[0], grid, num_prototypes, prototype_window) if use_prototypes else None
        )
        block_args = {"scan": scan, "num_directions": num_directions, "d_state": d_state, "expand": expand}
        self.stages = nn.ModuleList()
        self.upsamples = nn.ModuleList()
        for i, (depth, ch) in enumerate(zip(decoder_depths, decoder_channels)):
            if i > 0:
                self.upsamples.append(nn.ConvTranspose2d(decoder_channels[i - 1], ch, kernel_size=2, stride=2))
            self.stages.append(
                nn.Sequential(*(SPSSBlock(ch, backend=scan_backend, **block_args) for _ in range(depth)))
            )
        self.prototype_weight = prototype_weight
        self.smoothing_sigma = smoothing_sigma

    def reconstruct(self, image: torch.Tensor) -> SPMambaOutput:
        """Encoder features, their reconstructions and the prototype distance map (see class docstring)."""
        features = self.encoder(plain_network_input(image, self.image_size, "SPMamba"))
        x = self.bottleneck(features)
        distance = None
        if self.prototypes is not None:
            x, distance = self.prototypes(x)
        reconstructions = []
        x = self.stages[0](x)
        for upsample, stage in zip(self.upsamples, self.stages[1:]):
            x = stage(upsample(x))
            reconstructions.append(x)
        return SPMambaOutput(features=features, reconstructions=reconstructions[::-1], prototype_distance=distance)

    def anomaly_map(self, outputs: SPMambaOutput) -> torch.Tensor:
        """Pixel anomaly map ``S_org + alpha * S_p-dist`` (eq. 6-7), smoothed: ``(B, 1, H, W)``."""
        amap = cosine_anomaly_map(outputs["features"], outputs["reconstructions"], self.image_size, sigma=0.0)
        if outputs["prototype_distance"] is not None and self.prototype_weight:
            distance = F.interpolate(outputs["prototype_distance"], self.image_size, mode="bilinear", align_corners=True)
            amap = amap + self.prototype_weight * distance
        return gaussian_blur(amap, self.smoothing_sigma)

    def forward(self, image: torch.Tensor) -> torch.Tensor | SPMambaOutput:
        outputs = self.reconstruct(image)
        return outputs if self.training else self.anomaly_map(outputs)
