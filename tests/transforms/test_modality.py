"""Modality transforms, presets, common tail and validation, on pydicom's real DICOM files and
on NIfTI / PNG files written here."""

from __future__ import annotations

import os
import re
from copy import deepcopy

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from monai.bundle import ConfigParser
from monai.data import MetaTensor
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut, apply_voi, apply_windowing, convert_color_space
from pydicom.sequence import Sequence as DicomSequence

from medad_monai.transforms import (
    CT_WINDOWS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    MODALITIES,
    BitDepthScaled,
    CheckModalityd,
    ColorToGrayd,
    CTMultiWindowd,
    CTWindowd,
    InvertMonochrome1d,
    LetterboxResize,
    ModalityRescaled,
    N4BiasFieldCorrectiond,
    ReadImaged,
    PercentileScaled,
    RobustNormalized,
    SectorCropd,
    ValidateImaged,
    VOIWindowd,
    detector_input_transforms,
    modality_preset,
    resolve_window,
)


def dicom_file(name: str) -> str:
    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"{name} is not bundled with this pydicom")
    return path


def cr_file() -> str:
    """A real computed radiography file: MONOCHROME1, 12 bits, window 1600/2800, slope 0.684."""
    return os.path.join(os.path.dirname(dicom_file("CT_small.dcm")), "dicomdirtests", "77654033", "CR1", "6154")


def read(path, **kwargs) -> MetaTensor:
    return ReadImaged("image", **kwargs)({"image": path})["image"]


def raised_in_chain(excinfo: pytest.ExceptionInfo, error: type, pattern: str) -> bool:
    """Whether ``error`` matching ``pattern`` is in the exception chain (MONAI's ``Compose``
    re-raises a transform's error as ``RuntimeError("applying transform ...")`` from it)."""
    err: BaseException | None = excinfo.value
    while err is not None:
        if isinstance(err, error) and re.search(pattern, str(err)):
            return True
        err = err.__cause__
    return False


# CT


def test_ct_window_is_clipped_linear_map_to_unit_range():
    hu = read(dicom_file("CT_small.dcm"))
    out = CTWindowd("image", window="brain")({"image": hu})["image"]
    np.testing.assert_allclose(out.numpy(), np.clip(hu.numpy() / 80.0, 0.0, 1.0), atol=1e-6)  # level 40, width 80
    assert out.shape == hu.shape and out.meta["filename_or_obj"] == hu.meta["filename_or_obj"]
    custom = CTWindowd("image", window=(100.0, 200.0))({"image": hu})["image"]
    np.testing.assert_allclose(custom.numpy(), np.clip(hu.numpy() / 200.0, 0.0, 1.0), atol=1e-6)


def test_ct_multi_window_stacks_channels():
    hu = read(dicom_file("CT_small.dcm"))
    out = CTMultiWindowd("image", windows=("brain", "subdural", "bone"))({"image": hu})["image"]
    assert out.shape == (3, 128, 128)
    for c, name in enumerate(("brain", "subdural", "bone")):
        single = CTWindowd("image", window=name)({"image": hu})["image"]
        np.testing.assert_allclose(out[c].numpy(), single[0].numpy())
    assert not torch.equal(out[0], out[2])


def test_window_names_and_errors():
    assert resolve_window("lung") == CT_WINDOWS["lung"] == (-600.0, 1500.0)
    with pytest.raises(ValueError, match="'nowhere'.*abdomen"):
        resolve_window("nowhere")
    with pytest.raises(ValueError, match="width > 0"):
        resolve_window((40.0, 0.0))


def test_modality_rescale_applied_exactly_once():
    path = dicom_file("CT_small.dcm")
    rescaled, raw = read(path), read(path, rescale=False)
    once = ModalityRescaled("image")({"image": raw})["image"]
    np.testing.assert_allclose(once.numpy(), rescaled.numpy())
    assert once.meta["rescale_applied"] is True
    twice = ModalityRescaled("image")({"image": once})["image"]
    np.testing.assert_allclose(twice.numpy(), rescaled.numpy())
    untouched = ModalityRescaled("image")({"image": rescaled})["image"]
    np.testing.assert_allclose(untouched.numpy(), rescaled.numpy())


# X-ray


def pydicom_window_unit(path: str) -> np.ndarray:
    """pydicom's modality LUT + windowing, mapped from its output range to [0, 1]; (cols, rows)."""
    ds = pydicom.dcmread(path)
    out = apply_windowing(apply_modality_lut(ds.pixel_array, ds), ds)
    y_min, y_max = (np.array([0, 2**ds.BitsStored - 1]) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)).tolist()
    return ((out - y_min) / (y_max - y_min)).T


