"""SP-Mamba's concentration (eq. 4), difference-of-Gaussians and contrast (eq. 5) terms on hand-built maps."""

from __future__ import annotations

import math

import pytest
import torch

from medad_monai.detectors.sp_mamba.scoring import concentration_score, contrast_score, difference_of_gaussians
from medad_monai.scoring import max_of_avg_pooled, top_k_mean


def _blob(size: int, width: float, height: float = 1.0) -> torch.Tensor:
    axis = torch.arange(size, dtype=torch.float64)
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    centre = (size - 1) / 2
    return (height * torch.exp(-((yy - centre) ** 2 + (xx - centre) ** 2) / (2 * width**2)))[None, None]



# ---------------------------------------------------------------- concentration


def test_concentration_of_uniform_map_is_zero():
    torch.testing.assert_close(concentration_score(torch.full((2, 1, 5, 7), 0.3)), torch.zeros(2))


def test_concentration_of_delta_peak_on_3x3():
    centre = torch.zeros(1, 1, 3, 3)
    centre[0, 0, 1, 1] = 2.0  # cost (0 - 2)^2 = 4 off the peak; distances 1 (x4) and sqrt(2) (x4)
    assert concentration_score(centre).item() == pytest.approx(4 * (4 + 4 * math.sqrt(2)) / 9)
    corner = torch.zeros(1, 1, 3, 3)
    corner[0, 0, 0, 0] = 1.0  # distances 1, 2, 1, sqrt 2, sqrt 5, 2, sqrt 5, 2 sqrt 2
    assert concentration_score(corner).item() == pytest.approx((6 + 3 * math.sqrt(2) + 2 * math.sqrt(5)) / 9)


def test_concentration_ties_use_first_argmax():
    m = torch.zeros(1, 1, 1, 4)
    m[0, 0, 0, 0] = m[0, 0, 0, 3] = 1.0  # first peak at column 0: costs 1 at columns 1, 2 only
    assert concentration_score(m).item() == pytest.approx((1 + 2) / 4)


def test_concentration_is_invariant_to_flips_and_lowered_by_a_distant_second_highlight():
    m = torch.rand(1, 1, 9, 11, generator=torch.Generator().manual_seed(3))
    score = concentration_score(m)
    for flipped in (m.flip(-1), m.flip(-2), m.flip(-1, -2)):
        torch.testing.assert_close(concentration_score(flipped), score)
    torch.testing.assert_close(concentration_score(m.transpose(-1, -2)), score)
    lone_peak = _blob(21, 1.5)
    two_peaks = lone_peak + lone_peak.roll(shifts=(9, 9), dims=(-2, -1)) * 0.99
    assert concentration_score(two_peaks) < concentration_score(lone_peak)
    assert concentration_score(2 * lone_peak) == pytest.approx(4 * concentration_score(lone_peak).item())


# ---------------------------------------------------------------- difference of Gaussians and contrast


def test_dog_of_constant_map_is_zero_and_any_dog_sums_to_zero():
    constant = torch.full((2, 1, 12, 9), 0.7, dtype=torch.float64)
    torch.testing.assert_close(difference_of_gaussians(constant), torch.zeros_like(constant), atol=1e-12, rtol=0)
    torch.testing.assert_close(contrast_score(constant), torch.zeros(2, dtype=torch.float64), atol=1e-12, rtol=0)
    # why contrast_score is not the signed mean of the response: that mean vanishes for every map
    m = torch.rand(3, 1, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    signed_mean = difference_of_gaussians(m).mean(dim=(1, 2, 3))
    torch.testing.assert_close(signed_mean, torch.zeros(3, dtype=torch.float64), atol=1e-12, rtol=0)
    assert (contrast_score(m) > 0).all()


def test_dog_is_positive_on_a_peak():
    response = difference_of_gaussians(_blob(15, 1.0))
    assert response[0, 0, 7, 7] > 0
    assert response[0, 0, 7, 7] == response.max()


def test_contrast_higher_for_sharper_and_taller_blobs():
    sharp, flat = _blob(31, 1.0), _blob(31, 4.0)
    assert contrast_score(sharp) > contrast_score(flat) > 0
    torch.testing.assert_close(contrast_score(_blob(31, 1.0, height=3.0)), 3 * contrast_score(sharp))
    batch = torch.cat([sharp, flat])
    torch.testing.assert_close(contrast_score(batch), torch.cat([contrast_score(sharp), contrast_score(flat)]))


def test_dog_expects_ordered_sigmas():
    with pytest.raises(ValueError, match="sigma"):
        contrast_score(torch.zeros(1, 1, 4, 4), sigma=1.2, k_sigma=0.6)


def test_scores_batch_equals_per_sample():
    maps = torch.rand(4, 1, 20, 24, generator=torch.Generator().manual_seed(5))
    pooled, top_k = (lambda x: max_of_avg_pooled(x, 8)), (lambda x: top_k_mean(x, ratio=0.1))
    for fn in (concentration_score, contrast_score, pooled, top_k):
        torch.testing.assert_close(fn(maps), torch.cat([fn(maps[i : i + 1]) for i in range(4)]))
