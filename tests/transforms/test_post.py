"""ImageScored, ThresholdAnomalyMapd, UnpackOutputd and the image scorers they call."""

from __future__ import annotations

import pytest
import torch
from monai.data import MetaTensor

from medad_monai.detectors.sp_mamba import SPMambaImageScore, concentration_score, contrast_score
from medad_monai.scoring import AnomalyImageScore, max_of_avg_pooled, top_k_mean
from medad_monai.transforms import ImageScored, ThresholdAnomalyMapd, UnpackOutputd


def test_anomaly_image_score_pools_the_map():
    torch.manual_seed(0)
    maps = torch.rand(3, 1, 32, 32)
    torch.testing.assert_close(AnomalyImageScore(kernel_size=4)(maps), max_of_avg_pooled(maps, 4))
    torch.testing.assert_close(AnomalyImageScore("top_k_mean", top_k_ratio=0.1)(maps), top_k_mean(maps, ratio=0.1))
    with pytest.raises(ValueError, match="pooling"):
        AnomalyImageScore("mean")


def test_sp_mamba_image_score_defaults_are_the_papers_eq7():
    torch.manual_seed(0)
    maps = torch.rand(3, 1, 32, 32)
    expected = max_of_avg_pooled(maps, 4) - 0.025 * concentration_score(maps) + 400.0 * contrast_score(maps)
    torch.testing.assert_close(SPMambaImageScore(kernel_size=4)(maps), expected)
    plain = SPMambaImageScore(kernel_size=4, concentration_weight=0.0, contrast_weight=0.0)
    torch.testing.assert_close(plain(maps), max_of_avg_pooled(maps, 4))


def test_image_scored_2d_and_3d():
    scorer = AnomalyImageScore(kernel_size=1)
    amap = torch.zeros(1, 8, 8)
    amap[0, 2, 3] = 5.0
    assert ImageScored("pred", scorer)({"pred": amap})["score"].item() == pytest.approx(5.0)
    volume = torch.zeros(1, 6, 6, 4)
    volume[0, 1, 1, 2] = 7.0
    out = ImageScored("pred", scorer, slice_axis=2)({"pred": volume})
    assert out["score"].ndim == 0 and out["score"].item() == pytest.approx(7.0)
    with pytest.raises(ValueError, match=r"\(1, H, W\)"):
        ImageScored("pred", scorer)({"pred": torch.zeros(2, 8, 8)})


def test_threshold_anomaly_map_keeps_metadata():
    amap = MetaTensor(torch.tensor([[[0.1, 0.9], [0.5, 0.7]]]), meta={"filename_or_obj": "a.nii.gz"})
    out = ThresholdAnomalyMapd("pred", threshold=0.6)({"pred": amap})["pred_mask"]
    assert out.dtype == torch.uint8 and out.tolist() == [[[0, 1], [0, 1]]]
    assert out.meta["filename_or_obj"] == "a.nii.gz"


def test_unpack_output_moves_dict_entries_to_the_top_level():
    pred, network = torch.rand(1, 8, 8), torch.rand(1, 4, 4)
    out = UnpackOutputd("pred")({"pred": {"pred": pred, "pred_network": network}, "image": 0})
    assert out["pred"] is pred and out["pred_network"] is network and out["image"] == 0
    assert UnpackOutputd("pred")({"pred": pred})["pred"] is pred  # a map alone passes
    with pytest.raises(KeyError, match="without a 'pred' entry"):
        UnpackOutputd("pred")({"pred": {"map": pred}})
    with pytest.raises(KeyError, match="would overwrite"):
        UnpackOutputd("pred")({"pred": {"pred": pred, "image": network}, "image": 0})


def test_image_score_errors_name_the_file():
    tiny = MetaTensor(torch.rand(1, 3, 3), meta={"filename_or_obj": "tiny.png"})
    with pytest.raises(ValueError, match="cannot score 'pred' from tiny.png: kernel_size"):
        ImageScored("pred", AnomalyImageScore(kernel_size=4))({"pred": tiny})
