"""Inferers that run a 2D detector on images and volumes of any size and return maps in the input's geometry.

:class:`ImageInferer` resizes and normalizes 2D images to the network's size and maps the anomaly map
back; :class:`SliceWiseInferer` extends it to 3D volumes slice by slice through MONAI's ``SliceInferer``.
Orientation conventions for volumes are those of :mod:`medad_monai.data.volumes`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from monai.data import MetaTensor
from monai.inferers import Inferer, SliceInferer
from monai.transforms import Resize
from torch import nn

from medad_monai.transforms.common import IMAGENET_MEAN, IMAGENET_STD, RESIZE_MODES, LetterboxResize

__all__ = ["ImageInferer", "SliceWiseInferer"]


class _SliceNetwork(nn.Module):
    """A 2D network on slices of any size: each slice ``(C, h, w)`` is resized to the network
    size with the transforms of the detector-input tail (letterbox or stretch, bilinear,
    anti-aliased) and normalized; the output ``(B, 1, H, W)`` is mapped back to ``(B, 1, h, w)``."""

    def __init__(
        self,
        network: Callable[[torch.Tensor], torch.Tensor],
        network_size: Sequence[int],
        resize_mode: str,
        mean: Sequence[float] | None,
        std: Sequence[float] | None,
    ) -> None:
        super().__init__()
        self.network = network
        self.network_size = tuple(network_size)
        self.letterbox = LetterboxResize(network_size, anti_aliasing=True) if resize_mode == "letterbox" else None
        self.mean = None if mean is None else torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = None if std is None else torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.as_tensor() if isinstance(x, MetaTensor) else x  # per-slice metadata is not needed here
        shape = tuple(x.shape[2:])
        if self.letterbox is not None:
            x = torch.stack([self.letterbox(s) for s in x])
        else:
            x = torch.stack([Resize(self.network_size, mode="bilinear", anti_aliasing=True)(s) for s in x])
        if self.mean is not None:
            x = (x - self.mean.to(x.device)) / self.std.to(x.device)
        out = self.network(x)
        if out.ndim != 4 or out.shape[1] != 1:
            raise ValueError(f"the network must map (B, C, H, W) to (B, 1, H, W), got {tuple(out.shape)}.")
        if self.letterbox is not None:
            return torch.stack([self.letterbox.restore(o, shape) for o in out])
        return torch.stack([Resize(shape, mode="bilinear")(o) for o in out])


class ImageInferer(Inferer):
    """Inference of a 2D detector on images of any size, with the anomaly map in the input's geometry.

    ``inputs`` ``(B, C, h, w)`` hold images after the modality transforms at their native size
    (intensities in [0, 1]); each is resized to ``network_size`` and normalized exactly as
    ``detector_input_transforms`` prepares training images, and the network's map is resized back
    to ``(B, 1, h, w)``. A ``MetaTensor`` input gives a ``MetaTensor`` output with the input's
    metadata, so ``SaveImaged`` writes the map in the input's geometry. The 2D counterpart of
    :class:`SliceWiseInferer`, which extends it to volumes.

    Args:
        network_size: spatial size the network expects.
        resize_mode: ``"letterbox"`` or ``"stretch"``, as used in training.
        mean: normalization mean per channel, ``None`` if the images are already normalized.
        std: normalization std per channel.
    """

    def __init__(
        self,
        network_size: Sequence[int] = (256, 256),
        resize_mode: str = "letterbox",
        mean: Sequence[float] | None = IMAGENET_MEAN,
        std: Sequence[float] | None = IMAGENET_STD,
    ) -> None:
        super().__init__()
        if resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize_mode {resize_mode!r} is not one of {RESIZE_MODES}.")
        if (mean is None) != (std is None):
            raise ValueError("give both mean and std, or neither.")
        self.network_size, self.resize_mode, self.mean, self.std = tuple(network_size), resize_mode, mean, std

    def __call__(self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args: Any, **kwargs: Any):
        """``inputs`` ``(B, C, h, w)`` -> anomaly map ``(B, 1, h, w)``."""
        if inputs.ndim != 4:
            raise ValueError(f"inputs must be (B, C, H, W), got shape {tuple(inputs.shape)}.")
        wrapped = _SliceNetwork(network, self.network_size, self.resize_mode, self.mean, self.std)
        out = wrapped(inputs)
        if not isinstance(inputs, MetaTensor):
            return out
        result = MetaTensor(out)
        result.copy_meta_from(inputs)  # metadata, affine and batch flag of the input
        return result


class SliceWiseInferer(ImageInferer):
    """Slice-by-slice inference of a 2D detector on 3D volumes, through ``monai.inferers.SliceInferer``.

    ``inputs`` ``(B, C, D0, D1, D2)`` hold volumes after the modality transforms (intensities in
    [0, 1], ``C`` channels as the network expects); each slice along ``spatial_dim`` is resized
    to ``network_size`` and normalized exactly as ``detector_input_transforms`` prepares 2D
    images, the network's anomaly map is resized back, and the slices are stacked into
    ``(B, 1, D0, D1, D2)``. A ``MetaTensor`` input gives a ``MetaTensor`` output with the
    input's metadata (affine, spacing), so ``SaveImaged`` writes it in the input's geometry.

    Args:
        network_size: spatial size the network expects.
        spatial_dim: axis slid over (0, 1, 2 for D0, D1, D2).
        sw_batch_size: slices per network call.
        resize_mode: ``"letterbox"`` or ``"stretch"``, as used in training.
        mean: normalization mean per channel, ``None`` if the volume is already normalized.
        std: normalization std per channel.
        device: device for the stitched output (``SliceInferer``'s ``device``); default: the input's.
    """

    def __init__(
        self,
        network_size: Sequence[int] = (256, 256),
        spatial_dim: int = 2,
        sw_batch_size: int = 16,
        resize_mode: str = "letterbox",
        mean: Sequence[float] | None = IMAGENET_MEAN,
        std: Sequence[float] | None = IMAGENET_STD,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(network_size, resize_mode, mean, std)
        # roi (-1, -1): each window is one whole slice, so every voxel is predicted exactly once
        self.slicer = SliceInferer(
            roi_size=(-1, -1), spatial_dim=spatial_dim, sw_batch_size=sw_batch_size, overlap=0.0, device=device
        )

    def __call__(self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args: Any, **kwargs: Any):
        """``inputs`` ``(B, C, D0, D1, D2)`` -> anomaly map ``(B, 1, D0, D1, D2)``."""
        if inputs.ndim != 5:
            raise ValueError(f"inputs must be (B, C, D0, D1, D2), got shape {tuple(inputs.shape)}.")
        wrapped = _SliceNetwork(network, self.network_size, self.resize_mode, self.mean, self.std)
        return self.slicer(inputs, wrapped, *args, **kwargs)

