"""Wave-MambaAD's blocks against direct implementations of eq. 4-8.

The direct versions below are written from the equations with explicit loops, the sequential
reference scan (``selective_scan_ref``) and the Haar filters written out, independently of the
batched code in ``blocks.py`` and of ``ops.scan_orders`` / ``ops.wavelet``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from medad_monai.detectors.wave_mambaad.blocks import (
    DSE,
    HFSS,
    LFSS,
    WDSS,
    BiChannelSSM,
    ChannelMamba,
    ChannelMLP,
    WaveletMambaModule,
    channel_shuffle,
)
from medad_monai.networks.blocks import SelectiveSSM
from medad_monai.ops.selective_scan import selective_scan_ref

TOL = {"atol": 2e-5, "rtol": 1e-4}


def _cells(kind: str, h: int, w: int) -> list[tuple[int, int]]:
    """Scan orders from their definitions: rows, columns, anti-diagonals (top-right to bottom-left)."""
    if kind == "horizontal":
        return [(r, c) for r in range(h) for c in range(w)]
    if kind == "vertical":
        return [(r, c) for c in range(w) for r in range(h)]
    assert kind == "diagonal"
    return [(r, s - r) for s in range(h + w - 1) for r in range(h) if 0 <= s - r < w]


def _ssm(ssm: SelectiveSSM, g: int, u: torch.Tensor) -> torch.Tensor:
    """Sequence ``g`` of a SelectiveSSM on ``u`` (B, D, L), one step at a time."""
    d = u.shape[1]
    proj = torch.einsum("cd,bdl->bcl", ssm.x_proj_weight[g], u)
    dt, b_ssm, c_ssm = proj.split([ssm.dt_rank, ssm.d_state, ssm.d_state], dim=1)
    return selective_scan_ref(
        u,
        torch.einsum("dr,brl->bdl", ssm.dt_proj_weight[g], dt),
        -torch.exp(ssm.a_log[g * d : (g + 1) * d]),
        b_ssm,
        c_ssm,
        D=ssm.d_skip[g * d : (g + 1) * d],
        delta_bias=ssm.dt_proj_bias[g],
        delta_softplus=True,
    )


def _layer_norm(x: torch.Tensor, norm: torch.nn.LayerNorm, dim: int) -> torch.Tensor:
    mean = x.mean(dim, keepdim=True)
    var = ((x - mean) ** 2).mean(dim, keepdim=True)
    shape = [1] * x.ndim
    shape[dim] = -1
    return (x - mean) / torch.sqrt(var + norm.eps) * norm.weight.view(shape) + norm.bias.view(shape)


def test_selective_ssm_runs_each_sequence_with_its_own_parameters():
    torch.manual_seed(0)
    ssm = SelectiveSSM(3, 6, d_state=4, dt_rank=2)
    seqs = torch.randn(2, 3, 6, 11)
    expected = torch.stack([_ssm(ssm, g, seqs[:, g]) for g in range(3)], dim=1)
    torch.testing.assert_close(ssm(seqs), expected, **TOL)


def _direct_hfss(m: HFSS, bands: torch.Tensor) -> torch.Tensor:
    """Eq. 5 band by band; each band's scan and its reverse, put back cell by cell and summed."""
    b, _, _, h, w = bands.shape
    outputs = []
    for i, kind in enumerate(m.scans):
        x, z = (bands[:, i].permute(0, 2, 3, 1) @ m.in_proj.weight.T).chunk(2, dim=-1)  # (B, h, w, d)
        d = x.shape[-1]
        x = F.silu(F.conv2d(x.permute(0, 3, 1, 2), m.conv.weight, m.conv.bias, padding=1, groups=d))
        cells = _cells(kind, h, w)
        y = torch.zeros(b, d, h, w)
        for k, order in enumerate((cells, cells[::-1])):
            y_k = _ssm(m.ssm, i * 2 + k, torch.stack([x[:, :, r, c] for r, c in order], dim=-1))
            for j, (r, c) in enumerate(order):
                y[:, :, r, c] += y_k[:, :, j]
        y = _layer_norm(y, m.out_norm, dim=1).permute(0, 2, 3, 1) * F.silu(z)
        outputs.append((y @ m.out_proj.weight.T).permute(0, 3, 1, 2))
    return torch.stack(outputs, dim=1)


@pytest.mark.parametrize("scans", [("horizontal", "vertical", "diagonal"), ("vertical", "diagonal", "horizontal")])
@pytest.mark.parametrize("size", [(4, 4), (3, 5)])
def test_hfss_equals_eq5_with_directional_scans_mapped_back(scans, size):
    torch.manual_seed(0)
    m = HFSS(8, scans=scans, d_state=4)
    bands = torch.randn(2, 3, 8, *size)
    out = m(bands)
    assert out.shape == bands.shape
    torch.testing.assert_close(out, _direct_hfss(m, bands), **TOL)


