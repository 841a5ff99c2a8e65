"""Datalist builders of the public benchmarks, on small fake trees of each released layout."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medad_monai.data.benchmarks import (
    DATASET_BUILDERS,
    build_bmad_datalist,
    build_busi_datalist,
    build_chexpert_datalist,
    build_datalist,
    build_head_ct_datalist,
    build_zhanglab_datalist,
)
from medad_monai.data.datalist import load_anomaly_datalist


def _png(path: Path, box: tuple[int, int, int, int] | None = None) -> Path:
    """An 8x8 grayscale PNG, white inside ``box`` (x0, y0, x1, y1) when given."""
    array = np.zeros((8, 8), dtype=np.uint8)
    if box is not None:
        x0, y0, x1, y1 = box
        array[y0:y1, x0:x1] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def _pngs(folder: Path, n: int, prefix: str = "img") -> list[Path]:
    return [_png(folder / f"{prefix}{i:03d}.png") for i in range(n)]


def _images(items: list[dict]) -> set[str]:
    return {item["image"] for item in items}


def _check_datalist(datalist: dict) -> None:
    """Keys, normal-only training, disjoint splits, existing absolute files."""
    assert list(datalist) == ["training", "validation", "test"]
    assert datalist["training"] and datalist["test"]
    assert all(item["label"] == 0 for item in datalist["training"])
    splits = [_images(items) for items in datalist.values()]
    assert sum(len(s) for s in splits) == len(set.union(*splits))
    for items in datalist.values():
        assert len(_images(items)) == len(items)
        for item in items:
            assert item["label"] in (0, 1)
            for key in ("image", "mask"):
                if key in item:
                    assert Path(item[key]).is_absolute() and Path(item[key]).is_file()


def _labels(items: list[dict]) -> list[int]:
    return sorted(item["label"] for item in items)


# ----------------------------------------------------------------------------- ZhangLab
@pytest.fixture
def zhanglab(tmp_path: Path) -> Path:
    """Kaggle layout: train 10 + 6, val 2 + 2, test 4 + 5 (NORMAL + PNEUMONIA)."""
    root = tmp_path / "chest_xray"
    for split, n_normal, n_abnormal in (("train", 10, 6), ("val", 2, 2), ("test", 4, 5)):
        _pngs(root / split / "NORMAL", n_normal, f"{split}_n")
        _pngs(root / split / "PNEUMONIA", n_abnormal, f"{split}_p")
    (root / "train" / "NORMAL" / ".DS_Store").write_bytes(b"\0")
    return root


def test_zhanglab_uses_provided_val(zhanglab: Path):
    datalist = build_zhanglab_datalist(zhanglab)
    _check_datalist(datalist)
    assert len(datalist["training"]) == 10
    assert {item["source"] for item in datalist["training"]} == {"train"}
    assert _labels(datalist["validation"]) == [0, 0, 1, 1]
    assert {item["source"] for item in datalist["validation"]} == {"val"}
    assert _labels(datalist["test"]) == [0] * 4 + [1] * 5
    assert _images(datalist["test"]) == {str(p) for p in sorted((zhanglab / "test").glob("*/*.png"))}
    assert all("mask" not in item for items in datalist.values() for item in items)


def test_zhanglab_val_fraction_carves_outside_test(zhanglab: Path):
    datalist = build_zhanglab_datalist(zhanglab, val_fraction=0.2, seed=3)
    _check_datalist(datalist)
    # normal pool 10 train + 2 val: ceil(2.4) = 3; abnormal pool 6 train + 2 val: ceil(1.6) = 2
    assert _labels(datalist["validation"]) == [0, 0, 0, 1, 1]
    assert len(datalist["training"]) == 9
    assert {item["source"] for item in datalist["validation"]} <= {"train", "val"}
    assert _labels(datalist["test"]) == [0] * 4 + [1] * 5


def test_zhanglab_without_val_carves_both_classes_from_train(zhanglab: Path):
    for path in (zhanglab / "val").glob("*/*.png"):
        path.unlink()
    for folder in ("NORMAL", "PNEUMONIA", ""):
        (zhanglab / "val" / folder).rmdir()
    datalist = build_zhanglab_datalist(zhanglab)
    _check_datalist(datalist)
    # Mendeley layout: ceil(0.1 * 10) normals and ceil(0.1 * 6) pneumonia images of train/
    assert _labels(datalist["validation"]) == [0, 1]
    assert {item["source"] for item in datalist["validation"]} == {"train"}
    assert len(datalist["training"]) == 9


def test_carved_split_is_seeded(zhanglab: Path):
    first = build_zhanglab_datalist(zhanglab, val_fraction=0.3, seed=0)
    assert first == build_zhanglab_datalist(zhanglab, val_fraction=0.3, seed=0)
    assert first["validation"] != build_zhanglab_datalist(zhanglab, val_fraction=0.3, seed=1)["validation"]
    assert first["test"] == build_zhanglab_datalist(zhanglab, val_fraction=0.3, seed=1)["test"]


def test_zhanglab_squid_layout_without_val_carves_default(tmp_path: Path):
    _pngs(tmp_path / "train" / "normal_256", 20)
    _pngs(tmp_path / "test" / "normal_256", 3)
    _pngs(tmp_path / "test" / "pneumonia_256", 3)
    datalist = build_zhanglab_datalist(tmp_path)
    _check_datalist(datalist)
    assert _labels(datalist["validation"]) == [0, 0]  # ceil(0.1 * 20), no abnormal outside test
    assert len(datalist["training"]) == 18


def test_zhanglab_folder_overrides(tmp_path: Path):
    _pngs(tmp_path / "tr" / "healthy", 4)
    _pngs(tmp_path / "te" / "healthy", 2)
    _pngs(tmp_path / "te" / "sick", 2)
    datalist = build_zhanglab_datalist(
        tmp_path, train_dir="tr", test_dir="te", normal_dir="healthy", abnormal_dir="sick", val_fraction=0.25
    )
    _check_datalist(datalist)
    assert (len(datalist["training"]), len(datalist["validation"]), len(datalist["test"])) == (3, 1, 4)


def test_zhanglab_errors(zhanglab: Path, tmp_path: Path):
    for path in (zhanglab / "test" / "PNEUMONIA").iterdir():
        path.unlink()
    with pytest.raises(ValueError, match="test abnormal folder has no images.*PNEUMONIA"):
        build_zhanglab_datalist(zhanglab)
    (zhanglab / "test" / "PNEUMONIA").rmdir()
    with pytest.raises(FileNotFoundError, match="test abnormal folder not found.*PNEUMONIA"):
        build_zhanglab_datalist(zhanglab)
    with pytest.raises(FileNotFoundError, match="test split folder not found"):
        build_zhanglab_datalist(zhanglab, test_dir="missing")
    with pytest.raises(FileNotFoundError, match="dataset root"):
        build_zhanglab_datalist(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="is in both training and test"):
        build_zhanglab_datalist(zhanglab, test_dir="train")
    _pngs(zhanglab / "train" / "normal_256", 1)
    with pytest.raises(ValueError, match="ambiguous train normal folder"):
        build_zhanglab_datalist(zhanglab)


def test_unexpected_file_and_bad_fraction(zhanglab: Path):
    with pytest.raises(ValueError, match="val_fraction"):
        build_zhanglab_datalist(zhanglab, val_fraction=1.0)
    (zhanglab / "train" / "NORMAL" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="unexpected entry .*notes.txt"):
        build_zhanglab_datalist(zhanglab)


# ----------------------------------------------------------------------------- CheXpert
def test_chexpert_squid_layout(tmp_path: Path):
    _pngs(tmp_path / "train_256_pa" / "normal_256", 6)
    _pngs(tmp_path / "val_256_pa" / "normal_256", 2)
    _pngs(tmp_path / "val_256_pa" / "abnormal_256", 3)
    _pngs(tmp_path / "our_test_256_pa" / "normal_256", 4)
    _pngs(tmp_path / "our_test_256_pa" / "abnormal_256", 4)
    datalist = build_chexpert_datalist(tmp_path)
    _check_datalist(datalist)
    assert len(datalist["training"]) == 6
    assert _labels(datalist["validation"]) == [0, 0, 1, 1, 1]
    assert {item["source"] for item in datalist["test"]} == {"our_test_256_pa"}
    assert _labels(datalist["test"]) == [0] * 4 + [1] * 4


# ----------------------------------------------------------------------------- BMAD
def _bmad_class(root: Path) -> None:
    """BMAD release layout: img/label folders and a valid split."""
    _pngs(root / "train" / "good" / "img", 6)
    _pngs(root / "valid" / "good" / "img", 2, "v")
    for path in _pngs(root / "valid" / "Ungood" / "img", 2, "vu"):
        _png(root / "valid" / "Ungood" / "label" / path.name, (0, 0, 2, 2))
    _pngs(root / "test" / "good" / "img", 3, "t")
    for path in _pngs(root / "test" / "Ungood" / "img", 4, "tu"):
        _png(root / "test" / "Ungood" / "label" / path.name, (0, 0, 2, 2))


def _uni_medical_class(root: Path) -> None:
    """ADer Uni-Medical layout: images straight in the state folders, masks in ground_truth."""
    _pngs(root / "train" / "good", 10)
    _pngs(root / "test" / "good", 2, "t")
    for path in _pngs(root / "test" / "Ungood", 3, "tu"):
        _png(root / "ground_truth" / "Ungood" / f"{path.stem}_mask.png", (1, 1, 3, 3))


@pytest.fixture
def bmad(tmp_path: Path) -> Path:
    root = tmp_path / "medical"
    _bmad_class(root / "brain")
    _uni_medical_class(root / "liver")
    (root / "meta.json").write_text("{}")
    return root


def test_bmad_both_layouts(bmad: Path):
    datalist = build_bmad_datalist(bmad)
    _check_datalist(datalist)
    brain, liver = ({k: [i for i in v if i["class"] == c] for k, v in datalist.items()} for c in ("brain", "liver"))
    assert len(brain["training"]) == 6 and {i["source"] for i in brain["training"]} == {"train"}
    assert _labels(brain["validation"]) == [0, 0, 1, 1]
    assert all("mask" in i for i in brain["validation"] if i["label"] == 1)
    assert _labels(brain["test"]) == [0] * 3 + [1] * 4
    # liver has no valid split: 1 of its 10 training normals is carved, normal-only
    assert len(liver["training"]) == 9 and _labels(liver["validation"]) == [0]
    assert _labels(liver["test"]) == [0] * 2 + [1] * 3
    for item in brain["test"] + liver["test"]:
        assert ("mask" in item) == (item["label"] == 1)
        if "mask" in item:
            assert Path(item["mask"]).stem.removesuffix("_mask") == Path(item["image"]).stem
    assert {i["source"] for i in datalist["test"]} == {"test"}


def test_bmad_class_selection_and_seeded_carve(bmad: Path):
    liver_only = build_bmad_datalist(bmad, classes=["liver"], seed=5)
    assert {i["class"] for items in liver_only.values() for i in items} == {"liver"}
    both = build_bmad_datalist(bmad, seed=5)
    # a class's carve does not depend on which other classes are selected
    assert [i for i in both["validation"] if i["class"] == "liver"] == liver_only["validation"]
    with pytest.raises(FileNotFoundError, match="class folder not found.*available classes"):
        build_bmad_datalist(bmad, classes=["lung"])
    with pytest.raises(TypeError, match="classes"):
        build_bmad_datalist(bmad, classes="liver")


def test_bmad_masks_required(bmad: Path):
    (bmad / "liver" / "ground_truth" / "Ungood" / "tu001_mask.png").unlink()
    with pytest.raises(ValueError, match="tu001.png has no mask"):
        build_bmad_datalist(bmad, classes=["liver"])
    for path in (bmad / "liver" / "ground_truth" / "Ungood").iterdir():
        path.unlink()
    (bmad / "liver" / "ground_truth" / "Ungood").rmdir()
    with pytest.raises(FileNotFoundError, match="liver test/Ungood has no masks"):
        build_bmad_datalist(bmad, classes=["liver"])
    datalist = build_bmad_datalist(bmad, classes=["liver"], require_masks=False)
    assert _labels(datalist["test"]) == [0] * 2 + [1] * 3
    assert all("mask" not in i for i in datalist["test"])


def test_bmad_empty_class(bmad: Path):
    for path in (bmad / "brain" / "test" / "good" / "img").iterdir():
        path.unlink()
    with pytest.raises(ValueError, match="brain test/good folder has no images"):
        build_bmad_datalist(bmad)


# ----------------------------------------------------------------------------- BUSI
@pytest.fixture
def busi(tmp_path: Path) -> Path:
    root = tmp_path / "Dataset_BUSI_with_GT"
    for category, n in (("normal", 5), ("benign", 3), ("malignant", 2)):
        for i in range(n):
            _png(root / category / f"{category} ({i + 1}).png")
            _png(root / category / f"{category} ({i + 1})_mask.png", None if category == "normal" else (0, 0, 2, 2))
    _png(root / "benign" / "benign (2)_mask_1.png", (4, 4, 8, 8))
    return root


def test_busi_splits_and_merged_mask(busi: Path, tmp_path: Path):
    merged = tmp_path / "out" / "masks_merged"
    datalist = build_busi_datalist(busi, merged_mask_dir=merged, n_test_normal=2)
    _check_datalist(datalist)
    assert _labels(datalist["test"]) == [0, 0] + [1] * 5
    # 3 normals left, ceil(0.1 * 3) = 1 validation normal
    assert len(datalist["training"]) == 2 and _labels(datalist["validation"]) == [0]
    assert all("mask" in item for items in datalist.values() for item in items)
    item = next(i for i in datalist["test"] if i["image"].endswith("benign (2).png"))
    assert Path(item["mask"]) == merged / "benign" / "benign (2)_mask.png"
    union = np.asarray(Image.open(item["mask"]))
    assert union.dtype == np.uint8 and set(np.unique(union)) == {0, 255}
    assert union[:2, :2].all() and union[4:, 4:].all() and union.sum() == 255 * (4 + 16)
    other = next(i for i in datalist["test"] if i["image"].endswith("benign (1).png"))
    assert other["mask"] == str(busi / "benign" / "benign (1)_mask.png")


def test_busi_errors(busi: Path, tmp_path: Path):
    with pytest.raises(ValueError, match=r"benign \(2\).png has 2 masks; pass merged_mask_dir"):
        build_busi_datalist(busi)
    with pytest.raises(ValueError, match="n_test_normal"):
        build_busi_datalist(busi, merged_mask_dir=tmp_path / "m", n_test_normal=5)
    (busi / "malignant" / "malignant (1)_mask.png").unlink()
    with pytest.raises(ValueError, match=r"malignant \(1\).png has no mask"):
        build_busi_datalist(busi, merged_mask_dir=tmp_path / "m", n_test_normal=2)
    for path in (busi / "malignant").iterdir():
        path.unlink()
    (busi / "malignant").rmdir()
    with pytest.raises(FileNotFoundError, match="BUSI malignant folder not found"):
        build_busi_datalist(busi, merged_mask_dir=tmp_path / "m", n_test_normal=2)


# ----------------------------------------------------------------------------- Head CT
def _head_ct(root: Path, labels: dict[int, int | str]) -> Path:
    for image_id in labels:
        _png(root / "head_ct" / f"{image_id:03d}.png")
    with open(root / "labels.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", " hemorrhage"])  # the Kaggle header has a space after the comma
        writer.writerows([image_id, f" {value}"] for image_id, value in labels.items())
    return root


def test_head_ct(tmp_path: Path):
    root = _head_ct(tmp_path, {i: int(i < 6) for i in range(16)})
    datalist = build_head_ct_datalist(root, n_test_normal=3, seed=1)
    _check_datalist(datalist)
    assert _labels(datalist["test"]) == [0] * 3 + [1] * 6
    test_images = _images(datalist["test"])
    assert {str(root / "head_ct" / f"{i:03d}.png") for i in range(6)} <= test_images
    # 7 normals left, ceil(0.7) = 1 for validation
    assert len(datalist["training"]) == 6 and _labels(datalist["validation"]) == [0]
    assert datalist == build_head_ct_datalist(root, n_test_normal=3, seed=1)
    assert all("mask" not in item for items in datalist.values() for item in items)


def test_head_ct_errors(tmp_path: Path):
    root = _head_ct(tmp_path / "a", {i: int(i < 3) for i in range(8)})
    _png(root / "head_ct" / "008.png")
    with pytest.raises(ValueError, match=r"images without a row in labels.csv: \['008.png'\]"):
        build_head_ct_datalist(root, n_test_normal=2)
    root = _head_ct(tmp_path / "b", {i: int(i < 3) for i in range(8)})
    (root / "head_ct" / "007.png").unlink()
    with pytest.raises(ValueError, match=r"ids without an image.*\[7\]"):
        build_head_ct_datalist(root, n_test_normal=2)
    root = _head_ct(tmp_path / "c", {0: 1, 1: 2, 2: 0})
    with pytest.raises(ValueError, match="line 3: hemorrhage must be 0 or 1"):
        build_head_ct_datalist(root, n_test_normal=1)
    with pytest.raises(FileNotFoundError, match="labels file not found"):
        build_head_ct_datalist(root, labels_csv="missing.csv")


# ----------------------------------------------------------------------------- registry, CLI
def test_registry(zhanglab: Path):
    assert set(DATASET_BUILDERS) == {"zhanglab", "chexpert", "bmad", "busi", "head_ct"}
    assert build_datalist("zhanglab", zhanglab, seed=2) == build_zhanglab_datalist(zhanglab, seed=2)
    with pytest.raises(ValueError, match="unknown dataset 'mvtec'; valid names: .*busi"):
        build_datalist("mvtec", zhanglab)


def _cli_main():
    script = Path(__file__).parents[2] / "scripts" / "build_datalist.py"
    spec = importlib.util.spec_from_file_location("build_datalist", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_cli_writes_relative_datalist(busi: Path):
    main = _cli_main()
    out = busi / "datalist.json"
    assert main(["busi", str(busi), str(out), "--n-test-normal", "2", "--val-fraction", "0", "--seed", "4"]) == 0
    content = json.loads(out.read_text())
    assert len(content["training"]) == 3 and content["validation"] == []
    assert all(not Path(item["image"]).is_absolute() for items in content.values() for item in items)
    assert (busi / "masks_merged" / "benign" / "benign (2)_mask.png").is_file()
    test = load_anomaly_datalist(out, "test")
    assert {item["image"] for item in test} == _images(build_busi_datalist(busi, busi / "m", 2, 0, 4)["test"])
    with pytest.raises(SystemExit):
        main(["busi", str(busi), str(out), "--classes", "brain"])
    with pytest.raises(SystemExit):
        main(["busi", str(busi), str(out), "--n-test-normal", "9"])
    assert len(load_anomaly_datalist(out, "training")) == 3  # a failed build leaves the file alone
