"""UMIAD-EGMF's blocks against direct implementations of their equations; flows and couplings invert exactly
and their log-determinants equal brute-force Jacobians."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from medad_monai.detectors.umiad_egmf import (
    ChannelAttention,
    EdgeAggregation,
    EdgeGuidance,
    GatedConv1x1,
    MultiScaleFlowFusion,
    PrewittEdges,
    PyramidPooling,
    UMIADEGMFImageScore,
    additive_anomaly_map,
    conditional_flow,
    log_likelihood_map,
    multiplicative_anomaly_map,
    positional_encoding_2d,
    prewitt_magnitude,
)


def conv1x1(x, conv):
    """A 1x1 convolution written as a channel contraction."""
    out = torch.einsum("oi,bihw->bohw", conv.weight[:, :, 0, 0], x)
    return out if conv.bias is None else out + conv.bias[None, :, None, None]


def brute_force_log_det(fn, x):
    """log |det d fn(x) / dx| from the full Jacobian (x of any shape, one sample)."""
    jac = torch.autograd.functional.jacobian(fn, x)
    n = x.numel()
    sign, log_abs = torch.linalg.slogdet(jac.reshape(n, n))
    assert sign != 0
    return log_abs


def test_positional_encoding_equals_sin_cos_formula():
    channels, height, width = 8, 3, 5
    pe = positional_encoding_2d(channels, height, width)
    half = channels // 2
    for i in range(half // 2):
        w = 10000.0 ** (-2 * i / half)
        for y in range(height):
            for x in range(width):
                assert pe[2 * i, y, x].item() == pytest.approx(math.sin(x * w), abs=1e-6)
                assert pe[2 * i + 1, y, x].item() == pytest.approx(math.cos(x * w), abs=1e-6)
                assert pe[half + 2 * i, y, x].item() == pytest.approx(math.sin(y * w), abs=1e-6)
                assert pe[half + 2 * i + 1, y, x].item() == pytest.approx(math.cos(y * w), abs=1e-6)
    with pytest.raises(ValueError, match="multiple of 4"):
        positional_encoding_2d(6, 2, 2)


def test_gated_conv_equals_feature_times_sigmoid_gate():
    torch.manual_seed(0)
    gated, x = GatedConv1x1(6, 2), torch.randn(2, 6, 3, 4)
    expected = conv1x1(x, gated.feature) * torch.sigmoid(conv1x1(x, gated.gate))
    torch.testing.assert_close(gated(x), expected)


def test_edge_guidance_equals_eq_1_to_5():
    torch.manual_seed(0)
    egm = EdgeGuidance(low_channels=3, mid_channels=5)
    f1, f2 = torch.randn(2, 3, 8, 6), torch.randn(2, 5, 4, 3)
    # F1': 2x2 block means, then the 1x1 projection to F2's channels.
    blocks = f1.reshape(2, 3, 4, 2, 3, 2).mean(dim=(3, 5))
    f1p = conv1x1(blocks, egm.project)

    def gated(conv, x):
        return conv1x1(x, conv.feature) * torch.sigmoid(conv1x1(x, conv.gate))

    e1 = gated(egm.gate_fine, torch.cat([f1p, f2], 1))  # eq. 1
    e2 = gated(egm.gate_coarse, torch.cat([f2, f1p], 1))  # eq. 2
    w1 = torch.exp(e1) / (torch.exp(e1) + torch.exp(e2))  # eq. 3-4
    w2 = torch.exp(e2) / (torch.exp(e1) + torch.exp(e2))
    torch.testing.assert_close(egm(f1, f2), w1 * f1p + w2 * f2)  # eq. 5
    a, b = egm.weights(f1p, f2)
    torch.testing.assert_close(a + b, torch.ones_like(a))
    assert a.shape == (2, 1, 4, 3)


def test_prewitt_magnitude_equals_scipy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, 2, 6, 7)).astype(np.float64)
    # scipy smooths along every other axis: filter each 2D map on its own.
    gx = np.stack([ndimage.prewitt(m, axis=1, mode="nearest") for m in x[0]])[None]
    gy = np.stack([ndimage.prewitt(m, axis=0, mode="nearest") for m in x[0]])[None]
    expected = np.sqrt(gx**2 + gy**2 + 1e-6)
    np.testing.assert_allclose(prewitt_magnitude(torch.from_numpy(x)).numpy(), expected, rtol=1e-10, atol=1e-10)
    # flat maps: no edges, and a finite gradient.
    flat = torch.ones(1, 1, 4, 4, requires_grad=True)
    prewitt_magnitude(flat).sum().backward()
    assert torch.isfinite(flat.grad).all()


def test_prewitt_edges_shape():
    torch.manual_seed(0)
    edges = PrewittEdges(3, 5)(torch.randn(2, 3, 8, 8), torch.randn(2, 5, 4, 4))
    assert edges.shape == (2, 5, 4, 4) and (edges > 0).all()


def test_channel_attention_equals_squeeze_excite():
    torch.manual_seed(0)
    cab, x = ChannelAttention(16, reduction=4), torch.randn(2, 16, 3, 5)
    gap = x.mean(dim=(2, 3))
    hidden = F.relu(gap @ cab.squeeze.weight[:, :, 0, 0].T + cab.squeeze.bias)
    weights = torch.sigmoid(hidden @ cab.excite.weight[:, :, 0, 0].T + cab.excite.bias)
    torch.testing.assert_close(cab(x), x * weights[:, :, None, None])


@pytest.mark.parametrize("gate", ["sigmoid", "none"])
def test_eam_literal_equals_eq_6_to_8(gate):
    torch.manual_seed(0)
    eam = EdgeAggregation(edge_channels=4, feature_channels=6, method="eam", invertible=False, cab_reduction=2, gate=gate)
    edge, f4 = torch.randn(2, 4, 8, 8), torch.randn(2, 6, 2, 2)
    att = eam.attention(edge).reshape(2, 4, 2, 4, 2, 4).mean(dim=(3, 5))  # CAB (eq. 6), pooled to F4's grid
    f_cat = F.conv2d(torch.cat([att, f4], 1), eam.conv.weight, eam.conv.bias, padding=1)  # eq. 7
    g = f_cat.mean(dim=(2, 3), keepdim=True)
    g = torch.sigmoid(g) if gate == "sigmoid" else g
    out, log_det = eam(f4, edge)
    torch.testing.assert_close(out, g * f_cat + f4)  # eq. 8
    assert (log_det == 0).all()
    with pytest.raises(ValueError, match="no inverse"):
        eam(out, edge, rev=True)


def test_eam_coupling_equals_two_half_steps_and_inverts():
    torch.manual_seed(0)
    eam = EdgeAggregation(edge_channels=4, feature_channels=6, method="eam", invertible=True, cab_reduction=2).double()
    edge, z = torch.randn(2, 4, 4, 4, dtype=torch.float64), torch.randn(2, 6, 2, 2, dtype=torch.float64)
    att = F.adaptive_avg_pool2d(eam.attention(edge), (2, 2))

    def shift(conv, other):
        f_cat = F.conv2d(torch.cat([att, other], 1), conv.weight, conv.bias, padding=1)
        return torch.sigmoid(f_cat.mean(dim=(2, 3), keepdim=True)) * f_cat

    a, b = z[:, :3], z[:, 3:]
    b2 = b + shift(eam.conv_b, a)
    a2 = a + shift(eam.conv_a, b2)
    out, log_det = eam(z, edge)
    torch.testing.assert_close(out, torch.cat([a2, b2], 1))
    torch.testing.assert_close(eam(out, edge, rev=True)[0], z)
    assert (log_det == 0).all()
    brute = brute_force_log_det(lambda x: eam(x, edge[:1])[0], z[:1])
    assert brute.item() == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("method", ["add", "mul"])
def test_add_and_mul_aggregations(method):
    torch.manual_seed(0)
    edge, x = torch.randn(2, 4, 4, 4), torch.randn(2, 6, 2, 2)
    pooled = edge.reshape(2, 4, 2, 2, 2, 2).mean(dim=(3, 5))
    literal = EdgeAggregation(4, 6, method, invertible=False)
    projected = conv1x1(pooled, literal.project)
    expected = x + projected if method == "add" else x * projected
    torch.testing.assert_close(literal(x, edge)[0], expected)

    coupling = EdgeAggregation(4, 6, method, invertible=True, clamp=1.5).double()
    edge, x = edge.double(), x.double()
    out, log_det = coupling(x, edge)
    projected = conv1x1(pooled.double(), coupling.project)
    if method == "add":
        torch.testing.assert_close(out, x + projected)
    else:
        s = 1.5 * torch.tanh(projected / 1.5)
        torch.testing.assert_close(out, x * torch.exp(s))
        assert s.abs().max() < 1.5
    torch.testing.assert_close(coupling(out, edge, rev=True)[0], x)
    torch.testing.assert_close(coupling(out, edge, rev=True)[1], -log_det)
    brute = brute_force_log_det(lambda v: coupling(v, edge[:1])[0], x[:1])
    assert brute.item() == pytest.approx(log_det[0].item(), abs=1e-9)
    with pytest.raises(ValueError, match="edge_aggregation"):
        EdgeAggregation(4, 6, "max")


def test_pyramid_pooling_averages_the_window_cells_inside_the_map():
    x = torch.arange(2 * 5 * 6, dtype=torch.float64).reshape(1, 2, 5, 6) ** 1.5
    out = PyramidPooling("avg")(x)
    assert out.shape[-2:] == (PyramidPooling.output_size(5), PyramidPooling.output_size(6)) == (3, 3)
    for i in range(3):
        for j in range(3):
            rows = range(max(0, 2 * i - 1), min(5, 2 * i + 2))
            cols = range(max(0, 2 * j - 1), min(6, 2 * j + 2))
            expected = torch.stack([x[0, :, r, c] for r in rows for c in cols]).mean(0)
            torch.testing.assert_close(out[0, :, i, j], expected)
            torch.testing.assert_close(
                PyramidPooling("max")(x)[0, :, i, j], torch.stack([x[0, :, r, c] for r in rows for c in cols]).amax(0)
            )
    assert PyramidPooling("none")(x) is x
    with pytest.raises(ValueError, match="pyramid_pool"):
        PyramidPooling("min")


@pytest.mark.parametrize("kernel_size", [1, 3])
def test_conditional_flow_inverts_and_log_det_matches_brute_force(kernel_size):
    torch.manual_seed(0)
    flow = conditional_flow(4, condition_channels=4, num_blocks=8, kernel_size=kernel_size).double()
    z = torch.randn(2, 4, 2, 3, dtype=torch.float64)
    cond = positional_encoding_2d(4, 2, 3, dtype=torch.float64).expand(2, -1, -1, -1)
    # train the global scales and subnets away from their initialisation so the test sees non-trivial maps.
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.3 * torch.randn_like(p))
    y, log_det = flow(z, [cond])
    z_back, log_det_rev = flow(y, [cond], rev=True)
    torch.testing.assert_close(z_back, z, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(log_det_rev, -log_det)
    for n in range(2):
        brute = brute_force_log_det(lambda v: flow(v, [cond[:1]])[0], z[n : n + 1])
        assert brute.item() == pytest.approx(log_det[n].item(), abs=1e-8)


def test_conditional_flow_permutations_are_seeded_buffers():
    torch.manual_seed(3)
    a = conditional_flow(6, condition_channels=4, num_blocks=2)
    torch.manual_seed(3)
    b = conditional_flow(6, condition_channels=4, num_blocks=2)
    for block_a, block_b in zip(a, b):
        assert "w_perm" in dict(block_a.named_buffers()) and "w_perm" not in dict(block_a.named_parameters())
        torch.testing.assert_close(block_a.w_perm, block_b.w_perm)
        perm = block_a.w_perm[:, :, 0, 0]
        torch.testing.assert_close(perm @ block_a.w_perm_inv[:, :, 0, 0], torch.eye(6))
        assert ((perm.sum(0) == 1) & (perm.sum(1) == 1)).all()
    assert all(p.requires_grad for p in a.parameters())
    with pytest.raises(ValueError, match="odd"):
        conditional_flow(4, 4, kernel_size=2)


def test_fusion_shift_equals_eq_9():
    torch.manual_seed(0)
    mff = MultiScaleFlowFusion((2, 4), kernel_size=3, reduction=2)
    net = mff.fuse_first  # sees the second halves (1 and 2 channels), updates the first halves
    xs = [torch.randn(2, 1, 4, 4), torch.randn(2, 2, 2, 2)]
    pooled = torch.cat([xs[0].reshape(2, 1, 2, 2, 2, 2).mean(dim=(3, 5)), xs[1]], 1)
    hidden = F.conv2d(pooled, net.fuse_in.weight, net.fuse_in.bias, padding=1)
    hidden = F.layer_norm(hidden.permute(0, 2, 3, 1), (1,), net.norm.weight, net.norm.bias).permute(0, 3, 1, 2)
    fused = F.conv2d(F.relu(hidden), net.fuse_out.weight, net.fuse_out.bias, padding=1)
    first, second = fused[:, :1], fused[:, 1:]
    out = net(xs)
    torch.testing.assert_close(out[0], F.interpolate(first, size=(4, 4), mode="bilinear", align_corners=True))
    torch.testing.assert_close(out[1], second)


def test_multi_scale_flow_fusion_inverts_and_preserves_volume():
    torch.manual_seed(0)
    mff = MultiScaleFlowFusion((2, 4, 6), kernel_size=3, reduction=2).double()
    ys = [torch.randn(2, 2, 8, 8), torch.randn(2, 4, 4, 4), torch.randn(2, 6, 2, 2)]
    ys = [y.double() for y in ys]
    fused, log_det = mff(ys)
    assert [f.shape for f in fused] == [y.shape for y in ys] and (log_det == 0).all()
    assert all((f - y).abs().max() > 1e-3 for f, y in zip(fused, ys))  # every scale receives the fusion
    for back, y in zip(mff(fused, rev=True)[0], ys):
        torch.testing.assert_close(back, y, atol=1e-10, rtol=1e-10)
    sizes = [y[:1].numel() for y in ys]

    def flat(v):
        parts = [p.reshape(y[:1].shape) for p, y in zip(v.split(sizes), ys)]
        return torch.cat([f.flatten() for f in mff(parts)[0]])

    brute = brute_force_log_det(flat, torch.cat([y[:1].flatten() for y in ys]))
    assert brute.item() == pytest.approx(0.0, abs=1e-8)
    with pytest.raises(ValueError, match="3 scales"):
        mff(ys[:2])


def test_anomaly_maps_equal_additive_and_multiplicative_aggregation():
    torch.manual_seed(0)
    latents = [torch.randn(2, 4, 4, 4) * 2, torch.randn(2, 8, 2, 2)]
    log_p = [log_likelihood_map(u) for u in latents]
    torch.testing.assert_close(log_p[0], -0.5 * (latents[0] ** 2).mean(1, keepdim=True))
    up = [F.interpolate(m, size=(8, 8), mode="bilinear", align_corners=True) for m in log_p]
    up_p = [F.interpolate(torch.exp(m), size=(8, 8), mode="bilinear", align_corners=True) for m in log_p]
    torch.testing.assert_close(additive_anomaly_map(log_p, (8, 8)), 2 - up_p[0] - up_p[1])
    torch.testing.assert_close(multiplicative_anomaly_map(log_p, (8, 8)), 1 - torch.exp(up[0]) * torch.exp(up[1]))
    # far-out latents: probabilities underflow to 0 without NaN or Inf; maps stay in range.
    huge = [torch.full((1, 4, 2, 2), 1e20), torch.zeros(1, 8, 1, 1)]
    log_p = [log_likelihood_map(u) for u in huge]
    assert torch.isfinite(log_p[0]).all() and (log_p[0] < -1e30).all()  # 1e40 overflows float32: clamped
    add, mul = additive_anomaly_map(log_p, (4, 4)), multiplicative_anomaly_map(log_p, (4, 4))
    assert torch.isfinite(add).all() and torch.isfinite(mul).all()
    torch.testing.assert_close(add, torch.ones_like(add))
    torch.testing.assert_close(mul, torch.ones_like(mul))


def test_image_score_is_top_n_mean():
    amap = torch.arange(16.0).reshape(1, 1, 4, 4).repeat(2, 1, 1, 1)
    amap[1] *= 2
    torch.testing.assert_close(UMIADEGMFImageScore(top_k=3)(amap), torch.tensor([14.0, 28.0]))
    torch.testing.assert_close(UMIADEGMFImageScore()(amap), torch.tensor([14.5, 29.0]))  # ceil(0.1 * 16) = 2
    torch.testing.assert_close(UMIADEGMFImageScore(top_k_ratio=1.0)(amap), torch.tensor([7.5, 15.0]))
    with pytest.raises(ValueError, match="top_k"):
        UMIADEGMFImageScore(top_k=0)
