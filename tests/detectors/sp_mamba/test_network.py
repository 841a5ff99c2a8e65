"""SPMamba network contract, ablation switches and loss (eq. 2)."""

from __future__ import annotations

import pytest
import torch

from medad_monai.detectors.sp_mamba import SPMamba, SPMambaLoss
from medad_monai.ops.filters import gaussian_blur
from medad_monai.scoring import cosine_anomaly_map

TINY = {"image_size": (64, 64), "encoder_depth": 18, "decoder_depths": (1, 1, 1, 1), "d_state": 4}


def test_eval_returns_anomaly_map_and_train_returns_features():
    torch.manual_seed(0)
    net = SPMamba(**TINY)
    image = torch.randn(2, 3, 64, 64)
    out = net.train()(image)
    assert [tuple(f.shape) for f in out["features"]] == [tuple(r.shape) for r in out["reconstructions"]]
    assert [f.shape[1] for f in out["features"]] == [64, 128, 256]
    assert out["prototype_distance"].shape == (2, 1, 2, 2)
    with torch.no_grad():
        amap = net.eval()(image)
    assert amap.shape == (2, 1, 64, 64) and torch.isfinite(amap).all() and (amap >= 0).all()


def test_anomaly_map_is_smoothed_cosine_distance_plus_weighted_prototype_distance():
    torch.manual_seed(0)
    net = SPMamba(**TINY, smoothing_sigma=1.5, prototype_weight=0.0).eval()
    weighted = SPMamba(**TINY, smoothing_sigma=1.5, prototype_weight=2.0, reconstruction_weight=0.5).eval()
    weighted.load_state_dict(net.state_dict())
    image = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        outputs = net.reconstruct(image)
        base, with_prototypes = net.anomaly_map(outputs), weighted.anomaly_map(outputs)
    expected = gaussian_blur(cosine_anomaly_map(outputs["features"], outputs["reconstructions"], (64, 64), sigma=0), 1.5)
    torch.testing.assert_close(base, expected)
    # the prototype distance is upsampled with half-pixel centres (as the official trainer) and not smoothed
    upsampled = torch.nn.functional.interpolate(outputs["prototype_distance"], (64, 64), mode="bilinear", align_corners=False)
    torch.testing.assert_close(with_prototypes, 0.5 * base + 2.0 * upsampled, atol=1e-5, rtol=1e-5)
    # its mean is the mean over the grid: the loss may average D before upsampling (eq. 2)
    torch.testing.assert_close(upsampled.mean(), outputs["prototype_distance"].mean())
    # identical features and reconstructions give a zero cosine map.
    same = {"features": outputs["features"], "reconstructions": outputs["features"], "prototype_distance": None}
    assert net.anomaly_map(same).abs().max() < 1e-5


def test_ablation_switches():
    torch.manual_seed(0)
    net = SPMamba(**TINY, use_prototypes=False, scan="raster", num_directions=4)
    assert net.prototypes is None
    assert net.stages[0][0].mamba[0].mixer.scan == "raster"
    out = net.train()(torch.randn(1, 3, 64, 64))
    assert out["prototype_distance"] is None
    assert SPMambaLoss()(out).ndim == 0


def test_feature_jitter_perturbs_the_bottleneck_input_in_training_only():
    torch.manual_seed(0)
    plain = SPMamba(**TINY, drop_path_rate=0.0)
    jittered = SPMamba(**TINY, drop_path_rate=0.0, feature_jitter=20.0)
    jittered.load_state_dict(plain.state_dict())
    image = torch.randn(2, 3, 64, 64)
    with torch.no_grad():  # before the training passes, which update the bottleneck's batch-norm statistics
        assert torch.equal(jittered.eval()(image), plain.eval()(image))
    seen = []
    jittered.bottleneck.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    out, reference = jittered.train()(image), plain.train()(image)
    # the decoder's targets stay the clean features; the bottleneck read them plus noise of the stated size
    assert all(torch.equal(f, r) for f, r in zip(out["features"], reference["features"]))
    for clean, noisy in zip(out["features"], seen[0]):
        expected_std = (clean.norm(dim=1) * 20.0 / clean.shape[1]).square().mean().sqrt()
        assert (noisy - clean).std() == pytest.approx(expected_std.item(), rel=0.1)
    assert not torch.allclose(out["reconstructions"][0], reference["reconstructions"][0])


def test_bad_configuration_and_input_errors():
    with pytest.raises(ValueError, match="image_size"):
        SPMamba(image_size=(100, 100))
    with pytest.raises(ValueError, match="decoder_channels"):
        SPMamba(**{**TINY, "decoder_channels": (512, 256, 128, 32)})
    with pytest.raises(ValueError, match="feature_jitter"):
        SPMamba(**TINY, feature_jitter=-1.0)
    net = SPMamba(**TINY)
    with pytest.raises(ValueError, match=r"resize inputs"):
        net(torch.randn(1, 3, 96, 96))
    with pytest.raises(TypeError, match="eval"):
        SPMambaLoss()(torch.zeros(1, 1, 4, 4))


def test_loss_matches_eq2_and_training_reduces_it():
    torch.manual_seed(0)
    net = SPMamba(**TINY).train()
    image = torch.randn(4, 3, 64, 64)
    out = net(image)
    expected = sum(((f - r) ** 2).mean() for f, r in zip(out["features"], out["reconstructions"]))
    expected = expected + 25.0 * out["prototype_distance"].mean()
    loss_fn = SPMambaLoss(prototype_weight=25.0)
    torch.testing.assert_close(loss_fn(out), expected)
    official = SPMambaLoss(prototype_weight=25.0, reconstruction_weight=5.0)
    torch.testing.assert_close(official(out), expected + 4 * (expected - 25.0 * out["prototype_distance"].mean()))
    optimizer = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=2e-3)
    first = None
    for _ in range(8):
        optimizer.zero_grad()
        loss = loss_fn(net(image))
        loss.backward()
        optimizer.step()
        first = first if first is not None else loss.item()
    assert loss.item() < 0.7 * first
    assert not any(p.grad is not None for p in net.encoder.parameters())


def test_architecture_follows_the_official_code():
    net = SPMamba(num_prototypes=5)
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    assert count(net.encoder) == 8_170_304 and count(net.bottleneck) == 1_458_304
    assert count(net.prototypes) == 5 * 512 * 8 * 8
    assert [len(stage) for stage in net.stages] == [1, 2, 2, 1]
    assert [len(block.mamba) for stage in net.stages for block in stage] == [3, 2, 2, 3, 3, 3]
    ss2d = net.stages[0][0].mamba[0].mixer
    assert ss2d.out_proj.in_features == 1024 and ss2d.num_directions == 8 and ss2d.scan == "circular_hilbert"
    # official per-stage counts less the unused 3x3 convolutions and the integer scan orders stored as parameters
    official = [9_440_640, 4_432_384, 1_816_320, 348_672]
    unused = [512 * 9 + 2 * 64 * 3, 2 * (256 * 9 + 2 * 256 * 2), 2 * (128 * 9 + 2 * 1024 * 3), 64 * 9 + 2 * 4096 * 3]
    ours = [count(stage) + (count(net.upsamples[i - 1]) if i else 0) for i, stage in enumerate(net.stages)]
    assert ours == [o - u for o, u in zip(official, unused)]
    rates = [block.mamba[0].drop_path.drop_prob for stage in net.stages for block in stage]
    assert rates[0] == pytest.approx(0.2) and rates == sorted(rates, reverse=True)
