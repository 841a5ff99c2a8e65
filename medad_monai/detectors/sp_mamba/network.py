"""SP-Mamba: Spatial-Perception State Space Model for unsupervised medical anomaly detection.

Pan and Lu, ACM MM 2025. The network reconstructs the features of a frozen
ResNet34 at three scales: encoder -> Half-FPN bottleneck -> window-sliding
medical prototypes (eq. 1) -> hierarchical decoder of SPSS blocks (Circular-
Hilbert selective scans plus local convolutions). Trained on normal images
with :class:`~medad_monai.detectors.sp_mamba.loss.SPMambaLoss` (eq. 2); at test
time the pixel anomaly map is ``S_org + alpha * S_p-dist`` (eq. 6-7) and the image
score adds the concentration and contrast terms of
:class:`~medad_monai.detectors.sp_mamba.scoring.SPMambaImageScore`.
Official checkpoints load through :mod:`medad_monai.detectors.sp_mamba.convert`.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Sequence
from typing import TypedDict

import torch
import torch.nn.functional as F
from torch import nn

from medad_monai.detectors.sp_mamba.blocks import MedicalPrototypes, PatchExpand, SPSSBlock
from medad_monai.networks.blocks.encoder import ResNetFeatureEncoder
from medad_monai.networks.blocks.feature_cache import FrozenFeatureCache
from medad_monai.networks.blocks.half_fpn import HalfFPNBottleneck
from medad_monai.networks.utils import plain_network_input
from medad_monai.ops.filters import gaussian_blur
from medad_monai.scoring import cosine_anomaly_map

__all__ = ["SPMamba", "SPMambaOutput", "stage_blocks"]


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


def stage_blocks(depth: int) -> list[int]:
    """Mamba layers per SPSS block of a decoder stage of ``depth`` layers.

    As the official code: blocks of 3 layers when ``depth`` is a multiple of 3, else blocks of
    2 when it is even ([3, 4, 6, 3] gives [3], [2, 2], [3, 3], [3]). Other depths, which the
    official code rejects, give one block of ``depth`` layers.
    """
    if depth < 1:
        raise ValueError(f"decoder depths must be >= 1, got {depth}.")
    for group in (3, 2):
        if depth % group == 0:
            return [group] * (depth // group)
    return [depth]


class SPMamba(nn.Module):
    """SP-Mamba detector.

    Architecture (the paper's; where it is silent, the official code's, github.com/Ray-RuiPan/SP-Mamba):

    - encoder: ResNet34 up to ``layer3``, frozen; features at strides 4, 8, 16.
    - bottleneck: MambaAD's Half-FPN fusion (:class:`HalfFPNBottleneck`, ``style="mambaad"``):
      scales added at 256 channels, then 3 ResNet bottleneck blocks to 512 channels at stride 32.
    - medical prototypes (eq. 1): ``K`` prototype maps over the stride-32 grid; their window-sliding
      distance ``D`` enters the loss and the anomaly map. The decoder receives the fused features
      unchanged, as in the official code.
    - decoder: four stages (512, 256, 128, 64 channels, coarse to fine) of ``decoder_depths`` Mamba
      layers (LayerNorm -> SS2D with ``expand`` 2, 8 Circular-Hilbert directions, residual), grouped
      into SPSS blocks of 3 (or 2) layers that share one convolution branch (5 x 5 and 7 x 7
      depthwise paths, see :class:`SPSSBlock`); stages are joined by patch-expanding upsampling
      (:class:`PatchExpand`); stochastic depth from ``drop_path_rate`` (0.2) on the deepest layers
      down to 0 on the finest, as the official code. Stages 1-3 reconstruct ``layer3``, ``layer2``, ``layer1``.
    - anomaly map (eq. 6-7): ``reconstruction_weight * G_sigma * sum_l (1 - cos(f_l, f^_l))
      + prototype_weight * up(D)``: the reconstruction term upsampled bilinearly (corners aligned)
      and smoothed (sigma 4 at 256 x 256), the prototype distance upsampled bilinearly (half-pixel
      centres) and not smoothed, as the official trainer.

    Deviations from the official code, and why:

    - ``num_prototypes`` is the paper's K = 10 (sec. 4.4); the official configuration uses 5.
    - ``prototype_weight`` is the paper's alpha = 1 (sec. 4.4) and ``reconstruction_weight`` is 1,
      eq. 6's plain sum over scales; the official trainer adds ``0.5 * up(D)`` to its evaluator's
      map, which divides the sum over the three scales by 9. Loading an official checkpoint with
      :func:`~medad_monai.detectors.sp_mamba.convert.load_official_checkpoint` sets 0.5 and 1/9.
    - the official decoder also holds a 3 x 3 depthwise convolution per SPSS block and a 1 x 1
      convolution ``vis_conv`` that its forward pass never uses (76,033 parameters at 256 x 256):
      they are left out.
    - the official code fixes the input at 256 x 256 and the decoder depths to multiples of 2 or 3;
      here any multiple of 32 and any depth work (see :func:`stage_blocks`).
    - the prototype distance is computed for all positions and prototypes at once instead of by
      Python loops; the result is the same.
    - ``feature_cache_bytes`` > 0 caches the frozen encoder's features per image
      (:class:`FrozenFeatureCache`); it changes no result, only the training time.
    - ``feature_jitter`` > 0 (off by default; not in the paper) is UniAD's feature jittering (You et
      al., NeurIPS 2022): in training, the bottleneck reads the encoder features plus Gaussian noise
      of standard deviation ``feature_jitter * ||f|| / C`` per position, while the decoder still
      reconstructs the clean features, so that it learns to pull perturbed features back to normal
      ones instead of copying whatever the encoder gives.

    Args:
        image_size: input ``(H, W)``; both must be multiples of 32 (the bottleneck stride).
        in_channels: image channels given to the encoder.
        encoder_depth: 34 (paper) or 18.
        encoder_weights: ``"imagenet"`` (torchvision's weights, hash-checked), ``"random"`` (``None`` is the same),
            a local torchvision-format checkpoint or an explicit URL; see :class:`ResNetFeatureEncoder`.
        decoder_depths: Mamba layers per decoder stage, coarse to fine ([3, 4, 6, 3] in the paper).
        decoder_channels: channels per decoder stage, coarse to fine; the last three must equal
            the encoder's ``layer3``, ``layer2``, ``layer1`` channels, which they reconstruct.
        scan: scan-order kind of the SS2D branches (``"circular_hilbert"``; ``"raster"`` turns C-H scanning off).
        num_directions: scan directions per SS2D (8 in the paper's experiments, 16 selectable).
        d_state, expand: selective-scan state size (16) and inner expansion (2) of the SS2D branches.
        kernel_sizes: depthwise kernel sizes of the SPSS blocks' convolution branches (5, 7).
        drop_path_rate: largest stochastic-depth rate of the decoder's Mamba layers (0.2).
        use_prototypes: turn the medical-prototype module on (paper) or off (ablation).
        num_prototypes: ``K`` (10). prototype_window: ``p`` (3).
        prototype_weight: ``alpha`` weighting the upsampled prototype distance in the anomaly map (1).
        reconstruction_weight: weight of the reconstruction term ``S_org`` in the anomaly map (1).
        smoothing_sigma: Gaussian smoothing of the reconstruction term in pixels (4, as MambaAD; 0 disables).
        scan_backend: selective-scan backend override (``None``: automatic).
        feature_cache_bytes: memory budget of the encoder feature cache (0: no cache).
        feature_jitter: UniAD's jitter scale ``alpha`` (0: off, the paper; UniAD uses 20).

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
        expand: float = 2.0,
        kernel_sizes: Sequence[int] = (5, 7),
        drop_path_rate: float = 0.2,
        use_prototypes: bool = True,
        num_prototypes: int = 10,
        prototype_window: int = 3,
        prototype_weight: float = 1.0,
        reconstruction_weight: float = 1.0,
        smoothing_sigma: float = 4.0,
        scan_backend: str | None = None,
        feature_cache_bytes: int = 0,
        feature_jitter: float = 0.0,
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
        if any(2 * c_next != c for c, c_next in zip(decoder_channels[:-1], decoder_channels[1:])):
            raise ValueError(f"decoder_channels must halve from stage to stage, got {tuple(decoder_channels)}.")
        self.encoder = ResNetFeatureEncoder(encoder_depth, (1, 2, 3), in_channels, encoder_weights, frozen=True)
        if tuple(decoder_channels[1:]) != tuple(reversed(self.encoder.out_channels)):
            raise ValueError(
                f"decoder_channels[1:] must equal the encoder channels fine-to-coarse reversed "
                f"{tuple(reversed(self.encoder.out_channels))}, got {tuple(decoder_channels[1:])}."
            )
        self.bottleneck = HalfFPNBottleneck(self.encoder.out_channels, decoder_channels[0], style="mambaad")
        grid = (self.image_size[0] // 32, self.image_size[1] // 32)
        self.prototypes = (
            MedicalPrototypes(decoder_channels[0], grid, num_prototypes, prototype_window) if use_prototypes else None
        )
        ss2d_args = {"scan": scan, "num_directions": num_directions, "d_state": d_state, "expand": expand,
                     "backend": scan_backend}
        # stochastic depth: linearly from drop_path_rate (first layer) to 0 (last), one rate per SPSS block
        rates = torch.linspace(0, drop_path_rate, sum(decoder_depths)).flip(0).tolist()
        self.stages = nn.ModuleList()
        self.upsamples = nn.ModuleList()
        for i, (depth, ch) in enumerate(zip(decoder_depths, decoder_channels)):
            if i > 0:
                self.upsamples.append(PatchExpand(decoder_channels[i - 1]))
            first = sum(decoder_depths[:i])
            self.stages.append(
                nn.Sequential(
                    *(SPSSBlock(ch, layers, kernel_sizes, rates[first + j], **ss2d_args)
                      for j, layers in enumerate(stage_blocks(depth)))
                )
            )
        self._init_decoder()
        self.prototype_weight = prototype_weight
        self.reconstruction_weight = reconstruction_weight
        self.smoothing_sigma = smoothing_sigma
        self.feature_cache = FrozenFeatureCache(feature_cache_bytes) if feature_cache_bytes else None
        if feature_jitter < 0:
            raise ValueError(f"feature_jitter must be >= 0, got {feature_jitter}.")
        self.feature_jitter = feature_jitter

    def _init_decoder(self) -> None:
        """The official decoder's initialisation: linear layers truncated-normal (std 0.02), LayerNorms
        1 / 0, convolutions normal with std sqrt(2 / fan_out) and zero bias, the per-direction input
        projections of the scans as PyTorch initialises a linear layer."""
        for stage in self.stages:
            for m in stage.modules():
                if isinstance(m, nn.Conv2d):
                    fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
                    nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)
                elif hasattr(m, "x_proj_weight"):
                    bound = 1.0 / math.sqrt(m.x_proj_weight.shape[-1])
                    nn.init.uniform_(m.x_proj_weight, -bound, bound)
        for m in itertools.chain(self.stages.modules(), self.upsamples.modules()):
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def encode(self, image: torch.Tensor) -> list[torch.Tensor]:
        """The frozen encoder's three feature maps, from the feature cache when it holds them."""
        return self.feature_cache(self.encoder, image) if self.feature_cache is not None else self.encoder(image)

    def reconstruct(self, image: torch.Tensor) -> SPMambaOutput:
        """Encoder features, their reconstructions and the prototype distance map (see class docstring)."""
        features = self.encode(plain_network_input(image, self.image_size, "SPMamba"))
        x = self.bottleneck(self._jittered(features) if self.training and self.feature_jitter else features)
        distance = self.prototypes(x) if self.prototypes is not None else None
        reconstructions = []
        x = self.stages[0](x)
        for upsample, stage in zip(self.upsamples, self.stages[1:]):
            x = stage(upsample(x))
            reconstructions.append(x)
        return SPMambaOutput(features=features, reconstructions=reconstructions[::-1], prototype_distance=distance)

    def _jittered(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        """``f + N(0, (feature_jitter * ||f|| / C)^2)`` per position of each ``(B, C, H, W)`` map."""
        return [f + torch.randn_like(f) * f.norm(dim=1, keepdim=True) * (self.feature_jitter / f.shape[1]) for f in features]

    def anomaly_map(self, outputs: SPMambaOutput) -> torch.Tensor:
        """Pixel anomaly map ``w * G_sigma * S_org + alpha * up(S_p-dist)`` (eq. 6-7): ``(B, 1, H, W)``."""
        amap = cosine_anomaly_map(outputs["features"], outputs["reconstructions"], self.image_size, sigma=0.0)
        amap = gaussian_blur(amap, self.smoothing_sigma)
        if self.reconstruction_weight != 1:
            amap = self.reconstruction_weight * amap
        if outputs["prototype_distance"] is not None and self.prototype_weight:
            distance = F.interpolate(outputs["prototype_distance"], self.image_size, mode="bilinear", align_corners=False)
            amap = amap + self.prototype_weight * distance
        return amap

    def forward(self, image: torch.Tensor) -> torch.Tensor | SPMambaOutput:
        outputs = self.reconstruct(image)
        return outputs if self.training else self.anomaly_map(outputs)
