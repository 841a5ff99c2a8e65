"""SP-Mamba's own blocks: window-sliding medical prototypes (eq. 1) and the SPSS decoder block."""

from __future__ import annotations

import itertools

import pytest
import torch

from medad_monai.detectors.sp_mamba.blocks import (
    MambaLayer,
    MedicalPrototypes,
    PatchExpand,
    SPSSBlock,
    window_prototype_distance,
)
from medad_monai.detectors.sp_mamba.network import stage_blocks


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
    features = torch.randn(2, 8, 4, 4, requires_grad=True)
    distance = module(features)
    assert distance.shape == (2, 1, 4, 4) and ((distance >= 0) & (distance <= 2)).all()
    torch.testing.assert_close(distance, window_prototype_distance(features, module.prototypes, 3)[0])
    distance.sum().backward()
    assert module.prototypes.grad is not None and module.prototypes.grad.abs().sum() > 0
    assert features.grad.abs().sum() > 0  # the prototype loss also trains the fusion, as in the official code
    with pytest.raises(ValueError, match="prototype grid"):
        module(torch.randn(1, 8, 8, 8))
    with pytest.raises(ValueError, match="odd"):
        window_prototype_distance(torch.randn(1, 8, 4, 4), torch.randn(2, 8, 4, 4), 2)


def test_spss_block_equals_its_branches():
    torch.manual_seed(0)
    block = SPSSBlock(16, depth=2, kernel_sizes=(5, 7), num_directions=8, d_state=4).eval()
    x = torch.randn(2, 16, 8, 8)
    assert len(block.mamba) == 2 and [b[1][0].kernel_size for b in block.local] == [(5, 5), (7, 7)]
    with torch.no_grad():
        mamba = x
        for layer in block.mamba:  # x + SS2D(LayerNorm(x)) over channels
            normed = torch.nn.functional.layer_norm(mamba.permute(0, 2, 3, 1), (16,), layer.norm.weight, layer.norm.bias)
            mamba = mamba + layer.mixer(normed.permute(0, 3, 1, 2))
        branches = [mamba]
        for local in block.local:  # 1x1 -> depthwise k x k -> 1x1, each with instance norm and SiLU
            y = x
            for conv in (local[0][0], local[1][0], local[2][0]):
                y = torch.nn.functional.silu(torch.nn.functional.instance_norm(conv(y)))
            branches.append(y)
        expected = x + block.fuse(torch.cat(branches, dim=1))
        torch.testing.assert_close(block(x), expected)


def test_mamba_layer_drop_path_only_in_training():
    torch.manual_seed(0)
    layer = MambaLayer(8, drop_path=0.5, num_directions=4, scan="raster", d_state=4)
    x = torch.randn(64, 8, 4, 4)
    with torch.no_grad():
        full = x + layer.mixer(layer.norm(x))
        torch.testing.assert_close(layer.eval()(x), full)
        trained = layer.train()(x)
    kept = [torch.equal(t, s) for t, s in zip(trained, x)]  # a dropped sample is the identity
    assert 10 < sum(kept) < 54


def test_patch_expand_is_a_2x2_pixel_shuffle_of_a_linear_map():
    torch.manual_seed(0)
    up = PatchExpand(8)
    x = torch.randn(2, 8, 3, 5)
    y = up(x)
    assert y.shape == (2, 4, 6, 10)
    expanded = torch.einsum("oc,bchw->bohw", up.expand.weight, x)  # (B, 16, H, W): (row, column, channel)
    for r in range(2):
        for c in range(2):
            patch = expanded[:, (2 * r + c) * 4 : (2 * r + c + 1) * 4]
            normed = torch.nn.functional.layer_norm(patch.permute(0, 2, 3, 1), (4,), up.norm.weight, up.norm.bias)
            torch.testing.assert_close(y[:, :, r::2, c::2], normed.permute(0, 3, 1, 2))
    with pytest.raises(ValueError, match="even"):
        PatchExpand(7)


@pytest.mark.parametrize("depth,blocks", [(3, [3]), (4, [2, 2]), (6, [3, 3]), (1, [1]), (5, [5]), (2, [2])])
def test_stage_blocks_group_like_the_official_code(depth, blocks):
    assert stage_blocks(depth) == blocks
