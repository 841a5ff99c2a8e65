"""UMIADEGMF: the detector contract, the invertible part as a whole, the loss (eq. 12) and the ablation switches."""

from __future__ import annotations

import pytest
import torch

from medad_monai.detectors import UMIADEGMF, UMIADEGMFImageScore, UMIADEGMFLoss
from medad_monai.detectors.umiad_egmf import additive_anomaly_map, log_likelihood_map, multiplicative_anomaly_map
from medad_monai.ops.filters import gaussian_blur

SIZE = 64


def _net(**kwargs) -> UMIADEGMF:
    torch.manual_seed(0)
    return UMIADEGMF(image_size=(SIZE, SIZE), **kwargs)


def test_eval_returns_anomaly_map_and_train_returns_latents():
    net = _net()
    image = torch.randn(2, 3, SIZE, SIZE)
    out = net.train()(image)
    shapes = [(64, 8, 8), (128, 4, 4), (256, 2, 2), (512, 1, 1)]
    assert [tuple(u.shape[1:]) for u in out["latents"]] == shapes
    assert [tuple(y.shape[1:]) for y in out["flow_outputs"]] == shapes
    assert [tuple(d.shape) for d in out["log_jac_det"]] == [(2,)] * 4
    with torch.no_grad():
        amap = net.eval()(image)
    assert amap.shape == (2, 1, SIZE, SIZE) and torch.isfinite(amap).all()
    assert (amap >= 0).all() and (amap < 4).all()  # K - sum of 4 probabilities in (0, 1]
    assert UMIADEGMFImageScore()(amap).shape == (2,)


def test_maps_follow_map_source_and_eval_map():
    net = _net(eval_map="multiplicative").eval()
    raw = _net(map_source="raw").eval()
    image = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad():
        outputs = net.latents(image)
        additive, multiplicative = net.anomaly_maps(outputs)
        log_p = [log_likelihood_map(u) for u in outputs["latents"]]
        torch.testing.assert_close(additive, additive_anomaly_map(log_p, (SIZE, SIZE)))
        torch.testing.assert_close(multiplicative, multiplicative_anomaly_map(log_p, (SIZE, SIZE)))
        torch.testing.assert_close(net(image), multiplicative)
        assert ((multiplicative >= 0) & (multiplicative < 1)).all()
        log_p_raw = [log_likelihood_map(y) for y in outputs["flow_outputs"]]
        torch.testing.assert_close(raw.anomaly_maps(outputs)[0], additive_anomaly_map(log_p_raw, (SIZE, SIZE)))
        assert not torch.allclose(raw.anomaly_maps(outputs)[0], additive)  # the MFF changes the latents


@pytest.mark.parametrize("eval_map", ["additive", "multiplicative"])
def test_anomaly_and_score_maps_are_the_eval_map_and_the_multiplicative_map(eval_map):
    # the bundle localises with the additive map and scores images on the multiplicative one, from one pass
    net = _net(eval_map=eval_map, smoothing_sigma=1.0).eval()
    image = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        pixel, score = net.anomaly_and_score_maps(image)
        multiplicative = net.anomaly_maps(net.latents(image))[1]
        torch.testing.assert_close(pixel, net(image))
        torch.testing.assert_close(score, gaussian_blur(multiplicative, 1.0))
    assert pixel.shape == score.shape == (2, 1, SIZE, SIZE)
    if eval_map == "additive":
        assert not torch.allclose(pixel, score)


def test_a_shifted_region_raises_the_map_there():
    """Far-out latents in one region are anomalous: the maps peak there (the aggregation is wired right)."""
    net = _net().eval()
    latents = [torch.zeros(1, c, s, s) for c, s in ((64, 8), (128, 4), (256, 2), (512, 1))]
    latents[0][:, :, :2, :2] = 3.0  # the top-left 16 x 16 pixels of the finest scale
    additive, multiplicative = net.anomaly_maps({"latents": latents, "flow_outputs": latents, "log_jac_det": []})
    for amap in (additive, multiplicative):
        assert amap[0, 0, 0, 0] == pytest.approx(1 - torch.exp(torch.tensor(-4.5)).item(), abs=1e-6)
        assert amap[0, 0, 24:, 24:].abs().max() < 1e-6  # the rest sits at the mode: p = 1 on every scale


def test_invertible_part_inverts():
    net = _net().double().eval()
    with torch.no_grad():
        zs, edge = net.encode(torch.randn(2, 3, SIZE, SIZE, dtype=torch.float64))
        latents, _, _ = net.flow(zs, edge)
        for back, z in zip(net.flow_inverse(latents, edge), zs):
            torch.testing.assert_close(back, z, atol=1e-9, rtol=1e-9)


@pytest.mark.slow
def test_whole_log_det_matches_brute_force_jacobian():
    """log |det d(u^1..u^4) / d(z^1..z^4)| of the whole invertible part (EAM coupling, flows, MFF) at 32 x 32."""
    torch.manual_seed(0)
    net = UMIADEGMF(image_size=(32, 32)).double().eval()
    with torch.no_grad():
        for p in net.flows.parameters():
            p.add_(0.05 * torch.randn_like(p))
        zs, edge = net.encode(torch.randn(1, 3, 32, 32, dtype=torch.float64))
    sizes = [z.numel() for z in zs]  # 1024 + 512 + 256 + 512

    def flat(v):
        parts = [p.reshape(z.shape) for p, z in zip(v.split(sizes), zs)]
        return torch.cat([u.flatten() for u in net.flow(parts, edge)[0]])

    jac = torch.autograd.functional.jacobian(flat, torch.cat([z.flatten() for z in zs]), vectorize=True)
    sign, brute = torch.linalg.slogdet(jac)
    assert sign == 1
    assert brute.item() == pytest.approx(sum(d.item() for d in net.flow(zs, edge)[2]), abs=1e-7)


