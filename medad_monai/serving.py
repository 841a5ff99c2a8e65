"""Run a trained bundle on one image outside ``monai.bundle run`` and write what a clinical pipeline consumes.

Used by the MONAI Deploy application (``deploy/app.py``): :func:`run_bundle` runs the bundle's own
``inference.json`` (with ``inference_volume.json`` for volumes: a DICOM series or a 3D NIfTI) on one
image path, exactly as ``monai.bundle run`` would (same reader, preprocessing, inferer, image score
and threshold), and returns the float anomaly map, the binary mask and the image score;
:func:`write_outputs` writes the map and the mask as NIfTI in the image's geometry, the mask as a
DICOM Segmentation (highdicom) referencing the source series when the image is a DICOM series, and
a JSON with the score and thresholds.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai.bundle import ConfigParser
from monai.data.image_reader import is_dicom_path
from monai.transforms import Compose, SaveImaged

from medad_monai.transforms import ReadImaged

__all__ = ["AnomalyResult", "dicom_series_files", "run_bundle", "write_dicom_seg", "write_outputs"]

#: DICOM Modality (0008,0060) to the bundles' ``modality`` entry.
DICOM_MODALITIES = {"CT": "ct", "MR": "mri", "CR": "xray", "DX": "xray", "US": "ultrasound"}


@dataclass
class AnomalyResult:
    """One image's result: ``anomaly_map`` float32 and ``mask`` uint8 MetaTensors ``(1, *spatial)`` in the
    input image's geometry (``.affine``), the image ``score``, the thresholds used and the input's path."""

    source: str
    anomaly_map: Any
    mask: Any
    score: float
    threshold: float
    pixel_threshold: float
    extra: dict = field(default_factory=dict)


def dicom_series_files(path: str | os.PathLike) -> list[Path]:
    """The DICOM files of a series folder (or the one file given), sorted by name."""
    path = Path(path)
    return sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")) if path.is_dir() else [path]


def _modality(image_path: str, default: str | None) -> str | None:
    """The bundle ``modality`` of a DICOM input from its Modality tag, else ``default``."""
    if default or not is_dicom_path(image_path):
        return default
    import pydicom

    tag = pydicom.dcmread(dicom_series_files(image_path)[0], stop_before_pixels=True).get("Modality", "")
    return DICOM_MODALITIES.get(str(tag).upper())


def run_bundle(
    bundle_root: str | os.PathLike,
    image_path: str | os.PathLike,
    modality: str | None = None,
    device: str | torch.device | None = None,
    overrides: dict | None = None,
) -> AnomalyResult:
    """Run the bundle's inference config on one image (a file or a DICOM series folder).

    Args:
        bundle_root: a trained bundle (``models/model.pt``, ``models/threshold.json``).
        image_path: a 2D image, a 3D NIfTI or a DICOM series folder; volumes run slice by slice
            through ``configs/inference_volume.json``.
        modality: the bundle's ``modality`` entry (``ct``, ``mri``, ``xray``, ``ultrasound``); by
            default the DICOM Modality tag, else the bundle's own default.
        device: default: the bundle's ``device`` entry.
        overrides: more config overrides.
    """
    root = Path(bundle_root)
    image_path = str(image_path)
    volume = ReadImaged("image")({"image": image_path})["image"].ndim == 4
    configs = [root / "configs" / "inference.json"] + ([root / "configs" / "inference_volume.json"] if volume else [])
    parser = ConfigParser()
    parser.read_config([str(c) for c in configs])
    parser.read_meta(str(root / "configs" / "metadata.json"))
    parser["bundle_root"] = str(root)
    modality = _modality(image_path, modality)
    for key, value in {**({"modality": modality} if modality else {}), **({"device": device} if device else {}), **(overrides or {})}.items():
        parser[key] = value

    device = parser.get_parsed_content("device")
    network = parser.get_parsed_content("network_def").to(device).eval()
    state = torch.load(parser.get_parsed_content("ckpt_path"), map_location=device, weights_only=True)
    network.load_state_dict(state.get("model", state), strict=True)
    data = parser.get_parsed_content("preprocessing")({"image": image_path})
    inferer = parser.get_parsed_content("inferer")
    with torch.no_grad():
        pred = inferer(data["image"][None].to(device), network)
    # an inferer may return several maps as a dict (e.g. ``pred`` and ``pred_network``): the
    # bundle's postprocessing unpacks them (UnpackOutputd), as it does for the evaluator's items
    data["pred"] = {k: v[0].cpu() for k, v in pred.items()} if isinstance(pred, dict) else pred[0].cpu()
    post = parser.get_parsed_content("postprocessing")
    data = Compose([t for t in post.transforms if not isinstance(t, SaveImaged)])(data)
    thresholds = json.loads(Path(parser.get_parsed_content("threshold_file")).read_text())
    return AnomalyResult(
        source=image_path, anomaly_map=data["pred"], mask=data["pred_mask"], score=float(data["score"]),
        threshold=float(thresholds["threshold"]), pixel_threshold=float(thresholds["pixel_threshold"]),
        extra={"bundle": parser.get("_meta_#name"), "version": parser.get("_meta_#version"), "modality": parser.get_parsed_content("modality")},
    )


def _frame_index(affine: np.ndarray, ds) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Voxel indices ``(i, j, k)`` (each ``(rows, columns)``) of every pixel of DICOM image ``ds`` in a
    volume with RAS ``affine``."""
    rows, cols = int(ds.Rows), int(ds.Columns)
    position = np.asarray(ds.ImagePositionPatient, dtype=float)
    orientation = np.asarray(ds.ImageOrientationPatient, dtype=float)
    row_spacing, col_spacing = (float(s) for s in ds.PixelSpacing)
    # LPS position of pixel (r, c): IPP + c * col_spacing * row direction + r * row_spacing * column direction
    r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    lps = position + c[..., None] * col_spacing * orientation[:3] + r[..., None] * row_spacing * orientation[3:]
    ras = lps * np.array([-1.0, -1.0, 1.0])
    voxel = np.einsum("ij,rcj->rci", np.linalg.inv(affine)[:3, :3], ras) + np.linalg.inv(affine)[:3, 3]
    index = np.rint(voxel).astype(int)
    return index[..., 0], index[..., 1], index[..., 2]


