"""Gaussian smoothing with symmetric padding against scipy."""

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from medad_monai.ops.filters import gaussian_blur, symmetric_indices


@pytest.mark.parametrize("shape, sigma", [((2, 1, 40, 50), 4.0), ((1, 2, 3, 3), 1.2), ((1, 1, 9, 7), 0.6)])
def test_gaussian_blur_equals_scipy_reflect(shape, sigma):
    x = torch.rand(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    expected = gaussian_filter(x.numpy(), sigma=(0, 0, sigma, sigma), mode="reflect", truncate=4.0)
    np.testing.assert_allclose(gaussian_blur(x, sigma).numpy(), expected, atol=1e-6)
    assert gaussian_blur(x, 0.0) is x




def test_symmetric_indices_fold_radii_larger_than_the_axis():
    assert symmetric_indices(3, 4).tolist() == [2, 2, 1, 0, 0, 1, 2, 2, 1, 0, 0]
