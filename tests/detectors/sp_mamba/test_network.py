"""SPMamba network contract, ablation switches and loss (eq. 2)."""

from __future__ import annotations

import pytest
import torch

from medad_monai.detectors.sp_mamba import SPMamba, SPMambaLoss

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


def test_anomaly_map_is_cosine_distance_plus_weighted_prototype_distance():
    torch.manual_seed(0)
    net = SPMamba(**TINY, smoothing_sigma=0, prototype_weight=0.0).eval()
    weighted = SPMamba(**TINY, smoothing_sigma=0, prototype_weight=2.0).eval()
    weighted.load_state_dict(net.state_dict())
    image = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        outputs = net.reconstruct(image)
        base, with_prototypes = net.anomaly_map(outputs), weighted.anomaly_map(outputs)
    upsampled = torch.nn.functional.interpolate(outputs["prototype_distance"], (64, 64), mode="bilinear", align_corners=True)
    torch.testing.assert_close(with_prototypes - base, 2.0 * upsampled, atol=1e-5, rtol=1e-5)
    # identical features and reconstructions give a zero cosine map.
    same = {"features": outputs["features"], "reconstructions": outputs["features"], "prototype_distance": None}
    assert net.anomaly_map(same).abs().max() < 1e-5


def test_ablation_switches():
    torch.manual_seed(0)
    net = SPMamba(**TINY, use_prototypes=False, scan="raster", num_directions=4)
    assert net.prototypes is None
    assert net.stages[0][0].mamba.scan == "raster"
    out = net.train()(torch.randn(1, 3, 64, 64))
    assert out["prototype_distance"] is None
    assert SPMambaLoss()(out).ndim == 0


def test_bad_configuration_and_input_errors():
    with pytest.raises(ValueError, match="image_size"):
        SPMamba(image_size=(100, 100))
    with pytest.raises(ValueError, match="decoder_channels"):
        SPMamba(**{**TINY, "decoder_channels": (512, 256, 128, 32)})
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
