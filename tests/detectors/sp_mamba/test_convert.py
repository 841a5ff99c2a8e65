"""Loading official SP-Mamba checkpoints: a state dict in the official key layout, converted, gives our network's outputs."""

from __future__ import annotations

import pytest
import torch

from medad_monai.detectors.sp_mamba import SPMamba
from medad_monai.detectors.sp_mamba.convert import (
    OFFICIAL_MAP_WEIGHTS,
    convert_official_state_dict,
    load_official_checkpoint,
    official_network_args,
)
from medad_monai.ops.scan_orders import scan_order

TINY = {"image_size": (64, 64), "encoder_depth": 18, "decoder_depths": (1, 2, 3, 1), "num_prototypes": 3}


def official_layout(net: SPMamba) -> dict[str, torch.Tensor]:
    """``net``'s weights under the key names of the official MAMBAAD model (model/mambaad.py of
    github.com/Ray-RuiPan/SP-Mamba), written out module by module from that code, with random
    values for the modules its forward pass does not use."""
    state: dict[str, torch.Tensor] = {}

    def put(prefix: str, module: torch.nn.Module) -> None:
        for key, value in module.state_dict().items():
            state[f"{prefix}.{key}"] = value.clone()

    put("net_t.conv1", net.encoder.stem[0])
    put("net_t.bn1", net.encoder.stem[1])
    for i, layer in enumerate(net.encoder.layers, start=1):
        put(f"net_t.layer{i}", layer)
    fpn = net.bottleneck
    for name, module in (("conv1", fpn.down[0].conv), ("bn1", fpn.down[0].adn.N), ("conv2", fpn.down[1].conv),
                         ("bn2", fpn.down[1].adn.N), ("conv21", fpn.lateral[0].conv), ("bn21", fpn.lateral[0].adn.N),
                         ("conv31", fpn.lateral[1].conv), ("bn31", fpn.lateral[1].adn.N), ("convf", fpn.mix.conv),
                         ("bnf", fpn.mix.adn.N), ("bn_layer", fpn.fuse)):
        put(f"mff_oce.{name}", module)
    k, c, h, w = net.prototypes.prototypes.shape
    state["net_s.coreset"] = net.prototypes.prototypes.detach().permute(2, 3, 0, 1).reshape(h * w, k, c).clone()
    state["net_s.vis_conv.weight"], state["net_s.vis_conv.bias"] = torch.randn(1, 64, 1, 1), torch.randn(1)
    for i, stage in enumerate(net.stages):
        if i:
            put(f"net_s.layers_up.{i}.upsample", net.upsamples[i - 1])
        side = h * 2**i
        order = scan_order(side, side, "circular_hilbert")
        for j, block in enumerate(stage):
            prefix = f"net_s.layers_up.{i}.blocks.{j}"
            for n, layer in enumerate(block.mamba):
                ssm = f"{prefix}.smm_blocks.{n}"
                put(f"{ssm}.ln_1", layer.norm)
                m = layer.mixer
                for name, value in (("in_proj.weight", m.in_proj.weight), ("conv2d.weight", m.conv.weight),
                                    ("conv2d.bias", m.conv.bias), ("x_proj_weight", m.ssm.x_proj_weight),
                                    ("dt_projs_weight", m.ssm.dt_proj_weight), ("dt_projs_bias", m.ssm.dt_proj_bias),
                                    ("A_logs", m.ssm.a_log), ("Ds", m.ssm.d_skip), ("out_norm.weight", m.out_norm.weight),
                                    ("out_norm.bias", m.out_norm.bias), ("out_proj.weight", m.out_proj.weight)):
                    state[f"{ssm}.self_attention.{name}"] = value.detach().clone()
                state[f"{ssm}.self_attention.scans.index_flat"] = order.view(1, 1, -1).clone()
                state[f"{ssm}.self_attention.scans.index_flat_inv"] = torch.argsort(order).view(1, 1, -1)
            for name, branch, step in (("conv1b5", 0, 0), ("conv55", 0, 1), ("conv1a5", 0, 2),
                                       ("conv1b3", 1, 0), ("conv77", 1, 1), ("conv1a3", 1, 2)):
                put(f"{prefix}.{name}.0", block.local[branch][step][0])
            state[f"{prefix}.conv33.0.weight"] = torch.randn(block.fuse.out_channels, 1, 3, 3)
            put(f"{prefix}.finalconv11", block.fuse)
    return state