def test_loss_is_eq_12_and_gradients_reach_the_flows_not_the_encoder():
    net = _net().train()
    out = net(torch.randn(2, 3, SIZE, SIZE))
    expected = sum(
        (0.5 * (u**2).sum(dim=(1, 2, 3)) - d) / u[0].numel() for u, d in zip(out["latents"], out["log_jac_det"])
    ) / 4
    torch.testing.assert_close(UMIADEGMFLoss()(out), expected.mean())
    torch.testing.assert_close(UMIADEGMFLoss(reduction="none")(out, None), expected)
    torch.testing.assert_close(UMIADEGMFLoss(reduction="sum")(out), expected.sum())
    UMIADEGMFLoss()(out).backward()
    for name in ("edge", "aggregation", "flows", "fusion"):
        grads = [p.grad for p in getattr(net, name).parameters()]
        assert grads and all(g is not None for g in grads), name
        assert sum(g.abs().sum() for g in grads) > 0, name
    assert all(p.grad is None and not p.requires_grad for p in net.encoder.parameters())
    assert net.encoder.training is False and hasattr(net.encoder, "calibrate_batch_norm")


ABLATIONS = [
    {"edge_extraction": "none"},  # without EGM (and so without EAM)
    {"edge_aggregation": "add"},  # without EAM: Table 6's EGM-only row
    {"edge_aggregation": "mul"},
    {"use_mff": False},
    {"edge_extraction": "none", "use_mff": False},  # Table 6's first row: CFlow-like
    {"edge_extraction": "prewitt"},  # Table 7
    {"edge_injection": "feature"},  # the literal reading of how the EAM output enters the flows
    {"edge_injection": "feature", "edge_aggregation": "mul"},
    {"eam_gate": "none"},
    {"pyramid_pool": "max"},
    {"pyramid_pool": "none", "condition_channels": 64, "num_coupling_blocks": 2},
    {"subnet_kernel_size": 3, "subnet_hidden_ratio": 0.25, "mff_kernel_size": 1},
    {"smoothing_sigma": 2.0},
]


@pytest.mark.parametrize("kwargs", ABLATIONS, ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items()))
def test_ablation_switches_build_and_run(kwargs):
    net = _net(**kwargs)
    if kwargs.get("edge_extraction") == "none":
        assert net.edge is None and net.aggregation is None
    if kwargs.get("use_mff") is False:
        assert net.fusion is None
    image = torch.randn(2, 3, SIZE, SIZE)
    out = net.train()(image)
    loss = UMIADEGMFLoss()(out)
    assert torch.isfinite(loss)
    loss.backward()
    with torch.no_grad():
        amap = net.eval()(image)
    assert amap.shape == (2, 1, SIZE, SIZE) and torch.isfinite(amap).all()
    if kwargs.get("use_mff") is False:
        assert all(u is y for u, y in zip(out["latents"], out["flow_outputs"]))


def test_short_training_stays_finite_and_lowers_the_loss():
    net = _net().train()
    net.encoder.calibrate_batch_norm([torch.randn(4, 3, SIZE, SIZE)])
    optimizer = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=2e-4)
    loss_fn = UMIADEGMFLoss()
    generator = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(6):
        image = torch.randn(4, 3, SIZE, SIZE, generator=generator)
        out = net(image)
        loss = loss_fn(out)
        optimizer.zero_grad()
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)
        optimizer.step()
        assert torch.isfinite(loss) and all(torch.isfinite(u).all() for u in out["latents"])
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    with torch.no_grad():
        assert torch.isfinite(net.eval()(image)).all()


def test_seeded_construction_is_reproducible_and_state_dicts_round_trip():
    a, b = _net(), _net()
    state = a.state_dict()
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in state.items())  # permutations follow torch's seed
    assert not any(k.startswith("condition_") for k in state)  # positional encodings are recomputed
    torch.manual_seed(5)
    c = UMIADEGMF(image_size=(SIZE, SIZE))
    c.load_state_dict(state)
    image = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(c.eval()(image), a.eval()(image))


def test_bad_configuration_and_input_errors():
    with pytest.raises(ValueError, match="image_size"):
        UMIADEGMF(image_size=(100, 100))
    for name, value in (
        ("edge_extraction", "sam"),
        ("edge_aggregation", "max"),
        ("edge_injection", "condition"),
        ("map_source", "both"),
        ("eval_map", "mean"),
        ("pyramid_pool", "min"),
        ("eam_gate", "relu"),
    ):
        with pytest.raises(ValueError, match=name):
            UMIADEGMF(image_size=(SIZE, SIZE), **{name: value})
    with pytest.raises(ValueError, match="multiple of 4"):
        UMIADEGMF(image_size=(SIZE, SIZE), condition_channels=6)
    net = _net()
    with pytest.raises(ValueError, match="resize inputs"):
        net(torch.randn(1, 3, 96, 96))
    with pytest.raises(TypeError, match="eval"):
        UMIADEGMFLoss()(torch.zeros(1, 1, 4, 4))
    with pytest.raises(ValueError, match="reduction"):
        UMIADEGMFLoss(reduction="max")
