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
    DEMO_GENERATOR_VERSION,
    DEMO_MODALITIES,
    HARD_KINDS,
    DemoSubject,
    cohort,
    depth_mm,
    draw_lesions,
    ensure_demo_cohort,
    generate_demo_cohort,
    lesion_kinds,
    load_demo_template,
    pick_lesion_centre,
    subject_quantiles,
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
def test_labels_masks_and_kinds_agree(cohorts, modality):
    datalist_path = cohorts[1][modality]
    manifest = _read_json(datalist_path.parent / "manifest.json")
    parameters = manifest["parameters"]
    min_area = {"benchmark": parameters["min_lesion_area_mm2"], "hard": parameters["min_hard_lesion_area_mm2"]}

    training = load_anomaly_datalist(datalist_path, "training")
    assert {item["label"] for item in training} == {0}
    assert all("mask" not in item and item["kind"] == "normal" for item in training)
    for split in ("validation", "test"):
        items = load_anomaly_datalist(datalist_path, split)
        assert {item["label"] for item in items} == {0, 1}
        assert len(items) == sum(manifest["counts"]["slices"][split].values())
        for item in items:
            image, mask = nib.load(item["image"]), nib.load(item["mask"])
            assert image.get_data_dtype() == np.float32 and mask.get_data_dtype() == np.uint8
            assert image.shape == mask.shape and len(image.shape) == 2
            np.testing.assert_allclose(image.affine, mask.affine)
            # every exported plane lies in the band of levels
            assert parameters["band_lo_mm"] <= image.affine[2, 3] < parameters["band_hi_mm"]
            lesion_area = np.asarray(mask.dataobj).sum() * parameters["voxel_size"] ** 2
            assert set(np.unique(np.asarray(mask.dataobj))) <= {0, 1}
            if item["label"]:
                assert item["kind"] in lesion_kinds(modality) and lesion_area >= min_area[item["subset"]], item
                assert (item["subset"] == "hard") == (item["kind"] in HARD_KINDS[modality])
            else:
                assert lesion_area == 0 and (item["kind"], item["subset"]) == ("normal", "normal"), item


@pytest.mark.parametrize("modality", DEMO_MODALITIES)
def test_volume_entries_match_subject_labels(cohorts, modality):
    datalist_path = cohorts[1][modality]
    for split in SPLITS:
        for item in load_anomaly_datalist(datalist_path, f"{split}_volumes"):
            mask = np.asarray(nib.load(item["mask"]).dataobj)
            assert mask.ndim == 3 and bool(mask.any()) == bool(item["label"])
            assert Path(item["mask"]).name == f"{item['subject']}_mask.nii.gz"
            assert (item["kind"] == "normal") == (item["label"] == 0)


@pytest.mark.parametrize("modality", DEMO_MODALITIES)
def test_subjects_export_the_band_or_at_most_max_subject_slices(cohorts, modality):
    datalist = _read_json(cohorts[1][modality])
    parameters = _read_json(cohorts[1][modality].parent / "manifest.json")["parameters"]
    training = Counter(_subject_of(item) for item in datalist["training"])
    # every plane of the band: 40 mm at 4 mm voxels, every second plane
    assert set(training.values()) == {5}
    for split in ("validation", "test"):
        per_subject = Counter(_subject_of(item) for item in datalist[split])
        assert per_subject and max(per_subject.values()) <= parameters["max_subject_slices"], split


@pytest.mark.parametrize("modality", DEMO_MODALITIES)
def test_nuisances_are_stratified_evenly_over_a_splits_subjects(modality):
    """Subject i of a split, normal or abnormal, takes point i of a low-discrepancy sequence: any 32
    consecutive subjects cover every eighth of each quantile's range 4 +/- 2 times."""
    quantiles = [subject_quantiles(0, modality, "test", index) for index in range(40)]
    assert quantiles[3] == subject_quantiles(0, modality, "test", 3)
    assert quantiles[3] != subject_quantiles(0, modality, "validation", 3) != subject_quantiles(1, modality, "test", 3)
    for name in quantiles[0]:
        for start in (0, 8):
            counts = np.bincount((np.array([q[name] for q in quantiles[start : start + 32]]) * 8).astype(int), minlength=8)
            assert counts.min() >= 2 and counts.max() <= 6, (name, counts)


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
    # a preferred plane is taken when it has candidates, else the nearest one that has
    assert {int(pick_lesion_centre(rng, allowed, 1, [], plane=3)[2]) for _ in range(20)} == {3}
    assert {int(pick_lesion_centre(rng, allowed, 1, [], plane=0)[2]) for _ in range(20)} == {1}