def test_xray_window_from_tags_matches_pydicom():
    path = cr_file()
    out = VOIWindowd("image")({"image": read(path)})["image"]
    np.testing.assert_allclose(out[0].numpy(), pydicom_window_unit(path), atol=1e-5)


def test_monochrome1_inverted_once():
    path = cr_file()
    windowed = VOIWindowd("image")({"image": read(path)})["image"]
    inverted = InvertMonochrome1d("image")({"image": windowed})["image"]
    np.testing.assert_allclose(inverted.numpy(), 1.0 - windowed.numpy(), atol=1e-6)
    assert inverted.meta["PhotometricInterpretation"] == "MONOCHROME2"
    again = InvertMonochrome1d("image")({"image": inverted})["image"]
    np.testing.assert_allclose(again.numpy(), inverted.numpy())
    monochrome2 = VOIWindowd("image")({"image": read(dicom_file("MR_small.dcm"))})["image"]
    unchanged = InvertMonochrome1d("image")({"image": monochrome2})["image"]
    np.testing.assert_allclose(unchanged.numpy(), monochrome2.numpy())


def test_voi_lut_sequence_applied_with_pydicom(tmp_path):
    ds = pydicom.dcmread(cr_file())
    item = Dataset()
    item.add_new("LUTDescriptor", "US", [4096, 0, 12])
    item.add_new("LUTData", "US", [int(4095 * (i / 4095) ** 0.5) for i in range(4096)])
    ds.VOILUTSequence = DicomSequence([item])
    path = tmp_path / "cr_voi_lut.dcm"
    ds.save_as(path)
    img = read(path)
    assert img.meta["has_voi_lut"] is True
    out = VOIWindowd("image")({"image": img})["image"]
    expected = apply_voi(np.floor(img.numpy()).astype(np.int64), pydicom.dcmread(path)) / 4095.0
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-6)
    window = VOIWindowd("image", prefer_lut=False)({"image": read(path)})["image"]
    np.testing.assert_allclose(window[0].numpy(), pydicom_window_unit(str(path)), atol=1e-5)


def test_voi_needs_rescaled_values():
    with pytest.raises(ValueError, match="6154.*ModalityRescaled"):
        VOIWindowd("image")({"image": read(cr_file(), rescale=False)})


def test_bit_depth_scaling(tmp_path):
    ct = read(dicom_file("CT_small.dcm"))  # signed 16 bits, rescaled by -1024
    out = BitDepthScaled("image")({"image": ct})["image"]
    np.testing.assert_allclose(out.numpy(), (ct.numpy() + 32768 + 1024) / 65535, rtol=1e-5)
    grey = np.arange(0, 200).reshape(10, 20).astype(np.uint8)
    Image.fromarray(grey).save(tmp_path / "g8.png")
    np.testing.assert_allclose(BitDepthScaled("image")({"image": read(tmp_path / "g8.png")})["image"][0], grey.T / 255)
    Image.fromarray(grey.astype(np.uint16) * 300).save(tmp_path / "g16.png")
    out16 = BitDepthScaled("image")({"image": read(tmp_path / "g16.png")})["image"]
    np.testing.assert_allclose(out16[0].numpy(), grey.T.astype(np.float64) * 300 / 65535, rtol=1e-6)
    nib.save(nib.Nifti1Image(grey.astype(np.float32), np.eye(4)), tmp_path / "x.nii.gz")
    nifti = read(tmp_path / "x.nii.gz")
    with pytest.raises(ValueError, match="x.nii.gz.*bits_stored"):
        BitDepthScaled("image")({"image": nifti})
    with pytest.raises(ValueError, match="exceed the stored range"):
        BitDepthScaled("image", bits_stored=6)({"image": nifti})
    np.testing.assert_allclose(BitDepthScaled("image", bits_stored=8)({"image": nifti})["image"][0], grey / 255)


# ultrasound


def test_color_to_gray_is_dicom_luma():
    path = dicom_file("examples_rgb_color.dcm")
    rgb = pydicom.dcmread(path).pixel_array
    grey = ColorToGrayd("image")({"image": read(path)})["image"]
    assert grey.shape == (1, 320, 240)
    luma = convert_color_space(rgb, "RGB", "YBR_FULL")[..., 0].astype(np.float32).T  # rounded to integers
    assert np.abs(grey[0].numpy() - luma).max() <= 0.5 + 1e-3
    with pytest.raises(ValueError, match="4 channels"):
        ColorToGrayd("image")({"image": MetaTensor(torch.ones(4, 5, 5))})


