"""Shared blocks: encoder, Half-FPN bottleneck, SS2D."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import resnet18
from torch import nn

from medad_monai.networks.blocks import SS2D, HalfFPNBottleneck, ResNetFeatureEncoder

# a few of torchvision's resnet18 state-dict keys: MONAI's ResNet with these arguments must use the same names.
TORCHVISION_KEYS = ["conv1.weight", "bn1.running_var", "layer1.0.conv1.weight", "layer2.0.downsample.0.weight",
                    "layer2.0.downsample.1.running_mean", "layer4.1.bn2.weight", "fc.weight", "fc.bias"]


def _torchvision_format_resnet18() -> dict[str, torch.Tensor]:
    net = resnet18(spatial_dims=2, conv1_t_size=7, conv1_t_stride=2, bias_downsample=False, num_classes=1000)
    return net.state_dict()


def test_encoder_loads_torchvision_format_checkpoint(tmp_path):
    torch.manual_seed(0)
    state = _torchvision_format_resnet18()
    assert set(TORCHVISION_KEYS) <= set(state) and not any("bias" in k for k in state if "downsample.0" in k)
    path = tmp_path / "resnet18.pth"
    torch.save({"state_dict": state}, path)
    encoder = ResNetFeatureEncoder(18, (1, 2, 3), weights=str(path))
    assert torch.equal(encoder.layers[0][0].conv1.weight, state["layer1.0.conv1.weight"])
    assert bool(encoder.bn_calibrated)
    features = encoder(torch.randn(2, 3, 64, 64))
    assert [tuple(f.shape) for f in features] == [(2, 64, 16, 16), (2, 128, 8, 8), (2, 256, 4, 4)]


def test_encoder_rejects_bad_weights(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        ResNetFeatureEncoder(18, weights=str(tmp_path / "missing.pth"))
    wrong = tmp_path / "wrong.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, wrong)
    with pytest.raises(ValueError, match="wrong.pth.*missing keys"):
        ResNetFeatureEncoder(18, weights=str(wrong))
    # nothing listens on port 9: an explicit URL that cannot be fetched says how to supply a local file.
    with pytest.raises(RuntimeError, match="local path"):
        ResNetFeatureEncoder(18, weights="http://127.0.0.1:9/resnet18.pth")
    with pytest.raises(ValueError, match="depth"):
        ResNetFeatureEncoder(50)
    with pytest.raises(ValueError, match="out_stages"):
        ResNetFeatureEncoder(18, out_stages=(3, 1))


def test_frozen_encoder_keeps_batch_norm_statistics_in_training():
    torch.manual_seed(0)
    encoder = ResNetFeatureEncoder(18, (1,))
    encoder.train()
    assert not encoder.training
    before = encoder.stem[1].running_mean.clone()
    encoder(torch.randn(2, 3, 32, 32) * 5 + 3)
    assert torch.equal(before, encoder.stem[1].running_mean)
    assert not any(p.requires_grad for p in encoder.parameters())


def test_batch_norm_calibration_standardises_random_features():
    torch.manual_seed(0)
    encoder = ResNetFeatureEncoder(34)
    images = torch.randn(8, 3, 64, 64)
    raw_scale = encoder(images)[-1].std().item()
    encoder.calibrate_batch_norm([images[:4], images[4:]])
    assert bool(encoder.bn_calibrated) and not encoder.training
    calibrated = [f.std().item() for f in encoder(images)]
    assert raw_scale > 10  # default initialisation blows up with depth
    assert all(0.3 < s < 3 for s in calibrated)
    with pytest.raises(ValueError, match="at least one batch"):
        encoder.calibrate_batch_norm([])


@pytest.mark.parametrize("style,params", [("mambaad", 1_458_304), ("concat", 6_959_360)])
def test_half_fpn_shapes_and_errors(style, params):
    fpn = HalfFPNBottleneck((64, 128, 256), 512, style=style)
    assert sum(p.numel() for p in fpn.parameters()) == params
    out = fpn([torch.randn(2, 64, 32, 32), torch.randn(2, 128, 16, 16), torch.randn(2, 256, 8, 8)])
    assert out.shape == (2, 512, 4, 4)
    with pytest.raises(ValueError, match="expected 3 feature maps"):
        fpn([torch.randn(2, 64, 32, 32)])
    with pytest.raises(ValueError, match="style"):
        HalfFPNBottleneck(style="sum")


def test_half_fpn_mambaad_adds_aligned_scales():
    torch.manual_seed(0)
    fpn = HalfFPNBottleneck((4, 8, 16), 32, num_blocks=2).eval()
    f = [torch.randn(2, 4, 16, 16), torch.randn(2, 8, 8, 8), torch.randn(2, 16, 4, 4)]

    def cbr(block, x):  # conv -> batch norm -> ReLU
        return torch.relu(block.adn.N(block.conv(x)))

    with torch.no_grad():
        fused = cbr(fpn.lateral[0], f[1]) + cbr(fpn.down[0], f[0])
        fused = cbr(fpn.lateral[1], f[2]) + cbr(fpn.down[1], fused)
        expected = fpn.fuse(cbr(fpn.mix, fused))
        torch.testing.assert_close(fpn(f), expected)
    assert expected.shape == (2, 32, 2, 2) and len(fpn.fuse) == 2


@pytest.mark.parametrize("scan,directions", [("circular_hilbert", 8), ("circular_hilbert", 16), ("raster", 4)])
def test_ss2d_shapes_and_gradients(scan, directions):
    torch.manual_seed(0)
    block = SS2D(16, scan=scan, num_directions=directions, d_state=4)
    x = torch.randn(2, 16, 8, 6, requires_grad=True)
    y = block(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    y.square().mean().backward()
    assert x.grad is not None and block.ssm.a_log.grad is not None and block.ssm.x_proj_weight.grad.abs().sum() > 0


def test_ss2d_mixes_globally():
    # a change at one corner reaches the far corner through the scan, beyond the 3x3 convolution's reach.
    torch.manual_seed(0)
    block = SS2D(8, scan="circular_hilbert", num_directions=8, d_state=4).eval()
    x = torch.randn(1, 8, 8, 8)
    x2 = x.clone()
    x2[..., 0, 0] += 5
    with torch.no_grad():
        diff = (block(x) - block(x2)).abs()
    assert diff[..., 7, 7].max() > 1e-6


def test_ss2d_loads_checkpoints_with_flat_ssm_keys():
    # sp_mamba <= 0.4.0 saved the scan parameters directly under the SS2D ("mixer.a_log", not "mixer.ssm.a_log").
    torch.manual_seed(0)
    saved = nn.Sequential(SS2D(8, num_directions=8, d_state=4)).eval()
    legacy = {key.replace(".ssm.", "."): value for key, value in saved.state_dict().items()}
    assert "0.a_log" in legacy and not any(".ssm." in key for key in legacy)
    torch.manual_seed(1)
    loaded = nn.Sequential(SS2D(8, num_directions=8, d_state=4)).eval()
    loaded.load_state_dict(legacy, strict=True)
    x = torch.randn(2, 8, 6, 6)
    with torch.no_grad():
        assert torch.equal(loaded(x), saved(x))
    with pytest.raises(RuntimeError, match="Unexpected key"):
        loaded.load_state_dict({**legacy, "0.stray": torch.zeros(1)}, strict=True)
