"""2D and slice-wise inference of 2D detectors, back in the input's geometry, also for colour inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor, decollate_batch, list_data_collate
from monai.transforms import LoadImage, SaveImage
from PIL import Image
from pydicom.data import get_testdata_file

from medad_monai.inferers import ImageInferer, ScoreMapInferer, SliceWiseInferer, pixel_and_score_maps
from medad_monai.transforms import ReadImaged, modality_preset


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


def _ultrasound_png(path) -> str:
    rng = np.random.default_rng(0)
    frame = np.zeros((70, 90, 3), dtype=np.uint8)
    frame[10:60, 15:80] = rng.integers(20, 255, (50, 65, 3), dtype=np.uint8)  # the scan sector, in colour
    Image.fromarray(frame).save(path)
    return str(path)


@pytest.mark.parametrize("source", ["examples_rgb_color.dcm", "examples_palette.dcm", "rgb.png"])
def test_colour_inputs_get_a_saved_map_in_their_geometry(tmp_path, source):
    # the map of a colour input used to keep the input's channel-last metadata: "SaveImage cannot find a writer"
    path = _ultrasound_png(tmp_path / source) if source.endswith(".png") else get_testdata_file(source, download=False)
    item = modality_preset("ultrasound", spatial_size=None)({"image": path})
    batch = list_data_collate([item])
    net = torch.nn.Conv2d(3, 1, 3, padding=1).eval()
    with torch.no_grad():
        pred = decollate_batch(ImageInferer((32, 32))(batch["image"], net))[0]
    assert pred.shape == (1, *item["image"].shape[1:])
    saver = SaveImage(output_dir=tmp_path / "out", output_postfix="map", separate_folder=False, print_log=False,
                      resample=False, savepath_in_metadict=True)
    saver(pred)
    saved = LoadImage(image_only=True)(pred.meta["saved_to"])
    np.testing.assert_allclose(saved.numpy(), pred[0].numpy(), atol=1e-5)


def test_image_inferer_returns_network_maps_and_slices_3d_inputs():
    image = MetaTensor(torch.rand(2, 3, 20, 24), meta={"filename_or_obj": ["a.png", "b.png"]})
    image.is_batch = True
    out = ImageInferer((16, 16), network_map_key="pred_network")(image, lambda x: x[:, :1])
    items = decollate_batch(out)
    assert [i["pred"].shape for i in items] == [(1, 20, 24)] * 2
    assert [i["pred_network"].shape for i in items] == [(1, 16, 16)] * 2
    assert [i["pred_network"].meta["filename_or_obj"] for i in items] == ["a.png", "b.png"]
    # 85 x 103 slices: zoom factors to 16 x 16 that do not divide evenly (MONAI's SliceInferer fails on them)
    volume = MetaTensor(torch.rand(2, 3, 85, 103, 5), meta={"filename_or_obj": ["cine.dcm", "other.dcm"]})
    volume.is_batch = True
    inferer = ImageInferer((16, 16), network_map_key="pred_network", sw_batch_size=3)
    out = inferer(volume, lambda x: x[:, :1] * 2)
    assert out["pred"].shape == (2, 1, 85, 103, 5) and out["pred_network"].shape == (2, 1, 16, 16, 5)
    frame = ImageInferer((16, 16), network_map_key="pred_network")(volume[1:, ..., 3], lambda x: x[:, :1] * 2)
    torch.testing.assert_close(out["pred"][1:, ..., 3].as_tensor(), frame["pred"].as_tensor())
    torch.testing.assert_close(out["pred_network"][1:, ..., 3].as_tensor(), frame["pred_network"].as_tensor())
    with pytest.raises(ValueError, match="network_map_key"):
        ImageInferer(network_map_key="pred")


class _TwoMaps(torch.nn.Module):
    """A detector with an image-level map of its own: pixel map = first channel, score map = its square."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :1]

    def anomaly_and_score_maps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x[:, :1], x[:, :1] ** 2


def test_a_detectors_score_map_is_returned_for_scoring_and_its_pixel_map_as_pred():
    image = torch.rand(2, 3, 20, 24)
    with_map = ImageInferer((16, 16), mean=None, std=None, network_map_key="pred_network")(image, _TwoMaps())
    plain = ImageInferer((16, 16), mean=None, std=None, network_map_key="pred_network")(image, lambda x: x[:, :1])
    torch.testing.assert_close(with_map["pred"], plain["pred"])  # the pixel map, back in the input's geometry
    torch.testing.assert_close(with_map["pred_network"], plain["pred_network"] ** 2)  # the score map, network size
    volume = torch.rand(1, 3, 20, 24, 3)
    out = ImageInferer((16, 16), mean=None, std=None, network_map_key="pred_network")(volume, _TwoMaps())
    frame = ImageInferer((16, 16), mean=None, std=None, network_map_key="pred_network")(volume[..., 1], _TwoMaps())
    torch.testing.assert_close(out["pred_network"][..., 1], frame["pred_network"])  # each frame's own score map
    assert out["pred"].shape == (1, 1, 20, 24, 3) and out["pred_network"].shape == (1, 1, 16, 16, 3)
    # without network_map_key the inferer returns the pixel map alone, as before
    torch.testing.assert_close(ImageInferer((16, 16), mean=None, std=None)(image, _TwoMaps()), plain["pred"])


def test_score_map_inferer_for_network_size_batches():
    image = torch.rand(2, 3, 16, 16)
    out = ScoreMapInferer()(image, _TwoMaps())
    torch.testing.assert_close(out["pred"], image[:, :1])
    torch.testing.assert_close(out["pred_network"], image[:, :1] ** 2)
    # wrapped for several devices: the wrapped module's maps
    out = ScoreMapInferer("score")(image, torch.nn.DataParallel(_TwoMaps()))
    torch.testing.assert_close(out["score"], image[:, :1] ** 2)
    # a detector without a map of its own: its map twice, as SimpleInferer returns it
    plain = ScoreMapInferer()(image, lambda x: x[:, :1])
    assert plain["pred"] is plain["pred_network"]
    with pytest.raises(ValueError, match="network_map_key"):
        ScoreMapInferer("pred")


def test_score_maps_of_the_wrong_shape_are_refused():
    class Bad(_TwoMaps):
        def anomaly_and_score_maps(self, x):
            return x[:, :1], x[:, :2]

    with pytest.raises(ValueError, match="score map of anomaly_and_score_maps"):
        pixel_and_score_maps(Bad(), torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match="\\(B, 1, H, W\\)"):
        ScoreMapInferer()(torch.rand(1, 3, 8, 8), lambda x: x)