# every MRI lesion kind
MRI_LESIONS = [("tumour", 40.0), ("tumour", 16.0), ("cavity", 20.0), ("focus", 8.0)]


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


def test_twins_differ_only_around_the_lesion_masks(mri_twins):
    # the twin draws the same anatomy, variants, bias field and noise: only the lesions differ,
    # and the in-plane blur reaches 2 voxels beyond them
    for subject, twin in mri_twins:
        assert not twin.mask.any() and twin.nuisance == subject.nuisance
        unchanged = ~_in_plane(2, subject.mask > 0)
        np.testing.assert_array_equal(subject.image[unchanged], twin.image[unchanged])
        assert np.array_equal(subject.mask, (subject.lesion_labels > 0).astype(np.uint8))


def test_mri_lesions_have_the_stated_sizes_and_intensities(mri_twins):
    for subject, twin in mri_twins:
        assert [lesion["kind"] for lesion in subject.lesions] == [kind for kind, _ in MRI_LESIONS]
        for index, lesion in enumerate(subject.lesions):
            region = subject.lesion_labels == index + 1
            assert region.any() and subject.brain[region].all()
            assert max(np.ptp(axis) * 2.0 for axis in np.nonzero(region)) <= lesion["diameter_mm"]
            # as the image sees it, one voxel in from the edge where the blur does not mix it with its surroundings
            interior = region & ~_in_plane(1, ~region)
            change = subject.image[interior] / np.maximum(twin.image[interior], 1) - 1
            if lesion["kind"] == "tumour":
                assert 0.1 <= lesion["oedema_contrast"] <= 0.5
                # the oedema's outer shell is hyperintense: the whole tumour is seen on FLAIR
                shell = interior & (depth_mm(region, 2.0) <= 6.0)
                assert np.mean(subject.image[shell] > twin.image[shell]) > 0.8
                if lesion["necrosis_contrast"] is not None:
                    assert lesion["core_contrast"] is not None and -0.5 <= lesion["necrosis_contrast"] <= 0.1
            elif lesion["kind"] == "cavity":
                assert 0.2 <= lesion["fluid_level"] <= 0.5 and 0.1 <= lesion["rim_contrast"] <= 0.4
                assert np.median(change) < -0.3  # dark fluid
            else:
                # a focus is a few voxels across: all of it, blur included
                assert 0.2 <= lesion["contrast"] <= 0.6
                assert np.median(subject.image[region] / twin.image[region] - 1) > 0.1


def test_ct_haemorrhages_are_hyperdense_inside_the_brain():
    subject = synthesize_subject("head_ct", np.random.default_rng(1), [("haemorrhage", 24.0), ("subdural", 70.0)])
    twin = synthesize_subject("head_ct", np.random.default_rng(1))
    depth = depth_mm(subject.brain, 2.0)
    for index, lesion in enumerate(subject.lesions):
        region = subject.lesion_labels == index + 1
        assert subject.brain[region].all()
        if lesion["kind"] == "haemorrhage":
            assert 55 <= lesion["hu"] <= 85 and 2 <= lesion["oedema_mm"] <= 6
            # the clot, out of the blur's reach, has its density; the oedema ring around it is hypodense
            clot = ndi.binary_erosion(region & (subject.image > twin.image + 10), structure=np.ones((3, 3, 1)))
            assert clot.any() and abs(np.median(subject.image[clot]) - lesion["hu"]) < 6
            ring = region & (subject.image < twin.image)
            assert ring.any()
        else:
            assert 50 <= lesion["hu"] <= 80 and 5 <= lesion["thickness_mm"] <= 18
            assert max(np.ptp(axis) * 2.0 for axis in np.nonzero(region)) <= lesion["span_mm"]
            assert depth[region].max() <= lesion["thickness_mm"] + 2.0  # along the inner skull
    # CSF spaces enclosed in a plane are intracranial, not bone
    assert all(np.array_equal(ndi.binary_fill_holes(plane), plane) for plane in np.moveaxis(subject.brain, 2, 0))
    skull = (~subject.brain) & (ndi.distance_transform_edt(~subject.brain, sampling=2.0) <= 4.0)
    assert 600 < np.median(subject.image[skull]) < 1050
    assert -1030 < np.median(subject.image[0]) < -970  # air at the grid's edge


