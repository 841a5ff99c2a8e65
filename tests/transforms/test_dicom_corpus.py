"""Fuzz test over pydicom's whole test corpus: every file (and folder) through ReadImaged and the modality
presets yields a map-ready image or a ValueError / FileNotFoundError that names it; no other error type.

The preset is the one the file's *Modality* tag names, or every preset when it names none. Run it alone, with
its tally of files read and refused (by reason), with::

    python -m pytest tests/transforms/test_dicom_corpus.py -s
"""

from __future__ import annotations

import collections
import os
import re

import pydicom
import pydicom.data
import pytest
import torch

from medad_monai.data import failure_reason
from medad_monai.transforms import DICOM_MODALITIES, modality_preset

_CLEAR = ("ValueError", "FileNotFoundError")
_REASONS = [  # how refusals are tallied, first match wins
    ("no decoder for its compressed pixel data", r"Unable to (decode|decompress)"),
    ("not a DICOM image (no pixel data, segmentation, not DICOM)",
     r"holds no pixel data|segmentation|does not have pixel_array|Could not create IO object|holds no DICOM file"),
    ("DICOM header without meta information or damaged", r"File Meta Information|invalid literal|truncated|Expected"),
    ("modality other than the preset's", r"is a DICOM \w+ image, not one the"),
    ("folder of several series, not one volume", r"holds \d+ DICOM series"),
    ("colour image under the CT preset", r"a colour image\): CT windows"),
]


def _presets(path: str) -> list[str]:
    tag = ""
    if os.path.isfile(path):
        try:
            tag = str(pydicom.dcmread(path, stop_before_pixels=True, force=True).get("Modality", "") or "")
        except Exception:
            tag = ""
    named = [name for name, codes in DICOM_MODALITIES.items() if tag in codes]
    return named or list(DICOM_MODALITIES)


def corpus_tally() -> tuple[collections.Counter, set[str], list[str]]:
    """Run every corpus file through its presets: the tally of outcomes per run, the files some preset read, and
    the list of problems (errors of other types, or that do not name the file)."""
    tally: collections.Counter = collections.Counter()
    read: set[str] = set()
    problems = []
    presets = {name: modality_preset(name, spatial_size=None, spatial_dims=(2, 3)) for name in DICOM_MODALITIES}
    for path in sorted(pydicom.data.get_testdata_files()):
        name = os.path.basename(path)
        for preset in _presets(path):
            try:
                image = presets[preset]({"image": path})["image"]
            except Exception as err:
                reason = failure_reason(err)
                kind = next((label for label, pattern in _REASONS if re.search(pattern, reason)), "other")
                tally[f"refused ({preset}): {kind}"] += 1
                if not reason.startswith(_CLEAR) or name not in reason or kind == "other":
                    problems.append(f"{path} ({preset}): {reason[:300]}")
                continue
            tally[f"read ({preset})"] += 1
            read.add(path)
            if image.shape[0] != 3 or image.ndim not in (3, 4) or not bool(torch.isfinite(image).all()):
                problems.append(f"{path} ({preset}): not map-ready, shape {tuple(image.shape)}")
    return tally, read, problems


@pytest.mark.slow
def test_every_corpus_file_gives_an_image_or_a_clear_error():
    tally, read, problems = corpus_tally()
    files = len(pydicom.data.get_testdata_files())
    print(f"\npydicom {pydicom.__version__} test corpus: {files} files and folders, {len(read)} read by their "
          f"preset(s), {files - len(read)} refused by every preset they were given; {sum(tally.values())} runs:")
    for key, n in sorted(tally.items()):
        print(f"  {n:4d}  {key}")
    assert not problems, "\n".join(problems)
    assert files > 150 and len(read) > 60