def test_hfss_vertical_scan_is_the_transpose_of_the_horizontal_one():
    """A map read column by column equals its transpose read row by row: outputs come back in image order."""
    torch.manual_seed(0)
    horizontal = HFSS(4, scans=("horizontal",) * 3, d_state=4)
    vertical = HFSS(4, scans=("vertical",) * 3, d_state=4)
    vertical.load_state_dict(horizontal.state_dict())
    with torch.no_grad():  # a transpose-symmetric depthwise kernel
        horizontal.conv.weight.copy_((horizontal.conv.weight + horizontal.conv.weight.transpose(-1, -2)) / 2)
        vertical.conv.weight.copy_(horizontal.conv.weight)
    bands = torch.randn(1, 3, 4, 3, 5)
    torch.testing.assert_close(vertical(bands), horizontal(bands.transpose(-1, -2)).transpose(-1, -2), **TOL)


def test_hfss_rejects_bad_scans_and_shapes():
    with pytest.raises(ValueError, match="scans"):
        HFSS(8, scans=("horizontal", "vertical"))
    with pytest.raises(ValueError, match="scans"):
        HFSS(8, scans=("horizontal", "vertical", "spiral"))
    with pytest.raises(ValueError, match=r"\(B, 3, C, h, w\)"):
        HFSS(8)(torch.randn(1, 8, 4, 4))


def _direct_bi_channel_ssm(m: BiChannelSSM, profiles: torch.Tensor) -> torch.Tensor:
    x, z = (profiles @ m.in_proj.weight.T).chunk(2, dim=-1)  # (B, T, d)
    d, t = x.shape[-1], x.shape[1]
    x = F.silu(F.conv1d(x.transpose(1, 2), m.conv.weight, m.conv.bias, padding=1, groups=d))  # (B, d, T)
    forward = _ssm(m.ssm, 0, x)
    reverse = list(range(t - 1, -1, -1))
    backward = _ssm(m.ssm, 1, x[:, :, reverse])[:, :, reverse]
    return ((forward + backward).transpose(1, 2) * F.silu(z)) @ m.out_proj.weight.T


def test_bi_channel_ssm_equals_forward_plus_flipped_backward_scan():
    torch.manual_seed(0)
    m = BiChannelSSM(5, d_state=4)
    profiles = torch.randn(3, 7, 5)
    torch.testing.assert_close(m(profiles), _direct_bi_channel_ssm(m, profiles), **TOL)
    with pytest.raises(ValueError, match="profiles"):
        m(torch.randn(3, 7, 6))


def test_bi_channel_ssm_mixes_channels_in_both_directions():
    torch.manual_seed(0)
    m = BiChannelSSM(4, d_state=4)
    profiles = torch.randn(1, 9, 4, requires_grad=True)
    out = m(profiles)
    first = torch.autograd.grad(out[0, 0].sum(), profiles, retain_graph=True)[0]
    last = torch.autograd.grad(out[0, -1].sum(), profiles)[0]
    assert first[0, -1].abs().sum() > 0  # the first channel sees the last one (backward scan)
    assert last[0, 0].abs().sum() > 0  # and the last sees the first (forward scan)


def test_channel_mamba_equals_eq7():
    torch.manual_seed(0)
    m = ChannelMamba(3, 5, d_state=4)
    x = torch.randn(2, 6, 3, 5)
    gap_h = sum(x[..., c] for c in range(5)) / 5  # (B, C, H): averaged over W
    f_prime = m.ssm_h(gap_h)[..., None] * x
    gap_w = sum(f_prime[:, :, r] for r in range(3)) / 3  # (B, C, W): averaged over H
    expected = m.ssm_w(gap_w)[:, :, None, :] * x
    torch.testing.assert_close(m(x), expected, **TOL)


@pytest.mark.parametrize("scan", ["channel", "spatial"])
def test_lfss_equals_eq6(scan):
    torch.manual_seed(0)
    m = LFSS(8, (3, 4), groups=4, d_state=4, scan=scan)
    x = torch.randn(2, 8, 3, 4)
    parts = torch.split(F.conv2d(x, m.dwconv.weight, padding=1, groups=8), 2, dim=1)
    concatenated = torch.cat([m.mamba(part) for part in parts], dim=1)
    expected = torch.einsum("oc,bchw->bohw", m.proj.weight[:, :, 0, 0], concatenated) + x
    torch.testing.assert_close(m(x), expected, **TOL)


def test_lfss_rejects_bad_groups_and_scan():
    with pytest.raises(ValueError, match="groups"):
        LFSS(8, (2, 2), groups=3)
    with pytest.raises(ValueError, match="scan"):
        LFSS(8, (2, 2), groups=2, scan="diagonal")


