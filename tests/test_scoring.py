"""Tests for medad_monai.scoring (generic maps and pooling) on hand-built maps with known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from medad_monai.scoring import cosine_anomaly_map, max_of_avg_pooled, top_k_mean


def test_cosine_map_zero_for_identical_and_two_per_scale_for_opposite():
    generator = torch.Generator().manual_seed(1)
    feats = [torch.randn(2, 8, 8, 8, generator=generator), torch.randn(2, 16, 4, 4, generator=generator)]
    for sigma in (0.0, 4.0):
        same = cosine_anomaly_map(feats, feats, (32, 32), sigma=sigma)
        assert same.shape == (2, 1, 32, 32)
        torch.testing.assert_close(same, torch.zeros_like(same), atol=1e-5, rtol=0)
        opposite = cosine_anomaly_map(feats, [-f for f in feats], (32, 32), sigma=sigma)
        torch.testing.assert_close(opposite, torch.full_like(opposite, 4.0), atol=1e-5, rtol=0)
    x_axis, y_axis = torch.tensor([1.0, 0.0]).view(1, 2, 1, 1), torch.tensor([0.0, 3.0]).view(1, 2, 1, 1)
    orthogonal = cosine_anomaly_map([x_axis], [y_axis], (2, 2))
    torch.testing.assert_close(orthogonal, torch.ones(1, 1, 2, 2))


def test_cosine_map_upsamples_each_scale_then_smooths():
    generator = torch.Generator().manual_seed(2)
    f_in = [torch.randn(3, 4, 8, 8, generator=generator), torch.randn(3, 6, 4, 4, generator=generator)]
    f_rec = [torch.randn(3, 4, 8, 8, generator=generator), torch.randn(3, 6, 4, 4, generator=generator)]
    distances = [(1 - torch.nn.functional.cosine_similarity(a, b, dim=1))[:, None] for a, b in zip(f_in, f_rec)]
    expected = sum(
        torch.nn.functional.interpolate(d, size=(16, 16), mode="bilinear", align_corners=True) for d in distances
    )
    expected = gaussian_filter(expected.numpy(), sigma=(0, 0, 4, 4), mode="reflect", truncate=4.0)
    result = cosine_anomaly_map(f_in, f_rec, (16, 16))
    np.testing.assert_allclose(result.numpy(), expected, atol=1e-5)
    per_sample = torch.cat(
        [cosine_anomaly_map([f[i : i + 1] for f in f_in], [f[i : i + 1] for f in f_rec], (16, 16)) for i in range(3)]
    )
    torch.testing.assert_close(result, per_sample)


def test_cosine_map_rejects_mismatched_features():
    with pytest.raises(ValueError, match="features_in\\[0\\]"):
        cosine_anomaly_map([torch.zeros(1, 4, 8, 8)], [torch.zeros(1, 4, 4, 4)], (8, 8))
    with pytest.raises(ValueError, match="same length"):
        cosine_anomaly_map([torch.zeros(1, 4, 8, 8)], [], (8, 8))


# ---------------------------------------------------------------- image scores


def test_max_of_avg_pooled_on_hand_map():
    m = torch.tensor([[0, 0, 0, 0], [0, 4, 8, 0], [0, 0, 4, 0], [0, 0, 0, 0]], dtype=torch.float32)[None, None]
    assert max_of_avg_pooled(m, kernel_size=2).item() == pytest.approx(4.0)  # (4 + 8 + 0 + 4) / 4
    assert max_of_avg_pooled(m, kernel_size=1).item() == 8.0
    assert max_of_avg_pooled(m, kernel_size=4).item() == pytest.approx(1.0)
    big = torch.zeros(2, 1, 32, 32)
    big[1, 0, 10:26, 5:21] = 1.0
    torch.testing.assert_close(max_of_avg_pooled(big), torch.tensor([0.0, 1.0]))  # default kernel 16
    with pytest.raises(ValueError, match="kernel_size"):
        max_of_avg_pooled(m, kernel_size=5)
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        max_of_avg_pooled(torch.zeros(1, 2, 4, 4))


def test_top_k_mean_on_hand_map():
    m = torch.arange(16, dtype=torch.float32).view(1, 1, 4, 4)
    assert top_k_mean(m, k=1).item() == 15.0
    assert top_k_mean(m, k=3).item() == pytest.approx(14.0)
    assert top_k_mean(m, ratio=0.25).item() == pytest.approx(13.5)  # top 4 of 16
    assert top_k_mean(m, ratio=0.01).item() == 15.0  # ceil keeps at least one pixel
    batch = torch.stack([m[0], -m[0]])
    torch.testing.assert_close(top_k_mean(batch, k=2), torch.tensor([14.5, -0.5]))
    for kwargs in ({}, {"k": 1, "ratio": 0.5}, {"k": 17}, {"ratio": 0.0}):
        with pytest.raises(ValueError):
            top_k_mean(m, **kwargs)
