"""Tests of load_anomaly_datalist and write_datalist (medad_monai.data.datalist)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medad_monai.data.datalist import load_anomaly_datalist, write_datalist


@pytest.fixture
def dataset(tmp_path) -> Path:
    """A folder with two images and one mask under ``images/``."""
    (tmp_path / "images").mkdir()
    for name in ("a.nii.gz", "b.nii.gz", "b_mask.nii.gz"):
        (tmp_path / "images" / name).write_bytes(b"x")
    return tmp_path


def _write_raw(path: Path, content) -> Path:
    path.write_text(json.dumps(content))
    return path


def test_round_trip_writes_relative_paths_and_loads_absolute_ones(dataset):
    splits = {
        "training": [{"image": dataset / "images" / "a.nii.gz", "label": 0}],
        "test": [{"image": str(dataset / "images" / "b.nii.gz"), "label": 1, "mask": "images/b_mask.nii.gz", "k": 3}],
    }
    path = write_datalist(dataset / "lists" / "datalist.json", splits)

    raw = json.loads(path.read_text())
    assert raw["training"] == [{"image": "../images/a.nii.gz", "label": 0}]
    # a relative path is taken as relative to the datalist's folder already
    assert raw["test"] == [{"image": "../images/b.nii.gz", "label": 1, "mask": "images/b_mask.nii.gz", "k": 3}]

    raw["test"][0]["mask"] = "../images/b_mask.nii.gz"
    _write_raw(path, raw)
    test = load_anomaly_datalist(path, "test")
    assert test == [
        {
            "image": str(dataset / "images" / "b.nii.gz"),
            "label": 1,
            "mask": str(dataset / "images" / "b_mask.nii.gz"),
            "k": 3,
        }
    ]
    assert load_anomaly_datalist(path)[0]["image"] == str(dataset / "images" / "a.nii.gz")


def test_base_dir_overrides_the_datalist_folder(dataset, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    path = _write_raw(elsewhere / "d.json", {"training": [{"image": "a.nii.gz", "label": 0}]})
    with pytest.raises(FileNotFoundError):
        load_anomaly_datalist(path)
    items = load_anomaly_datalist(path, base_dir=dataset / "images")
    assert items[0]["image"] == str(dataset / "images" / "a.nii.gz")


def test_missing_key_lists_the_available_keys(dataset):
    path = _write_raw(dataset / "d.json", {"training": [], "test": []})
    with pytest.raises(ValueError, match=r"'validation'.*\['test', 'training'\]"):
        load_anomaly_datalist(path, "validation")


def test_missing_datalist_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_anomaly_datalist(tmp_path / "nope.json")


@pytest.mark.parametrize(
    "item, error, match",
    [
        ({"label": 0}, ValueError, "no 'image'"),
        ({"image": "images/a.nii.gz"}, ValueError, "label"),
        ({"image": "images/a.nii.gz", "label": 2}, ValueError, "label"),
        ({"image": "images/a.nii.gz", "label": True}, ValueError, "label"),
        ({"image": "images/a.nii.gz", "label": "0"}, ValueError, "label"),
        ({"image": 3, "label": 0}, TypeError, "'image'"),
        ("images/a.nii.gz", TypeError, "dict"),
    ],
)
def test_bad_items_raise_and_name_the_item(dataset, item, error, match):
    path = _write_raw(dataset / "d.json", {"test": [{"image": "images/a.nii.gz", "label": 0}, item]})
    with pytest.raises(error, match=match) as raised:
        load_anomaly_datalist(path, "test")
    assert "item 1 of 'test'" in str(raised.value)


def test_missing_referenced_file_names_the_item_and_file(dataset):
    path = _write_raw(
        dataset / "d.json", {"test": [{"image": "images/b.nii.gz", "label": 1, "mask": "images/gone.nii.gz"}]}
    )
    with pytest.raises(FileNotFoundError, match=r"item 0 of 'test'.*mask.*gone\.nii\.gz"):
        load_anomaly_datalist(path, "test")


def test_split_that_is_not_a_list(dataset):
    path = _write_raw(dataset / "d.json", {"name": "demo"})
    with pytest.raises(TypeError, match="'name'"):
        load_anomaly_datalist(path, "name")
    with pytest.raises(ValueError, match="JSON object"):
        load_anomaly_datalist(_write_raw(dataset / "e.json", [1, 2]))


def test_write_datalist_rejects_bad_splits(tmp_path):
    with pytest.raises(TypeError, match="splits"):
        write_datalist(tmp_path / "d.json", [{"image": "a", "label": 0}])
    with pytest.raises(TypeError, match="splits\\['training'\\]"):
        write_datalist(tmp_path / "d.json", {"training": "a.nii.gz"})
    with pytest.raises(ValueError, match=r"item 0 of splits\['test'\].*label"):
        write_datalist(tmp_path / "d.json", {"test": [{"image": "a.nii.gz", "label": 3}]})
    assert not (tmp_path / "d.json").exists()


def test_training_split_normal_only_and_not_empty(dataset):
    # an abnormal training item was accepted silently, an empty split failed in torch with num_samples=0
    path = _write_raw(dataset / "list.json", {
        "training": [{"image": "images/a.nii.gz", "label": 0}, {"image": "images/b.nii.gz", "label": 1}],
        "validation": [],
        "test": [{"image": "images/a.nii.gz"}],
    })
    assert len(load_anomaly_datalist(path, "training")) == 2
    with pytest.raises(ValueError, match="item 1 of 'training'.*b.nii.gz\\) has label 1: 'training' must hold normal"):
        load_anomaly_datalist(path, "training", normal_only=True)
    assert load_anomaly_datalist(path, "validation") == []
    with pytest.raises(ValueError, match="'validation' of datalist .*list.json' has no items"):
        load_anomaly_datalist(path, "validation", allow_empty=False)
    with pytest.raises(ValueError, match="label"):
        load_anomaly_datalist(path, "test")
    assert load_anomaly_datalist(path, "test", require_labels=False)[0]["image"].endswith("a.nii.gz")
    _write_raw(path, {"test": [{"image": "images/a.nii.gz", "label": 2}]})
    with pytest.raises(ValueError, match="label"):  # a label that is given is still checked
        load_anomaly_datalist(path, "test", require_labels=False)