def _haar(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Orthonormal Haar bands from L = [1, 1] / sqrt(2), H = [1, -1] / sqrt(2) along rows, then columns."""
    s = 2**-0.5
    rows_l = (x[..., 0::2, :] + x[..., 1::2, :]) * s
    rows_h = (x[..., 0::2, :] - x[..., 1::2, :]) * s
    ll = (rows_l[..., 0::2] + rows_l[..., 1::2]) * s
    hl = (rows_l[..., 0::2] - rows_l[..., 1::2]) * s
    lh = (rows_h[..., 0::2] + rows_h[..., 1::2]) * s
    hh = (rows_h[..., 0::2] - rows_h[..., 1::2]) * s
    return ll, lh, hl, hh


def _inverse_haar(ll, lh, hl, hh) -> torch.Tensor:
    b, c, h, w = ll.shape
    out = torch.empty(b, c, 2 * h, 2 * w)
    out[..., 0::2, 0::2] = (ll + lh + hl + hh) / 2
    out[..., 0::2, 1::2] = (ll + lh - hl - hh) / 2
    out[..., 1::2, 0::2] = (ll - lh + hl - hh) / 2
    out[..., 1::2, 1::2] = (ll - lh - hl + hh) / 2
    return out


def test_wdss_equals_eq4():
    torch.manual_seed(0)
    m = WDSS(8, (4, 6), lfss_groups=2, d_state=4)
    x = torch.randn(2, 8, 4, 6)
    ll, lh, hl, hh = _haar(_layer_norm(x, m.norm, dim=1))
    lh, hl, hh = m.hfss(torch.stack([lh, hl, hh], dim=1)).unbind(1)
    expected = _inverse_haar(m.lfss(ll), lh, hl, hh) + x
    torch.testing.assert_close(m(x), expected, **TOL)


def test_wdss_dwt_iwt_round_trip():
    """With both branches off, IWT(DWT(LN(x))) + x must give back LN(x) + x exactly."""
    torch.manual_seed(0)
    m = WDSS(8, (6, 4), lfss_groups=2, use_hfss=False, use_lfss=False)
    x = torch.randn(2, 8, 6, 4)
    torch.testing.assert_close(m(x), _layer_norm(x, m.norm, dim=1) + x, atol=1e-6, rtol=1e-6)
    assert _inverse_haar(*_haar(x)).sub(x).abs().max() < 1e-6


def test_wdss_branch_switches_leave_their_bands_untouched():
    """DWT of the branch output: without LFSS its low band is DWT(LN(x))'s, without HFSS its high bands are."""
    torch.manual_seed(0)
    x = torch.randn(1, 8, 4, 4)
    no_lfss = WDSS(8, (4, 4), lfss_groups=2, d_state=4, use_lfss=False)
    no_hfss = WDSS(8, (4, 4), lfss_groups=2, d_state=4, use_hfss=False)
    reference = _haar(_layer_norm(x, no_lfss.norm, dim=1))
    with torch.no_grad():
        low = _haar(no_lfss(x) - x)
        high = _haar(no_hfss(x) - x)
    torch.testing.assert_close(low[0], reference[0], **TOL)
    assert (low[1] - reference[1]).abs().max() > 1e-3  # the high bands did change
    for band, ref in zip(high[1:], reference[1:]):
        torch.testing.assert_close(band, ref, **TOL)
    with pytest.raises(ValueError, match="even"):
        WDSS(8, (5, 4), lfss_groups=2)


def test_channel_shuffle_interleaves_the_two_halves():
    x = torch.arange(6.0).view(1, 6, 1, 1)
    assert channel_shuffle(x, 2).flatten().tolist() == [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]
    assert channel_shuffle(x, 3).flatten().tolist() == [0.0, 2.0, 4.0, 1.0, 3.0, 5.0]


def test_dse_equals_eq8():
    torch.manual_seed(0)
    m = DSE(6)
    assert m.project_in.out_channels == 2 * int(6 * 2.66)
    x = torch.randn(2, 6, 5, 4)
    f = torch.einsum("oc,bchw->bohw", m.project_in.weight[:, :, 0, 0], _layer_norm(x, m.norm, dim=1))
    n = f.shape[1]
    f = f[:, [(j % 2) * (n // 2) + j // 2 for j in range(n)]]  # CS: out[2i + g] = in[g * n/2 + i]
    f = F.conv2d(f, m.dwconv.weight, padding=1, groups=n)
    f1, f2 = f[:, : n // 2], f[:, n // 2 :]
    f1 = F.gelu(f2) * f1
    f2 = F.gelu(f1) * f2
    expected = torch.einsum("oc,bchw->bohw", m.project_out.weight[:, :, 0, 0], f1 + f2) + x
    torch.testing.assert_close(m(x), expected, **TOL)


@pytest.mark.parametrize("mixer", ["dse", "mlp"])
def test_wavelet_mamba_module_is_wdss_then_mixer(mixer):
    torch.manual_seed(0)
    m = WaveletMambaModule(8, (4, 4), mixer=mixer, lfss_groups=2, d_state=4)
    assert isinstance(m.mixer, DSE if mixer == "dse" else ChannelMLP)
    x = torch.randn(2, 8, 4, 4)
    torch.testing.assert_close(m(x), m.mixer(m.wdss(x)))
    with pytest.raises(ValueError, match="mixer"):
        WaveletMambaModule(8, (4, 4), mixer="ffn", lfss_groups=2)
