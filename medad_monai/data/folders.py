"""The inputs a folder holds: one item per image file, DICOM files grouped into series by SeriesInstanceUID."""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import pydicom

__all__ = ["IMAGE_SUFFIXES", "common_root", "folder_items"]

#: File suffixes of images other than DICOM (DICOM files are recognised by ``.dcm`` or their DICM preamble).
IMAGE_SUFFIXES = (".nii", ".nii.gz", ".dcm", ".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".mha", ".mhd", ".nrrd")

# header tags that decide how a DICOM file is grouped
_GROUPING_TAGS = ["SeriesInstanceUID", "NumberOfFrames", "ImagePositionPatient", "Rows", "Columns", "InstanceNumber"]


def _is_dicom(path: Path) -> bool:
    name = path.name.lower()
    if name.endswith(".dcm"):
        return True
    if any(name.endswith(suffix) for suffix in IMAGE_SUFFIXES):
        return False
    try:
        return pydicom.misc.is_dicom(path)
    except OSError:
        return False


def _slice_header(path: Path) -> pydicom.Dataset | None:
    """The grouping tags of a single-frame DICOM slice with a position (a slice of a volume), else ``None``
    (a 2D image, a multi-frame file, or a file whose header cannot be read: an item of its own)."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_GROUPING_TAGS)
    except Exception:
        return None
    if int(ds.get("NumberOfFrames") or 1) > 1 or "ImagePositionPatient" not in ds or not ds.get("SeriesInstanceUID"):
        return None
    return ds


def folder_items(folder: str | os.PathLike, image_key: str = "image") -> list[dict]:
    """One item ``{image_key: path}`` per input under ``folder`` (searched recursively), sorted by path.

    - Image files (suffixes in :data:`IMAGE_SUFFIXES`) are one item each, and so is every other file:
      a file that is not an image then fails as an item of its own, named, instead of being skipped.
    - DICOM files (``.dcm`` or the DICM preamble) that are slices of a volume (single-frame, with an
      *Image Position*) are grouped by *SeriesInstanceUID*: a series of one size is one item, given as
      its folder when it is all that folder holds, else as the list of its files (which
      :class:`~medad_monai.transforms.DicomReader` reads as one series). Other DICOM files (2D images
      such as radiographs and ultrasound frames, multi-frame files, files whose header cannot be read)
      are one item each, so a folder of unrelated 2D DICOM files is never stacked into a volume.
    - Hidden files and folders (names starting with ``.``) and ``DICOMDIR`` index files are left out.

    Raises:
        FileNotFoundError: ``folder`` does not exist or holds no file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"input folder not found: {folder}")
    files = [
        p
        for p in sorted(folder.rglob("*"))
        if p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        and p.name.upper() != "DICOMDIR"
    ]
    if not files:
        raise FileNotFoundError(f"input folder {folder} holds no file.")
    singles: list[str | list[str]] = []
    series: dict[str, list[tuple[Path, pydicom.Dataset]]] = defaultdict(list)
    for path in files:
        header = _slice_header(path) if _is_dicom(path) else None
        if header is None:
            singles.append(str(path))
        else:
            series[str(header.SeriesInstanceUID)].append((path, header))
    for members in series.values():
        sizes = {(int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)) for _, ds in members}
        if len(members) == 1 or len(sizes) > 1:
            singles += [str(path) for path, _ in members]  # not one volume: each slice is an image
            continue
        members.sort(key=lambda m: (int(m[1].get("InstanceNumber") or 0), str(m[0])))
        paths = [m[0] for m in members]
        parent = paths[0].parent
        alone = all(p.parent == parent for p in paths) and len(paths) == sum(f.parent == parent for f in files)
        singles.append(str(parent) if alone else [str(p) for p in paths])
    return [{image_key: item} for item in sorted(singles, key=lambda i: i if isinstance(i, str) else i[0])]


def common_root(items: Sequence[dict], image_key: str = "image") -> str:
    """The deepest folder that holds every item's input (a file, a series folder or the first file of a
    list): outputs written relative to it keep the inputs' folder structure, so equal file names in
    different folders do not overwrite each other."""
    if not items:
        raise ValueError("common_root needs at least one item.")
    parents = []
    for item in items:
        value = item[image_key]
        first = value if isinstance(value, (str, os.PathLike)) else value[0]
        parents.append(os.path.dirname(os.path.abspath(first)))
    return os.path.commonpath(parents)
