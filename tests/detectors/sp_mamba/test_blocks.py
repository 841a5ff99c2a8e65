"""SP-Mamba's own blocks: window-sliding medical prototypes (eq. 1) and the SPSS decoder block."""

from __future__ import annotations

import itertools

import pytest
import torch

from medad_monai.detectors.sp_mamba.blocks import MedicalPrototypes, SPSSBlock, window_prototype_distance


def _loop_distance(features, prototypes, window):
    """Straightforward per-position, per-prototype loop over eq. 1 with clipped windows."""
    b, _, h, w = features.shape
    r = window // 2
    out = torch.empty(b, 1, h, w)
    for n, i, j in itertools.product(range(b), range(h), range(w)):
        best = []
        for proto in prototypes:
            sims = [
                torch.cosine_similarity(proto[:, i, j], features[n, :, y, x], dim=0)
                for y in range(max(0, i - r), min(h, i + r + 1))
                for x in range(max(0, j - r), min(w, j + r + 1))
            ]
            best.append(1 - torch.stack(sims).max())
        out[n, 0, i, j] = torch.stack(best).min()
    return out


@pytest.mark.parametrize("window", [1, 3, 5])
def test_window_prototype_distance_equals_loop(window):
    torch.manual_seed(window)
    features, prototypes = torch.randn(2, 6, 5, 4), torch.randn(3, 6, 5, 4)
    distance, nearest = window_prototype_distance(features, prototypes, window)
    torch.testing.assert_close(distance, _loop_distance(features, prototypes, window), atol=1e-5, rtol=1e-5)
    assert nearest.shape == (2, 5, 4) and nearest.max() < 3


def test_window_is_clipped_not_padded_at_corners():
    # a feature identical to the prototype patch sits two cells away from the corner: only a window of 5 sees it.
    features = -torch.ones(1, 2, 4, 4)
    prototypes = torch.zeros(1, 2, 4, 4)
    prototypes[0, :, 0, 0] = torch.tensor([1.0, 0.0])
    features[0, :, 2, 2] = torch.tensor([1.0, 0.0])
    d3, _ = window_prototype_distance(features, prototypes, 3)
    d5, _ = window_prototype_distance(features, prototypes, 5)
    assert d5[0, 0, 0, 0] == pytest.approx(0.0, abs=1e-6)
    assert d3[0, 0, 0, 0] > 1.0  # zero padding would have given a similarity of 0 (distance 1)


def test_medical_prototypes_module():
    torch.manual_seed(0)
    module = MedicalPrototypes(8, (4, 4), num_prototypes=5, window=3)
    aggregated, distance = module(torch.randn(2, 8, 4, 4))
    assert aggregated.shape == (2, 8, 4, 4) and distance.shape == (2, 1, 4, 4)
    assert ((distance >= 0) & (distance <= 2)).all()
    aggregated.sum().backward()
    assert module.prototypes.grad is not None and module.prototypes.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="prototype grid"):
        module(torch.randn(1, 8, 8, 8))
    with pytest.raises(ValueError, match="odd"):
        window_prototype_distance(torch.randn(1, 8, 4, 4), torch.randn(2, 8, 4, 4), 2)


def test_spss_block_residual_shape():
    torch.manual_seed(0)
    block = SPSSBlock(16, num_directions=8, d_state=4)
    x = torch.randn(2, 16, 8, 8)
    assert block(x).shape == x.shape
