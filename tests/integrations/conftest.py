"""Fixtures of the integration tests (export, bundle zips, MONAI Deploy, MONAI Label): a copy of a bundle
with a tiny randomly-initialised network in ``models/``, and tiny demo cohorts.

The bundle copy is what a user has after training: ``models/model.pt`` (``{"model": state_dict}``) and
``models/threshold.json``. The tiny network's settings are written into the copy's configs, so that tools
which read the bundle's own files (MONAI Label, the Deploy app, zips, ``ckpt_export``) build that network.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser

from medad_monai.data import generate_demo_cohort

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}

#: ``network_def`` entries that make each bundle's network small enough for seconds-long runs.
TINY = {
    "sp_mamba": {"encoder_depth": 18, "decoder_depths": [1, 1, 1, 1]},
    "wave_mambaad": {"encoder_depth": 18, "decoder_depths": [1, 1, 1, 1], "decoder_channels": [128, 256, 128, 64],
                     "lfss_groups": [4, 8, 4, 2]},
    "umiad_egmf": {"num_coupling_blocks": 1, "condition_channels": 8, "subnet_hidden_ratio": 0.25, "mff_kernel_size": 1},
}


@dataclass(frozen=True)
class TinyBundle:
    """A bundle folder whose configs build a tiny network, with that network's checkpoint and thresholds."""

    name: str
    root: Path

    @property
    def configs(self) -> Path:
        return self.root / "configs"

    def parser(self, config: str = "inference.json") -> ConfigParser:
        parser = ConfigParser()
        parser.read_config(str(self.configs / config))
        parser.read_meta(str(self.configs / "metadata.json"))
        parser["bundle_root"] = str(self.root)
        return parser


def make_tiny_bundle(name: str, folder: Path, seed: int = 0) -> TinyBundle:
    """Copy ``bundles/<name>`` into ``folder`` and write a random tiny network's ``models/model.pt`` and
    ``models/threshold.json`` (pixel threshold: the 95th percentile of its map on a random image)."""
    root = folder / name
    shutil.copytree(ROOT / "bundles" / name, root, ignore=shutil.ignore_patterns("data", "eval", "runs", "*.pt", "*.ts"))
    for config in root.glob("configs/*.json"):
        content = json.loads(config.read_text())
        if isinstance(content.get("network_def"), dict):
            content["network_def"].update(TINY[name])
            config.write_text(json.dumps(content, indent=4))
    bundle = TinyBundle(name, root)
    torch.manual_seed(seed)
    network = bundle.parser().get_parsed_content("network_def").eval()
    torch.save({"model": network.state_dict()}, root / "models" / "model.pt")
    with torch.no_grad():
        amap = network(torch.randn(1, 3, *bundle.parser().get("image_size")))
    pixel = float(torch.quantile(amap.flatten(), 0.95))
    threshold = {"threshold": 0.0, "pixel_threshold": pixel, "method": "test fixture: random tiny network"}
    (root / "models" / "threshold.json").write_text(json.dumps(threshold))
    return bundle


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> TinyBundle:
    return make_tiny_bundle("sp_mamba", tmp_path_factory.mktemp("bundle"))


@pytest.fixture(scope="session")
def tiny_bundles(tiny_bundle, tmp_path_factory) -> dict[str, TinyBundle]:
    """Every bundle as a tiny bundle, by name (SP-Mamba's is ``tiny_bundle``)."""
    others = {name: make_tiny_bundle(name, tmp_path_factory.mktemp(f"bundle_{name}")) for name in TINY if name != "sp_mamba"}
    return {"sp_mamba": tiny_bundle, **others}


@pytest.fixture(scope="session")
def brain_cohort(tmp_path_factory) -> Path:
    """A tiny brain-MRI demo cohort (NIfTI slices and volumes of about 45 slices, 4 mm voxels); returns its datalist."""
    sizes = {"num_train": 1, "num_val_normal": 0, "num_val_abnormal": 0, "num_test_normal": 1, "num_test_abnormal": 1, "voxel_size": 4.0}
    return generate_demo_cohort(tmp_path_factory.mktemp("brain"), "brain_mri", seed=0, **sizes)


@pytest.fixture(scope="session")
def ct_cohort(tmp_path_factory) -> Path:
    """A tiny head-CT demo cohort (DICOM series of about 45 images, 4 mm voxels; NIfTI slices); returns its datalist."""
    sizes = {"num_train": 1, "num_val_normal": 0, "num_val_abnormal": 0, "num_test_normal": 1, "num_test_abnormal": 1, "voxel_size": 4.0}
    return generate_demo_cohort(tmp_path_factory.mktemp("ct"), "head_ct", seed=0, **sizes)
