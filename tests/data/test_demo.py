"""Tests of the embedded demo cohort (medad_monai.data.demo), on small 4 mm cohorts."""

from __future__ import annotations

import json
import socket
from collections import Counter
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from monai.transforms import LoadImage
from pydicom.uid import CTImageStorage
from scipy import ndimage as ndi

from medad_monai.data.datalist import load_anomaly_datalist
from medad_monai.data.demo import (
    DEMO_MODALITIES,
    DemoSubject,
    cohort,
    depth_mm,
    draw_lesions,
    ensure_demo_cohort,
    generate_demo_cohort,
    load_demo_template,
    pick_lesion_centre,
    synthesize_subject,
    write_ct_series,
)

# one subject per group, on a 4 mm grid: about a second per modality; a 3-pixel lesion threshold
# leaves slices with smaller lesions, which must be dropped
SMALL = {
    "num_train": 1,
    "num_val_normal": 1,
    "num_val_abnormal": 1,
    "num_test_normal": 1,
    "num_test_abnormal": 1,
    "voxel_size": 4.0,
    "min_lesion_area_mm2": 48.0,
}
TRAIN_ONLY = {**SMALL, "num_val_normal": 0, "num_val_abnormal": 0, "num_test_normal": 0, "num_test_abnormal": 0}
SPLITS = ("training", "validation", "test")


