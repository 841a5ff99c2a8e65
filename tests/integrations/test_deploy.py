"""The MONAI Deploy application (deploy/app.py), with each bundle, on the head-CT demo DICOM series and on a 2D
NIfTI slice: float map and mask (NIfTI) in the input's geometry, a DICOM SEG aligned with the source series, a
JSON score.

Skipped when the deploy extra is not installed (``pip install -e ".[deploy]"``, see the README).
"""

from __future__ import annotations

import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import pydicom
import pytest

from medad_monai.data import load_anomaly_datalist

from .conftest import ENV, ROOT, TINY

pytest.importorskip("monai.deploy.core", reason="the deploy extra is not installed")
hd = pytest.importorskip("highdicom", reason="the deploy extra is not installed")

pytestmark = pytest.mark.slow


def _run_app(bundle, source, out):
    result = subprocess.run([sys.executable, str(ROOT / "deploy" / "app.py"), "-i", str(source), "-o", str(out), "-m", str(bundle)],
                            check=False, cwd=out.parent, env=ENV, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}"


def test_dicom_seg_frames_follow_the_source_images(ct_cohort, tmp_path):
    """write_dicom_seg samples the mask at every source pixel: a mask of HU > 40 on the volume as MONAI reads
    it gives, frame by frame, HU > 40 of each source image."""
    from medad_monai.serving import dicom_series_files, write_dicom_seg
    from medad_monai.transforms import ReadImaged

    series = next(i for i in load_anomaly_datalist(ct_cohort, "test_volumes") if i["label"] == 1)["image"]
    volume = ReadImaged("image")({"image": series})["image"]
    path = write_dicom_seg((volume > 40).numpy().astype(np.uint8), volume.affine.numpy(), series, tmp_path / "seg.dcm")
    seg = hd.seg.segread(path)
    for file in dicom_series_files(series):
        ds = pydicom.dcmread(file)
        hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        frame = seg.get_pixels_by_source_instance([ds.SOPInstanceUID])[0, ..., 0]
        assert np.array_equal(frame, hu > 40)


@pytest.mark.parametrize("name", sorted(TINY))
def test_app_on_demo_ct_series(tiny_bundles, name, ct_cohort, tmp_path):
    from medad_monai.serving import dicom_series_files, run_bundle

    bundle = tiny_bundles[name]
    series = next(i for i in load_anomaly_datalist(ct_cohort, "test_volumes") if i["label"] == 1)["image"]
    out = tmp_path / "out"
    out.mkdir()
    _run_app(bundle.root, series, out)

    summary = json.loads((out / "result.json").read_text())
    expected = run_bundle(bundle.root, series, device="cpu")
    assert summary["modality"] == "ct" and summary["score"] == pytest.approx(expected.score, abs=1e-5)
    assert summary["pixel_threshold"] == expected.pixel_threshold and summary["anomalous"] == (expected.score > expected.threshold)

    amap, mask = nib.load(out / "anomaly_map.nii.gz"), nib.load(out / "anomaly_mask.nii.gz")
    assert amap.get_data_dtype() == np.float32 and mask.get_data_dtype() == np.uint8
    assert np.allclose(amap.get_fdata(), np.asarray(expected.anomaly_map[0]), atol=1e-5)
    assert np.array_equal(np.asarray(mask.dataobj), np.asarray(expected.mask[0]))
    assert np.allclose(amap.affine, expected.anomaly_map.affine.numpy())
    assert len(np.unique(amap.get_fdata())) > 2  # a float map, not a cast mask

    # the SEG references the source series and holds, per source image, the mask's plane through it
    seg = hd.seg.segread(out / "anomaly_seg.dcm")
    sources = [pydicom.dcmread(f, stop_before_pixels=True) for f in dicom_series_files(series)]
    assert seg.Modality == "SEG" and seg.FrameOfReferenceUID == sources[0].FrameOfReferenceUID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == sources[0].SeriesInstanceUID
    volume = np.asarray(mask.dataobj)
    total = 0
    for ds in sources:
        frame = seg.get_pixels_by_source_instance([ds.SOPInstanceUID])[0, ..., 0]
        assert frame.shape == (ds.Rows, ds.Columns)
        total += int(frame.sum())
    assert total == int(volume.sum())


@pytest.mark.parametrize("name", sorted(TINY))
def test_app_on_nifti_slice(tiny_bundles, name, brain_cohort, tmp_path):
    from medad_monai.serving import run_bundle

    bundle = tiny_bundles[name]
    image = load_anomaly_datalist(brain_cohort, "test")[0]["image"]
    out = tmp_path / "out"
    out.mkdir()
    _run_app(bundle.root, image, out)
    expected = run_bundle(bundle.root, image, device="cpu")
    amap = nib.load(out / "anomaly_map.nii.gz")
    assert amap.shape == nib.load(image).shape[:2]
    assert np.allclose(amap.get_fdata(), np.asarray(expected.anomaly_map[0]), atol=1e-5)
    assert not (out / "anomaly_seg.dcm").exists()
    assert json.loads((out / "result.json").read_text())["score"] == pytest.approx(expected.score, abs=1e-5)
