"""Every bundle's configs, resolved in-process with a stand-in network: the parts of inference and training
that decide scores and refuse bad inputs, without training (the end-to-end runs are in test_bundles.py)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.bundle import ConfigParser
from monai.data import MetaTensor, decollate_batch
from monai.transforms import Compose, SaveImaged

from medad_monai.detectors.umiad_egmf import additive_anomaly_map, multiplicative_anomaly_map
from medad_monai.scoring import top_k_mean

ASPECT_SIZES = [(85, 103), (340, 412), (1360, 1648)]  # the same content at 1x, 4x and 16x the resolution


def _parser(bundle, config: str, **overrides) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(str(bundle.configs / config))
    parser.update(overrides)
    return parser


def _content(shape: tuple[int, int]) -> MetaTensor:
    """A smooth object on a black background with a bright off-centre blob, sampled on ``shape`` pixels:
    (1, 3, h, w) in [0, 1]."""
    rows, cols = (torch.linspace(0, 1, n) for n in shape)
    r, c = torch.meshgrid(rows, cols, indexing="ij")
    body = torch.sin(torch.pi * r) * torch.sin(torch.pi * c)
    blob = torch.exp(-((r - 0.3) ** 2 + (c - 0.65) ** 2) / 0.02)
    image = body * (0.5 + 0.2 * torch.sin(3 * r) * torch.cos(2 * c)) + 0.4 * blob
    batch = MetaTensor(image.clamp(0, 1)[None, None].repeat(1, 3, 1, 1), meta={"filename_or_obj": [f"{shape}.png"]})
    batch.is_batch = True
    return batch


def _stand_in_network(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 1, H, W): high where the image departs from its local mean, smoothed as a detector's
    map is."""
    grey = x.mean(dim=1, keepdim=True)
    departure = (grey - F.avg_pool2d(grey, 9, stride=1, padding=4, count_include_pad=False)).abs() * 5
    return F.avg_pool2d(departure, 5, stride=1, padding=2, count_include_pad=False)


def _inference_scores(bundle, tmp_path, sizes) -> tuple[list[float], list[tuple[int, ...]]]:
    (tmp_path / "threshold.json").write_text(json.dumps({"threshold": 1.0, "pixel_threshold": 0.5}))
    parser = _parser(bundle, "inference.json", threshold_file=str(tmp_path / "threshold.json"),
                     output_dir=str(tmp_path), data_root=str(tmp_path))
    inferer = parser.get_parsed_content("inferer")
    post = Compose([t for t in parser.get_parsed_content("postprocessing").transforms if not isinstance(t, SaveImaged)])
    scores, shapes = [], []
    for size in sizes:
        image = _content(size)
        with torch.no_grad():
            output = {"image": image, "pred": inferer(image, _stand_in_network)}
        item = post(decollate_batch(output)[0])
        scores.append(float(item["score"]))
        shapes.append(tuple(item["pred"].shape))
    return scores, shapes


def test_image_score_does_not_depend_on_the_input_size(bundle, tmp_path):
    # the score was computed on the map at the input's size: 1.98 at 85x103, -0.49 at 4096^2 for one content
    scores, shapes = _inference_scores(bundle, tmp_path, ASPECT_SIZES)
    assert shapes == [(1, *size) for size in ASPECT_SIZES]  # the map stays in the input's geometry
    assert np.ptp(scores) <= 0.03 * np.abs(scores).mean(), scores  # resampling error only (it was >1000 %)


def test_tiny_images_are_scored(bundle, tmp_path):
    scores, shapes = _inference_scores(bundle, tmp_path, [(3, 2), (1, 5)])  # under 4 px crashed in scoring
    assert shapes == [(1, 3, 2), (1, 1, 5)] and np.isfinite(scores).all()


def test_training_lists_must_be_normal_and_not_empty(bundle, tmp_path):
    image = tmp_path / "a.nii.gz"
    image.write_bytes(b"x")
    lists = {"training": [{"image": "a.nii.gz", "label": 0}, {"image": "a.nii.gz", "label": 1}], "validation": []}
    (tmp_path / "datalist.json").write_text(json.dumps(lists))
    parser = _parser(bundle, "train.json", datalist=str(tmp_path / "datalist.json"))
    with pytest.raises(Exception) as abnormal:
        parser.get_parsed_content("train#datalist")
    assert "has label 1: 'training' must hold normal images only" in str(abnormal.value.__cause__)
    with pytest.raises(Exception) as empty:
        parser.get_parsed_content("validate#datalist")
    assert "'validation' of datalist" in str(empty.value.__cause__) and "has no items" in str(empty.value.__cause__)


