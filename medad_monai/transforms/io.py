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
(:data:`DICOM_PIXEL_TAGS`) to the metadata.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import torch
from monai.config import DtypeLike, KeysCollection
from monai.data import PydicomReader
from monai.data.image_reader import ImageReader, is_dicom_path
from monai.data.utils import affine_to_spacing, is_no_channel
from monai.transforms import LoadImage, MapTransform
from monai.utils import MetaKeys, ensure_tuple
from pydicom.multival import MultiValue
from pydicom.pixels import apply_color_lut

__all__ = ["DICOM_PIXEL_TAGS", "DicomReader", "ReadImaged", "dicom_pixel_meta", "image_source"]

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
        fname_regex: see ``PydicomReader`` (file filter for series folders).
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


class ReadImaged(MapTransform):
    """Load image files into channel-first ``MetaTensor`` s, naming the file in every read error.

    DICOM paths (a series folder, a ``.dcm`` file or a file with the DICM preamble) are read with
    :class:`DicomReader`; other files with MONAI's suffix-based choice (nibabel for NIfTI, ITK for
    ``.mha`` / ``.nrrd``, PIL for PNG / JPEG). A missing file raises ``FileNotFoundError``; any
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
        try:
            return self.loader(path, reader=reader)
        except Exception as err:
            raise ValueError(f"{type(self).__name__}: cannot read '{key}' file {path}: {err}") from err
