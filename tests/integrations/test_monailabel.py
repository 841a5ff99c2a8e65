"""A real MONAI Label server (the ``monaibundle`` sample app shipped in the monailabel package) serving every
bundle's 2D and 3D variants on 127.0.0.1; /info/ and /infer/ on a demo slice and a demo volume.

Skipped when the label extra is not installed (``pip install -e ".[label]"``, see the README).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import nibabel as nib
import numpy as np
import pytest

from medad_monai.data import load_anomaly_datalist

from .conftest import ENV, TINY

pytest.importorskip("monailabel", reason="the label extra is not installed")

pytestmark = pytest.mark.slow

START_TIMEOUT = 600  # seconds for the server to answer /info/ (imports and model loading on a busy 2-core machine)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny_bundles, brain_cohort, tmp_path_factory):
    """The server's URL, the studies folder (one slice, one volume) and the served files; stopped afterwards."""
    from medad_monai.label import make_label_bundles

    work = tmp_path_factory.mktemp("label")
    app = work / "apps" / "monaibundle"
    subprocess.run([sys.executable, "-m", "monailabel.main", "apps", "--download", "--name", "monaibundle",
                    "--output", str(work / "apps")], check=True, env=ENV, capture_output=True, timeout=300)
    for bundle in tiny_bundles.values():
        make_label_bundles(bundle.root, app / "model")
    studies = work / "studies"
    studies.mkdir()
    slice_item = next(i for i in load_anomaly_datalist(brain_cohort, "test") if i["label"] == 1)
    volume_item = next(i for i in load_anomaly_datalist(brain_cohort, "test_volumes") if i["label"] == 1)
    files = {"slice": studies / "slice.nii.gz", "volume": studies / "volume.nii.gz"}
    shutil.copy(slice_item["image"], files["slice"])
    shutil.copy(volume_item["image"], files["volume"])

    port = _free_port()
    command = [sys.executable, "-m", "monailabel.main", "start_server", "--app", str(app), "--studies", str(studies),
               "--host", "127.0.0.1", "--port", str(port), "--uvicorn_app", "medad_monai.label:app",
               "--conf", "models", ",".join(f"{name},{name}_volume" for name in sorted(tiny_bundles)), "--conf", "zoo_source", "github",
               "--conf", "sam2", "false", "--conf", "skip_trainers", "true"]
    log = open(work / "server.log", "w")  # noqa: SIM115  (open while the server runs)
    process = subprocess.Popen(command, cwd=work, env=ENV, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + START_TIMEOUT
        while True:
            if process.poll() is not None:
                raise AssertionError(f"the server stopped:\n{(work / 'server.log').read_text()[-5000:]}")
            try:
                with urllib.request.urlopen(f"{url}/info/", timeout=10) as response:
                    info = json.loads(response.read())
                break
            except OSError:
                if time.time() > deadline:
                    raise AssertionError(f"no answer in {START_TIMEOUT} s:\n{(work / 'server.log').read_text()[-5000:]}")
                time.sleep(2)
        yield url, info, files, work
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)
        log.close()


def _infer(url: str, model: str, image: str, work, params: dict | None = None):
    """POST /infer/<model> through MONAI Label's own client: the label's array and affine, and the result JSON."""
    from monailabel.client import MONAILabelClient

    client = MONAILabelClient(url, tmpdir=str(work))
    label_file, result = client.infer(model, image, params or {})
    label = nib.load(label_file)
    return np.asarray(label.dataobj), label.affine, result if isinstance(result, dict) else json.loads(result)


@pytest.mark.parametrize("name", sorted(TINY))
def test_info_announces_both_models_with_an_anomaly_label(server, name):
    _, info, _, _ = server
    models = info["models"]
    assert {name, f"{name}_volume"} <= set(models)
    assert models[name]["labels"] == {"anomaly": 1} and models[name]["dimension"] == 2
    assert models[f"{name}_volume"]["labels"] == {"anomaly": 1} and models[f"{name}_volume"]["dimension"] == 3


@pytest.mark.parametrize("name", sorted(TINY))
@pytest.mark.parametrize("kind", ["slice", "volume"])
def test_infer_returns_aligned_mask_score_and_map(server, tiny_bundles, name, kind):
    from medad_monai.serving import run_bundle

    url, _, files, work = server
    model = name if kind == "slice" else f"{name}_volume"
    source = nib.load(files[kind])
    mask, affine, result = _infer(url, model, kind, work)
    # the label has the image's shape (no channel axis) and holds 0 / 1; a volume's label also has its affine
    # (MONAI Label 0.8.5's writer stores 2D labels without an affine: the pixel grid is the image's)
    assert mask.shape == source.shape
    assert kind == "slice" or np.allclose(affine, source.affine)
    assert set(np.unique(mask)) <= {0, 1}
    assert {"score", "threshold", "pixel_threshold", "anomalous", "mask_voxels"} <= set(result)

    # the same mask and score as the bundle's own inference on the file
    expected = run_bundle(tiny_bundles[name].root, files[kind], device="cpu")
    assert np.array_equal(mask, np.asarray(expected.mask[0]))
    assert result["score"] == pytest.approx(expected.score, abs=1e-5)
    assert result["mask_voxels"] == int(mask.sum())

    amap, _, result = _infer(url, model, kind, work, {"label_output": "map"})
    assert result["label_output"] == "map" and amap.dtype == np.float32
    assert np.allclose(amap, np.asarray(expected.anomaly_map[0]), atol=1e-5)