def test_inference_datalists_need_no_labels(bundle, tmp_path):
    (tmp_path / "a.nii.gz").write_bytes(b"x")
    (tmp_path / "list.json").write_text(json.dumps({"test": [{"image": "a.nii.gz"}]}))
    parser = _parser(bundle, "inference.json", input=str(tmp_path / "list.json"))
    assert parser.get_parsed_content("datalist") == [{"image": str(tmp_path / "a.nii.gz")}]
    assert parser.get_parsed_content("data_root") == str(tmp_path)



class _Recording(torch.nn.Module):
    """A detector that records the inputs its two maps were computed from."""

    def __init__(self, network: torch.nn.Module) -> None:
        super().__init__()
        self.network, self.inputs = network, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)

    def anomaly_and_score_maps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.inputs.append(x)
        return self.network.anomaly_and_score_maps(x)


def test_umiad_egmf_localises_with_the_additive_map_and_scores_the_multiplicative_one(tmp_path):
    """Validation and inference both score images on the paper's image-level (multiplicative) map, from the
    pass that gives the additive pixel map."""
    bundle = SimpleNamespace(configs=Path(__file__).resolve().parents[2] / "bundles" / "umiad_egmf" / "configs")
    tiny = {"network_def#num_coupling_blocks": 1, "network_def#condition_channels": 8,
            "network_def#subnet_hidden_ratio": 0.25, "network_def#mff_kernel_size": 1}
    torch.manual_seed(0)
    train = _parser(bundle, "train.json", **tiny)
    network = train.get_parsed_content("network_def").eval()

    def expected(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The additive map and the top-10 % mean of the multiplicative map, computed here from the latents."""
        with torch.no_grad():
            log_p = [-0.5 * u.square().mean(dim=1, keepdim=True) for u in network.latents(x)["latents"]]
            return additive_anomaly_map(log_p, (64, 64)), top_k_mean(multiplicative_anomaly_map(log_p, (64, 64)), ratio=0.1)

    # validation: batches at the network's size
    image = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        output = {"image": image, "pred": train.get_parsed_content("validate#inferer")(image, network)}
    post = train.get_parsed_content("validate#postprocessing")
    items = [post(item) for item in decollate_batch(output)]
    additive, scores = expected(image)
    for item, pixel_map, score in zip(items, additive, scores):
        torch.testing.assert_close(torch.as_tensor(item["pred"]), pixel_map)
        assert float(item["score"]) == pytest.approx(float(score), rel=1e-5)
    assert float(items[0]["score"]) != pytest.approx(float(top_k_mean(additive[:1], ratio=0.1)[0]), rel=1e-3)

    # inference: an image of another size is scored on the network-size multiplicative map
    (tmp_path / "threshold.json").write_text(json.dumps({"threshold": 0.5, "pixel_threshold": 0.5}))
    parser = _parser(bundle, "inference.json", threshold_file=str(tmp_path / "threshold.json"),
                     output_dir=str(tmp_path), data_root=str(tmp_path), **tiny)
    recording = _Recording(network)
    content = _content((85, 103))
    with torch.no_grad():
        output = {"image": content, "pred": parser.get_parsed_content("inferer")(content, recording)}
    post = Compose([t for t in parser.get_parsed_content("postprocessing").transforms if not isinstance(t, SaveImaged)])
    item = post(decollate_batch(output)[0])
    _, score = expected(recording.inputs[0])
    assert tuple(item["pred"].shape) == (1, 85, 103)
    assert float(item["score"]) == pytest.approx(float(score[0]), rel=1e-5)


@pytest.mark.parametrize("config", ["train.json", "inference.json"])
def test_sp_mamba_adds_the_prototype_distance_only_on_the_papers_grid(config):
    """alpha = 1 (the paper) at 256 x 256, where the prototype grid is the paper's 8 x 8; 0 on the demo's 2 x 2 grid,
    where the upsampled distance does not localise (the bundle docs' map-term ablation)."""
    bundle = SimpleNamespace(configs=Path(__file__).resolve().parents[2] / "bundles" / "sp_mamba" / "configs")
    weights = {size: _parser(bundle, config, image_size=[size, size]).get_parsed_content("prototype_weight")
               for size in (64, 96, 256, 512)}
    assert weights == {64: 0.0, 96: 0.0, 256: 1.0, 512: 1.0}
    assert _parser(bundle, config)["network_def"]["prototype_weight"] == "@prototype_weight"