def synthetic_frame() -> tuple[torch.Tensor, np.ndarray]:
    """A fan-shaped sector with speckle, burned-in text blocks apart from it and a black border."""
    rng = np.random.default_rng(1)
    rows, cols = np.mgrid[0:120, 0:160]
    radius, angle = np.hypot(rows - 10, cols - 80), np.degrees(np.arctan2(cols - 80, rows - 10))
    sector = (radius > 20) & (radius < 100) & (np.abs(angle) < 40)
    frame = np.where(sector, 0.2 + 0.7 * rng.random((120, 160)), 0.0)
    frame[sector & (np.hypot(rows - 60, cols - 80) < 8)] = 0.0  # an anechoic cyst inside
    frame[2:8, 2:40] = 1.0  # text
    frame[110:116, 120:150] = 0.8  # text
    return torch.as_tensor(frame[None], dtype=torch.float32), sector


def test_sector_crop_drops_annotations_and_border():
    frame, sector = synthetic_frame()
    mask = torch.zeros_like(frame)
    mask[0, 50:60, 70:90] = 1.0
    out = SectorCropd(["image", "mask"], threshold=0.01)({"image": MetaTensor(frame), "mask": MetaTensor(mask)})
    rows, cols = np.nonzero(sector)
    box = (slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1))
    assert out["image"].shape == (1, rows.max() - rows.min() + 1, cols.max() - cols.min() + 1)
    np.testing.assert_allclose(out["image"][0].numpy(), frame[0].numpy()[box] * sector[box])
    np.testing.assert_array_equal(out["mask"][0].numpy(), mask[0].numpy()[box])
    assert out["image"][0].numpy()[~sector[box]].max() == 0.0


def test_sector_crop_on_real_ultrasound():
    img = read(dicom_file("examples_rgb_color.dcm"))  # 320 x 240, text above and below the image area
    grey = BitDepthScaled("image")(ColorToGrayd("image")({"image": img}))
    out = SectorCropd("image")(grey)["image"]
    width, height = out.shape[1:]
    assert 100 <= height <= 125 and width >= 300
    with pytest.raises(ValueError, match="examples_rgb_color.dcm.*no scan sector"):
        SectorCropd("image", threshold=2.0)(grey)


# MRI


def test_robust_normalization_within_foreground():
    rng = np.random.default_rng(2)
    image = np.zeros((1, 40, 40), dtype=np.float32)
    image[0, 5:35, 5:35] = rng.gamma(4.0, 50.0, (30, 30))
    out = RobustNormalized("image", lower=1.0, upper=99.0)({"image": MetaTensor(image)})["image"]
    lo, hi = np.percentile(image[image > 0], [1.0, 99.0])
    np.testing.assert_allclose(out.numpy(), np.clip((image - lo) / (hi - lo), 0, 1), atol=1e-5)
    assert out[0, 0, 0] == 0.0 and float(out.max()) == 1.0
    with pytest.raises(ValueError, match="no pixel > threshold"):
        RobustNormalized("image", threshold=1e6)({"image": MetaTensor(image)})
    with pytest.raises(ValueError, match="lower"):
        RobustNormalized("image", lower=60.0, upper=40.0)


def test_median_scaling_ignores_a_bright_lesion_and_clips_nothing():
    rng = np.random.default_rng(3)
    brain = np.zeros((1, 40, 40), dtype=np.float32)
    brain[0, 5:35, 5:35] = rng.normal(800.0, 40.0, (30, 30))
    lesioned = brain.copy()
    lesioned[0, 10:16, 10:16] *= 1.8  # 4 % of the brain, far brighter than the rest
    scale = PercentileScaled("image")
    clean = scale({"image": MetaTensor(brain)})["image"]
    out = scale({"image": MetaTensor(lesioned)})["image"]
    np.testing.assert_allclose(float(np.median(clean.numpy()[brain > 0])), 0.5, atol=1e-4)
    # the rest of the slice keeps its scale (the median moves by a few pixels' worth at most),
    # the lesion keeps its contrast, the background stays zero
    np.testing.assert_allclose(out[0, 20:, 20:].numpy(), clean[0, 20:, 20:].numpy(), rtol=0.02)
    np.testing.assert_allclose(out[0, 10:16, 10:16].numpy() / clean[0, 10:16, 10:16].numpy(), 1.8, rtol=0.02)
    assert float(out[0, 0, 0]) == 0.0
    # the range scaling, by contrast, darkens the slice and clips the lesion
    ranged = RobustNormalized("image")({"image": MetaTensor(lesioned)})["image"]
    assert float((ranged[0, 10:16, 10:16] == 1.0).float().mean()) > 0.1
    with pytest.raises(ValueError, match="no pixel > threshold"):
        scale({"image": MetaTensor(np.zeros((1, 4, 4), np.float32))})
    with pytest.raises(ValueError, match="percentile"):
        PercentileScaled("image", percentile=0.0)
    with pytest.raises(ValueError, match="target"):
        PercentileScaled("image", target=0.0)


