"""Reading: a DICOM reader that records the pixel tags the modality presets need, and a loader
that picks it for DICOM paths and names the file in every read error.

What MONAI's ``PydicomReader`` (monai 1.6) already does, checked against its source:

- it applies *Rescale Slope* / *Rescale Intercept* whenever either tag is present (output float32),
  so its values are modality values (Hounsfield units for CT); ``DicomReader`` keeps that and
  records ``meta["rescale_applied"]`` so that :class:`~medad_monai.transforms.ModalityRescaled`
  never applies it a second time. ``ITKReader`` (GDCM) also rescales, and additionally inverts
  MONOCHROME1 pixel data before rescaling, but records neither in a way the presets can read.
- with its default ``prune_metadata=True`` the metadata holds only the geometry tags; with
  ``prune_metadata=False`` it holds every tag as pydicom JSON (``{"00280004": {"vr": "CS",
  "Value": [...]}}``), whose key sets differ between files and break batch collation.
- multi-frame pixel data ``(frames, rows, columns)`` come out with frames and rows swapped
  (``swap_ij`` swaps the first two axes), RGB samples are taken for a spatial axis, and PALETTE
  COLOR data stay palette indices.

``DicomReader`` fixes those three points and adds a fixed set of plain-typed tags
(:data:`DICOM_PIXEL_TAGS`) to the metadata. It also refuses, naming the file, what is not one image:
DICOM objects without pixel data (structured reports, RT plans, DICOMDIR), segmentations (SEG), and
folders that hold several series or slices of different sizes; and it reads a list of files of one
series as that series. ``ReadImaged`` gives PIL images (PNG, JPEG, BMP) as grey or RGB: palettes are
expanded and an alpha channel is composited over black.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import torch
from monai.config import DtypeLike, KeysCollection
from monai.data import PILReader, PydicomReader
from monai.data.image_reader import ImageReader, is_dicom_path
from monai.data.utils import affine_to_spacing, is_no_channel
from monai.transforms import LoadImage, MapTransform
from monai.utils import MetaKeys, ensure_tuple
from PIL import Image
from pydicom.multival import MultiValue
from pydicom.pixels import apply_color_lut

__all__ = [
    "DICOM_PIXEL_TAGS",
    "DicomReader",
    "ReadImaged",
    "check_dicom_image",
    "dicom_pixel_meta",
    "grey_or_rgb",
    "image_source",
]

_PIXEL_DATA = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")

# Defaults stand in for absent tags so that every DICOM image carries the same meta keys:
# MONAI collates meta dicts key by key, so optional keys would break mixed batches.
DICOM_PIXEL_TAGS: dict[str, Any] = {
    "Modality": "",
    "PhotometricInterpretation": "MONOCHROME2",
    "BitsStored": 0,  # 0: unknown
    "PixelRepresentation": 0,
    "SamplesPerPixel": 1,
    "NumberOfFrames": 1,
    "RescaleSlope": 1.0,
    "RescaleIntercept": 0.0,
    "WindowCenter": math.nan,
    "WindowWidth": math.nan,
    "VOILUTFunction": "LINEAR",
}


def image_source(img: Any) -> str:
    """The file an image came from (``meta["filename_or_obj"]``), for error messages."""
    meta = getattr(img, "meta", None) or {}
    source = meta.get("filename_or_obj")
    return str(source) if source else "<image without filename_or_obj>"


def dicom_pixel_meta(ds: pydicom.Dataset) -> dict[str, Any]:
    """Plain-typed values of :data:`DICOM_PIXEL_TAGS` in ``ds`` (first value of multi-valued
    tags such as *Window Center*), plus ``has_voi_lut`` (a *VOI LUT Sequence* is present)."""
    meta: dict[str, Any] = {}
    for keyword, default in DICOM_PIXEL_TAGS.items():
        value = ds.get(keyword)
        if isinstance(value, MultiValue):
            value = value[0] if len(value) else None
        meta[keyword] = default if value is None or value == "" else type(default)(value)
    meta["has_voi_lut"] = bool(ds.get("VOILUTSequence"))
    return meta


def check_dicom_image(ds: pydicom.Dataset, name: str | os.PathLike) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``ds`` is an image: DICOM objects without pixel data
    (structured reports, RT plans and structures, waveforms, DICOMDIR) and segmentations (SEG, label
    maps rather than images) are refused."""
    modality = str(ds.get("Modality", "") or "")
    kind = f"Modality {modality or 'absent'}, {getattr(ds.get('SOPClassUID'), 'name', 'unknown SOP class')}"
    if "SegmentSequence" in ds or modality == "SEG":
        raise ValueError(f"{name} is a DICOM segmentation ({kind}): a label map, not an image to score.")
    if not any(tag in ds for tag in _PIXEL_DATA):
        raise ValueError(f"{name} holds no pixel data ({kind}): it is not an image.")


