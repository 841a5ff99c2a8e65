"""Tests for medad_monai.ops.wavelet."""

from __future__ import annotations

import pytest
import torch

from medad_monai.ops.wavelet import haar_dwt2d, haar_iwt2d

pywt = pytest.importorskip("pywt")


def _random(shape, dtype=torch.float64, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def test_hand_checked_block():
    x = torch.tensor([[[[1.0, 2.0], [3.0, 5.0]]]])
    ll, lh, hl, hh = haar_dwt2d(x)
    assert [band.item() for band in (ll, lh, hl, hh)] == [5.5, -2.5, -1.5, 0.5]


@pytest.mark.parametrize("shape", [(2, 3, 8, 6), (1, 1, 2, 2), (1, 4, 16, 10)])
def test_matches_pywavelets(shape):
    x = _random(shape)
    c_a, (c_h, c_v, c_d) = pywt.dwt2(x.numpy(), "haar", axes=(-2, -1))
    bands = haar_dwt2d(x)
    for band, expected in zip(bands, (c_a, c_h, c_v, c_d)):
        assert band.shape == (shape[0], shape[1], shape[2] // 2, shape[3] // 2)
        torch.testing.assert_close(band, torch.from_numpy(expected), atol=1e-6, rtol=0)
    restored = pywt.idwt2((c_a, (c_h, c_v, c_d)), "haar", axes=(-2, -1))
    torch.testing.assert_close(haar_iwt2d(*bands), torch.from_numpy(restored), atol=1e-6, rtol=0)


def test_bands_respond_to_their_direction():
    rows = torch.arange(8.0).view(1, 1, 8, 1).expand(1, 1, 8, 8)  # varies down the height only
    ll, lh, hl, hh = haar_dwt2d(rows)
    assert lh.abs().min() > 0 and hl.abs().max() == 0 and hh.abs().max() == 0
    ll, lh, hl, hh = haar_dwt2d(rows.transpose(-1, -2))
    assert hl.abs().min() > 0 and lh.abs().max() == 0 and hh.abs().max() == 0


@pytest.mark.parametrize("dtype, atol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_exact_reconstruction_and_energy(dtype, atol):
    x = _random((2, 5, 12, 20), dtype=dtype)
    bands = haar_dwt2d(x)
    assert all(band.dtype == dtype for band in bands)
    restored = haar_iwt2d(*bands)
    assert restored.dtype == dtype and restored.shape == x.shape
    torch.testing.assert_close(restored, x, atol=atol, rtol=0)
    energy = sum(band.pow(2).sum() for band in bands)
    torch.testing.assert_close(energy, x.pow(2).sum(), atol=atol * x.numel(), rtol=0)


def test_gradients():
    x = _random((1, 2, 4, 6)).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: haar_dwt2d(t), (x,))
    bands = tuple(_random((1, 2, 2, 3), seed=s).requires_grad_() for s in range(4))
    assert torch.autograd.gradcheck(haar_iwt2d, bands)


def test_works_on_meta_device():
    bands = haar_dwt2d(torch.empty(2, 3, 8, 8, device="meta"))
    assert all(band.device.type == "meta" and band.shape == (2, 3, 4, 4) for band in bands)
    assert haar_iwt2d(*bands).shape == (2, 3, 8, 8)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_round_trip_on_cuda():
    x = _random((2, 3, 8, 8), dtype=torch.float32).cuda()
    bands = haar_dwt2d(x)
    assert all(band.is_cuda for band in bands)
    torch.testing.assert_close(haar_iwt2d(*bands), x, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: haar_dwt2d(torch.zeros(1, 1, 5, 4)), ValueError, r"H=5.*pad or resize"),
        (lambda: haar_dwt2d(torch.zeros(1, 1, 4, 7)), ValueError, r"W=7.*pad or resize"),
        (lambda: haar_dwt2d(torch.zeros(3, 4, 4)), ValueError, r"x must have shape \(B, C, H, W\), got .*\(3, 4, 4\)"),
        (lambda: haar_dwt2d([[1.0]]), TypeError, "x must be a torch.Tensor"),
        (lambda: haar_iwt2d(*[torch.zeros(1, 1, 2, 2)] * 3, torch.zeros(1, 1, 2, 3)), ValueError, "hh must have the"),
        (lambda: haar_iwt2d(torch.zeros(1, 2, 2), *[torch.zeros(1, 1, 2, 2)] * 3), ValueError, r"ll must have shape"),
    ],
)
def test_bad_inputs(call, error, match):
    with pytest.raises(error, match=match):
        call()
