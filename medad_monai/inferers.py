"""Inferers that run a 2D detector on images and volumes of any size and return maps in the input's geometry.

:class:`ImageInferer` resizes and normalizes 2D images to the network's size and maps the anomaly map
back; 3D inputs (volumes, multi-frame files) go slice by slice. :class:`SliceWiseInferer` is the same
for volumes only. Both can also return the map at the network's
size, where the image score is computed (the size its thresholds were calibrated at). Orientation
conventions for volumes are those of :mod:`medad_monai.data.volumes`.

The map image scores are computed on is the network's pixel map, unless the detector offers
``anomaly_and_score_maps`` (an image-level map of its own, see :mod:`medad_monai.detectors`):
:func:`pixel_and_score_maps` takes both from one pass, and :class:`ScoreMapInferer` returns both for
inputs already at the network's size (training-time validation).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from monai.data import MetaTensor
from monai.inferers import Inferer
from monai.transforms import Resize
from monai.utils import CommonKeys, ImageMetaKey, MetaKeys
from torch import nn
from torch.nn.parallel import DataParallel, DistributedDataParallel

from medad_monai.transforms.common import IMAGENET_MEAN, IMAGENET_STD, RESIZE_MODES, LetterboxResize

__all__ = ["ImageInferer", "ScoreMapInferer", "SliceWiseInferer", "pixel_and_score_maps"]


def _check_map(out: Any, what: str) -> None:
    if not isinstance(out, torch.Tensor) or out.ndim != 4 or out.shape[1] != 1:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"the network must map (B, C, H, W) to (B, 1, H, W){what}, got {shape}.")


def pixel_and_score_maps(network: Callable[..., Any], inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The pixel anomaly map and the map image scores are computed on, from one network pass.

    When the network (unwrapped from ``DataParallel`` / ``DistributedDataParallel``) offers
    ``anomaly_and_score_maps(inputs)``, its two maps (e.g. UMIAD-EGMF's additive pixel map and
    multiplicative image-level map); otherwise ``network(inputs)`` twice over (the same tensor).

    Returns:
        two maps ``(B, 1, H, W)``.
    """
    module = network.module if isinstance(network, (DataParallel, DistributedDataParallel)) else network
    both = getattr(module, "anomaly_and_score_maps", None)
    if both is None:
        pixel = network(inputs)
        _check_map(pixel, "")
        return pixel, pixel
    pixel, score = both(inputs)
    _check_map(pixel, " (pixel map of anomaly_and_score_maps)")
    _check_map(score, " (score map of anomaly_and_score_maps)")
    if score.shape != pixel.shape:
        raise ValueError(f"anomaly_and_score_maps gave maps of shapes {tuple(pixel.shape)} and {tuple(score.shape)}.")
    return pixel, score


class _SliceNetwork(nn.Module):
    """A 2D network on slices of any size: each slice ``(C, h, w)`` is resized to the network
    size with the transforms of the detector-input tail (letterbox or stretch, bilinear,
    anti-aliased) and normalized; the output ``(B, 1, H, W)`` is mapped back to ``(B, 1, h, w)``.
    With ``network_map_key`` the result is ``{"pred": (B, 1, h, w), network_map_key: (B, 1, H, W)}``, the
    latter the map image scores are computed on (:func:`pixel_and_score_maps`)."""

    def __init__(
        self,
        network: Callable[[torch.Tensor], torch.Tensor],
        network_size: Sequence[int],
        resize_mode: str,
        mean: Sequence[float] | None,
        std: Sequence[float] | None,
        network_map_key: str | None = None,
    ) -> None:
        super().__init__()
        self.network = network
        self.network_size = tuple(network_size)
        self.letterbox = LetterboxResize(network_size, anti_aliasing=True) if resize_mode == "letterbox" else None
        self.mean = None if mean is None else torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = None if std is None else torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.network_map_key = network_map_key

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        x = x.as_tensor() if isinstance(x, MetaTensor) else x  # per-slice metadata is not needed here
        shape = tuple(x.shape[2:])
        if self.letterbox is not None:
            x = torch.stack([self.letterbox(s) for s in x])
        else:
            x = torch.stack([Resize(self.network_size, mode="bilinear", anti_aliasing=True)(s) for s in x])
        if self.mean is not None:
            x = (x - self.mean.to(x.device)) / self.std.to(x.device)
        if self.network_map_key is None:
            out = self.network(x)
            _check_map(out, "")
        else:
            out, score_map = pixel_and_score_maps(self.network, x)
        if self.letterbox is not None:
            restored = torch.stack([self.letterbox.restore(o, shape) for o in out])
        else:
            restored = torch.stack([Resize(shape, mode="bilinear")(o) for o in out])
        restored = restored.as_tensor() if isinstance(restored, MetaTensor) else restored
        if self.network_map_key is None:
            return restored
        return {CommonKeys.PRED: restored, self.network_map_key: score_map}


