"""Bundle runner and demo-cohort fixtures shared by the end-to-end bundle tests, parametrised by bundle name.

Each bundle runs through ``python -m monai.bundle`` in a subprocess, with its real configs, on a tiny
demo cohort; ``BUNDLES`` gives per bundle the overrides that make its network small enough for seconds-long
runs and a state-dict key that proves the saved model is that bundle's network.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from medad_monai.data import generate_demo_cohort

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


@dataclass(frozen=True)
class BundleSpec:
    """How the tests run one bundle: overrides for a tiny network, and a key its saved model must hold."""

    tiny_net: tuple[str, ...]
    model_key: str


BUNDLES = {
    "sp_mamba": BundleSpec(
        tiny_net=("--network_def#encoder_depth", "18", "--network_def#decoder_depths", "[1,1,1,1]"),
        model_key="prototypes.prototypes",
    ),
    "wave_mambaad": BundleSpec(
        tiny_net=("--network_def#encoder_depth", "18", "--network_def#decoder_depths", "[1,1,1,1]",
                  "--network_def#decoder_channels", "[128,256,128,64]", "--network_def#lfss_groups", "[4,8,4,2]"),
        model_key="stages.0.0.wdss.lfss.mamba.ssm_h.ssm.a_log",
    ),
    "umiad_egmf": BundleSpec(
        tiny_net=("--network_def#num_coupling_blocks", "1", "--network_def#condition_channels", "8",
                  "--network_def#subnet_hidden_ratio", "0.25", "--network_def#mff_kernel_size", "1"),
        model_key="fusion.fuse_first.fuse_in.weight",
    ),
}


@dataclass(frozen=True)
class Bundle:
    """One bundle under test: its name, folder, spec and a runner for its configs."""

    name: str
    spec: BundleSpec

    @property
    def root(self) -> Path:
        return ROOT / "bundles" / self.name

    @property
    def configs(self) -> Path:
        return self.root / "configs"

    def command(self, *args: str, config: str = "train.json", runner: tuple[str, ...] = ()) -> list[str]:
        """``monai.bundle run`` with ``config`` (``a.json+b.json`` merges several) and ``args``."""
        files = [str(self.configs / c) for c in config.split("+")]
        config_arg = files[0] if len(files) == 1 else json.dumps(files)
        return [*(runner or (sys.executable,)), "-m", "monai.bundle", "run", "--config_file", config_arg, *args]

    def run(self, *args: str, config: str = "train.json", check: bool = True, runner: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
        """Run the bundle's ``config``; with ``check``, a failed run raises with its output."""
        return self.call(self.command(*args, config=config, runner=runner), check=check)

    @staticmethod
    def call(command: list[str], check: bool = True) -> subprocess.CompletedProcess:
        """Run ``command`` from the repository root with single-threaded maths, capturing its output."""
        result = subprocess.run(command, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=900)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
        return result


@pytest.fixture(scope="session")
def cohort(tmp_path_factory) -> Path:
    """A tiny brain-MRI demo cohort: 8 training, 4 + 4 validation and 4 + 4 test slices."""
    root = tmp_path_factory.mktemp("cohort")
    sizes = dict(num_train=8, num_val_normal=4, num_val_abnormal=4, num_test_normal=4, num_test_abnormal=4)
    return generate_demo_cohort(root, "brain_mri", seed=0, **sizes)


@pytest.fixture(scope="module", params=sorted(BUNDLES))
def bundle(request) -> Bundle:
    return Bundle(request.param, BUNDLES[request.param])


@pytest.fixture(scope="module")
def trained(bundle: Bundle, cohort: Path, tmp_path_factory) -> tuple[Path, list[str]]:
    """A 2-epoch training run of ``bundle`` on ``cohort``: its output folder and the common overrides."""
    out = tmp_path_factory.mktemp(f"run_{bundle.name}")
    paths = ["--datalist", str(cohort), "--ckpt_dir", str(out / "models"), "--output_dir", str(out / "runs"),
             "--threshold_file", str(out / "models" / "threshold.json")]
    common = paths + list(bundle.spec.tiny_net) + ["--batch_size", "4"]
    bundle.run(*common, "--epochs", "2")
    return out, common


@pytest.fixture
def inference_args() -> Callable[[Path, Path, Path], list[str]]:
    """inference.json overrides: the tiny cohort's test split, the trained run's model and thresholds."""

    def make(run_dir: Path, source: Path, output_dir: Path) -> list[str]:
        return ["--input", str(source), "--ckpt_path", str(run_dir / "models" / "model.pt"),
                "--threshold_file", str(run_dir / "models" / "threshold.json"), "--output_dir", str(output_dir)]

    return make