def test_mri_preset_scaling_choice():
    image = np.zeros((1, 32, 32), dtype=np.float32)
    image[0, 4:28, 4:28] = 100.0
    image[0, 8:12, 8:12] = 300.0
    plain = {"spatial_size": (32, 32), "channels": 1, "mean": (0.0,), "std": (1.0,), "load": False, "crop_foreground": False}
    ranged = modality_preset("mri", **plain)({"image": MetaTensor(image)})
    median = modality_preset("mri", **plain, scaling="median")({"image": MetaTensor(image)})
    assert float(ranged["image"].max()) <= 1.0 + 1e-6
    assert float(median["image"].max()) > 1.0  # 300 / 100 * 0.5, unclipped, before the common tail
    with pytest.raises(ValueError, match="scaling"):
        modality_preset("mri", **plain, scaling="zscore")


def test_n4_removes_smooth_bias_field():
    rows, cols = np.mgrid[0:64, 0:64]
    head = ((rows - 32) ** 2 / 28**2 + (cols - 32) ** 2 / 24**2) < 1
    tissue = np.where(head, 100.0, 0.0) + np.where(np.hypot(rows - 32, cols - 32) < 8, 50.0, 0.0) * head
    bias = np.exp(0.5 * (cols / 63 - 0.5) + 0.3 * (rows / 63 - 0.5))
    image = MetaTensor((tissue * bias)[None].astype(np.float32), affine=torch.diag(torch.tensor([1.0, 1.2, 1.0, 1.0])))
    out = N4BiasFieldCorrectiond("image", shrink_factor=4, iterations=(20, 20, 20))({"image": image})["image"]
    assert out.shape == image.shape and isinstance(out, MetaTensor)
    flat = head & (np.hypot(rows - 32, cols - 32) >= 10)  # the uniform part of the phantom

    def variation(a: np.ndarray) -> float:
        return float(a[flat].std() / a[flat].mean())

    assert variation(out[0].numpy()) < variation(image[0].numpy()) / 3
    assert float(out[0][~head].abs().max()) == 0.0


# common tail and validation


def test_letterbox_keeps_aspect_and_restores():
    img = MetaTensor(torch.ones(1, 20, 40))
    box = LetterboxResize((64, 64))(img)
    assert box.shape == (1, 64, 64)
    assert float(box[0, :16].abs().max()) == 0.0 and float(box[0, 48:].abs().max()) == 0.0
    assert torch.allclose(box[0, 16:48], torch.ones(32, 64))
    np.testing.assert_allclose(LetterboxResize((64, 64)).restore(box, (20, 40)).numpy(), img.numpy(), atol=1e-6)