def write_dicom_seg(
    mask: Any, affine: np.ndarray, series: str | os.PathLike, path: str | os.PathLike,
    algorithm: str = "medad-monai", version: str = "0", label: str = "anomaly",
) -> Path:
    """Write the binary ``mask`` ``(1, D0, D1, D2)`` (voxel grid of ``affine``, RAS, as MONAI reads the
    series) as a DICOM Segmentation of the source ``series`` folder: one frame per source image, each
    frame the mask sampled at that image's pixels, so the SEG overlays the series in any DICOM viewer."""
    import highdicom as hd
    import pydicom
    from pydicom.sr.coding import Code

    datasets = [pydicom.dcmread(f) for f in dicom_series_files(series)]
    volume = np.asarray(mask)[0].astype(bool)
    frames = []
    for ds in datasets:
        i, j, k = _frame_index(np.asarray(affine, dtype=float), ds)
        inside = (i >= 0) & (i < volume.shape[0]) & (j >= 0) & (j < volume.shape[1]) & (k >= 0) & (k < volume.shape[2])
        frame = np.zeros(i.shape, dtype=bool)
        frame[inside] = volume[i[inside], j[inside], k[inside]]
        frames.append(frame)
    description = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=label,
        segmented_property_category=Code("49755003", "SCT", "Morphologically abnormal structure"),
        segmented_property_type=Code("52988006", "SCT", "Lesion"),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name=algorithm, version=version, family=Code("123110", "DCM", "Artificial Intelligence")
        ),
    )
    seg = hd.seg.Segmentation(
        source_images=datasets,
        pixel_array=np.stack(frames).astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[description],
        series_instance_uid=hd.UID(),
        series_number=900,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="medad-monai",
        manufacturer_model_name=algorithm,
        software_versions=version,
        device_serial_number="0",
        omit_empty_frames=False,
    )
    path = Path(path)
    seg.save_as(path)
    return path


def write_outputs(result: AnomalyResult, output_dir: str | os.PathLike) -> dict[str, str]:
    """Write ``anomaly_map.nii.gz`` (float32), ``anomaly_mask.nii.gz`` (uint8), ``anomaly_seg.dcm`` (DICOM
    inputs only) and ``result.json`` (score, thresholds, output files) into ``output_dir``; return the paths."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    affine = np.asarray(result.anomaly_map.affine, dtype=float)
    files = {"anomaly_map": out / "anomaly_map.nii.gz", "anomaly_mask": out / "anomaly_mask.nii.gz"}
    nib.save(nib.Nifti1Image(np.asarray(result.anomaly_map[0], dtype=np.float32), affine), files["anomaly_map"])
    nib.save(nib.Nifti1Image(np.asarray(result.mask[0], dtype=np.uint8), affine), files["anomaly_mask"])
    if is_dicom_path(result.source) and result.mask.ndim == 4:
        files["dicom_seg"] = write_dicom_seg(
            result.mask, affine, result.source, out / "anomaly_seg.dcm",
            algorithm=str(result.extra.get("bundle") or "medad-monai"), version=str(result.extra.get("version") or "0"),
        )
    summary = {
        "source": result.source,
        "score": result.score,
        "threshold": result.threshold,
        "pixel_threshold": result.pixel_threshold,
        "anomalous": result.score > result.threshold,
        "mask_voxels": int(np.asarray(result.mask).sum()),
        "map_max": float(np.asarray(result.anomaly_map).max()),
        **result.extra,
        "files": {k: str(v) for k, v in files.items()},
    }
    files["result"] = out / "result.json"
    files["result"].write_text(json.dumps(summary, indent=1) + "\n")
    return {k: str(v) for k, v in files.items()}
