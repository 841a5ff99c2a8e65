"""Intensity transforms of the modality presets: CT windows, MRI bias field and robust scaling,
DICOM VOI windows, bit depth, MONOCHROME1 inversion, colour to grey and ultrasound sector crop.

All are MONAI dictionary transforms on channel-first images as read by
:class:`~medad_monai.transforms.io.ReadImaged`; the presets in :mod:`medad_monai.transforms.modality`
chain them.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import pydicom
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, ScaleIntensityRange, SpatialCrop
from monai.transforms.utils import generate_spatial_bounding_box
from monai.transforms.utils_pytorch_numpy_unification import percentile
from monai.utils import optional_import
from pydicom.pixels import apply_voi
from scipy import ndimage

from medad_monai.transforms.io import image_source

itk, _ = optional_import("itk")

__all__ = [
    "CT_WINDOWS",
    "BitDepthScaled",
    "CTMultiWindowd",
    "CTWindowd",
    "ColorToGrayd",
    "InvertMonochrome1d",
    "ModalityRescaled",
    "N4BiasFieldCorrectiond",
    "PercentileScaled",
    "RobustNormalized",
    "SectorCropd",
    "VOIWindowd",
    "n4_bias_field_correction",
    "resolve_window",
    "scale_bit_depth",
    "sector_mask",
    "stored_value_range",
]

# (level, width) in Hounsfield units. Source: Radiopaedia, "Windowing (CT)"
# (https://radiopaedia.org/articles/windowing-ct): brain W:80 L:40; subdural W:130-300 L:50-100
# (the midpoints, W:215 L:75, are taken); stroke W:8 L:32 or W:40 L:40 (the latter is taken);
# lungs W:1500 L:-600; soft tissues W:350-400 L:20-60 (abdomen W:400 L:50 is taken); bones
# W:1800 L:400.
CT_WINDOWS: dict[str, tuple[float, float]] = {
    "brain": (40.0, 80.0),
    "subdural": (75.0, 215.0),
    "stroke": (40.0, 40.0),
    "lung": (-600.0, 1500.0),
    "abdomen": (50.0, 400.0),
    "bone": (400.0, 1800.0),
}

# bits per sample of PIL image modes (PILReader records the mode in meta["mode"])
_PIL_MODE_BITS = {"1": 1, "L": 8, "LA": 8, "P": 8, "RGB": 8, "RGBA": 8, "I;16": 16, "I;16B": 16, "I;16L": 16}

# ITU-R BT.601 luma, the Y row of DICOM's RGB -> YBR_FULL (PS3.3 C.7.6.3.1.2) as used by
# pydicom.pixels.convert_color_space; applied here without its 8-bit rounding.
_LUMA = (0.299, 0.587, 0.114)


def resolve_window(window: str | Sequence[float]) -> tuple[float, float]:
    """``(level, width)`` of a named CT window (see :data:`CT_WINDOWS`) or of a given pair."""
    if isinstance(window, str):
        if window not in CT_WINDOWS:
            raise ValueError(f"window {window!r} is not one of {sorted(CT_WINDOWS)}; or give (level, width).")
        return CT_WINDOWS[window]
    if len(window) != 2 or not window[1] > 0:
        raise ValueError(f"window {tuple(window)} must be (level, width) with width > 0.")
    return float(window[0]), float(window[1])


def _window_scale(window: str | Sequence[float]) -> ScaleIntensityRange:
    """``[level - width/2, level + width/2]`` -> [0, 1], clipped."""
    level, width = resolve_window(window)
    return ScaleIntensityRange(level - width / 2, level + width / 2, 0.0, 1.0, clip=True)


class ModalityRescaled(MapTransform):
    """Apply the DICOM modality rescale (``x * RescaleSlope + RescaleIntercept``: Hounsfield units
    for CT) only where the reader did not: ``meta["rescale_applied"]`` is ``False`` (a
    ``DicomReader(rescale=False)`` image). Images already rescaled (``DicomReader`` default,
    ``ITKReader``) or not DICOM are returned unchanged, so the rescale is never applied twice.
    """

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            if img.meta.get("rescale_applied") is False:
                img = img.to(torch.float32) * float(img.meta["RescaleSlope"]) + float(img.meta["RescaleIntercept"])
                img.meta["rescale_applied"] = True
                d[key] = img
        return d


def _check_hounsfield(key: Hashable, img: torch.Tensor) -> None:
    """CT windows map one channel of Hounsfield units: refuse colour images, naming the file."""
    if img.shape[0] != 1:
        raise ValueError(
            f"'{key}' from {image_source(img)} has {img.shape[0]} channels (a colour image): CT windows need one "
            "channel of Hounsfield units, as CT DICOM and NIfTI files hold; a colour export is not CT data."
        )


class CTWindowd(MapTransform):
    """Clip Hounsfield units to a window ``[level - width/2, level + width/2]`` and scale to [0, 1]
    (``monai.transforms.ScaleIntensityRange``). Shape unchanged.

    Args:
        keys: keys of CT images in HU.
        window: a name of :data:`CT_WINDOWS` or ``(level, width)``.
        allow_missing_keys: skip keys absent from the data.
    """

    def __init__(
        self, keys: KeysCollection, window: str | Sequence[float] = "brain", allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.scale = _window_scale(window)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            _check_hounsfield(key, d[key])
            d[key] = self.scale(d[key])
        return d


class CTMultiWindowd(MapTransform):
    """Stack several CT windows as channels: ``(1, *spatial)`` HU -> ``(len(windows), *spatial)``
    in [0, 1], one :class:`CTWindowd` window per channel (default brain / subdural / bone).
    """

    def __init__(
        self,
        keys: KeysCollection,
        windows: Sequence[str | Sequence[float]] = ("brain", "subdural", "bone"),
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if len(windows) == 0:
            raise ValueError("windows must name at least one window.")
        self.scales = [_window_scale(w) for w in windows]

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            _check_hounsfield(key, img)
            d[key] = torch.cat([scale(img) for scale in self.scales], dim=0)
        return d


class _ForegroundScaled(MapTransform):
    """Base of the intensity scalings computed per channel from its foreground (pixels ``> threshold``).

    Subclasses set ``threshold`` and implement :meth:`scale_channel`; an image with a channel
    without foreground is refused with an error naming the file. Shape unchanged, float32.
    """

    threshold: float

    def scale_channel(self, channel: torch.Tensor, foreground: torch.Tensor, where: str) -> torch.Tensor:
        """``channel`` (1, *spatial) scaled, from its ``foreground`` pixels; ``where`` names the
        key, file and channel for error messages."""
        raise NotImplementedError

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key].to(torch.float32)
            channels = []
            for c, channel in enumerate(img):
                where = f"'{key}' from {image_source(img)}: channel {c}"
                foreground = channel[channel > self.threshold]
                if foreground.numel() == 0:
                    raise ValueError(f"{where} has no pixel > threshold {self.threshold}.")
                channels.append(self.scale_channel(channel[None], foreground, where))
            d[key] = torch.cat(channels, dim=0)
        return d


class RobustNormalized(_ForegroundScaled):
    """Percentile scaling computed within the foreground, per channel: the ``lower`` / ``upper``
    percentiles of the pixels ``> threshold`` map to 0 / 1, values outside are clipped.

    MONAI's ``ScaleIntensityRangePercentilesd`` takes percentiles over the whole image, where
    the MRI background would dominate; this computes them on the foreground only (with MONAI's
    ``percentile``) and scales with ``ScaleIntensityRange``. Shape unchanged.

    Args:
        keys: keys of images.
        lower: lower percentile in [0, 100).
        upper: upper percentile in (lower, 100].
        threshold: foreground is ``value > threshold``.
        allow_missing_keys: skip keys absent from the data.
    """

    def __init__(
        self,
        keys: KeysCollection,
        lower: float = 0.5,
        upper: float = 99.5,
        threshold: float = 0.0,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if not 0.0 <= lower < upper <= 100.0:
            raise ValueError(f"percentiles lower={lower}, upper={upper} need 0 <= lower < upper <= 100.")
        self.lower, self.upper, self.threshold = lower, upper, threshold

    def scale_channel(self, channel: torch.Tensor, foreground: torch.Tensor, where: str) -> torch.Tensor:
        lo, hi = (float(percentile(foreground, q)) for q in (self.lower, self.upper))
        if hi <= lo:
            raise ValueError(f"{where} foreground percentiles are equal ({lo}).")
        return ScaleIntensityRange(lo, hi, 0.0, 1.0, clip=True)(channel)


class PercentileScaled(_ForegroundScaled):
    """Scale each channel so that the ``percentile``-th percentile of its foreground (pixels
    ``> threshold``) becomes ``target``; nothing is clipped and the background's zero stays zero.

    A lesion-robust alternative to :class:`RobustNormalized` for skull-stripped MRI: a bright
    lesion covering less than half of the brain moves neither the median nor anything else, where
    a 99.5th percentile set by the lesion darkens the rest of the slice and clips the lesion's
    brightest part. MONAI has no such transform (``ScaleIntensityRangePercentiles`` takes the
    whole image and maps two percentiles, ``NormalizeIntensity(nonzero=True)`` uses the mean and
    standard deviation, which the lesion moves). Shape unchanged.

    Args:
        keys: keys of images.
        percentile: the reference percentile of the foreground, in (0, 100].
        target: the value the reference is scaled to, > 0.
        threshold: foreground is ``value > threshold``.
        allow_missing_keys: skip keys absent from the data.
    """

    def __init__(
        self,
        keys: KeysCollection,
        percentile: float = 50.0,
        target: float = 0.5,
        threshold: float = 0.0,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if not 0.0 < percentile <= 100.0:
            raise ValueError(f"percentile={percentile} must be in (0, 100].")
        if target <= 0.0:
            raise ValueError(f"target={target} must be > 0.")
        self.percentile, self.target, self.threshold = percentile, target, threshold

    def scale_channel(self, channel: torch.Tensor, foreground: torch.Tensor, where: str) -> torch.Tensor:
        reference = float(percentile(foreground, self.percentile))
        if reference <= 0.0:
            raise ValueError(
                f"{where} has its foreground {self.percentile}th percentile at {reference}, not > 0: "
                "set a threshold that leaves the background out."
            )
        return channel * (self.target / reference)


def n4_bias_field_correction(
    image: np.ndarray,
    mask: np.ndarray,
    spacing: Sequence[float],
    shrink_factor: int = 4,
    iterations: Sequence[int] = (50, 50, 50, 50),
) -> np.ndarray:
    """N4 bias-field correction of one 2D/3D channel with ITK.

    N4 (``itk.N4BiasFieldCorrectionImageFilter``) runs on the image and mask shrunk by
    ``shrink_factor`` (``itk.shrink_image_filter``); its B-spline log bias field is then
    reconstructed at full resolution (``ReconstructBiasField`` over the full-resolution input)
    and divided out, as in ITK's N4 example.

    Args:
        image: ``(*spatial)`` intensities, positive inside ``mask``.
        mask: ``(*spatial)`` bool foreground where the field is fitted.
        spacing: pixel spacing per axis of ``image``.
        shrink_factor: shrink factor per axis for the fit (speed).
        iterations: maximum iterations per fitting level (one level per entry).

    Returns:
        ``(*spatial)`` float32 corrected image.
    """
    itk_image = itk.image_from_array(np.ascontiguousarray(image, dtype=np.float32))
    itk_image.SetSpacing([float(s) for s in reversed(spacing)])  # ITK orders axes x, y(, z)
    itk_mask = itk.image_from_array(np.ascontiguousarray(mask, dtype=np.uint8))
    itk_mask.CopyInformation(itk_image)
    factors = [int(shrink_factor)] * image.ndim
    n4 = itk.N4BiasFieldCorrectionImageFilter.New(
        itk.shrink_image_filter(itk_image, shrink_factors=factors),
        mask_image=itk.shrink_image_filter(itk_mask, shrink_factors=factors),
    )
    n4.SetMaximumNumberOfIterations([int(i) for i in iterations])
    n4.SetNumberOfFittingLevels(len(iterations))
    n4.Update()
    n4.SetInput(itk_image)  # ReconstructBiasField samples the field on the input's grid
    log_bias = itk.array_from_image(n4.ReconstructBiasField(n4.GetLogBiasFieldControlPointLattice()))
    return (image / np.exp(log_bias)).astype(np.float32)


class N4BiasFieldCorrectiond(MapTransform):
    """N4 bias-field correction per channel (:func:`n4_bias_field_correction`), fitted on the
    foreground ``value > threshold``. ``(C, *spatial)`` -> same shape, float32.

    Args:
        keys: keys of MR images (2D or 3D), non-negative.
        shrink_factor: shrink factor per axis for the fit; larger is faster.
        iterations: maximum iterations per fitting level.
        threshold: foreground is ``value > threshold`` (>= 0: N4 works on log intensities).
        allow_missing_keys: skip keys absent from the data.
    """

    def __init__(
        self,
        keys: KeysCollection,
        shrink_factor: int = 4,
        iterations: Sequence[int] = (50, 50, 50, 50),
        threshold: float = 0.0,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if shrink_factor < 1:
            raise ValueError(f"shrink_factor must be >= 1, got {shrink_factor}.")
        if threshold < 0:
            raise ValueError(f"threshold must be >= 0 (N4 fits log intensities), got {threshold}.")
        self.shrink_factor, self.iterations, self.threshold = shrink_factor, tuple(iterations), threshold

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            array = img.detach().cpu().numpy().astype(np.float32)
            spacing = [float(s) for s in img.pixdim] if hasattr(img, "pixdim") else [1.0] * (img.ndim - 1)
            out = np.empty_like(array)
            for c, channel in enumerate(array):
                mask = channel > self.threshold
                if not mask.any():
                    raise ValueError(f"'{key}' from {image_source(img)}: channel {c} has no pixel > {self.threshold}.")
                try:
                    out[c] = n4_bias_field_correction(channel, mask, spacing, self.shrink_factor, self.iterations)
                except RuntimeError as err:
                    raise ValueError(f"'{key}' from {image_source(img)}: N4 failed: {err}") from err
            d[key] = _with_array(img, out)
        return d


def _with_array(img: torch.Tensor, array: np.ndarray) -> torch.Tensor:
    """``img`` as float32 with its values replaced by ``array`` (a ``MetaTensor`` keeps its metadata)."""
    out = img.clone().to(torch.float32)
    out.copy_(torch.as_tensor(array))
    return out


def stored_value_range(meta: Mapping[str, Any], bits_stored: int | None = None) -> tuple[float, float]:
    """Value range an image's stored bit depth allows, in the units of its pixel array.

    The bit depth comes from the DICOM tags ``BitsStored`` / ``PixelRepresentation`` (mapped
    through the modality rescale when ``rescale_applied``), else from the PIL mode
    (``meta["mode"]``), else from ``bits_stored`` (unsigned). ``ValueError`` if none is known.
    """
    bits = int(meta.get("BitsStored", 0) or 0)
    if bits > 0:
        signed = int(meta.get("PixelRepresentation", 0)) == 1
        lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
        if meta.get("rescale_applied"):
            slope, intercept = float(meta["RescaleSlope"]), float(meta["RescaleIntercept"])
            lo, hi = sorted((lo * slope + intercept, hi * slope + intercept))
        return float(lo), float(hi)
    mode_bits = _PIL_MODE_BITS.get(str(meta.get("mode", "")))
    bits = mode_bits or bits_stored or 0
    if bits <= 0:
        raise ValueError(
            f"{meta.get('filename_or_obj', 'image')}: bit depth unknown (no BitsStored tag, no 8/16-bit PIL mode); "
            "give bits_stored."
        )
    return 0.0, float(2**bits - 1)


def scale_bit_depth(img: torch.Tensor, bits_stored: int | None = None) -> torch.Tensor:
    """``img`` scaled from its stored value range (:func:`stored_value_range` of ``img.meta``) to
    [0, 1]; values outside the range raise ``ValueError`` naming the file."""
    lo, hi = stored_value_range(getattr(img, "meta", {}), bits_stored)
    vmin, vmax = float(img.min()), float(img.max())
    # the range as the image's dtype holds it: 2**32 - 1 is 2**32 in float32
    lo_held, hi_held = (float(torch.tensor(v, dtype=img.dtype)) for v in (lo, hi))
    if vmin < lo_held or vmax > hi_held:
        raise ValueError(f"{image_source(img)}: values [{vmin}, {vmax}] exceed the stored range [{lo}, {hi}].")
    return (img.to(torch.float32) - lo) / (hi - lo)


class BitDepthScaled(MapTransform):
    """Scale the stored value range (:func:`stored_value_range`) to [0, 1]: 12-bit data by
    ``1/4095``, 8-bit by ``1/255``, whatever the image content. Values outside the range raise
    ``ValueError`` (a wrong ``bits_stored``), nothing is clipped. Shape unchanged.

    Args:
        keys: keys of images.
        bits_stored: bit depth for images whose metadata record none (e.g. NIfTI).
        allow_missing_keys: skip keys absent from the data.
    """

    def __init__(self, keys: KeysCollection, bits_stored: int | None = None, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.bits_stored = bits_stored

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = scale_bit_depth(d[key], self.bits_stored)
        return d


def _voi_window(img: torch.Tensor, center: float, width: float, function: str) -> torch.Tensor:
    """DICOM VOI windowing (PS3.3 C.11.2.1.2 / C.11.2.1.3) with output range [0, 1]; the same
    mapping as ``pydicom.pixels.apply_windowing`` up to its output range."""
    function = function.upper()
    if function == "SIGMOID":
        if width <= 0:
            raise ValueError(f"SIGMOID window width must be > 0, got {width}.")
        return torch.sigmoid(4.0 * (img - center) / width)
    if function == "LINEAR":
        if width < 1:
            raise ValueError(f"LINEAR window width must be >= 1, got {width}.")
        center, width = center - 0.5, width - 1.0
    elif function == "LINEAR_EXACT":
        if width <= 0:
            raise ValueError(f"LINEAR_EXACT window width must be > 0, got {width}.")
    else:
        raise ValueError(f"VOI LUT function {function!r} is not LINEAR, LINEAR_EXACT or SIGMOID.")
    lo = center - width / 2
    if width == 0:  # LINEAR with width 1: a step at the center
        return (img > lo).to(torch.float32)
    return ((img - lo) / width).clamp(0.0, 1.0)


class VOIWindowd(MapTransform):
    """Grey-level presentation of X-rays in [0, 1] from the file's VOI module.

    In the order of ``pydicom.pixels.apply_voi_lut``: the *VOI LUT Sequence* if present
    (``meta["has_voi_lut"]``; the header is re-read from ``meta["filename_or_obj"]`` and the
    table applied with ``pydicom.pixels.apply_voi``, output divided by its nominal maximum),
    else *Window Center/Width* with the *VOI LUT Function* (:func:`_voi_window`), else
    :class:`BitDepthScaled`. The VOI module applies to modality values, so DICOM images must be
    rescaled first (``meta["rescale_applied"]``). MONOCHROME1 is not inverted here (see
    :class:`InvertMonochrome1d`). Shape unchanged.

    Args:
        keys: keys of X-ray images.
        bits_stored: bit depth for images without VOI tags whose metadata record none.
        prefer_lut: with both a VOI LUT and a window, use the LUT (as pydicom does).
        allow_missing_keys: skip keys absent from the data.
    """

    def __init__(
        self,
        keys: KeysCollection,
        bits_stored: int | None = None,
        prefer_lut: bool = True,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.bits_stored, self.prefer_lut = bits_stored, prefer_lut

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            meta = img.meta
            if meta.get("rescale_applied") is False:
                raise ValueError(f"'{key}' from {image_source(img)} holds stored values: apply ModalityRescaled first.")
            has_window = np.isfinite(meta.get("WindowCenter", np.nan)) and np.isfinite(meta.get("WindowWidth", np.nan))
            if meta.get("has_voi_lut") and (self.prefer_lut or not has_window):
                d[key] = self._apply_lut(img)
            elif has_window:
                center, width = float(meta["WindowCenter"]), float(meta["WindowWidth"])
                d[key] = _voi_window(img.to(torch.float32), center, width, str(meta.get("VOILUTFunction", "LINEAR")))
            else:
                d[key] = scale_bit_depth(img, self.bits_stored)
        return d

    @staticmethod
    def _apply_lut(img: torch.Tensor) -> torch.Tensor:
        ds = pydicom.dcmread(image_source(img), stop_before_pixels=True)
        # the LUT is indexed by integer modality values; floor matches pydicom's implicit cast
        stored = np.floor(img.detach().cpu().numpy()).astype(np.int64)
        out = apply_voi(stored, ds).astype(np.float32) / float(2 ** int(ds.VOILUTSequence[0].LUTDescriptor[2]) - 1)
        return _with_array(img, out)


class InvertMonochrome1d(MapTransform):
    """Invert MONOCHROME1 images (``meta["PhotometricInterpretation"]``, minimum = white) to the
    MONOCHROME2 convention: ``x -> 1 - x`` on VOI output in [0, 1] (after :class:`VOIWindowd`), and
    record ``PhotometricInterpretation = "MONOCHROME2"`` so it never inverts twice. Other images,
    and ITKReader images (GDCM inverts while reading and records no such key), pass unchanged.
    """

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            if img.meta.get("PhotometricInterpretation") != "MONOCHROME1":
                continue
            if float(img.min()) < 0.0 or float(img.max()) > 1.0:
                raise ValueError(f"'{key}' from {image_source(img)}: MONOCHROME1 inversion needs values in [0, 1].")
            img = 1.0 - img
            img.meta["PhotometricInterpretation"] = "MONOCHROME2"
            d[key] = img
        return d


class ColorToGrayd(MapTransform):
    """RGB to grey (luma ``0.299 R + 0.587 G + 0.114 B``, the Y of DICOM's YBR_FULL):
    ``(3, *spatial)`` -> ``(1, *spatial)``, value scale kept. Grey ``(1, *spatial)`` images pass
    unchanged; other channel counts raise. YBR and palette DICOM data arrive as RGB from
    ``DicomReader``.
    """

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            if img.shape[0] == 1:
                continue
            if img.shape[0] != 3:
                raise ValueError(f"'{key}' from {image_source(img)} has {img.shape[0]} channels, expected 1 or 3.")
            luma = torch.tensor(_LUMA, dtype=torch.float32, device=img.device).view(3, *([1] * (img.ndim - 1)))
            grey = (img.to(torch.float32) * luma).sum(dim=0, keepdim=True)
            if hasattr(grey, "meta"):
                grey.meta.update({"PhotometricInterpretation": "MONOCHROME2", "SamplesPerPixel": 1})
            d[key] = grey
        return d


def sector_mask(image: torch.Tensor | np.ndarray, threshold: float) -> np.ndarray:
    """The scan sector of an ultrasound frame: the largest connected region of pixels
    ``> threshold`` (any channel; ``scipy.ndimage.label``), holes filled
    (``scipy.ndimage.binary_fill_holes``). Burned-in text and markers apart from it are left out.

    Args:
        image: ``(C, *spatial)``.
        threshold: pixels above it are image content.

    Returns:
        ``(*spatial)`` bool.
    """
    array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    labels, n = ndimage.label((array > threshold).any(axis=0))
    if n == 0:
        raise ValueError(f"no pixel above threshold {threshold}: no scan sector.")
    largest = int(np.argmax(np.bincount(labels.ravel())[1:])) + 1
    return ndimage.binary_fill_holes(labels == largest)


class SectorCropd(MapTransform):
    """Crop to the bounding box of the ultrasound scan sector (:func:`sector_mask` of
    ``source_key``) and zero everything outside the sector, for all ``keys`` (image and mask
    alike). Uses ``monai.transforms.SpatialCrop``, so the affine follows.

    Args:
        keys: keys to crop (image and mask).
        source_key: the image the sector is found in.
        threshold: content threshold (in the image's units: 0.01 suits images scaled to [0, 1],
            above JPEG noise in the black border).
        allow_missing_keys: skip keys absent from the data.
    """

    def __init__(
        self,
        keys: KeysCollection,
        source_key: str = "image",
        threshold: float = 0.01,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.source_key, self.threshold = source_key, threshold

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        source = d[self.source_key]
        try:
            sector = sector_mask(source, self.threshold)
        except ValueError as err:
            raise ValueError(f"'{self.source_key}' from {image_source(source)}: {err}") from err
        start, end = generate_spatial_bounding_box(sector[None])
        crop = SpatialCrop(roi_start=start, roi_end=end)
        inside = torch.as_tensor(sector[tuple(slice(s, e) for s, e in zip(start, end))][None], dtype=torch.float32)
        for key in self.key_iterator(d):
            d[key] = crop(d[key]) * inside.to(d[key].device)
        return d