def _check_series(datasets: Sequence[pydicom.Dataset], names: Sequence[str], where: str) -> None:
    """Raise ``ValueError`` unless ``datasets`` are single-frame slices of one series with one size."""
    series = sorted({str(ds.get("SeriesInstanceUID", "")) for ds in datasets})
    if len(series) > 1:
        raise ValueError(
            f"{where} holds {len(series)} DICOM series "
            f"(SeriesInstanceUID {series[:3]}{'...' if len(series) > 3 else ''}), "
            "not one volume: give each series (or each 2D file) as its own input; inference on the folder's "
            "parent (medad_monai.bundle.inference_items) separates them."
        )
    sizes = sorted({(int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)) for ds in datasets})
    frames = max(int(ds.get("NumberOfFrames") or 1) for ds in datasets)
    if len(sizes) > 1 or frames > 1:
        found = f"slices of {len(sizes)} sizes {sizes[:3]}" if len(sizes) > 1 else "multi-frame files"
        raise ValueError(f"{where} holds {found}: not the slices of one volume; give each file as its own input.")


class DicomReader(PydicomReader):
    """``monai.data.PydicomReader`` for the presets: colour, frames and pixel tags made explicit.

    Read through ``LoadImage(reader=DicomReader())`` or :class:`ReadImaged`. Compared with the
    parent (see the module docstring):

    - metadata gain the plain-typed tags of :func:`dicom_pixel_meta` and ``rescale_applied``;
      the tags describe the delivered pixel array: colour data (RGB, YBR_* converted by pydicom,
      PALETTE COLOR expanded with ``pydicom.pixels.apply_color_lut``) are delivered as RGB with
      ``PhotometricInterpretation="RGB"``, ``SamplesPerPixel=3`` and, for palettes,
      ``BitsStored`` set to the palette entry depth; MONOCHROME1 data are *not* inverted.
    - colour samples are a channel (``original_channel_dim=-1``), so after
      ``EnsureChannelFirst`` a single frame is ``(C, columns, rows)`` with C in {1, 3}.
    - multi-frame data (ultrasound cine) become ``(C, columns, rows, frames)``: frames on the
      last spatial axis, like the slices of a series folder.

    Args:
        rescale: apply *Rescale Slope/Intercept* while reading (the parent's behaviour). With
            ``False`` the stored values are returned and ``ModalityRescaled`` applies it later.
        affine_lps_to_ras: see ``PydicomReader``.
        swap_ij: see ``PydicomReader``.
        fname_regex: a regular expression the paths of a series folder's files must match (instead of
            being DICOM files by suffix or preamble).
        kwargs: passed to ``pydicom.dcmread``.
    """

    def __init__(
        self,
        rescale: bool = True,
        affine_lps_to_ras: bool = True,
        swap_ij: bool = True,
        fname_regex: str = "",
        **kwargs: Any,
    ) -> None:
        super().__init__(
            affine_lps_to_ras=affine_lps_to_ras, swap_ij=swap_ij, prune_metadata=True, fname_regex=fname_regex, **kwargs
        )
        self.rescale = rescale

    def verify_suffix(self, filename: Sequence[str | Path] | str | Path) -> bool:
        # the parent accepts every file, which would make it shadow the NIfTI / ITK / PIL readers
        return is_dicom_path(filename)

    def read(self, data: Sequence[str | Path] | str | Path, **kwargs: Any) -> Any:
        """Read a file, a series folder, or a list of files.

        A folder's DICOM files (``.dcm`` or the DICM preamble; sub-folders, other files and
        ``DICOMDIR`` are not part of the series) and a list of files of one series are read as that
        series, slices stacked on the last axis. Other lists are stacked as channels (the parent's
        behaviour). Non-images, folders without DICOM files or with several series or slice sizes
        raise ``ValueError``.
        """
        names = [os.fspath(n) for n in ensure_tuple(data)]
        where = f"the files {names[0]} ... ({len(names)} files)"
        if len(names) == 1 and Path(names[0]).is_dir():
            where = f"DICOM folder {names[0]}"
            names = sorted(
                str(p)
                for p in Path(names[0]).iterdir()
                if p.is_file()
                and p.name.upper() != "DICOMDIR"
                and (re.match(self.fname_regex, str(p)) if self.fname_regex else is_dicom_path(p))
            )
            if not names:
                raise ValueError(f"{where} holds no DICOM file (no .dcm file, none starts with the DICM preamble).")
        if any(Path(n).is_dir() for n in names):
            return super().read(data, **kwargs)  # several folders: the parent stacks them as channels
        datasets = [pydicom.dcmread(n, **{**self.kwargs, **kwargs}) for n in names]
        for ds, name in zip(datasets, names):
            check_dicom_image(ds, name)
        if len(datasets) == 1:
            self.filenames, self.has_series = names, False
            return datasets[0]
        if len({str(ds.get("SeriesInstanceUID", "")) for ds in datasets}) == 1 or where.startswith("DICOM folder"):
            _check_series(datasets, names, where)
            self.filenames, self.has_series = [names], True
        else:
            self.filenames, self.has_series = names, False
        return datasets

    def _get_meta_dict(self, img: pydicom.Dataset) -> dict:
        meta = super()._get_meta_dict(img)
        meta.update(dicom_pixel_meta(img))
        meta["rescale_applied"] = self.rescale
        if meta["PhotometricInterpretation"] == "PALETTE COLOR":
            meta["BitsStored"] = int(img.RedPaletteColorLookupTableDescriptor[2])
            meta["SamplesPerPixel"] = 3
        if meta["SamplesPerPixel"] > 1:
            meta["PhotometricInterpretation"] = "RGB"
        return meta

    def _get_array_data(self, img: pydicom.Dataset, filename: Any) -> np.ndarray:
        data = super()._get_array_data(img, filename) if self.rescale else img.pixel_array
        if img.get("PhotometricInterpretation") == "PALETTE COLOR":
            data = apply_color_lut(data, img)
        if int(img.get("NumberOfFrames") or 1) > 1:
            # (frames, rows, columns[, samples]) -> (rows, columns, frames[, samples]) so that the
            # parent's swap_ij swaps rows and columns, not frames and rows
            data = np.moveaxis(data, 0, 2)
        return data

    def get_data(self, data: Any) -> tuple[np.ndarray, dict]:
        """Pixel array and metadata; colour samples on the last axis are marked as channels."""
        array, meta = super().get_data(data)
        if meta["SamplesPerPixel"] > 1 and is_no_channel(meta[MetaKeys.ORIGINAL_CHANNEL_DIM]):
            meta[MetaKeys.ORIGINAL_CHANNEL_DIM] = -1
            meta[MetaKeys.SPATIAL_SHAPE] = tuple(meta[MetaKeys.SPATIAL_SHAPE][:-1])
            meta["spacing"] = affine_to_spacing(meta[MetaKeys.ORIGINAL_AFFINE], r=len(meta[MetaKeys.SPATIAL_SHAPE]))
        return array, meta


