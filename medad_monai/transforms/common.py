"""The common tail of every modality preset (detector input) and the input validation.

Detector input: ``image`` ``(channels, H, W)`` float32 normalized with the encoder's mean/std,
``mask`` ``(1, H, W)`` float32 in {0, 1}.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch
from monai.config import KeysCollection
from monai.transforms import (
    Compose,
    EnsureTyped,
    MapTransform,
    NormalizeIntensityd,
    RepeatChannel,
    Resize,
    Resized,
    SpatialPad,
    Transform,
)
from monai.utils import ensure_tuple, ensure_tuple_rep

from medad_monai.transforms.io import image_source

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "RESIZE_MODES",
    "BinarizeMaskd",
    "EnsureChannelsd",
    "LetterboxResize",
    "LetterboxResized",
    "ValidateImaged",
    "detector_input_transforms",
    "letterbox_shape",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE_MODES = ("letterbox", "stretch")


class ValidateImaged(MapTransform):
    """Reject images a detector cannot use, naming the file (``meta["filename_or_obj"]``).

    Raises ``ValueError`` for a zero-size image, an image with NaN or Inf pixels, a constant
    image (no content, e.g. all zero), or a number of spatial dims not in ``spatial_dims``
    (e.g. a 3D volume or a cine where a 2D image is expected); and, when ``mask_key`` is in the
    data, a mask that is not ``(1, *spatial)`` on the image's grid. Masks get only that shape
    check (an all-zero mask is a valid normal mask).

    Args:
        keys: keys of channel-first images ``(C, *spatial)``.
        spatial_dims: expected number of spatial dims, or the numbers accepted (e.g. ``(2, 3)``).
        mask_key: key of the lesion mask that goes with the images.
        allow_missing_keys: skip keys absent from the data.
    """

    def __init__(
        self,
        keys: KeysCollection,
        spatial_dims: int | Sequence[int] = 2,
        mask_key: str | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.spatial_dims, self.mask_key = tuple(int(n) for n in ensure_tuple(spatial_dims)), mask_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            self.check(key, d[key])
            if self.mask_key is not None and self.mask_key in d:
                self.check_mask(d[self.mask_key], d[key])
        return d

    def check_mask(self, mask: torch.Tensor, img: torch.Tensor) -> None:
        """Raise ``ValueError`` unless ``mask`` is ``(1, *spatial)`` with the spatial shape of ``img``."""
        if tuple(mask.shape) != (1, *img.shape[1:]):
            raise ValueError(
                f"'{self.mask_key}' from {image_source(mask)} has shape {tuple(mask.shape)}, expected "
                f"{(1, *img.shape[1:])} to match the image from {image_source(img)}."
            )

    def check(self, key: Hashable, img: torch.Tensor) -> None:
        """Raise ``ValueError`` if ``img`` (the value of ``key``) is unusable."""
        source = image_source(img)
        shape = tuple(img.shape)
        if img.numel() == 0:
            raise ValueError(f"'{key}' from {source} is empty (zero-size, shape {shape}).")
        if img.ndim - 1 not in self.spatial_dims:
            hint = " (slice volumes and cines with VolumeSliceDataset)" if img.ndim - 1 > max(self.spatial_dims) else ""
            expected = " or ".join(str(n) for n in self.spatial_dims)
            raise ValueError(
                f"'{key}' from {source} has {img.ndim - 1} spatial dims (shape {shape} as (C, *spatial)), "
                f"expected {expected}{hint}."
            )
        finite = torch.isfinite(img)
        if not bool(finite.all()):
            n_nan, n_inf = int(torch.isnan(img).sum()), int(torch.isinf(img).sum())
            raise ValueError(f"'{key}' from {source} has {n_nan} NaN and {n_inf} Inf pixels.")
        if bool((img == img.reshape(-1)[0]).all()):
            raise ValueError(f"'{key}' from {source} is constant (every pixel is {float(img.reshape(-1)[0])}).")


class BinarizeMaskd(MapTransform):
    """Binarize single-channel masks: ``(1, *spatial)`` -> float32 ``mask > threshold``."""

    def __init__(self, keys: KeysCollection, threshold: float = 0.5, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.threshold = threshold

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            mask = d[key]
            if mask.shape[0] != 1:
                raise ValueError(f"'{key}' from {image_source(mask)} has {mask.shape[0]} channels, a mask needs 1.")
            d[key] = (mask > self.threshold).to(torch.float32)
        return d


class EnsureChannelsd(MapTransform):
    """Give images ``channels`` channels: 1 channel is repeated, ``channels`` are kept, others raise."""

    def __init__(self, keys: KeysCollection, channels: int = 3, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.channels = channels
        self.repeat = RepeatChannel(repeats=channels)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            n = d[key].shape[0]
            if n == 1 and self.channels != 1:
                d[key] = self.repeat(d[key])
            elif n != self.channels:
                raise ValueError(
                    f"'{key}' from {image_source(d[key])} has {n} channels, expected 1 or {self.channels}."
                )
        return d


def letterbox_shape(spatial_shape: Sequence[int], spatial_size: Sequence[int]) -> tuple[int, ...]:
    """Largest shape with the aspect ratio of ``spatial_shape`` that fits in ``spatial_size``."""
    if len(spatial_shape) != len(spatial_size):
        raise ValueError(f"spatial_shape {tuple(spatial_shape)} and spatial_size {tuple(spatial_size)} differ in rank.")
    scale = min(t / s for t, s in zip(spatial_size, spatial_shape))
    return tuple(min(t, max(1, round(s * scale))) for s, t in zip(spatial_shape, spatial_size))


class LetterboxResize(Transform):
    """Aspect-preserving resize to fit ``spatial_size``, then symmetric zero padding to it.

    Built on MONAI's ``Resize`` and ``SpatialPad`` (both invertible and recorded in the
    ``MetaTensor``), so spacing and affine follow the image. ``(C, *shape)`` -> ``(C, *spatial_size)``.

    Args:
        spatial_size: output spatial size.
        mode: interpolation mode of ``monai.transforms.Resize``.
        anti_aliasing: Gaussian smoothing before downsampling (never for masks).
    """

    def __init__(self, spatial_size: Sequence[int], mode: str = "bilinear", anti_aliasing: bool = False) -> None:
        self.spatial_size = tuple(int(s) for s in spatial_size)
        self.mode = mode
        self.anti_aliasing = anti_aliasing
        self.pad = SpatialPad(self.spatial_size, method="symmetric")

    def __call__(self, img: torch.Tensor, mode: str | None = None, anti_aliasing: bool | None = None) -> torch.Tensor:
        inner = letterbox_shape(img.shape[1:], self.spatial_size)
        aa = self.anti_aliasing if anti_aliasing is None else anti_aliasing
        resized = Resize(inner, mode=mode or self.mode, anti_aliasing=aa)(img)
        return self.pad(resized)

    def restore(self, img: torch.Tensor, spatial_shape: Sequence[int], mode: str = "bilinear") -> torch.Tensor:
        """Undo ``__call__`` for an output on the letterboxed grid: ``(C, *spatial_size)`` ->
        ``(C, *spatial_shape)`` (crop the padding, resize back)."""
        inner = letterbox_shape(spatial_shape, self.spatial_size)
        # SpatialPad(method="symmetric") puts floor(padding / 2) before the image
        region = tuple(slice((t - s) // 2, (t - s) // 2 + s) for t, s in zip(self.spatial_size, inner))
        return Resize(tuple(spatial_shape), mode=mode)(img[(slice(None), *region)])


class LetterboxResized(MapTransform):
    """Dictionary version of :class:`LetterboxResize`; ``mode`` and ``anti_aliasing`` per key."""

    def __init__(
        self,
        keys: KeysCollection,
        spatial_size: Sequence[int],
        mode: Sequence[str] | str = "bilinear",
        anti_aliasing: Sequence[bool] | bool = False,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.letterbox = LetterboxResize(spatial_size)
        self.mode = ensure_tuple_rep(mode, len(self.keys))
        self.anti_aliasing = ensure_tuple_rep(anti_aliasing, len(self.keys))

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key, mode, anti_aliasing in self.key_iterator(d, self.mode, self.anti_aliasing):
            d[key] = self.letterbox(d[key], mode=mode, anti_aliasing=anti_aliasing)
        return d


def detector_input_transforms(
    image_key: str = "image",
    mask_key: str = "mask",
    spatial_size: Sequence[int] | None = (256, 256),
    channels: int = 3,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    resize_mode: str = "letterbox",
    mask_threshold: float = 0.5,
) -> Compose:
    """Common tail: modality output (intensities in [0, 1], 1 or ``channels`` channels) to
    detector input.

    Steps: mask ``> mask_threshold``; resize image (bilinear, anti-aliased) and mask (nearest) to
    ``spatial_size``, ``"letterbox"`` (aspect kept, zero padding) or ``"stretch"``; image to
    ``channels`` channels; ``(image - mean) / std`` per channel; float32. The mask key may be
    absent (normal images without masks). With ``spatial_size=None`` the image keeps its native
    size and is not normalised: for inference through :class:`~medad_monai.inferers.SliceWiseInferer`
    or :class:`~medad_monai.inferers.ImageInferer`, which do both and map the result back.

    Returns:
        ``Compose``: ``image`` ``(channels, *spatial_size)``, ``mask`` ``(1, *spatial_size)`` in {0, 1}.
    """
    if resize_mode not in RESIZE_MODES:
        raise ValueError(f"resize_mode {resize_mode!r} is not one of {RESIZE_MODES}.")
    mean, std = ensure_tuple(mean), ensure_tuple(std)
    if len(mean) != channels or len(std) != channels:
        raise ValueError(f"mean {mean} and std {std} need one value per channel (channels={channels}).")
    keys = [image_key, mask_key]
    if spatial_size is None:
        # native size: an inferer that resizes and normalises (SliceWiseInferer) takes it from here.
        return Compose(
            [
                BinarizeMaskd(mask_key, threshold=mask_threshold, allow_missing_keys=True),
                EnsureChannelsd(image_key, channels=channels),
                EnsureTyped(keys, dtype=torch.float32, allow_missing_keys=True),
            ]
        )
    resize_args = {"mode": ("bilinear", "nearest"), "anti_aliasing": (True, False), "allow_missing_keys": True}
    resize = (
        LetterboxResized(keys, spatial_size, **resize_args)
        if resize_mode == "letterbox"
        else Resized(keys, spatial_size, **resize_args)
    )
    return Compose(
        [
            BinarizeMaskd(mask_key, threshold=mask_threshold, allow_missing_keys=True),
            resize,
            EnsureChannelsd(image_key, channels=channels),
            NormalizeIntensityd(image_key, subtrahend=mean, divisor=std, channel_wise=True),
            EnsureTyped(keys, dtype=torch.float32, allow_missing_keys=True),
        ]
    )
