"""Reading: DicomReader / ReadImaged on pydicom's real test files and on NIfTI, MHA, NRRD and
PNG files written here; read errors that name the file; what is not one image is refused."""

from __future__ import annotations

import os
import shutil

import itk
import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_color_lut, apply_modality_lut, get_decoder

from medad_monai.transforms import DICOM_PIXEL_TAGS, DicomReader, ReadImaged


def dicom_file(name: str) -> str:
    """A file of pydicom's bundled test data (never downloaded)."""
    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"{name} is not bundled with this pydicom")
    return path


def dicom_dir(*parts: str) -> str:
    return os.path.join(os.path.dirname(dicom_file("CT_small.dcm")), "dicomdirtests", *parts)


def read(path, **kwargs) -> torch.Tensor:
    return ReadImaged("image", **kwargs)({"image": path})["image"]


def columns_first(array: np.ndarray) -> np.ndarray:
    """MONAI readers put the DICOM/PIL column axis first: (rows, cols[, s]) -> (s, cols, rows)."""
    return array.T if array.ndim == 2 else np.moveaxis(array, -1, 0).swapaxes(1, 2)


def test_ct_hounsfield_units_applied_once_by_reader():
    path = dicom_file("CT_small.dcm")
    ds = pydicom.dcmread(path)
    img = read(path)
    assert img.shape == (1, 128, 128) and img.dtype == torch.float32
    np.testing.assert_allclose(img[0].numpy(), columns_first(apply_modality_lut(ds.pixel_array, ds)))
    assert img.meta["rescale_applied"] is True
    assert img.meta["RescaleIntercept"] == -1024.0 and img.meta["RescaleSlope"] == 1.0
    raw = read(path, rescale=False)
    np.testing.assert_array_equal(raw[0].numpy(), columns_first(ds.pixel_array))
    assert raw.meta["rescale_applied"] is False


def test_pixel_tags_in_meta():
    mr = read(dicom_file("MR_small.dcm")).meta
    assert (mr["WindowCenter"], mr["WindowWidth"]) == (600.0, 1600.0)
    assert mr["BitsStored"] == 16 and mr["PhotometricInterpretation"] == "MONOCHROME2" and mr["Modality"] == "MR"
    assert mr["has_voi_lut"] is False and mr["VOILUTFunction"] == "LINEAR"
    cr = read(dicom_dir("77654033", "CR1", "6154")).meta
    assert cr["PhotometricInterpretation"] == "MONOCHROME1" and cr["BitsStored"] == 12
    assert cr["RescaleSlope"] == pytest.approx(0.684) and cr["RescaleIntercept"] == 200.0
    ct = read(dicom_file("CT_small.dcm")).meta
    assert np.isnan(ct["WindowCenter"])  # absent tag: default, but the key is there
    for meta in (mr, cr, ct):
        assert set(DICOM_PIXEL_TAGS) | {"has_voi_lut", "rescale_applied"} <= set(meta)


def test_series_folder_is_one_volume_in_instance_order():
    folder = dicom_dir("98892001", "CT5N")
    img = read(folder)
    assert img.shape == (1, 16, 16, 5)
    slices = [pydicom.dcmread(os.path.join(folder, f)) for f in os.listdir(folder)]
    slices.sort(key=lambda s: s.InstanceNumber)
    for k, ds in enumerate(slices):
        np.testing.assert_allclose(img[0, :, :, k].numpy(), columns_first(apply_modality_lut(ds.pixel_array, ds)))
    assert abs(float(img.affine[2, 2])) == pytest.approx(2.5)  # slice spacing from ImagePositionPatient


def test_rgb_is_three_channels():
    path = dicom_file("examples_rgb_color.dcm")
    img = read(path)
    assert img.shape == (3, 320, 240)
    np.testing.assert_array_equal(img.numpy(), columns_first(pydicom.dcmread(path).pixel_array))
    assert img.meta["PhotometricInterpretation"] == "RGB" and img.meta["SamplesPerPixel"] == 3


def test_ybr_cine_frames_on_last_axis_as_rgb():
    path = dicom_file("examples_ybr_color.dcm")
    img = read(path)
    assert img.shape == (3, 320, 240, 30)
    assert img.meta["NumberOfFrames"] == 30 and img.meta["PhotometricInterpretation"] == "RGB"
    frames = pydicom.dcmread(path).pixel_array  # pydicom converts YBR_FULL_422 to RGB
    for k in (0, 17, 29):
        np.testing.assert_array_equal(img[..., k].numpy(), columns_first(frames[k]))


def test_palette_expanded_to_rgb():
    path = dicom_file("examples_palette.dcm")
    ds = pydicom.dcmread(path)
    img = read(path)
    assert img.shape == (3, 800, 350)
    np.testing.assert_array_equal(img.numpy(), columns_first(apply_color_lut(ds.pixel_array, ds)))
    assert img.meta["BitsStored"] == 16 and img.meta["PhotometricInterpretation"] == "RGB"


def test_dicom_reader_leaves_other_formats_to_monai():
    assert DicomReader().verify_suffix(dicom_file("CT_small.dcm"))
    assert not DicomReader().verify_suffix("image.nii.gz")