def grey_or_rgb(image: Image.Image) -> Image.Image:
    """A PIL image as grey or RGB (the modes the presets read), nothing clipped: palettes expanded,
    1-bit to 8-bit, CMYK / YCbCr to RGB, and an alpha channel composited over black (transparent pixels
    carry no content; an opaque alpha channel is simply dropped)."""
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif image.mode == "PA":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "RGBa", "LA", "La"):
        alpha = image.getchannel("A")
        base = image.convert("RGB" if image.mode.startswith("RGB") else "L")
        if alpha.getextrema()[0] < 255:
            base = Image.composite(base, Image.new(base.mode, base.size, 0), alpha)
        return base
    if image.mode in ("1", "CMYK", "YCbCr", "HSV", "LAB"):
        return image.convert("L" if image.mode == "1" else "RGB")
    return image


class ReadImaged(MapTransform):
    """Load image files into channel-first ``MetaTensor`` s, naming the file in every read error.

    DICOM paths (a series folder, a ``.dcm`` file or a file with the DICM preamble, or a list of files
    of one series) are read with :class:`DicomReader`; PNG / JPEG / BMP with MONAI's ``PILReader`` as
    grey or RGB (:func:`grey_or_rgb`); other files with MONAI's suffix-based choice (nibabel for
    NIfTI, ITK for ``.mha`` / ``.nrrd``). A missing file raises ``FileNotFoundError``; any
    reader error (truncated or unreadable DICOM, compressed pixel data without a decoder plugin)
    is re-raised as ``ValueError`` naming the key and the file, chained to the reader's exception.

    Output per key: ``(C, *spatial)`` float32 ``MetaTensor`` (spatial axes in MONAI's order, i.e.
    columns before rows for 2D images), with ``meta["filename_or_obj"]`` set to the path.

    Args:
        keys: keys of the file paths (a path, or a list of paths stacked as channels).
        reader: a reader instance for every file instead of the automatic choice.
        rescale: ``DicomReader(rescale=...)`` for DICOM paths.
        dtype: output data type.
        allow_missing_keys: skip keys absent from the data (e.g. ``mask`` for normal images).
    """

    def __init__(
        self,
        keys: KeysCollection,
        reader: ImageReader | None = None,
        rescale: bool = True,
        dtype: DtypeLike | torch.dtype = np.float32,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.reader = reader
        self.dicom_reader = DicomReader(rescale=rescale)
        self.pil_reader = PILReader(converter=grey_or_rgb)
        self.loader = LoadImage(image_only=True, dtype=dtype, ensure_channel_first=True)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.read(key, d[key])
        return d

    def read(self, key: Hashable, path: Any) -> torch.Tensor:
        """Read ``path`` (the value of ``key``) with the chosen reader."""
        for name in ensure_tuple(path):
            if not Path(name).exists():
                raise FileNotFoundError(f"{type(self).__name__}: '{key}' file {name} does not exist.")
        reader = self.reader
        if reader is None and is_dicom_path(path):
            reader = self.dicom_reader
        elif reader is None and self.pil_reader.verify_suffix(path):
            reader = self.pil_reader
        try:
            return self.loader(path, reader=reader)
        except Exception as err:
            raise ValueError(f"{type(self).__name__}: cannot read '{key}' file {path}: {err}") from err