def test_normal_variants_follow_the_quantiles():
    """A nuisance quantile below a variant's prevalence gives the variant; the twin has the same."""
    quantiles = {"pineal": 0.1, "choroid": 0.99, "falx": 0.99}
    subject = synthesize_subject("head_ct", np.random.default_rng(0), voxel_size=4.0, nuisance=quantiles)
    assert subject.nuisance["pineal_calcified"] and not subject.nuisance["choroid_calcified"]
    assert subject.image[subject.brain].max() > 100  # a calcification, denser than any tissue
    mri = synthesize_subject("brain_mri", np.random.default_rng(0), voxel_size=4.0, nuisance={"wmh": 0.9, "frontal_caps": 0.95})
    assert mri.nuisance["wmh_count"] == 3 and mri.nuisance["frontal_caps"] == 0.0


@pytest.mark.parametrize(
    "modality, kinds, sizes",
    [
        ("brain_mri", ({"tumour"}, {"cavity", "focus"}), {"tumour": (10, 60), "cavity": (8, 30), "focus": (5, 12)}),
        (
            "head_ct",
            ({"haemorrhage", "subdural"}, {"small_haemorrhage", "isodense_subdural"}),
            {"haemorrhage": (8, 50), "subdural": (50, 100), "small_haemorrhage": (6, 12), "isodense_subdural": (50, 100)},
        ),
    ],
)
def test_drawn_lesions_follow_the_tables(modality, kinds, sizes):
    rng = np.random.default_rng(0)
    for hard, primary in zip((False, True), kinds):
        draws = [draw_lesions(rng, modality, hard) for _ in range(300)]
        assert all(1 <= len(lesions) <= 4 and lesions[0][0] in primary for lesions in draws)
        # the harder subset draws its own kinds only, the benchmark none of them
        assert all((kind in HARD_KINDS[modality]) == hard for lesions in draws for kind, _ in lesions)
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


def test_ensure_replaces_a_cohort_of_another_generator_version(tmp_path):
    datalist = ensure_demo_cohort(tmp_path, "brain_mri", seed=0, **TRAIN_ONLY)
    manifest_path = datalist.parent / "manifest.json"
    manifest = _read_json(manifest_path)
    manifest["generator_version"] = DEMO_GENERATOR_VERSION - 1
    manifest_path.write_text(json.dumps(manifest))
    (datalist.parent / "from_the_old_version.txt").write_text("stale")

    assert ensure_demo_cohort(tmp_path, "brain_mri", seed=0, **TRAIN_ONLY) == datalist
    assert _read_json(manifest_path)["generator_version"] == DEMO_GENERATOR_VERSION
    assert not (datalist.parent / "from_the_old_version.txt").exists()
    assert [path.name for path in tmp_path.iterdir()] == ["brain_mri"]  # no partial or stale folder left
    assert load_anomaly_datalist(datalist, "training")


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
        ({"band_lo_mm": 30.0}, ValueError, "band_lo_mm"),
        ({"hard_fraction": 1.5}, ValueError, "hard_fraction"),
        ({"min_hard_lesion_area_mm2": 0.0}, ValueError, "min_hard_lesion_area_mm2"),
        ({"min_lesion_area_mm2": -1.0}, ValueError, "min_lesion_area_mm2"),
        ({"max_subject_slices": 0}, ValueError, "max_subject_slices"),
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