def test_nifti_mha_nrrd_png(tmp_path):
    rng = np.random.default_rng(0)
    volume = rng.random((6, 7, 8), dtype=np.float32)
    affine = np.diag([1.5, 2.0, 3.0, 1.0])
    nib.save(nib.Nifti1Image(volume, affine), tmp_path / "v.nii.gz")
    img = read(tmp_path / "v.nii.gz")
    np.testing.assert_allclose(img[0].numpy(), volume)
    np.testing.assert_allclose(img.affine.numpy(), affine)

    plane = rng.random((9, 11), dtype=np.float32)
    itk.imwrite(itk.image_from_array(plane), str(tmp_path / "p.mha"))
    np.testing.assert_allclose(read(tmp_path / "p.mha")[0].numpy(), plane.T)
    itk.imwrite(itk.image_from_array(volume), str(tmp_path / "v.nrrd"))
    np.testing.assert_allclose(read(tmp_path / "v.nrrd")[0].numpy(), volume.transpose(2, 1, 0))

    grey = rng.integers(0, 256, (9, 11), dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "g.png")
    png = read(tmp_path / "g.png")
    np.testing.assert_array_equal(png[0].numpy(), grey.T)
    assert png.meta["mode"] == "L"
    rgb = rng.integers(0, 256, (9, 11, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    np.testing.assert_array_equal(read(tmp_path / "c.png").numpy(), columns_first(rgb))


def test_missing_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.dcm"):
        read(tmp_path / "nothing.dcm")


@pytest.mark.parametrize("keep", [400, 20000])
def test_truncated_dicom_names_the_file(tmp_path, keep):
    path = tmp_path / f"truncated_{keep}.dcm"
    path.write_bytes(open(dicom_file("CT_small.dcm"), "rb").read()[:keep])
    with pytest.raises(ValueError, match=f"truncated_{keep}.dcm"):
        read(path)


def test_real_truncated_dicom_names_the_file():
    with pytest.raises(ValueError, match="MR_truncated.dcm"):
        read(dicom_file("MR_truncated.dcm"))


def test_compressed_without_decoder_names_the_file():
    path = dicom_file("MR_small_jpeg_ls_lossless.dcm")
    if get_decoder(pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID).is_available:
        pytest.skip("a JPEG-LS decoder plugin is installed")
    with pytest.raises(ValueError, match="MR_small_jpeg_ls_lossless.dcm.*JPEG-LS"):
        read(path)


def test_corrupt_nifti_names_the_file(tmp_path):
    path = tmp_path / "broken.nii.gz"
    path.write_bytes(b"not a nifti file at all")
    with pytest.raises(ValueError, match="broken.nii.gz"):
        read(path)


def test_folder_of_unrelated_dicom_files_is_not_stacked(tmp_path):
    # 2D images of other series, of equal size (a wrong stack before) and of other sizes (a numpy error before)
    equal, other = tmp_path / "equal", tmp_path / "other"
    sources = {equal: [dicom_dir("77654033", "CR1", "6154"), dicom_dir("77654033", "CR2", "6247")],
               other: [dicom_dir("77654033", "CR1", "6154"), dicom_file("CT_small.dcm")]}
    for folder, files in sources.items():
        folder.mkdir()
        for k, source in enumerate(files):
            shutil.copy(source, folder / f"{k}.dcm")
    assert len({pydicom.dcmread(p, stop_before_pixels=True).Rows for p in other.iterdir()}) == 2
    with pytest.raises(ValueError, match="equal holds 2 DICOM series"):
        read(equal)
    with pytest.raises(ValueError, match="other holds 2 DICOM series"):
        read(other)


def test_series_given_as_its_files_is_one_volume(tmp_path):
    folder = dicom_dir("98892001", "CT5N")
    files = sorted(os.path.join(folder, f) for f in os.listdir(folder))
    np.testing.assert_array_equal(read(files).numpy(), read(folder).numpy())
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for f in files:
        shutil.copy(f, mixed)
    for extra in ("README.txt", "DICOMDIR"):
        (mixed / extra).write_text("not part of the series")
    assert read(mixed).shape == (1, 16, 16, 5)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty holds no DICOM file"):
        read(tmp_path / "empty")


@pytest.mark.parametrize(
    "name,problem",
    [("liver_1frame.dcm", "segmentation \\(Modality SEG"), ("rtplan.dcm", "holds no pixel data \\(Modality RTPLAN"),
     ("test-SR.dcm", "holds no pixel data")],
)
def test_dicom_without_an_image_is_refused_by_name(name, problem):
    with pytest.raises(ValueError, match=f"{name}: .*{name} (is a DICOM )?{problem}"):
        read(dicom_file(name))


def test_png_alpha_and_palette_are_grey_or_rgb(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (9, 11, 3), dtype=np.uint8)
    opaque = np.dstack([rgb, np.full((9, 11), 255, np.uint8)])
    Image.fromarray(opaque, "RGBA").save(tmp_path / "opaque.png")
    img = read(tmp_path / "opaque.png")
    assert img.shape == (3, 11, 9) and img.meta["mode"] == "RGB"
    np.testing.assert_array_equal(img.numpy(), columns_first(rgb))
    half = opaque.copy()
    half[..., 3] = 0
    half[:4, :, 3] = 255  # rows 4.. transparent: no content
    Image.fromarray(half, "RGBA").save(tmp_path / "half.png")
    composited = read(tmp_path / "half.png").numpy()
    np.testing.assert_array_equal(composited[:, :, :4], columns_first(rgb[:4]))
    assert not composited[:, :, 4:].any()
    grey = rng.integers(0, 256, (9, 11), dtype=np.uint8)
    Image.fromarray(np.dstack([grey, np.full_like(grey, 255)]), "LA").save(tmp_path / "la.png")
    np.testing.assert_array_equal(read(tmp_path / "la.png")[0].numpy(), grey.T)
    Image.fromarray(grey).convert("P").save(tmp_path / "palette.png")
    palette = read(tmp_path / "palette.png")
    assert palette.shape == (3, 11, 9) and palette.meta["mode"] == "RGB"