def _randomised(net: SPMamba) -> SPMamba:
    """Perturb every float tensor, batch-norm statistics included, so that no value is left at its initialisation."""
    with torch.no_grad():
        for key, value in net.state_dict().items():
            if "running_var" in key:
                value.mul_(1 + 0.1 * torch.rand_like(value))
            elif value.is_floating_point():
                value.add_(0.01 * torch.randn_like(value))
    return net


def test_official_layout_has_the_official_models_key_count():
    # the official model (K = 5 prototypes, 256 x 256, depths [3, 4, 6, 3]) has 597 state-dict entries
    assert len(official_layout(SPMamba(num_prototypes=5))) == 597


def test_converted_official_weights_give_our_networks_outputs():
    torch.manual_seed(0)
    ours = _randomised(SPMamba(**TINY, drop_path_rate=0.0)).eval()
    state = official_layout(ours)
    args = official_network_args({"net": state})
    assert args == {**TINY, "scan": "circular_hilbert", "num_directions": 8, **OFFICIAL_MAP_WEIGHTS}
    converted = SPMamba(**args).eval()
    converted.load_state_dict(convert_official_state_dict({"net": state}), strict=True)
    assert converted.encoder.weights_source.startswith("official SP-Mamba") and bool(converted.encoder.bn_calibrated)
    image = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected, got = ours.reconstruct(image), converted.reconstruct(image)
        for a, b in zip(expected["reconstructions"] + [expected["prototype_distance"]],
                        got["reconstructions"] + [got["prototype_distance"]]):
            assert torch.equal(a, b)
        ours.prototype_weight, ours.reconstruction_weight = 0.5, 1 / 9
        assert torch.equal(ours(image), converted(image))


def test_load_official_checkpoint_file_with_distributed_prefix(tmp_path):
    torch.manual_seed(1)
    ours = _randomised(SPMamba(**TINY)).eval()
    state = {f"module.{k}": v for k, v in official_layout(ours).items()}
    torch.save({"net": state, "optimizer": {}, "epoch": 3}, tmp_path / "ckpt.pth")
    net = load_official_checkpoint(tmp_path / "ckpt.pth", prototype_weight=1.0)
    assert not net.training and net.prototype_weight == 1.0 and net.reconstruction_weight == pytest.approx(1 / 9)
    image = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(net.reconstruct(image)["reconstructions"][0], ours.reconstruct(image)["reconstructions"][0])


def test_unknown_missing_and_mismatched_keys_are_named():
    torch.manual_seed(2)
    state = official_layout(SPMamba(**TINY))
    with pytest.raises(ValueError, match=r"unknown key 'net_s.extra.weight'"):
        convert_official_state_dict({**state, "net_s.extra.weight": torch.zeros(1)})
    incomplete = {k: v for k, v in state.items() if not k.startswith("net_s.layers_up.2.blocks.0.finalconv11")}
    with pytest.raises(ValueError, match=r"lacks 2 entries.*stages\.2\.0\.fuse"):
        convert_official_state_dict(incomplete)
    wrong = dict(state)
    wrong["mff_oce.conv21.weight"] = torch.zeros(128, 128, 3, 3)
    with pytest.raises(ValueError, match=r"mff_oce.conv21.weight.*shape"):
        convert_official_state_dict(wrong)
    raster = dict(state)
    raster["net_s.layers_up.1.blocks.0.smm_blocks.0.self_attention.scans.index_flat"] = torch.arange(16).view(1, 1, -1)
    with pytest.raises(ValueError, match="not the Circular-Hilbert scan order"):
        convert_official_state_dict(raster)
    with pytest.raises(ValueError, match="net_s.coreset"):
        convert_official_state_dict({k: v for k, v in state.items() if k != "net_s.coreset"})
