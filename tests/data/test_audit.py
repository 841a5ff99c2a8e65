"""Tests of scripts/audit_demo_cohort.py on small generated demo cohorts (4 mm voxels)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from medad_monai.data.demo import DEMO_MODALITIES, generate_demo_cohort
from medad_monai.metrics.functional import image_auroc

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
# twenty normal and about twenty-five abnormal test subjects, two slices each at most, so that every
# subject weighs alike and the stratified nuisances balance (3 mm: the CT skull stays closed)
SMALL = {
    "num_train": 10,
    "num_val_normal": 4,
    "num_val_abnormal": 4,
    "num_test_normal": 40,
    "num_test_abnormal": 40,
    "voxel_size": 3.0,
    "min_lesion_area_mm2": 54.0,
    "max_subject_slices": 2,
}
TINY = {**SMALL, "num_test_normal": 8, "num_test_abnormal": 8, "voxel_size": 4.0, "min_lesion_area_mm2": 48.0}


@pytest.fixture(scope="module")
def audit():
    """The audit script as a module (it imports scripts/baseline_gaussian.py beside it)."""
    spec = importlib.util.spec_from_file_location("audit_demo_cohort", SCRIPTS / "audit_demo_cohort.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


@pytest.fixture(scope="module")
def cohorts(tmp_path_factory) -> dict[str, Path]:
    """A small cohort of each modality (a minute or so on 2 cores)."""
    root = tmp_path_factory.mktemp("audit")
    return {modality: generate_demo_cohort(root, modality, seed=0, **SMALL) for modality in DEMO_MODALITIES}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """Datalist of a tiny brain MRI cohort (seconds)."""
    return generate_demo_cohort(tmp_path_factory.mktemp("tiny"), "brain_mri", seed=0, **TINY)


@pytest.mark.slow
@pytest.mark.parametrize("modality", DEMO_MODALITIES)
def test_confound_probes_sit_at_chance_on_a_small_cohort(audit, cohorts, modality):
    slices = audit.read_slices(cohorts[modality], "test")
    probes = audit.confound_probes(slices, modality)
    assert set(probes) == set(audit.PROBES)
    for name, values in probes.items():
        assert values.shape == slices.labels.shape and np.isfinite(values).all(), name
        assert audit.probe_verdict(image_auroc(values, slices.labels)) == "ok", name


def test_the_level_probe_flags_a_level_shortcut(audit, tiny):
    """Relabel the normal test slices by level: the level probe must see it."""
    datalist = json.loads(tiny.read_text())
    levels = audit.read_slices(tiny, "test").levels_mm
    normal = [(item, level) for item, level in zip(datalist["test"], levels) if item["label"] == 0]
    cut = np.median([level for _, level in normal])
    datalist["test"] = [{**item, "label": int(level > cut)} for item, level in normal]
    shortcut = tiny.parent / "shortcut.json"
    shortcut.write_text(json.dumps(datalist))
    slices = audit.read_slices(shortcut, "test")
    level_auroc = image_auroc(audit.confound_probes(slices, "brain_mri")["slice level"], slices.labels)
    assert level_auroc == 1.0 and audit.probe_verdict(level_auroc) == "SHORTCUT"
    assert audit.probe_verdict(0.55) == "ok" and audit.probe_verdict(0.42) == "SHORTCUT"


@pytest.mark.slow
@pytest.mark.parametrize("modality", DEMO_MODALITIES)
def test_conspicuity_measures_every_lesion_cross_section(audit, cohorts, modality):
    slices = audit.read_slices(cohorts[modality], "test")
    records = audit.conspicuity(slices, modality)
    assert len(records["contrast"]) >= slices.labels.sum() * 0.9  # most abnormal slices hold a measurable lesion
    assert (records["contrast"] >= 0).all() and (records["noise"] > 0).all()
    assert set(records["kind"]) <= {kind for kind in slices.kinds if kind != "normal"}


def test_intensity_floors_see_a_painted_bright_square(audit, tiny):
    """On normal slices with a bright square painted on half of them, both intensity floors find it."""
    slices = audit.read_slices(tiny, "training")
    inputs = audit.floor_inputs(slices, "brain_mri", 64)
    images, masks = inputs["threshold"].clone(), inputs["mask"].clone()
    labels = np.arange(len(images)) % 2
    for index in np.flatnonzero(labels):
        images[index, 0, 28:36, 28:36] += 3.0
        masks[index, 0, 28:36, 28:36] = 1.0
    for maps in (audit.threshold_maps(images, inputs["brain"] | (masks > 0), 2.0), audit.zscore_maps(inputs["zscore"], images, 2.0)):
        metrics = audit.floor_metrics(maps, masks, labels)
        assert metrics["image_auroc"] == 1.0 and metrics["pixel_auroc"] > 0.95


@pytest.mark.slow
def test_audit_prints_its_table(audit, tiny, capsys):
    audit.main(["--datalist", str(tiny), "--modality", "brain_mri"])
    table = capsys.readouterr().out
    assert table.startswith("== brain_mri: ") and "validation" in table and "test" in table
    for row in ("probe slice level AUROC", "contrast", "below noise", "floor zscore", "floor threshold", "floor gaussian", "kind tumour"):
        assert row in table, row