def _as_map(out: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """``out`` ``(B, 1, *spatial)`` with ``inputs``' metadata (affine, source file), marked as having no
    original channel axis: a colour input's ``original_channel_dim`` (-1) would make ``SaveImage``
    write the single-channel map as channel-last data and fail."""
    if not isinstance(inputs, MetaTensor):
        return out.as_tensor() if isinstance(out, MetaTensor) else out
    result = MetaTensor(out.as_tensor() if isinstance(out, MetaTensor) else out)
    result.copy_meta_from(inputs)  # metadata, affine and batch flag of the input
    # in a batch, per-item values are collated into a tensor (what decollate_batch splits again)
    no_channel = torch.full((out.shape[0],), float("nan"), dtype=torch.float64) if result.is_batch else "no_channel"
    result.meta[MetaKeys.ORIGINAL_CHANNEL_DIM] = no_channel
    return result


def _as_network_map(out: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """``out`` at the network's size, with only the source file of ``inputs`` as metadata (for error
    messages): the input's affine does not describe the network's grid."""
    out = out.as_tensor() if isinstance(out, MetaTensor) else out
    if not isinstance(inputs, MetaTensor):
        return out
    result = MetaTensor(out, meta={ImageMetaKey.FILENAME_OR_OBJ: inputs.meta.get(ImageMetaKey.FILENAME_OR_OBJ)})
    result.is_batch = inputs.is_batch
    return result


class ImageInferer(Inferer):
    """Inference of a 2D detector on images (or volumes) of any size, with the anomaly map in the input's geometry.

    ``inputs`` ``(B, C, h, w)`` hold images after the modality transforms at their native size
    (intensities in [0, 1]); each is resized to ``network_size`` and normalized exactly as
    ``detector_input_transforms`` prepares training images, and the network's map is resized back
    to ``(B, 1, h, w)``. Inputs ``(B, C, D0, D1, D2)`` (volumes, multi-frame files) are processed
    slice by slice along ``slice_axis`` in the same way, ``sw_batch_size`` slices per network call,
    into ``(B, 1, D0, D1, D2)``. (MONAI's ``SliceInferer`` is not used: it stitches outputs of another
    size than the slice only when the zoom factors divide evenly, and the network-size map of an
    85 x 103 slice is 64 x 64.) A ``MetaTensor`` input gives a ``MetaTensor`` map with the input's metadata, marked
    single-channel, so ``SaveImaged`` writes it in the input's geometry whatever the input's colour.

    With ``network_map_key`` the result is a dict: ``"pred"`` the map above, ``network_map_key`` the
    network's own map ``(B, 1, *network_size)`` (volumes: ``network_size`` in the two axes other than
    ``slice_axis``), or its image-level map if the detector offers one (:func:`pixel_and_score_maps`).
    Image scores belong on the latter: it is the map validation calibrated the image threshold on,
    whatever the input's size (:class:`~medad_monai.transforms.UnpackOutputd` then ``ImageScored``).

    Args:
        network_size: spatial size the network expects.
        resize_mode: ``"letterbox"`` or ``"stretch"``, as used in training.
        mean: normalization mean per channel, ``None`` if the images are already normalized.
        std: normalization std per channel.
        network_map_key: also return the network-size map under this key.
        slice_axis: spatial axis (0, 1, 2) 3D inputs are sliced along.
        sw_batch_size: slices per network call for 3D inputs.
        device: device of the stacked 3D output; default: the input's.
    """

    def __init__(
        self,
        network_size: Sequence[int] = (256, 256),
        resize_mode: str = "letterbox",
        mean: Sequence[float] | None = IMAGENET_MEAN,
        std: Sequence[float] | None = IMAGENET_STD,
        network_map_key: str | None = None,
        slice_axis: int = 2,
        sw_batch_size: int = 16,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        if resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize_mode {resize_mode!r} is not one of {RESIZE_MODES}.")
        if (mean is None) != (std is None):
            raise ValueError("give both mean and std, or neither.")
        if slice_axis not in (0, 1, 2):
            raise ValueError(f"slice_axis must be 0, 1 or 2, got {slice_axis}.")
        if network_map_key == CommonKeys.PRED:
            raise ValueError(f"network_map_key must differ from {CommonKeys.PRED!r}.")
        self.network_size, self.resize_mode, self.mean, self.std = tuple(network_size), resize_mode, mean, std
        self.network_map_key = network_map_key
        self.slice_axis, self.sw_batch_size, self.device = slice_axis, sw_batch_size, device

    def __call__(self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args: Any, **kwargs: Any):
        """``inputs`` ``(B, C, h, w)`` or ``(B, C, D0, D1, D2)`` -> anomaly map ``(B, 1, *spatial)``
        (or the dict described in the class docstring)."""
        if inputs.ndim not in (4, 5):
            raise ValueError(f"inputs must be (B, C, H, W) or (B, C, D0, D1, D2), got shape {tuple(inputs.shape)}.")
        wrapped = _SliceNetwork(network, self.network_size, self.resize_mode, self.mean, self.std, self.network_map_key)
        out = wrapped(inputs) if inputs.ndim == 4 else self._slice_wise(inputs, wrapped)
        if not isinstance(out, dict):
            return _as_map(out, inputs)
        return {
            CommonKeys.PRED: _as_map(out[CommonKeys.PRED], inputs),
            self.network_map_key: _as_network_map(out[self.network_map_key], inputs),
        }


    def _slice_wise(self, inputs: torch.Tensor, wrapped: _SliceNetwork) -> torch.Tensor | dict[str, torch.Tensor]:
        """``(B, C, D0, D1, D2)`` -> the maps of each slice along ``slice_axis``, stacked back on that axis."""
        axis = self.slice_axis + 2
        volume = inputs.as_tensor() if isinstance(inputs, MetaTensor) else inputs
        batch, depth = volume.shape[0], volume.shape[axis]
        slices = volume.movedim(axis, 1).flatten(0, 1)  # (B * D, C, *two other axes)
        parts = [wrapped(slices[i : i + self.sw_batch_size]) for i in range(0, len(slices), self.sw_batch_size)]

        def stack(maps: list[torch.Tensor]) -> torch.Tensor:
            stacked = torch.cat(maps).to(self.device or inputs.device)  # (B * D, 1, h, w)
            return stacked.unflatten(0, (batch, depth)).movedim(1, axis)

        if isinstance(parts[0], dict):
            return {key: stack([p[key] for p in parts]) for key in parts[0]}
        return stack(parts)


class SliceWiseInferer(ImageInferer):
    """Slice-by-slice inference of a 2D detector on 3D volumes: :class:`ImageInferer` for volumes only.

    ``inputs`` ``(B, C, D0, D1, D2)`` hold volumes after the modality transforms (intensities in
    [0, 1], ``C`` channels as the network expects); each slice along ``spatial_dim`` is resized
    to ``network_size`` and normalized exactly as ``detector_input_transforms`` prepares 2D
    images, the network's anomaly map is resized back, and the slices are stacked into
    ``(B, 1, D0, D1, D2)``. A ``MetaTensor`` input gives a ``MetaTensor``
    output with the input's metadata (affine, spacing), so ``SaveImaged`` writes it in the input's geometry.

    Args:
        network_size: spatial size the network expects.
        spatial_dim: axis slid over (0, 1, 2 for D0, D1, D2).
        sw_batch_size: slices per network call.
        resize_mode: ``"letterbox"`` or ``"stretch"``, as used in training.
        mean: normalization mean per channel, ``None`` if the volume is already normalized.
        std: normalization std per channel.
        device: device of the stacked output; default: the input's.
        network_map_key: also return the network-size map under this key (see :class:`ImageInferer`).
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
        network_map_key: str | None = None,
    ) -> None:
        super().__init__(network_size, resize_mode, mean, std, network_map_key, spatial_dim, sw_batch_size, device)

    def __call__(self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args: Any, **kwargs: Any):
        """``inputs`` ``(B, C, D0, D1, D2)`` -> anomaly map ``(B, 1, D0, D1, D2)``."""
        if inputs.ndim != 5:
            raise ValueError(f"inputs must be (B, C, D0, D1, D2), got shape {tuple(inputs.shape)}.")
        return super().__call__(inputs, network, *args, **kwargs)


class ScoreMapInferer(Inferer):
    """Inference on inputs already at the network's size (training-time validation) that also returns the
    map image scores are computed on.

    Returns ``{"pred": pixel map, network_map_key: score map}``, each ``(B, 1, H, W)``, from one pass
    (:func:`pixel_and_score_maps`): for a detector without an image-level map of its own, both are the
    network's map as MONAI's ``SimpleInferer`` returns it. Post-process with
    :class:`~medad_monai.transforms.UnpackOutputd` and score ``network_map_key`` with ``ImageScored``.

    Args:
        network_map_key: key of the score map (not ``"pred"``).
    """

    def __init__(self, network_map_key: str = "pred_network") -> None:
        super().__init__()
        if network_map_key == CommonKeys.PRED:
            raise ValueError(f"network_map_key must differ from {CommonKeys.PRED!r}.")
        self.network_map_key = network_map_key

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
        """``inputs`` ``(B, C, H, W)`` -> ``{"pred": (B, 1, H, W), network_map_key: (B, 1, H, W)}``."""
        pixel, score = pixel_and_score_maps(network, inputs)
        return {CommonKeys.PRED: pixel, self.network_map_key: score}
