"""Slice-wise inference of 2D detectors on 3D volumes, back in the volume's geometry."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import LoadImage, SaveImage

from medad_monai.inferers import SliceWiseInferer
from medad_monai.transforms import ReadImaged


def test_slice_inference_keeps_shape_and_geometry(volume_affine, volume_files, tmp_path):
    path = volume_files[0]
    vol = ReadImaged("image")({"image": path})["image"].repeat(3, 1, 1, 1)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 1, 1)).eval()
    inferer = SliceWiseInferer(network_size=(32, 32), spatial_dim=2, sw_batch_size=4)
    with torch.no_grad():
        out = inferer(vol[None], net)
    assert isinstance(out, MetaTensor) and out.shape == (1, 1, 20, 24, 10)
    SaveImage(output_dir=tmp_path / "pred", output_postfix="anomaly", separate_folder=False, print_log=False)(out[0])
    saved = LoadImage(image_only=True)(tmp_path / "pred" / "vol_anomaly.nii.gz")
    assert tuple(saved.shape) == (20, 24, 10)
    np.testing.assert_allclose(saved.affine.numpy(), volume_affine, atol=1e-6)
    np.testing.assert_allclose(saved.numpy(), out[0, 0].numpy(), atol=1e-5)


@pytest.mark.parametrize("resize_mode", ["letterbox", "stretch"])
@pytest.mark.parametrize("spatial_dim", [0, 2])
def test_slice_inference_maps_each_slice_back_in_place(resize_mode, spatial_dim):
    grid = torch.stack(torch.meshgrid(*(torch.linspace(-1, 1, n) for n in (20, 24, 10)), indexing="ij"))
    smooth = torch.exp(-(grid**2).sum(0) * 2.0)[None, None]  # (1, 1, 20, 24, 10)

    def first_channel(x: torch.Tensor) -> torch.Tensor:
        return x[:, :1]

    inferer = SliceWiseInferer((32, 32), spatial_dim=spatial_dim, resize_mode=resize_mode, mean=None, std=None)
    out = inferer(smooth, first_channel)
    assert out.shape == smooth.shape
    assert float((out - smooth).abs().max()) < 0.05  # only resampling error, nothing displaced

    normalized = SliceWiseInferer((32, 32), spatial_dim=spatial_dim, resize_mode=resize_mode)
    ones = normalized(smooth.repeat(1, 3, 1, 1, 1), lambda x: torch.ones_like(x[:, :1]))
    np.testing.assert_allclose(ones.numpy(), 1.0, atol=1e-6)


def test_slice_inference_errors():
    inferer = SliceWiseInferer((16, 16))
    with pytest.raises(ValueError, match="\\(B, 1, H, W\\)"):
        inferer(torch.rand(1, 3, 8, 8, 4), lambda x: x)
    with pytest.raises(ValueError, match="inputs must be"):
        inferer(torch.rand(1, 3, 8, 8), lambda x: x[:, :1])
    with pytest.raises(ValueError, match="resize_mode"):
        SliceWiseInferer(resize_mode="crop")
