"""Frozen multi-scale ResNet feature encoder built on MONAI's ResNet.

With ``spatial_dims=2, conv1_t_size=7, conv1_t_stride=2, bias_downsample=False``
MONAI's ``resnet18`` / ``resnet34`` have the same state-dict keys, shapes and
forward computation as torchvision's, so ImageNet checkpoints saved in
torchvision format load without torchvision installed.
"""

from __future__ import annotations

import os
import urllib.error
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import torch
from monai.networks.nets import resnet18, resnet34
from torch import nn

__all__ = ["ResNetFeatureEncoder", "load_encoder_state_dict", "ENCODER_CHANNELS"]

_RESNETS = {18: resnet18, 34: resnet34}
#: Output channels of ``layer1`` .. ``layer4`` for the supported (basic-block) ResNets.
ENCODER_CHANNELS = (64, 128, 256, 512)


def load_encoder_state_dict(weights: str | os.PathLike) -> Mapping[str, torch.Tensor]:
    """Read a torchvision-format ResNet state dict from a local file or an explicit URL.

    Local files are read with ``torch.load(weights_only=True)``. A URL is only
    fetched because the caller named it (``torch.hub.load_state_dict_from_url``,
    cached in the torch hub directory); when the machine is offline the error
    says how to supply a local file instead. Checkpoints that wrap the weights
    under ``"state_dict"`` or ``"model"`` are unwrapped.
    """
    text = os.fspath(weights)
    if text.startswith(("http://", "https://")):
        try:
            state = torch.hub.load_state_dict_from_url(text, map_location="cpu", weights_only=True, progress=False)
        except (urllib.error.URLError, OSError) as err:
            raise RuntimeError(
                f"could not download encoder weights from {text!r} ({err}). On an offline machine, download the "
                "file elsewhere, copy it here and set the encoder weights to its local path."
            ) from err
    else:
        path = Path(text).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"encoder weights file not found: {path}")
        state = torch.load(path, map_location="cpu", weights_only=True)
    for wrapper in ("state_dict", "model"):
        if isinstance(state, Mapping) and wrapper in state and isinstance(state[wrapper], Mapping):
            state = state[wrapper]
    if not isinstance(state, Mapping):
        raise ValueError(f"encoder weights {text!r} do not contain a state dict (got {type(state).__name__}).")
    return state


class ResNetFeatureEncoder(nn.Module):
    """Multi-scale features of a (by default frozen) ResNet18/34.

    Args:
        depth: 18 or 34.
        out_stages: which residual stages to return, 1-based (``layer1`` = 1, stride 4).
        in_channels: input channels (3 for ImageNet weights).
        weights: ``None`` (random initialisation, seeded by the caller), a local
            torchvision-format checkpoint path, or an explicit ``http(s)`` URL.
        frozen: freeze all parameters and keep batch-norm statistics fixed in training.

    Input ``(B, in_channels, H, W)``; output a list with one tensor per stage in
    ``out_stages``: stage ``s`` has shape ``(B, ENCODER_CHANNELS[s - 1], H / 2**(s + 1), W / 2**(s + 1))``.
    """

    def __init__(
        self,
        depth: int = 34,
        out_stages: Sequence[int] = (1, 2, 3),
        in_channels: int = 3,
        weights: str | os.PathLike | None = None,
        frozen: bool = True,
    ) -> None:
        super().__init__()
        if depth not in _RESNETS:
            raise ValueError(f"depth must be one of {sorted(_RESNETS)}, got {depth}.")
        stages = tuple(int(s) for s in out_stages)
        if not stages or sorted(set(stages)) != list(stages) or not set(stages) <= {1, 2, 3, 4}:
            raise ValueError(f"out_stages must be increasing stage numbers within 1..4, got {tuple(out_stages)}.")
        resnet = _RESNETS[depth](
            spatial_dims=2,
            n_input_channels=in_channels,
            conv1_t_size=7,
            conv1_t_stride=2,
            bias_downsample=False,
            num_classes=1000,
        )
        if weights is not None:
            state = load_encoder_state_dict(weights)
            missing, unexpected = resnet.load_state_dict(state, strict=False)
            if missing or unexpected:
                raise ValueError(
                    f"encoder weights {os.fspath(weights)!r} do not match resnet{depth}: "
                    f"missing keys {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                    f"unexpected keys {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}."
                )
        self.out_stages = stages
        self.out_channels = tuple(ENCODER_CHANNELS[s - 1] for s in stages)
        self.stem = nn.Sequential(resnet.conv1, resnet.bn1, resnet.act, resnet.maxpool)
        # stages beyond the last requested one are dropped: they would only cost memory.
        self.layers = nn.ModuleList(getattr(resnet, f"layer{s}") for s in range(1, stages[-1] + 1))
        self.frozen = frozen
        # persistent flag: checkpoints remember whether the batch-norm statistics were calibrated.
        self.register_buffer("bn_calibrated", torch.tensor(weights is not None))
        if frozen:
            self.requires_grad_(False)
            self.eval()

    @torch.no_grad()
    def calibrate_batch_norm(self, images: Iterable[torch.Tensor]) -> None:
        """Set every batch-norm layer's running statistics to the mean/variance over ``images``.

        Without pretrained weights (none can be downloaded on an offline machine)
        a randomly initialised ResNet's activations grow with depth (``layer3``
        is ~40x ``layer1`` for default initialisation), so a reconstruction loss
        is dominated by the deepest scale. Estimating the statistics on normal
        training images standardises every stage; it uses training data only and
        is a no-op for users who load pretrained weights (they skip it).

        Args:
            images: batches ``(B, C, H, W)`` of normal training images.
        """
        norms = [m for m in self.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        saved = [(m, m.momentum) for m in norms]
        was_training = self.training
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative moving average: exact mean over all batches
        nn.Module.train(self, True)
        seen = 0
        try:
            for batch in images:
                self.forward(batch.to(self.bn_calibrated.device))
                seen += batch.shape[0]
        finally:
            for m, momentum in saved:
                m.momentum = momentum
            self.train(was_training)
        if seen == 0:
            raise ValueError("calibrate_batch_norm needs at least one batch of images, got none.")
        self.bn_calibrated.fill_(True)

    def train(self, mode: bool = True) -> ResNetFeatureEncoder:
        """Keep a frozen encoder in eval mode so its batch-norm statistics never change."""
        return super().train(mode and not self.frozen)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        x = self.stem(x)
        for stage, layer in enumerate(self.layers, start=1):
            x = layer(x)
            if stage in self.out_stages:
                features.append(x)
        return features
