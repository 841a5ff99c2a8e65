"""Sharing a trained bundle: a zip with the weights' SHA-256 in metadata.json, installed with MONAI's own
``monai.bundle download`` from a local file, run from the installed folder and loaded with ``monai.bundle.load``."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile

import monai.bundle
import nibabel as nib
import pytest
import torch

from medad_monai.data import load_anomaly_datalist
from medad_monai.export import file_sha256, load_bundle_network
from medad_monai.packaging import package_bundle, verify_weights

from .conftest import ENV, ROOT

pytestmark = pytest.mark.slow


def _call(command, cwd):
    result = subprocess.run(command, check=False, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"{command} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    return result


@pytest.fixture(scope="module")
def installed(tiny_bundle, tmp_path_factory):
    """The tiny bundle packaged into a zip and installed elsewhere by ``monai.bundle download``."""
    work = tmp_path_factory.mktemp("zip")
    for leftover in ("data", "eval", "runs"):  # what a trained bundle folder also holds: stays out of the zip
        (tiny_bundle.root / leftover).mkdir(exist_ok=True)
        (tiny_bundle.root / leftover / "x.txt").write_text("x")
    (tiny_bundle.root / "models" / "last_checkpoint_epoch=2.pt").write_bytes(b"resume")
    archive = package_bundle(tiny_bundle.root, work / "dist")
    for leftover in ("data", "eval", "runs"):
        shutil.rmtree(tiny_bundle.root / leftover)
    (tiny_bundle.root / "models" / "last_checkpoint_epoch=2.pt").unlink()
    _call([sys.executable, "-m", "monai.bundle", "download", "--name", "sp_mamba", "--url", archive.resolve().as_uri(),
           "--bundle_dir", str(work / "bundles")], cwd=work)
    return archive, work / "bundles" / "sp_mamba"


def test_zip_holds_the_bundle_and_the_weights_hashes(tiny_bundle, installed):
    archive, _ = installed
    metadata = json.loads((tiny_bundle.configs / "metadata.json").read_text())
    assert archive.name == f"sp_mamba_v{metadata['version']}.zip"
    names = zipfile.ZipFile(archive).namelist()
    assert all(n.startswith("sp_mamba/") for n in names)
    assert {"sp_mamba/configs/inference.json", "sp_mamba/models/model.pt", "sp_mamba/models/threshold.json"} <= set(names)
    assert not [n for n in names if n.split("/")[1] in ("data", "eval", "runs") or "last_checkpoint" in n]
    packaged = json.loads(zipfile.ZipFile(archive).read("sp_mamba/configs/metadata.json"))
    assert packaged["weights_sha256"] == {
        "models/model.pt": file_sha256(tiny_bundle.root / "models" / "model.pt"),
        "models/threshold.json": file_sha256(tiny_bundle.root / "models" / "threshold.json"),
    }
    assert "weights_sha256" not in metadata  # the source folder is left as it was


def test_installed_bundle_verifies_and_a_changed_file_is_named(installed, tmp_path):
    _, folder = installed
    assert set(verify_weights(folder)) == {"models/model.pt", "models/threshold.json"}
    copy = tmp_path / "sp_mamba"
    shutil.copytree(folder, copy)
    (copy / "models" / "threshold.json").write_text('{"threshold": 0, "pixel_threshold": 0}')
    with pytest.raises(ValueError, match="threshold.json has SHA-256"):
        verify_weights(copy)
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "package_bundle.py"), "verify", str(copy)],
                            check=False, env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "threshold.json" in result.stderr


def test_installed_bundle_runs_from_its_folder_and_loads_with_monai(tiny_bundle, installed, brain_cohort, tmp_path):
    _, folder = installed
    item = load_anomaly_datalist(brain_cohort, "test")[0]
    # inference from a working directory outside the bundle and outside the repository
    _call([sys.executable, "-m", "monai.bundle", "run", "--config_file", str(folder / "configs" / "inference.json"),
           "--bundle_root", str(folder), "--input", item["image"], "--output_dir", str(tmp_path / "out")], cwd=tmp_path)
    stem = item["image"].rsplit("/", 1)[1].removesuffix(".nii.gz")
    amap = nib.load(tmp_path / "out" / f"{stem}_anomaly_map.nii.gz")
    assert amap.shape[:2] == nib.load(item["image"]).shape[:2]
    assert (tmp_path / "out" / "scores.csv").is_file()

    net = monai.bundle.load("sp_mamba", bundle_dir=folder.parent, workflow_type="inference", key_in_ckpt="model", device="cpu")
    reference = load_bundle_network(tiny_bundle.parser(), tiny_bundle.root / "models" / "model.pt")
    x = torch.rand(1, 3, *tiny_bundle.parser().get("image_size"))
    with torch.no_grad():
        assert torch.equal(net.eval()(x), reference(x))