@pytest.fixture(scope="module")
def cohorts(tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    """Root folder and datalist path of a small cohort of each modality, seed 0."""
    root = tmp_path_factory.mktemp("demo")
    return root, {modality: generate_demo_cohort(root, modality, seed=0, **SMALL) for modality in DEMO_MODALITIES}


def _subject_of(item: dict) -> str:
    """Subject id of a slice item: the folder under ``slices/``."""
    return Path(item["image"]).parent.name


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def test_template_loads_from_the_wheel_without_network(monkeypatch, tmp_path):
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setenv("NILEARN_DATA", str(tmp_path / "nilearn_data"))
    monkeypatch.setenv("NILEARN_SHARED_DATA", str(tmp_path / "nilearn_shared"))
    from nilearn import datasets

    for loader in (datasets.load_mni152_template, datasets.load_mni152_gm_template, datasets.load_mni152_wm_template):
        if hasattr(loader, "cache_clear"):  # nilearn caches some of them: force a real read of the files
            loader.cache_clear()
    load_demo_template.cache_clear()
    template = load_demo_template()

    assert template.t1.shape == template.grey.shape == template.white.shape == (197, 233, 189)
    assert 0.99 < template.t1.max() <= 1.0
    assert np.all(template.brain_hi_mm - template.brain_lo_mm > 120)  # a whole adult brain, in mm
    assert not (tmp_path / "nilearn_data").exists() and not (tmp_path / "nilearn_shared").exists()


@pytest.mark.parametrize("modality", DEMO_MODALITIES)
def test_same_seed_gives_identical_bytes_and_another_seed_differs(cohorts, tmp_path, modality):
    first = cohorts[1][modality].parent
    again = generate_demo_cohort(tmp_path / "again", modality, seed=0, **SMALL).parent
    smaller = generate_demo_cohort(tmp_path / "smaller", modality, seed=0, **TRAIN_ONLY).parent
    other = generate_demo_cohort(tmp_path / "other", modality, seed=1, **TRAIN_ONLY).parent

    volume = "volumes/train-n000_image.nii.gz" if modality == "brain_mri" else "dicom/train-n000/CT_0010.dcm"
    datalist = _read_json(first / "datalist.json")
    training_slice = datalist["training"][0]["image"]
    abnormal_slice = next(item for item in datalist["test"] if item["label"] == 1)
    same = ("datalist.json", "manifest.json", "lesions.json", volume, abnormal_slice["image"], abnormal_slice["mask"])
    for name in same:
        assert (first / name).read_bytes() == (again / name).read_bytes(), name
    # a subject does not depend on how many others the cohort has
    for name in (volume, "volumes/train-n000_mask.nii.gz", training_slice):
        assert (first / name).read_bytes() == (smaller / name).read_bytes(), name
    assert (first / volume).read_bytes() != (other / volume).read_bytes()
    other_slice = _read_json(other / "datalist.json")["training"][0]["image"]
    assert (first / training_slice).read_bytes() != (other / other_slice).read_bytes()


@pytest.mark.parametrize("modality", DEMO_MODALITIES)
def test_splits_are_disjoint_by_subject(cohorts, modality):
    datalist = _read_json(cohorts[1][modality])
    volumes = {split: [item["subject"] for item in datalist[f"{split}_volumes"]] for split in SPLITS}
    for split in SPLITS:
        assert datalist[split], split
        assert {_subject_of(item) for item in datalist[split]} <= set(volumes[split])
    all_subjects = [subject for split in SPLITS for subject in volumes[split]]
    assert len(all_subjects) == len(set(all_subjects))
    assert all(subject.startswith("train-n") for subject in volumes["training"])


@pytest.mark.parametrize("modality", DEMO_MODALITIES)
def test_labels_and_masks_agree(cohorts, modality):
    datalist_path = cohorts[1][modality]
    manifest = _read_json(datalist_path.parent / "manifest.json")
    min_area = manifest["parameters"]["min_lesion_area_mm2"]
    voxel_size = manifest["parameters"]["voxel_size"]

    training = load_anomaly_datalist(datalist_path, "training")
    assert {item["label"] for item in training} == {0}
    assert all("mask" not in item for item in training)
    for split in ("validation", "test"):
        items = load_anomaly_datalist(datalist_path, split)
        assert {item["label"] for item in items} == {0, 1}
        assert len(items) == sum(manifest["counts"]["slices"][split].values())
        for item in items:
            image, mask = nib.load(item["image"]), nib.load(item["mask"])
            assert image.get_data_dtype() == np.float32 and mask.get_data_dtype() == np.uint8
            assert image.shape == mask.shape and len(image.shape) == 2
            np.testing.assert_allclose(image.affine, mask.affine)
            lesion_area = np.asarray(mask.dataobj).sum() * voxel_size**2
            assert set(np.unique(np.asarray(mask.dataobj))) <= {0, 1}
            assert (lesion_area >= min_area) if item["label"] else (lesion_area == 0), item["image"]


@pytest.mark.parametrize("modality", DEMO_MODALITIES)
def test_volume_entries_match_subject_labels(cohorts, modality):
    datalist_path = cohorts[1][modality]
    for split in SPLITS:
        for item in load_anomaly_datalist(datalist_path, f"{split}_volumes"):
            mask = np.asarray(nib.load(item["mask"]).dataobj)
            assert mask.ndim == 3 and bool(mask.any()) == bool(item["label"])
            assert Path(item["mask"]).name == f"{item['subject']}_mask.nii.gz"


@pytest.mark.parametrize("modality", DEMO_MODALITIES)
def test_normal_subjects_export_at_most_max_normal_slices(cohorts, modality):
    datalist = _read_json(cohorts[1][modality])
    limit = _read_json(cohorts[1][modality].parent / "manifest.json")["parameters"]["max_normal_slices"]
    for split in SPLITS:
        per_subject = Counter(_subject_of(item) for item in datalist[split] if item["label"] == 0)
        assert per_subject and max(per_subject.values()) <= limit, split


def test_mri_is_skull_stripped(mri_twins):
    for subject, _ in mri_twins:
        assert not subject.image[~subject.brain].any()
        assert (subject.image[subject.brain] > 0).mean() > 0.99


def test_lesion_centres_are_spread_evenly_over_axial_planes():
    """A plane with few candidate voxels is as likely as one with many."""
    allowed = np.zeros((40, 40, 5), bool)
    allowed[5:35, 5:35, 1] = True  # 900 candidates
    allowed[20, 20, 3] = True  # 1 candidate
    rng = np.random.default_rng(0)
    planes = Counter(int(pick_lesion_centre(rng, allowed, 1, [])[2]) for _ in range(400))
    assert set(planes) == {1, 3} and 150 < planes[3] < 250


# every MRI lesion kind, two tumours so that one is small enough for its core to feel the blur
MRI_LESIONS = [("tumour", 26.0), ("tumour", 14.0), ("cavity", 12.0), ("focus", 7.0), ("cavity", 8.0)]


@pytest.fixture(scope="module")
def mri_twins() -> list[tuple[DemoSubject, DemoSubject]]:
    """(subject with ``MRI_LESIONS``, the same subject without them) for two seeds, 2 mm grid."""
    return [
        tuple(synthesize_subject("brain_mri", np.random.default_rng(seed), lesions) for lesions in (MRI_LESIONS, ()))
        for seed in range(2)
    ]


def _in_plane(iterations: int, region: np.ndarray) -> np.ndarray:
    """``region`` (X, Y, Z) grown by ``iterations`` voxels within each axial plane, diagonals included."""
    structure = np.zeros((3, 3, 3), bool)
    structure[:, :, 1] = True
    return ndi.binary_dilation(region, structure, iterations=iterations)


def _lesion_parts(subject: DemoSubject, index: int) -> list[tuple[np.ndarray, float]]:
    """(voxels, requested contrast) of each part of lesion ``index``: a tumour's core and oedema ring, or the whole."""
    region = subject.lesion_labels == index + 1
    lesion = subject.lesions[index]
    if lesion["kind"] != "tumour":
        return [(region, lesion["contrast"])]
    core = region & (depth_mm(region, 2.0) > lesion["oedema_thickness_mm"])
    return [(core, lesion["contrast"]), (region & ~core, lesion["oedema_contrast"])]


def test_mri_lesions_have_the_stated_sizes_and_contrast(mri_twins):
    for subject, _ in mri_twins:
        assert len(subject.lesions) == len(MRI_LESIONS)
        for index, lesion in enumerate(subject.lesions):
            region = subject.lesion_labels == index + 1
            assert region.any() and subject.brain[region].all()
            extent_mm = [np.ptp(axis) * 2.0 for axis in np.nonzero(region)]
            assert max(extent_mm) <= lesion["diameter_mm"]
            assert 0.1 <= abs(lesion["contrast"]) <= 0.6
            if lesion["kind"] == "focus":
                assert lesion["contrast"] > 0
            if lesion["kind"] == "cavity":
                assert lesion["contrast"] < 0
            if lesion["kind"] == "tumour":
                assert -0.4 <= lesion["oedema_contrast"] <= -0.15
                # 2 voxels or more, unless the tumour is too thin to keep a core inside such a ring
                deepest = depth_mm(region, 2.0).max()
                thickness = lesion["oedema_thickness_mm"]
                assert min(4.0, deepest - 2.0) <= thickness <= max(4.0, lesion["diameter_mm"] / 4)
                assert all(part.any() for part, _ in _lesion_parts(subject, index))
        assert np.array_equal(subject.mask, (subject.lesion_labels > 0).astype(np.uint8))


def test_mri_lesions_are_the_only_change_and_visible_on_their_whole_masks(mri_twins):
    # the twin draws the same anatomy, bias field and noise, so image / twin - 1 is what the lesions changed
    cross_sections = 0
    for subject, twin in mri_twins:
        assert not twin.mask.any()
        # the in-plane blur reaches 2 voxels: nothing changes beyond that around the mask
        unchanged = ~_in_plane(2, subject.mask > 0)
        np.testing.assert_array_equal(subject.image[unchanged], twin.image[unchanged])
        for index in range(len(subject.lesions)):
            for part, contrast in _lesion_parts(subject, index):
                change = subject.image[part] / twin.image[part] - 1
                # a slice is abnormal from 16 mm2 (4 pixels) of lesion: each such cross-section is visible
                planes = np.nonzero(part)[2]
                for k in np.flatnonzero(np.bincount(planes) >= 4):
                    in_plane = change[planes == k]
                    # half the smallest contrast (0.1) or more, in the direction asked, on 90 % of the mask
                    assert np.mean(in_plane * np.sign(contrast) >= 0.05) >= 0.9, (index, k, contrast)
                    cross_sections += 1
    assert cross_sections >= 40


def test_mri_lesion_contrast_is_the_requested_one(mri_twins):
    interiors, against_ring = 0, []
    for subject, twin in mri_twins:
        tissue_level = 0.6 * np.percentile(twin.image[subject.brain], 95)  # grey and white matter, not fluid
        for index, lesion in enumerate(subject.lesions):
            for part, contrast in _lesion_parts(subject, index):
                # the blur takes up to a third off the contrast of the smallest parts (foci, small cores)
                ratio = np.median(subject.image[part] / twin.image[part] - 1) / contrast
                assert 0.6 <= ratio <= 1.1, (lesion["kind"], ratio, contrast)
                # one voxel in from the edge, where the blur does not mix the part with its neighbours
                interior = part & ~_in_plane(1, ~part)
                if interior.sum() >= 4:
                    change = np.median(subject.image[interior] / twin.image[interior] - 1)
                    assert abs(change - contrast) <= 0.02 + 0.1 * abs(contrast), (lesion["kind"], change, contrast)
                    interiors += 1
            if lesion["kind"] != "tumour":
                # as a reader of the slices would see it: against the tissue in a ring just outside
                region = subject.lesion_labels == index + 1
                ring = _in_plane(3, region) & ~_in_plane(1, region) & (subject.lesion_labels == 0)
                seen = subject.image[region].mean() / subject.image[ring & (twin.image > tissue_level)].mean() - 1
                against_ring.append(np.sign(seen) == np.sign(lesion["contrast"]))
    assert interiors >= 4
    # the ring mixes grey and white matter, so that a subtle lesion may drown in it, but not most
    assert len(against_ring) == 6 and sum(against_ring) >= 5


def test_ct_haemorrhages_are_hyperdense_inside_the_brain():
    # seed 1 draws a subdural haematoma 5.8 mm thick: thick enough for voxels out of the blur's reach
    subject = synthesize_subject("head_ct", np.random.default_rng(1), [("haemorrhage", 20.0), ("subdural", 45.0)])
    depth = depth_mm(subject.brain, 2.0)
    for index, lesion in enumerate(subject.lesions):
        region = subject.lesion_labels == index + 1
        assert subject.brain[region].all()
        interior = ndi.binary_erosion(region, structure=np.ones((3, 3, 1)))  # in-plane: away from the blur
        assert interior.any()
        assert abs(subject.image[interior].mean() - lesion["hu"]) < 5
        extent_mm = max(np.ptp(axis) * 2.0 for axis in np.nonzero(region))
        if lesion["kind"] == "haemorrhage":
            assert 50 <= lesion["hu"] <= 90 and extent_mm <= lesion["diameter_mm"]
        else:
            assert 50 <= lesion["hu"] <= 80 and extent_mm <= lesion["span_mm"]
            assert depth[region].max() <= lesion["thickness_mm"] + 2.0  # along the inner skull
    # CSF spaces enclosed in a plane are intracranial, not bone
    assert all(np.array_equal(ndi.binary_fill_holes(plane), plane) for plane in np.moveaxis(subject.brain, 2, 0))
    skull = (~subject.brain) & (ndi.distance_transform_edt(~subject.brain, sampling=2.0) <= 4.0)
    assert 600 < np.median(subject.image[skull]) < 1050
    assert -1030 < np.median(subject.image[0]) < -970  # air at the grid's edge


@pytest.mark.parametrize(
    "modality, primary, sizes",
    [
        ("brain_mri", {"tumour", "cavity"}, {"tumour": (12, 50), "cavity": (6, 30), "focus": (3, 8)}),
        ("head_ct", {"haemorrhage", "subdural"}, {"haemorrhage": (3, 30), "subdural": (30, 60)}),
    ],
)
def test_drawn_lesions_follow_the_tables(modality, primary, sizes):
    rng = np.random.default_rng(0)
    draws = [draw_lesions(rng, modality) for _ in range(400)]
    assert 0.4 < np.mean([len(lesions) > 1 for lesions in draws]) < 0.6  # about half have several
    assert all(1 <= len(lesions) <= 4 and lesions[0][0] in primary for lesions in draws)
    for kind, size in (lesion for lesions in draws for lesion in lesions):
        assert sizes[kind][0] <= size <= sizes[kind][1], (kind, size)


def test_ct_series_reads_back_in_hu_with_the_mask_geometry(cohorts):
    datalist_path = cohorts[1]["head_ct"]
    volume = next(i for i in load_anomaly_datalist(datalist_path, "test_volumes") if i["label"] == 1)
    image = LoadImage(reader="PydicomReader", image_only=True)(volume["image"])
    mask = LoadImage(image_only=True)(volume["mask"])

    assert image.shape == mask.shape
    np.testing.assert_allclose(image.affine, mask.affine)
    np.testing.assert_allclose(np.abs(np.diag(image.affine)[:3]), 4.0)
    assert -1030 < float(image.min()) < -990 and 900 < float(image.max()) < 1100
    assert float(image[mask > 0].mean()) > 45  # hyperdense lesions
    slices = [i for i in load_anomaly_datalist(datalist_path, "test") if _subject_of(i) == volume["subject"]]
    assert slices
    for item in slices:
        k = int(Path(item["image"]).name.split("_z")[1][:3])
        np.testing.assert_array_equal(np.asarray(nib.load(item["image"]).dataobj), image[:, :, k].numpy())
        np.testing.assert_array_equal(np.asarray(nib.load(item["mask"]).dataobj), mask[:, :, k].numpy())

    files = sorted(Path(volume["image"]).glob("*.dcm"))
    assert len(files) == image.shape[2]
    ds = pydicom.dcmread(files[0])
    assert ds.SOPClassUID == CTImageStorage and ds.Modality == "CT"
    assert float(ds.RescaleIntercept) == -1024 and float(ds.RescaleSlope) == 1
    assert ds.pixel_array.dtype == np.int16
    np.testing.assert_array_equal(ds.pixel_array.T - 1024, image[:, :, 0].numpy())
    series = {(pydicom.dcmread(f).StudyInstanceUID, pydicom.dcmread(f).SeriesInstanceUID) for f in files[:3]}
    assert len(series) == 1


def test_ct_series_reads_back_with_itk(cohorts):
    pytest.importorskip("itk")
    datalist_path = cohorts[1]["head_ct"]
    volume = load_anomaly_datalist(datalist_path, "training_volumes")[0]
    by_pydicom = LoadImage(reader="PydicomReader", image_only=True)(volume["image"])
    by_itk = LoadImage(reader="ITKReader", image_only=True)(volume["image"])
    np.testing.assert_array_equal(by_itk.numpy(), by_pydicom.numpy())
    np.testing.assert_allclose(by_itk.affine, by_pydicom.affine)


def test_write_ct_series_rejects_bad_input(tmp_path):
    affine = np.diag([-2.0, -2.0, 2.0, 1.0])
    with pytest.raises(ValueError, match="3D"):
        write_ct_series(tmp_path, np.zeros((4, 4)), affine, "p", ["x"])
    with pytest.raises(ValueError, match="integers"):
        write_ct_series(tmp_path, np.full((4, 4, 2), 0.5), affine, "p", ["x"])
    with pytest.raises(ValueError, match="integers"):
        write_ct_series(tmp_path, np.full((4, 4, 2), 40000.0), affine, "p", ["x"])


def test_interrupted_generation_leaves_no_cohort(tmp_path, monkeypatch):
    synthesize = cohort.synthesize_subject
    calls = []

    def synthesize_then_fail(*args, **kwargs):
        # the first subject is written before the second one fails
        calls.append(args)
        if len(calls) == 2:
            raise RuntimeError("interrupted")
        return synthesize(*args, **kwargs)

    monkeypatch.setattr(cohort, "synthesize_subject", synthesize_then_fail)
    with pytest.raises(RuntimeError, match="interrupted"):
        generate_demo_cohort(tmp_path, "brain_mri", **SMALL)
    assert list(tmp_path.iterdir()) == []


def test_ensure_ignores_a_killed_run_and_generates(tmp_path):
    # a killed run leaves its hidden partial folder behind, even with a manifest in it
    stale = tmp_path / ".brain_mri.partial-1-deadbeef"
    stale.mkdir()
    (stale / "manifest.json").write_text("{}")
    datalist = ensure_demo_cohort(tmp_path, "brain_mri", seed=0, **TRAIN_ONLY)
    assert datalist == tmp_path / "brain_mri" / "datalist.json"
    assert load_anomaly_datalist(datalist, "training")
    assert _read_json(tmp_path / "brain_mri" / "manifest.json")["parameters"]["num_train"] == 1


def test_ensure_reuses_a_matching_cohort(cohorts, monkeypatch):
    root, datalists = cohorts
    monkeypatch.setattr(cohort, "synthesize_subject", lambda *args: pytest.fail("the cohort was generated again"))
    for modality in DEMO_MODALITIES:
        assert ensure_demo_cohort(root, modality, seed=0, **SMALL) == datalists[modality]


def test_ensure_with_a_relative_root_writes_a_datalist_that_loads(tmp_path, monkeypatch):
    # issue 16, defect 6: a relative root_dir wrote paths into the temporary .partial-* folder
    monkeypatch.chdir(tmp_path)
    datalist = ensure_demo_cohort(Path("bundle") / "data", "head_ct", seed=0, **TRAIN_ONLY)
    assert ".partial-" not in datalist.read_text()
    assert load_anomaly_datalist(datalist, "training")
    # the cohort is reused from another working directory, by its absolute path
    monkeypatch.chdir(tmp_path.parent)
    assert load_anomaly_datalist(ensure_demo_cohort(tmp_path / "bundle" / "data", "head_ct", **TRAIN_ONLY), "training")


def test_ensure_refuses_a_cohort_whose_files_are_missing(tmp_path):
    datalist = ensure_demo_cohort(tmp_path, "brain_mri", seed=0, **TRAIN_ONLY)
    missing = Path(load_anomaly_datalist(datalist, "training")[-1]["image"])
    missing.unlink()
    with pytest.raises(FileNotFoundError, match="incomplete") as error:
        ensure_demo_cohort(tmp_path, "brain_mri", seed=0, **TRAIN_ONLY)
    assert str(tmp_path / "brain_mri") in str(error.value) and missing.name in str(error.value)


def test_ensure_refuses_a_mismatching_cohort(cohorts):
    root = cohorts[0]
    manifest = (root / "brain_mri" / "manifest.json").read_bytes()
    with pytest.raises(ValueError, match="seed: requested 1, found 0") as error:
        ensure_demo_cohort(root, "brain_mri", seed=1, **SMALL)
    assert str(root / "brain_mri") in str(error.value)
    with pytest.raises(ValueError, match="num_train: requested 2, found 1"):
        ensure_demo_cohort(root, "brain_mri", seed=0, **{**SMALL, "num_train": 2})
    with pytest.raises(FileExistsError, match="already exists"):
        generate_demo_cohort(root, "brain_mri", seed=0, **SMALL)
    assert (root / "brain_mri" / "manifest.json").read_bytes() == manifest


def test_ensure_refuses_a_folder_that_is_not_a_cohort(tmp_path):
    user_data = tmp_path / "head_ct" / "notes.txt"
    user_data.parent.mkdir()
    user_data.write_text("mine")
    with pytest.raises(ValueError, match="not a demo cohort") as error:
        ensure_demo_cohort(tmp_path, "head_ct")
    assert str(tmp_path / "head_ct") in str(error.value)
    assert user_data.read_text() == "mine"


@pytest.mark.parametrize(
    "arguments, error, match",
    [
        ({"modality": "ct"}, ValueError, "modality"),
        ({"seed": -1}, ValueError, "seed"),
        ({"seed": 1.5}, ValueError, "seed"),
        ({"num_train": 0}, ValueError, "num_train"),
        ({"num_test_abnormal": -1}, ValueError, "num_test_abnormal"),
        ({"voxel_size": 0.5}, ValueError, "voxel_size"),
        ({"slice_stride": 0}, ValueError, "slice_stride"),
        ({"min_brain_fraction": 0.0}, ValueError, "min_brain_fraction"),
        ({"min_lesion_area_mm2": -1.0}, ValueError, "min_lesion_area_mm2"),
        ({"max_normal_slices": 0}, ValueError, "max_normal_slices"),
        ({"num_subjects": 3}, TypeError, "num_subjects"),
    ],
)
def test_bad_arguments_raise_before_any_work(tmp_path, arguments, error, match):
    with pytest.raises(error, match=match):
        ensure_demo_cohort(tmp_path, **arguments)
    assert list(tmp_path.iterdir()) == []


def test_synthesize_subject_rejects_unknown_lesions():
    with pytest.raises(ValueError, match="subdural"):
        synthesize_subject("brain_mri", np.random.default_rng(0), [("subdural", 40.0)], voxel_size=4.0)
    with pytest.raises(ValueError, match="size > 0"):
        synthesize_subject("head_ct", np.random.default_rng(0), [("haemorrhage", 0.0)], voxel_size=4.0)
    with pytest.raises(ValueError, match="modality"):
        synthesize_subject("pet", np.random.default_rng(0))