def test_detector_tail_normalizes_and_binarizes():
    image = MetaTensor(torch.full((1, 30, 50), 0.5))
    mask = MetaTensor(torch.zeros(1, 30, 50))
    mask[0, 10:20, 10:30] = 0.7
    out = detector_input_transforms(spatial_size=(64, 64))({"image": image, "mask": mask})
    assert out["image"].shape == (3, 64, 64) and out["image"].dtype == torch.float32
    centre = out["image"][:, 32, 32]
    expected = (0.5 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    np.testing.assert_allclose(centre.numpy(), expected.numpy(), atol=1e-5)
    assert out["mask"].shape == (1, 64, 64) and set(torch.unique(out["mask"]).tolist()) == {0.0, 1.0}
    no_mask = detector_input_transforms(spatial_size=(64, 64))({"image": image})
    assert "mask" not in no_mask
    with pytest.raises(ValueError, match="one value per channel"):
        detector_input_transforms(mean=(0.5,), std=(0.5,))


@pytest.mark.parametrize(
    "modality,name,overrides",
    [
        ("ct", "CT_small.dcm", {"window": "abdomen"}),
        ("ct", "CT_small.dcm", {"windows": ["brain", "subdural", "bone"]}),
        ("mri", "MR_small.dcm", {}),
        ("xray", None, {}),
        ("ultrasound", "examples_rgb_color.dcm", {}),
        ("ultrasound", "examples_palette.dcm", {}),
    ],
)
def test_presets_give_detector_input(modality, name, overrides):
    path = cr_file() if name is None else dicom_file(name)
    out = modality_preset(modality, **overrides)({"image": path, "label": 0})
    assert out["image"].shape == (3, 256, 256) and out["image"].dtype == torch.float32
    assert torch.isfinite(out["image"]).all() and out["label"] == 0
    low = (0.0 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    high = (1.0 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    flat = out["image"].reshape(3, -1)
    assert (flat.min(1).values >= low - 1e-4).all() and (flat.max(1).values <= high + 1e-4).all()


def test_xray_preset_with_png_mask(tmp_path):
    mask = np.zeros((16, 16), dtype=np.uint8)
    mask[4:8, 6:12] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    out = modality_preset("xray", spatial_size=(64, 64))({"image": cr_file(), "mask": str(tmp_path / "mask.png")})
    assert out["mask"].shape == (1, 64, 64)
    expected = np.kron(mask.T > 0, np.ones((4, 4)))
    np.testing.assert_array_equal(out["mask"][0].numpy(), expected)


def test_mask_on_another_grid_is_rejected(tmp_path):
    Image.fromarray(np.zeros((20, 16), dtype=np.uint8)).save(tmp_path / "mask.png")
    with pytest.raises(RuntimeError) as excinfo:
        modality_preset("xray")({"image": cr_file(), "mask": str(tmp_path / "mask.png")})
    assert raised_in_chain(excinfo, ValueError, r"'mask' from .*mask.png has shape \(1, 16, 20\), expected \(1, 16, 16\)")


def test_mri_preset_with_n4_on_nifti(tmp_path):
    rows, cols = np.mgrid[0:48, 0:48]
    head = np.hypot(rows - 24, cols - 24) < 18
    image = (np.where(head, 80.0, 0.0) * np.exp(0.4 * cols / 47)).astype(np.float32)
    nib.save(nib.Nifti1Image(image, np.eye(4)), tmp_path / "t1.nii.gz")
    preset = modality_preset("mri", spatial_size=(32, 32), n4=True, n4_shrink_factor=4, n4_iterations=(10, 10))
    out = preset({"image": str(tmp_path / "t1.nii.gz")})
    assert out["image"].shape == (3, 32, 32)


def test_presets_from_bundle_config():
    config = {
        "preset": {
            "_target_": "medad_monai.transforms.modality_preset",
            "modality": "ct",
            "windows": ["brain", "subdural", [400, 1800]],
            "spatial_size": [64, 64],
            "load": False,
        },
        "read": {
            "_target_": "medad_monai.transforms.ReadImaged",
            "keys": ["image"],
            "reader": {"_target_": "medad_monai.transforms.DicomReader", "rescale": False},
        },
    }
    parser = ConfigParser(config)
    data = parser.get_parsed_content("read")({"image": dicom_file("CT_small.dcm")})
    assert data["image"].meta["rescale_applied"] is False
    out = parser.get_parsed_content("preset")(data)
    assert out["image"].shape == (3, 64, 64)


def test_unknown_modality_and_option():
    with pytest.raises(ValueError, match="'pet'.*'ct', 'mri', 'xray', 'ultrasound'"):
        modality_preset("pet")
    assert MODALITIES == ("ct", "mri", "xray", "ultrasound")
    with pytest.raises(TypeError, match="levels"):
        modality_preset("ct", levels=3)


def test_validation_names_file_and_problem(tmp_path):
    nan_image = np.ones((8, 8), dtype=np.float32)
    nan_image[2, 3] = np.nan
    nib.save(nib.Nifti1Image(nan_image, np.eye(4)), tmp_path / "nan.nii.gz")
    with pytest.raises(RuntimeError) as excinfo:
        modality_preset("mri")({"image": str(tmp_path / "nan.nii.gz")})
    assert raised_in_chain(excinfo, ValueError, "nan.nii.gz.* has 1 NaN and 0 Inf pixels")
    nib.save(nib.Nifti1Image(np.random.rand(8, 8, 5).astype(np.float32), np.eye(4)), tmp_path / "vol.nii.gz")
    with pytest.raises(RuntimeError) as excinfo:
        modality_preset("mri")({"image": str(tmp_path / "vol.nii.gz")})
    assert raised_in_chain(excinfo, ValueError, r"vol.nii.gz has 3 spatial dims .*expected 2")
    nib.save(nib.Nifti1Image(np.zeros((8, 8), np.float32), np.eye(4)), tmp_path / "blank.nii.gz")
    with pytest.raises(RuntimeError) as excinfo:
        modality_preset("mri")({"image": str(tmp_path / "blank.nii.gz")})
    assert raised_in_chain(excinfo, ValueError, "blank.nii.gz is constant")
    empty = MetaTensor(torch.zeros(1, 0, 8), meta={"filename_or_obj": "empty.png"})
    with pytest.raises(ValueError, match="empty.png is empty"):
        ValidateImaged("image")({"image": empty})
    inf = MetaTensor(torch.ones(1, 4, 4), meta={"filename_or_obj": "inf.png"})
    inf[0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="inf.png has 0 NaN and 1 Inf"):
        ValidateImaged("image")({"image": deepcopy(inf)})


def test_dicom_of_another_modality_is_refused_unless_allowed(caplog):
    rtdose = dicom_file("rtdose_1frame.dcm")  # scored 6.98, above threshold, under the ct preset before
    with pytest.raises(RuntimeError) as excinfo:
        modality_preset("ct", spatial_size=(32, 32))({"image": rtdose})
    assert raised_in_chain(excinfo, ValueError, "rtdose_1frame.dcm is a DICOM RTDOSE image, not one the 'ct' preset")
    with pytest.raises(RuntimeError) as excinfo:
        modality_preset("ct", spatial_size=(32, 32))({"image": dicom_file("MR_small.dcm")})
    assert raised_in_chain(excinfo, ValueError, "MR_small.dcm is a DICOM MR image.*--modality mri")
    with caplog.at_level("WARNING"):
        out = modality_preset("ct", spatial_size=(32, 32), allow_modality_mismatch=True)({"image": rtdose})
    assert out["image"].shape == (3, 32, 32) and "RTDOSE" in caplog.text
    unspecified = read(dicom_file("SC_rgb_small_odd.dcm"))  # Modality OT: names no modality, every preset reads it
    assert unspecified.meta["Modality"] == "OT"
    assert CheckModalityd("image", "xray")({"image": unspecified})["image"] is unspecified


@pytest.mark.parametrize("modality", ["mri", "xray", "ultrasound"])
def test_colour_png_with_alpha_in_every_preset_that_reads_colour(tmp_path, modality):
    rng = np.random.default_rng(0)
    grey = rng.integers(1, 256, (40, 52), dtype=np.uint8)
    rgba = np.dstack([grey, grey, grey, np.full_like(grey, 255)])  # failed on "channel 3 ... percentiles" before
    Image.fromarray(rgba, "RGBA").save(tmp_path / "slice.png")
    out = modality_preset(modality, spatial_size=(32, 32))({"image": str(tmp_path / "slice.png")})
    assert out["image"].shape == (3, 32, 32) and torch.isfinite(out["image"]).all()


def test_ct_refuses_colour_by_name():
    with pytest.raises(RuntimeError) as excinfo:
        modality_preset("ct", allow_modality_mismatch=True)({"image": dicom_file("examples_rgb_color.dcm")})
    assert raised_in_chain(excinfo, ValueError, r"examples_rgb_color.dcm has 3 channels \(a colour image\): CT windows")


def test_32_bit_range_is_compared_as_the_image_holds_it():
    img = read(dicom_file("SC_rgb_rle_32bit.dcm"))  # 2**32 - 1 is 2**32 in float32: refused before
    assert float(img.max()) == 2.0**32
    assert float(BitDepthScaled("image")({"image": img})["image"].max()) == pytest.approx(1.0)


def test_volumes_accepted_where_two_or_three_dims_are(tmp_path):
    nib.save(nib.Nifti1Image(np.random.rand(8, 8, 5).astype(np.float32), np.eye(4)), tmp_path / "vol.nii.gz")
    out = modality_preset("mri", spatial_size=None, spatial_dims=[2, 3])({"image": str(tmp_path / "vol.nii.gz")})
    assert out["image"].shape == (3, 8, 8, 5)
    with pytest.raises(RuntimeError) as excinfo:
        modality_preset("mri", spatial_size=None, spatial_dims=[2])({"image": str(tmp_path / "vol.nii.gz")})
    assert raised_in_chain(excinfo, ValueError, "has 3 spatial dims .*expected 2")
