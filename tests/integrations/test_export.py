"""TorchScript export of a bundle's network: ``scripts/export_bundle.py`` (through ``monai.bundle.ckpt_export``)
and the bare ``ckpt_export`` command; the exported model must give the eager network's maps within 1e-4.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from medad_monai.data import load_anomaly_datalist
from medad_monai.export import load_bundle_network
from medad_monai.transforms import modality_preset

from .conftest import ENV, ROOT, TINY

pytestmark = pytest.mark.slow

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _demo_inputs(datalist, size) -> torch.Tensor:
    """The test slices of a demo cohort as network inputs (3, H, W), preprocessed as the bundle trains."""
    preprocess = modality_preset("mri", spatial_size=size, crop_foreground=False)
    return torch.stack([preprocess({"image": item["image"]})["image"].as_tensor() for item in load_anomaly_datalist(datalist, "test")])


@pytest.mark.parametrize("name", sorted(TINY))
@pytest.mark.parametrize("device", DEVICES)
def test_exported_model_matches_eager_network(tiny_bundles, name, brain_cohort, tmp_path, device):
    """scripts/export_bundle.py writes a TorchScript file that gives the eager maps on demo slices, for every bundle."""
    bundle = tiny_bundles[name]
    out = tmp_path / f"model_{device}.ts"
    script = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "export_bundle.py"), str(bundle.root), "--filepath", str(out),
         "--device", device],
        check=False, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=900,
    )
    assert script.returncode == 0, script.stderr[-3000:]
    summary = json.loads(script.stdout[script.stdout.index("{"):])
    size = bundle.parser().get("image_size")
    assert summary["max_abs_diff"] <= 1e-4 and summary["input_shape"] == [1, 3, *size]

    exported = torch.jit.load(str(out), map_location=device)
    eager = load_bundle_network(bundle.parser(), bundle.root / "models" / "model.pt", device=device)
    images = _demo_inputs(brain_cohort, size).to(device)
    with torch.no_grad():
        for batch in (images[:1], images):
            expected, actual = eager(batch), exported(batch)
            assert actual.shape == expected.shape == (len(batch), 1, *size)
            assert (actual - expected).abs().max().item() <= 1e-4
    # ckpt_export stores the bundle's metadata and config inside the TorchScript file
    extra = {"metadata.json": "", "inference.json": ""}
    torch.jit.load(str(out), _extra_files=extra)
    assert json.loads(extra["metadata.json"])["name"] == bundle.name and "network_def" in json.loads(extra["inference.json"])


def test_bare_ckpt_export_command(tiny_bundle, tmp_path):
    """MONAI's own ckpt_export with the documented arguments writes a model that gives the eager maps."""
    configs = tiny_bundle.configs
    bare = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "ckpt_export", "network_def", "--bundle_root", str(tiny_bundle.root),
         "--filepath", str(tmp_path / "model.ts"), "--ckpt_file", str(tiny_bundle.root / "models" / "model.pt"),
         "--meta_file", str(configs / "metadata.json"), "--config_file", str(configs / "inference.json"),
         "--key_in_ckpt", "model", "--use_trace", "True", "--input_shape", "[1,3,64,64]",
         "--converter_kwargs", "{'check_trace': False}"],
        check=False, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=900,
    )
    assert bare.returncode == 0, bare.stderr[-3000:]
    exported = torch.jit.load(str(tmp_path / "model.ts"))
    eager = load_bundle_network(tiny_bundle.parser(), tiny_bundle.root / "models" / "model.pt")
    x = torch.rand(2, 3, 64, 64) * 4.7 - 2.1
    with torch.no_grad():
        assert (exported(x) - eager(x)).abs().max().item() <= 1e-4


@pytest.mark.parametrize("length", [7, 300])
def test_traced_selective_scan_matches_autograd_scan(length):
    """Without autograd (inference, tracing) the torch backend runs its chunked forward directly."""
    from medad_monai.ops.selective_scan import selective_scan_fn, selective_scan_ref

    g = torch.Generator().manual_seed(0)
    u, delta = (torch.randn(2, 8, length, generator=g) for _ in range(2))
    A, B, C = -torch.rand(8, 4, generator=g) * 4, torch.randn(2, 4, length, generator=g), torch.randn(2, 4, length, generator=g)
    D, bias = torch.randn(8, generator=g), torch.randn(8, generator=g) * 0.1
    u.requires_grad_(True)

    def scan(*args):
        return selective_scan_fn(*args, D=D, delta_bias=bias, delta_softplus=True, backend="torch")

    with_grad = scan(u, delta, A, B, C)  # autograd path
    assert with_grad.requires_grad
    with torch.no_grad():
        without = scan(u, delta, A, B, C)
        traced = torch.jit.trace(lambda *a: scan(*a), (u, delta, A, B, C), check_trace=False)
        u2 = torch.randn(2, 8, length, generator=g)
        assert (traced(u2, delta, A, B, C) - scan(u2, delta, A, B, C)).abs().max() <= 1e-5
        # step sizes 20 times those of the trace (and a batch of another size): the frozen chunks still hold
        u3, delta3, B3, C3 = u2[:1], delta[:1] * 20 + 20, B[:1], C[:1]
        reference = selective_scan_ref(u3, delta3, A, B3, C3, D=D, delta_bias=bias, delta_softplus=True)
        assert (traced(u3, delta3, A, B3, C3) - reference).abs().max() <= 1e-4
    assert torch.allclose(without, with_grad.detach(), atol=0, rtol=0)
