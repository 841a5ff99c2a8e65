"""WaveMambaAD network contract, paper defaults, Table 3 ablation switches, loss and image score."""

from __future__ import annotations

import pytest
import torch

from medad_monai.detectors import WaveMambaAD, WaveMambaADImageScore, WaveMambaADLoss
from medad_monai.detectors.wave_mambaad.blocks import DSE, HFSS, ChannelMamba, ChannelMLP, WaveletMambaModule
from medad_monai.networks.blocks import SS2D
from medad_monai.scoring import cosine_anomaly_map, max_of_avg_pooled

TINY = {"image_size": (64, 64), "encoder_depth": 18, "decoder_depths": (1, 1, 1, 1), "d_state": 4}


def _modules(net: WaveMambaAD) -> list[WaveletMambaModule]:
    return [m for m in net.stages.modules() if isinstance(m, WaveletMambaModule)]


def test_eval_returns_anomaly_map_and_train_returns_features():
    torch.manual_seed(0)
    net = WaveMambaAD(**TINY)
    image = torch.randn(2, 3, 64, 64)
    out = net.train()(image)
    assert set(out) == {"features", "reconstructions"}
    assert [tuple(f.shape) for f in out["features"]] == [(2, 64, 16, 16), (2, 128, 8, 8), (2, 256, 4, 4)]
    assert [tuple(r.shape) for r in out["reconstructions"]] == [tuple(f.shape) for f in out["features"]]
    with torch.no_grad():
        amap = net.eval()(image)
    assert amap.shape == (2, 1, 64, 64) and torch.isfinite(amap).all() and (amap >= 0).all()


def test_anomaly_map_is_the_summed_cosine_distance():
    torch.manual_seed(0)
    net = WaveMambaAD(**TINY, smoothing_sigma=0).eval()
    image = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        outputs = net.reconstruct(image)
        amap = net(image)
    expected = cosine_anomaly_map(outputs["features"], outputs["reconstructions"], (64, 64), sigma=0)
    torch.testing.assert_close(amap, expected)
    same = {"features": outputs["features"], "reconstructions": outputs["features"]}
    assert net.anomaly_map(same).abs().max() < 1e-5


def test_paper_defaults():
    net = WaveMambaAD()  # 256 x 256, ResNet34, (1, 4, 4, 4)
    modules = _modules(net)
    assert [len(stage) for stage in net.stages] == [1, 4, 4, 4] and len(modules) == 13
    for module, channels in zip(modules, (512, *[256] * 4, *[128] * 4, *[64] * 4)):
        lfss = module.wdss.lfss
        assert lfss.groups * 32 == channels  # groups [16, 8, 4, 2] coarse to fine: 32 channels each
        assert module.wdss.hfss.scans == ("horizontal", "vertical", "diagonal")
        assert isinstance(lfss.mamba, ChannelMamba) and isinstance(module.mixer, DSE)
    assert modules[0].wdss.lfss.mamba.ssm_h.features == 4  # 8 x 8 bottleneck -> 4 x 4 low band
    rates = [m.wdss.drop_path.drop_prob for m in modules]
    assert rates[0] == pytest.approx(0.2) and rates[-1] == 0.0 and rates == sorted(rates, reverse=True)
    assert not any(p.requires_grad for p in net.encoder.parameters())


ABLATIONS = {
    "without_hfss": ({"use_hfss": False}, lambda m: m.wdss.hfss is None),
    "without_lfss": ({"use_lfss": False}, lambda m: m.wdss.lfss is None),
    "dse_to_mlp": ({"mixer": "mlp"}, lambda m: isinstance(m.mixer, ChannelMLP)),
    "hfss_horizontal": ({"hfss_scans": ("horizontal",) * 3}, lambda m: set(m.wdss.hfss.scans) == {"horizontal"}),
    "hfss_vertical": ({"hfss_scans": ("vertical",) * 3}, lambda m: set(m.wdss.hfss.scans) == {"vertical"}),
    "hfss_without_diagonal": (
        {"hfss_scans": ("horizontal", "vertical", "horizontal")},
        lambda m: "diagonal" not in m.wdss.hfss.scans,
    ),
    "lfss_spatial": ({"lfss_scan": "spatial"}, lambda m: isinstance(m.wdss.lfss.mamba, SS2D)),
}


