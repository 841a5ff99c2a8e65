"""Modality presets: CT, MRI, X-ray and ultrasound images to detector input.

Every preset is a MONAI ``Compose`` of dictionary transforms with plain-typed arguments
(usable from bundle JSON): ``[ReadImaged, ValidateImaged]`` (``load=True``), the modality
transforms below, then :func:`~medad_monai.transforms.common.detector_input_transforms`.
The modality transforms take channel-first images as read by
:class:`~medad_monai.transforms.io.ReadImaged` (DICOM through ``DicomReader``, whose metadata
hold the pixel tags) and leave intensities in [0, 1]:

- ``ct``: modality rescale (Hounsfield units) unless the reader did it, one window (1 channel)
  or several stacked as channels (e.g. brain / subdural / bone).
- ``mri``: colour to grey, optional N4 bias-field correction (ITK), foreground crop, percentile
  scaling computed within the foreground.
- ``xray``: colour to grey, VOI LUT / window from the DICOM tags or bit-depth scaling,
  MONOCHROME1 inversion.
- ``ultrasound``: colour to grey, bit-depth scaling, crop to the scan sector.

Every preset first checks a DICOM image's *Modality* tag (:class:`CheckModalityd`): a CT preset
refuses an MR or RT dose file, whose score would be meaningless, unless told to allow it.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import torch
from monai.config import KeysCollection
from monai.transforms import Compose, CropForegroundd, MapTransform

from medad_monai.transforms.common import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ValidateImaged,
    detector_input_transforms,
)
from medad_monai.transforms.io import ReadImaged, image_source
from medad_monai.transforms.intensity import (
    BitDepthScaled,
    ColorToGrayd,
    CTMultiWindowd,
    CTWindowd,
    InvertMonochrome1d,
    ModalityRescaled,
    N4BiasFieldCorrectiond,
    PercentileScaled,
    RobustNormalized,
    SectorCropd,
    VOIWindowd,
)

__all__ = [
    "DICOM_MODALITIES",
    "MODALITIES",
    "UNSPECIFIED_MODALITIES",
    "CheckModalityd",
    "ct_transforms",
    "modality_preset",
    "mri_transforms",
    "ultrasound_transforms",
    "xray_transforms",
]


#: DICOM *Modality* codes (PS3.3 C.7.3.1.1.1) each preset reads. Files without the tag (NIfTI, PNG)
#: and DICOM files whose tag names no modality (:data:`UNSPECIFIED_MODALITIES`) pass every preset.
DICOM_MODALITIES: dict[str, tuple[str, ...]] = {
    "ct": ("CT",),
    "mri": ("MR",),
    "xray": ("CR", "DX", "RG", "RF", "XA", "MG", "PX", "IO", "DF", "DS"),
    "ultrasound": ("US", "IVUS"),
}
#: *Modality* values that name no modality: absent, ``OT`` (other, e.g. secondary captures).
UNSPECIFIED_MODALITIES = ("", "OT")


class CheckModalityd(MapTransform):
    """Refuse DICOM images whose *Modality* tag (``meta["Modality"]``, recorded by ``DicomReader``)
    is not one the ``modality`` preset reads (:data:`DICOM_MODALITIES`), naming the file and the
    preset that would read it. Images without the tag, or with an unspecific one (``OT``), pass.

    Args:
        keys: keys of images read by :class:`~medad_monai.transforms.ReadImaged`.
        modality: the preset (``"ct"``, ``"mri"``, ``"xray"``, ``"ultrasound"``).
        allow_mismatch: log a warning instead of raising.
        allow_missing_keys: skip keys absent from the data.
    """

    def __init__(
        self, keys: KeysCollection, modality: str, allow_mismatch: bool = False, allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if modality not in DICOM_MODALITIES:
            raise ValueError(f"modality {modality!r} is not one of {tuple(DICOM_MODALITIES)}.")
        self.modality, self.allow_mismatch = modality, allow_mismatch
        self.logger = logging.getLogger(__name__)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            tag = str(getattr(d[key], "meta", {}).get("Modality", "")).strip().upper()
            if tag in UNSPECIFIED_MODALITIES or tag in DICOM_MODALITIES[self.modality]:
                continue
            fits = [name for name, codes in DICOM_MODALITIES.items() if tag in codes]
            advice = f"run it with --modality {fits[0]}" if fits else "no preset reads it"
            message = (
                f"'{key}' from {image_source(d[key])} is a DICOM {tag} image, not one the {self.modality!r} preset "
                f"reads ({', '.join(DICOM_MODALITIES[self.modality])}): {advice}"
            )
            if not self.allow_mismatch:
                raise ValueError(f"{message}; or set allow_modality_mismatch to true to score it anyway.")
            self.logger.warning(f"{message}; scored anyway (allow_modality_mismatch).")
        return d


def _above(img: torch.Tensor, threshold: float) -> torch.Tensor:
    return img > threshold


def ct_transforms(
    image_key: str = "image",
    mask_key: str = "mask",
    window: str | Sequence[float] = "brain",
    windows: Sequence[str | Sequence[float]] | None = None,
) -> list[Callable]:
    """CT to [0, 1]: Hounsfield units (:class:`ModalityRescaled`), then one window (1 channel)
    or, if ``windows`` is given, those windows stacked as channels (:class:`CTMultiWindowd`).
    Intensity only: ``mask_key`` is unused (every builder takes it, see :func:`modality_preset`)."""
    windowing = CTMultiWindowd(image_key, windows) if windows else CTWindowd(image_key, window)
    return [ModalityRescaled(image_key), windowing]


def mri_transforms(
    image_key: str = "image",
    mask_key: str = "mask",
    lower: float = 0.5,
    upper: float = 99.5,
    threshold: float = 0.0,
    n4: bool = False,
    n4_shrink_factor: int = 4,
    n4_iterations: Sequence[int] = (50, 50, 50, 50),
    crop_foreground: bool = True,
    crop_margin: int = 0,
    scaling: str = "range",
) -> list[Callable]:
    """MRI to [0, 1]: grey (:class:`ColorToGrayd`: colour exports of MR images), optional N4
    (:class:`N4BiasFieldCorrectiond`), crop of image and mask to the foreground ``> threshold``
    (``monai.transforms.CropForegroundd``), then the foreground's intensity scaling:

    - ``scaling="range"``: the ``lower`` / ``upper`` percentiles to 0 / 1, clipped outside
      (:class:`RobustNormalized`); for any MRI, skull-stripped or not;
    - ``scaling="median"``: the median to 0.5, unclipped (:class:`PercentileScaled`); for
      skull-stripped brain MRI (the foreground is the brain), where a lesion then changes neither
      the scale of the rest of the slice nor its own brightest part (``lower`` / ``upper`` unused).
    """
    if scaling not in ("range", "median"):
        raise ValueError(f"scaling must be 'range' or 'median', got {scaling!r}.")
    steps: list[Callable] = [ColorToGrayd(image_key)]
    if n4:
        steps.append(N4BiasFieldCorrectiond(image_key, n4_shrink_factor, n4_iterations, threshold))
    if crop_foreground:
        steps.append(
            CropForegroundd(
                [image_key, mask_key],
                source_key=image_key,
                select_fn=functools.partial(_above, threshold=threshold),
                margin=crop_margin,
                allow_missing_keys=True,
            )
        )
    if scaling == "median":
        steps.append(PercentileScaled(image_key, 50.0, 0.5, threshold))
    else:
        steps.append(RobustNormalized(image_key, lower, upper, threshold))
    return steps


def xray_transforms(
    image_key: str = "image",
    mask_key: str = "mask",
    bits_stored: int | None = None,
    prefer_voi_lut: bool = True,
) -> list[Callable]:
    """X-ray to [0, 1]: grey (:class:`ColorToGrayd`), VOI LUT / window / bit depth
    (:class:`VOIWindowd`), MONOCHROME1 inversion (:class:`InvertMonochrome1d`). The aspect-keeping
    resize with padding is the common tail's ``resize_mode="letterbox"``. Intensity only:
    ``mask_key`` is unused."""
    return [
        ColorToGrayd(image_key),
        VOIWindowd(image_key, bits_stored=bits_stored, prefer_lut=prefer_voi_lut),
        InvertMonochrome1d(image_key),
    ]


def ultrasound_transforms(
    image_key: str = "image",
    mask_key: str = "mask",
    bits_stored: int | None = None,
    crop_sector: bool = True,
    sector_threshold: float = 0.01,
) -> list[Callable]:
    """Ultrasound frame to [0, 1]: grey (:class:`ColorToGrayd`), bit depth (:class:`BitDepthScaled`),
    crop of image and mask to the scan sector (:class:`SectorCropd`). Cines are sliced into
    frames first (``VolumeSliceDataset`` over the last axis)."""
    steps: list[Callable] = [ColorToGrayd(image_key), BitDepthScaled(image_key, bits_stored)]
    if crop_sector:
        steps.append(SectorCropd([image_key, mask_key], image_key, sector_threshold, allow_missing_keys=True))
    return steps


_BUILDERS: dict[str, Callable[..., list[Callable]]] = {
    "ct": ct_transforms,
    "mri": mri_transforms,
    "xray": xray_transforms,
    "ultrasound": ultrasound_transforms,
}
MODALITIES = tuple(_BUILDERS)


def modality_preset(
    modality: str,
    image_key: str = "image",
    mask_key: str = "mask",
    spatial_size: Sequence[int] = (256, 256),
    channels: int = 3,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    resize_mode: str = "letterbox",
    load: bool = True,
    spatial_dims: int | Sequence[int] = 2,
    allow_modality_mismatch: bool = False,
    **overrides: Any,
) -> Compose:
    """The full preset of a modality: ``{image: path, mask: path}`` (or loaded 2D images when
    ``load=False``) to detector input ``image (channels, *spatial_size)``, ``mask (1, *spatial_size)``.

    Args:
        modality: one of :data:`MODALITIES` (``"ct"``, ``"mri"``, ``"xray"``, ``"ultrasound"``).
        image_key: key of the image.
        mask_key: key of the lesion mask (may be absent).
        spatial_size: detector input size; ``None`` keeps the native size and skips the
            normalisation, for inferers that resize and normalise themselves (:class:`SliceWiseInferer`).
        channels: detector input channels.
        mean: per-channel normalization mean (ImageNet by default).
        std: per-channel normalization std.
        resize_mode: ``"letterbox"`` (aspect kept, zero padding) or ``"stretch"``.
        load: start with :class:`~medad_monai.transforms.io.ReadImaged`.
        spatial_dims: 2 for images, 3 for volumes (then use ``spatial_size=None``), or both ``(2, 3)``
            (inference through :class:`~medad_monai.inferers.ImageInferer`, which slices 3D inputs).
        allow_modality_mismatch: let DICOM images of another modality through, with a warning
            (:class:`CheckModalityd`).
        overrides: named arguments of the modality's builder (:func:`ct_transforms`,
            :func:`mri_transforms`, :func:`xray_transforms`, :func:`ultrasound_transforms`),
            e.g. ``window="subdural"``, ``n4=True``.
    """
    if modality not in _BUILDERS:
        raise ValueError(f"modality {modality!r} is not one of {MODALITIES}.")
    steps: list[Callable] = []
    if load:
        steps.append(ReadImaged([image_key, mask_key], allow_missing_keys=True))
    steps.append(CheckModalityd(image_key, modality, allow_mismatch=allow_modality_mismatch))
    steps.append(ValidateImaged(image_key, spatial_dims=spatial_dims, mask_key=mask_key))
    steps += _BUILDERS[modality](image_key=image_key, mask_key=mask_key, **overrides)
    tail = detector_input_transforms(image_key, mask_key, spatial_size, channels, mean, std, resize_mode)
    return Compose(steps + list(tail.transforms))
