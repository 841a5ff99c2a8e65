"""The demo head-CT cohort's DICOM writer: one CT Image Storage file per axial plane."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import (
    correct_ambiguous_vr_element,
    write_dataset,
    write_file_meta_info,
)
from pydicom.tag import Tag

__all__ = ["write_ct_series"]

_CT_RESCALE_INTERCEPT = -1024
# the elements that change from slice to slice of a series
_SLICE_TAGS = frozenset(
    int(Tag(keyword)) for keyword in ("SOPInstanceUID", "InstanceNumber", "ImagePositionPatient", "SliceLocation", "PixelData")
)
_UID_NAMESPACE = "medad-monai demo cohort"


def write_ct_series(
    folder: str | os.PathLike, hu: np.ndarray, affine: np.ndarray, patient_id: str, uid_entropy: list[str]
) -> list[Path]:
    """Write a CT volume as a DICOM series of axial CT Image Storage files, one per plane ``hu[:, :, k]``.

    Pixels are stored as int16 ``hu + 1024`` with Rescale Slope 1 and Intercept -1024. Rows run along
    axis 1 and columns along axis 0 of ``hu``, and ImagePositionPatient, ImageOrientationPatient,
    PixelSpacing and SliceThickness follow ``affine`` (converted from RAS to DICOM's LPS), so MONAI's
    ``PydicomReader`` and ``ITKReader`` return ``hu`` with ``affine``. The study, series, frame of
    reference and instance UIDs are derived from ``uid_entropy`` with ``pydicom.uid.generate_uid``,
    so the same entropy gives the same UIDs.

    Args:
        folder: output folder, created if needed; files are ``CT_<k>.dcm``.
        hu: (X, Y, Z) integer-valued Hounsfield units.
        affine: (4, 4) voxel to world (RAS mm).
        patient_id: PatientID and PatientName.
        uid_entropy: strings that identify the series, e.g. ``[seed, subject id]``.

    Returns:
        The written file paths, in slice order.

    Raises:
        ValueError: ``hu`` is not 3D, holds non-integer values or values outside the int16 range
            after the offset.
    """
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import (
        PYDICOM_IMPLEMENTATION_UID,
        CTImageStorage,
        ExplicitVRLittleEndian,
        generate_uid,
    )

    hu, affine = np.asarray(hu), np.asarray(affine, dtype=np.float64)
    if hu.ndim != 3:
        raise ValueError(f"hu must be a 3D (X, Y, Z) array, got shape {hu.shape}.")
    if affine.shape != (4, 4):
        raise ValueError(f"affine must be a (4, 4) array, got shape {affine.shape}.")
    stored = hu.astype(np.float64) - _CT_RESCALE_INTERCEPT
    if not np.array_equal(stored, np.round(stored)) or stored.min() < -(2**15) or stored.max() >= 2**15:
        raise ValueError(
            f"hu must hold integers in [{-(2**15) + _CT_RESCALE_INTERCEPT}, {2**15 - 1 + _CT_RESCALE_INTERCEPT}] HU "
            f"to be stored as int16 with intercept {_CT_RESCALE_INTERCEPT}."
        )
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    to_lps = np.array([-1.0, -1.0, 1.0])
    uid = lambda *part: generate_uid(entropy_srcs=[_UID_NAMESPACE, *uid_entropy, *part])  # noqa: E731

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20000101"
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
    ds.AccessionNumber = ""
    ds.Modality = "CT"
    ds.Manufacturer = "medad-monai synthetic"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "medad-monai demo head CT"
    ds.SeriesDescription = "synthetic axial head CT"
    ds.PatientName = ds.PatientID = patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.BodyPartExamined = "HEAD"
    ds.KVP = 120
    ds.SliceThickness = f"{spacing[2]:.6g}"
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = uid("study")
    ds.SeriesInstanceUID = uid("series")
    ds.FrameOfReferenceUID = uid("frame")
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.AcquisitionNumber = 1
    ds.PositionReferenceIndicator = ""
    # rows follow axis 1, columns axis 0: ImageOrientationPatient is (row direction, column direction)
    orientation = np.concatenate([to_lps * affine[:3, 0] / spacing[0], to_lps * affine[:3, 1] / spacing[1]])
    ds.ImageOrientationPatient = [f"{x + 0.0:.6g}" for x in orientation]  # + 0.0 turns -0 into 0
    ds.PixelSpacing = [f"{spacing[1]:.6g}", f"{spacing[0]:.6g}"]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = hu.shape[1], hu.shape[0]
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleIntercept = str(_CT_RESCALE_INTERCEPT)
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    ds.WindowCenter, ds.WindowWidth = "40", "80"

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    writer = None
    paths = []
    for k in range(hu.shape[2]):
        position = to_lps * (affine[:3, :3] @ [0, 0, k] + affine[:3, 3])
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid("instance", str(k))
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [f"{x + 0.0:.6g}" for x in position]
        ds.SliceLocation = f"{position[2]:.6g}"
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).astype("<i2").tobytes()
        paths.append(folder / f"CT_{k:04d}.dcm")
        writer = writer or _SliceWriter(ds)  # made from the first slice, with every element in place
        paths[-1].write_bytes(writer.encode(ds))
    return paths


class _SliceWriter:
    """Encodes the files of one series: the bytes ``Dataset.save_as(..., enforce_file_format=True)``
    writes, with the elements that stay the same from slice to slice encoded once.

    Explicit VR little endian only: the elements are written in tag order, so a file is its
    preamble, its file meta group, then the constant runs of elements interleaved with the
    per-slice ones (:data:`_SLICE_TAGS`), each encoded anew.
    """

    def __init__(self, ds: Dataset) -> None:
        self.encoding = ds._character_set
        self.parts: list[bytes | int] = []
        run = Dataset()
        for element in ds:
            if element.tag in _SLICE_TAGS:
                self.parts += [self._encode(run), int(element.tag)]
                run = Dataset()
            else:
                run.add(element)
        self.parts.append(self._encode(run))

    def _encode(self, dataset: Dataset) -> bytes:
        buffer = DicomBytesIO()
        buffer.is_implicit_VR, buffer.is_little_endian = False, True
        write_dataset(buffer, dataset, self.encoding)
        return buffer.getvalue()

    def encode(self, ds: Dataset) -> bytes:
        """The file bytes of ``ds``, whose elements other than :data:`_SLICE_TAGS` are those this writer was made with."""
        buffer = DicomBytesIO()
        buffer.is_implicit_VR, buffer.is_little_endian = False, True
        buffer.write(b"\x00" * 128 + b"DICM")
        write_file_meta_info(buffer, ds.file_meta, enforce_standard=True)
        for part in self.parts:
            if isinstance(part, int):
                single = Dataset()
                # PixelData's VR (OB or OW) follows BitsAllocated, which only the whole dataset has
                single.add(correct_ambiguous_vr_element(ds[part], ds, True))
                write_dataset(buffer, single, self.encoding)
            else:
                buffer.write(part)
        return buffer.getvalue()