@pytest.mark.parametrize("name", list(ABLATIONS))
def test_ablation_switches_build_and_run(name):
    torch.manual_seed(0)
    overrides, check = ABLATIONS[name]
    net = WaveMambaAD(**TINY, **overrides)
    assert all(check(m) for m in _modules(net))
    loss = WaveMambaADLoss()(net.train()(torch.randn(2, 3, 64, 64)))
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss)
    with torch.no_grad():
        assert net.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 1, 64, 64)


def test_loss_is_multiscale_mse_and_training_reduces_it():
    torch.manual_seed(0)
    net = WaveMambaAD(**TINY, drop_path_rate=0.0).train()
    image = torch.randn(2, 3, 64, 64)
    out = net(image)
    expected = sum(((f - r) ** 2).mean() for f, r in zip(out["features"], out["reconstructions"]))
    loss_fn = WaveMambaADLoss()
    torch.testing.assert_close(loss_fn(out), expected)
    optimizer = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=2e-3, weight_decay=1e-4)
    first = None
    for _ in range(8):
        optimizer.zero_grad()
        loss = loss_fn(net(image))
        loss.backward()
        optimizer.step()
        first = first if first is not None else loss.item()
    assert loss.item() < 0.7 * first


def test_gradients_reach_every_decoder_parameter_and_not_the_encoder():
    torch.manual_seed(0)
    # 128 x 128: at 64 x 64 the first stage's bands are 1 x 1, and a one-step scan never uses its state matrix.
    # no stochastic depth: at batch 1 a dropped block would get no gradient at all.
    net = WaveMambaAD(**{**TINY, "image_size": (128, 128)}, drop_path_rate=0.0).train()
    WaveMambaADLoss()(net(torch.randn(1, 3, 128, 128))).backward()
    assert all(p.grad is None for p in net.encoder.parameters())
    trainable = [net.bottleneck, net.upsamples, net.stages]
    missing = [n for part in trainable for n, p in part.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing
    hfss = next(m for m in net.stages.modules() if isinstance(m, HFSS))
    assert hfss.ssm.x_proj_weight.shape[0] == 6  # three bands x (scan, reverse), each with its own parameters


def test_bad_configuration_and_input_errors():
    with pytest.raises(ValueError, match="image_size"):
        WaveMambaAD(image_size=(96, 96))
    with pytest.raises(ValueError, match="decoder_channels"):
        WaveMambaAD(**{**TINY, "decoder_channels": (512, 256, 128, 32)})
    with pytest.raises(ValueError, match="four stages"):
        WaveMambaAD(**{**TINY, "lfss_groups": (16, 8, 4)})
    with pytest.raises(ValueError, match="groups must divide"):
        WaveMambaAD(**{**TINY, "lfss_groups": (16, 8, 4, 3)})
    with pytest.raises(ValueError, match="scans"):
        WaveMambaAD(**TINY, hfss_scans=("horizontal", "vertical", "spiral"))
    with pytest.raises(ValueError, match="scan must be"):
        WaveMambaAD(**TINY, lfss_scan="hilbert")
    net = WaveMambaAD(**TINY)
    with pytest.raises(ValueError, match="resize inputs"):
        net(torch.randn(1, 3, 128, 128))
    with pytest.raises(TypeError, match="eval"):
        WaveMambaADLoss()(torch.zeros(1, 1, 4, 4))


def test_image_score_is_max_of_average_pooled_map():
    torch.manual_seed(0)
    maps = torch.rand(3, 1, 64, 64)
    score = WaveMambaADImageScore()
    assert score.pooling == "max_avg_pool" and score.kernel_size == 16
    torch.testing.assert_close(score(maps), max_of_avg_pooled(maps, 16))
    assert score(maps).shape == (3,)
