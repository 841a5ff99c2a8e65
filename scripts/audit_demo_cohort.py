"""Difficulty audit of a demo cohort: confound probes, lesion conspicuity and floor baselines.

For each modality it prints one table, with a column per split (validation, test):

- Confound probes: the image AUROC of scores that see no lesion: the slice's level (world z,
  mm) and its distance from the split's median level, its brain area, the mean and 99th percentile of its brain intensities and its noise
  level, the last three outside the lesion mask grown by 2 pixels. On a cohort without
  shortcuts each sits within 0.5 +/- 0.07 (``ok``); otherwise the line says ``SHORTCUT``.
- Lesion conspicuity: one record per lesion cross-section (connected component of an abnormal
  slice's mask, 4 pixels or more): its contrast against the brain in a ring 1-3 pixels around it
  (MRI: |log(mean inside / mean ring)|; CT: |mean inside - mean ring| in HU), the median and
  10th percentile, and the share whose contrast is below the slice's noise level.
- Floor baselines, each with image AUROC, pixel AUROC and AUPRO (image score: the map's
  maximum): ``zscore``, per-pixel intensity z-scores against the training slices (MRI slices
  divided by the 99th percentile of their brain, resized to ``--image-size`` as the bundle
  does; anomaly map the Gaussian-smoothed |z|); ``threshold``, plain intensity thresholding:
  the brain-normalised image itself (MRI divided by its brain's median, which a lesion covering
  less than half the brain does not move), zero outside the brain, smoothed the same way;
  ``gaussian``, scripts/baseline_gaussian.py (per-location Gaussian on the encoder features of
  the bundle's preprocessing). CT slices enter both intensity floors in the brain window
  (0-80 HU to 0-1), the detectors' own CT input.

Where the datalist items carry ``kind``, the table adds each lesion kind's slice count and the
floors' image AUROC on the normal slices plus that kind's.

Usage::

    python scripts/audit_demo_cohort.py [--root bundles/sp_mamba/data] [--modality all]
    python scripts/audit_demo_cohort.py --datalist /tmp/v4/brain_mri/datalist.json --modality brain_mri

With ``--root`` the default cohort of each modality is used (generated there if missing).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from scipy import ndimage as ndi

from medad_monai.data import ensure_demo_cohort, load_anomaly_datalist
from medad_monai.data.demo import DEMO_MODALITIES
from medad_monai.metrics.functional import image_auroc, pixel_metrics
from medad_monai.networks.blocks import ResNetFeatureEncoder
from medad_monai.scoring import gaussian_blur
from medad_monai.transforms.common import detector_input_transforms

sys.path.insert(0, str(Path(__file__).resolve().parent))
from baseline_gaussian import fit_gaussian, gaussian_maps, loader  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
#: Confound probes must sit within 0.5 +/- this image AUROC.
PROBE_TOLERANCE = 0.07
PROBES = ("slice level", "level extremity", "brain area", "mean intensity", "p99 intensity", "noise level")
FLOORS = ("zscore", "threshold", "gaussian")
_BUNDLE_MODALITY = {"brain_mri": "mri", "head_ct": "ct"}
_CT_WINDOW = (0.0, 80.0)  # the brain window of the detectors' CT preprocessing, HU
_BONE_HU = 300.0


@dataclass
class Slices:
    """The 2D slices of one split at their native size.

    Attributes:
        images: float32 (H, W) per slice, MRI units or HU.
        masks: uint8 (H, W) per slice (all zero where the split has no masks).
        labels: (N,) 0 / 1.
        kinds: lesion kind of each slice (``"normal"`` for normal ones), or None without ``kind``.
        levels_mm: (N,) world z of each slice.
        pixel_mm2: area of a pixel.
    """

    images: list[np.ndarray]
    masks: list[np.ndarray]
    labels: np.ndarray
    kinds: list[str] | None
    levels_mm: np.ndarray
    pixel_mm2: float


def read_slices(datalist: str | Path, split: str) -> Slices:
    """Read every slice of ``split`` (and its mask, if any) from a demo datalist."""
    items = load_anomaly_datalist(datalist, split)
    if not items:
        raise ValueError(f"split '{split}' of '{datalist}' is empty.")
    images, masks, levels = [], [], []
    for item in items:
        image = nib.load(item["image"])
        if len(image.shape) != 2:
            raise ValueError(f"'{item['image']}' is not a 2D slice (shape {image.shape}).")
        array = np.asarray(image.dataobj, dtype=np.float32)
        images.append(array)
        masks.append(np.asarray(nib.load(item["mask"]).dataobj, np.uint8) if "mask" in item else np.zeros(array.shape, np.uint8))
        levels.append(float(image.affine[2, 3]))
    spacing = np.linalg.norm(nib.load(items[0]["image"]).affine[:3, :2], axis=0)
    kinds = [item["kind"] for item in items] if all("kind" in item for item in items) else None
    return Slices(images, masks, np.array([item["label"] for item in items]), kinds, np.array(levels), float(np.prod(spacing)))


def brain_region(image: np.ndarray, modality: str, erode: bool = True) -> np.ndarray:
    """Boolean brain of a slice, from the image alone.

    MRI (skull-stripped): the non-zero pixels. CT: the pixels enclosed by the skull (the largest
    connected set of pixels above 300 HU, morphologically closed) that are not bone, eroded by one pixel (``erode``) so
    that the partial volume of the inner table stays out.
    """
    if modality == "brain_mri":
        return image > 0
    # closed, so that a thin skull whose blur leaves gaps below 300 HU still encloses the brain
    bone = ndi.binary_closing(image > _BONE_HU, structure=np.ones((3, 3)), iterations=2)
    components, count = ndi.label(bone)
    if count == 0:
        return np.zeros(image.shape, bool)
    skull = components == 1 + int(np.argmax(np.bincount(components.ravel())[1:]))
    inside = ndi.binary_fill_holes(skull) & ~skull
    return ndi.binary_erosion(inside) if erode else inside


def brain_normalised(image: np.ndarray, brain: np.ndarray, modality: str, percentile: float) -> np.ndarray:
    """MRI: ``image`` divided by the ``percentile``-th percentile of its brain. CT: the brain
    window mapped to [0, 1] (``percentile`` unused: Hounsfield units are calibrated)."""
    if modality == "brain_mri":
        return image / max(float(np.percentile(image[brain], percentile)), 1e-6) if brain.any() else image
    low, high = _CT_WINDOW
    return np.clip((image - low) / (high - low), 0.0, 1.0)


def noise_level(image: np.ndarray, region: np.ndarray) -> float:
    """Robust noise standard deviation in ``region``: the median absolute response of Immerkaer's
    second-difference mask (which cancels smooth intensity changes; its response to white noise
    has 6 sigma of standard deviation) over the pixels whose whole 3 x 3 neighbourhood is in
    ``region``, divided by 6 x 0.6745. Edges are a minority of pixels, so the median ignores them."""
    kernel = np.array([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]])
    inner = ndi.binary_erosion(region, structure=np.ones((3, 3)))
    if inner.sum() < 10:
        return 0.0
    response = ndi.correlate(image.astype(np.float64), kernel, mode="nearest")[inner]
    return float(np.median(np.abs(response)) / (6 * 0.6745))


def confound_probes(slices: Slices, modality: str) -> dict[str, np.ndarray]:
    """Scores that see no lesion, one value per slice (see the module docstring)."""
    values = {name: [] for name in PROBES}
    for image, mask in zip(slices.images, slices.masks):
        brain = brain_region(image, modality)
        outside = brain & ~ndi.binary_dilation(mask > 0, iterations=2)
        tissue = image[outside] if outside.any() else np.zeros(1, np.float32)
        values["brain area"].append(brain.sum() * slices.pixel_mm2)
        values["mean intensity"].append(float(tissue.mean()))
        values["p99 intensity"].append(float(np.percentile(tissue, 99)))
        values["noise level"].append(noise_level(image, ndi.binary_erosion(outside, iterations=2)))
    values["slice level"] = list(slices.levels_mm)
    # a split whose abnormal slices crowd the middle levels and normal ones the extremes (or the
    # reverse) has a level shortcut that the level itself, monotone, does not show
    values["level extremity"] = list(np.abs(slices.levels_mm - np.median(slices.levels_mm)))
    return {name: np.asarray(v, np.float64) for name, v in values.items()}


def conspicuity(slices: Slices, modality: str) -> dict[str, np.ndarray]:
    """Per lesion cross-section: ``contrast`` (see the module docstring), ``noise`` (the slice's
    noise level, in the same units for CT, relative to the ring's mean for MRI) and ``kind``."""
    contrast, noise, kinds = [], [], []
    for index, (image, mask) in enumerate(zip(slices.images, slices.masks)):
        if not mask.any():
            continue
        # the whole intracranial space: a subdural haematoma's ring is the brain just inside it
        brain = brain_region(image, modality, erode=False)
        lesion = mask > 0
        sigma = noise_level(image, ndi.binary_erosion(brain & ~ndi.binary_dilation(lesion, iterations=2), iterations=3))
        components, count = ndi.label(lesion, structure=np.ones((3, 3)))
        for label in range(1, count + 1):
            inside = components == label
            if inside.sum() < 4:
                continue
            ring = ndi.binary_dilation(inside, iterations=3) & ~ndi.binary_dilation(inside) & brain & ~lesion
            if ring.sum() < 4:
                continue
            mean_in, mean_ring = float(image[inside].mean()), float(image[ring].mean())
            if modality == "brain_mri":
                contrast.append(abs(np.log(max(mean_in, 1e-6) / max(mean_ring, 1e-6))))
                noise.append(sigma / max(mean_ring, 1e-6))
            else:
                contrast.append(abs(mean_in - mean_ring))
                noise.append(sigma)
            kinds.append(slices.kinds[index] if slices.kinds else "lesion")
    return {"contrast": np.asarray(contrast), "noise": np.asarray(noise), "kind": np.asarray(kinds)}


def floor_inputs(slices: Slices, modality: str, size: int) -> dict[str, torch.Tensor]:
    """The intensity floors' inputs, resized like the bundle does (letterbox), ``(N, 1, S, S)`` each:
    ``zscore`` and ``threshold`` (brain-normalised images, see the module docstring), ``mask``, ``brain``."""
    resize = detector_input_transforms(spatial_size=(size, size), channels=1, mean=(0.0,), std=(1.0,))
    out: dict[str, list[torch.Tensor]] = {"zscore": [], "threshold": [], "mask": [], "brain": []}
    for image, mask in zip(slices.images, slices.masks):
        brain = brain_region(image, modality)
        native = {
            "zscore": brain_normalised(image, brain, modality, 99.0),
            "threshold": brain_normalised(image, brain, modality, 50.0),
            "brain": brain.astype(np.float32),
        }
        for key, array in native.items():
            out[key].append(resize({"image": torch.from_numpy(array[None])})["image"].as_subclass(torch.Tensor))
        out["mask"].append(resize({"image": torch.zeros(1, *mask.shape), "mask": torch.from_numpy(mask[None]).float()})["mask"].as_subclass(torch.Tensor))
    stacked = {key: torch.stack(values) for key, values in out.items()}
    stacked["brain"] = stacked["brain"] > 0.5
    return stacked


def zscore_maps(train: torch.Tensor, images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Smoothed |z| of ``images`` (N, 1, S, S) against the per-pixel mean and std of ``train``."""
    mean, std = train.mean(0, keepdim=True), train.std(0, keepdim=True)
    return gaussian_blur(((images - mean) / (std + 1e-3)).abs(), sigma)


def threshold_maps(images: torch.Tensor, brains: torch.Tensor, sigma: float) -> torch.Tensor:
    """The brain-normalised image, zero outside the brain, smoothed: plain intensity thresholding."""
    return gaussian_blur(images * brains, sigma)


def floor_metrics(maps: torch.Tensor, masks: torch.Tensor, labels: np.ndarray) -> dict[str, float]:
    """Image AUROC (score: the map's maximum), pixel AUROC and AUPRO."""
    pixel = pixel_metrics(maps[:, 0], masks[:, 0])
    scores = maps.flatten(1).amax(1)
    return {"image_auroc": image_auroc(scores, labels), "pixel_auroc": pixel["pixel_auroc"], "aupro": pixel["aupro"]}


@dataclass
class SplitAudit:
    """Everything the table prints for one split."""

    counts: tuple[int, int]
    probes: dict[str, float]
    conspicuity: dict[str, np.ndarray]
    floors: dict[str, dict[str, float]]
    kinds: dict[str, dict[str, float]]


def audit_split(
    datalist: Path, modality: str, split: str, train: torch.Tensor, gaussian: dict, size: int, sigma: float
) -> SplitAudit:
    """Probes, conspicuity and floors of one split; ``train`` are the training slices' ``zscore``
    inputs of :func:`floor_inputs`, ``gaussian`` the fitted encoder Gaussian (see :func:`audit_modality`)."""
    slices = read_slices(datalist, split)
    if set(slices.labels) != {0, 1}:
        raise ValueError(f"split '{split}' of '{datalist}' needs normal and abnormal slices.")
    probes = {name: image_auroc(values, slices.labels) for name, values in confound_probes(slices, modality).items()}
    inputs = floor_inputs(slices, modality, size)
    masks = inputs["mask"]
    maps = {"zscore": zscore_maps(train, inputs["zscore"], sigma), "threshold": threshold_maps(inputs["threshold"], inputs["brain"], sigma)}
    maps["gaussian"] = gaussian_maps(
        gaussian["encoder"], gaussian["model"], loader(datalist, split, _BUNDLE_MODALITY[modality], size), gaussian["channels"], size
    )[0]
    floors = {name: floor_metrics(maps[name], masks, slices.labels) for name in FLOORS}
    kinds: dict[str, dict[str, float]] = {}
    if slices.kinds is not None:
        names = np.asarray(slices.kinds)
        for kind in sorted(set(slices.kinds) - {"normal"}):
            keep = (names == kind) | (slices.labels == 0)
            kinds[kind] = {"slices": float((names == kind).sum())}
            for name in FLOORS:
                kinds[kind][name] = image_auroc(maps[name].flatten(1).amax(1)[keep], slices.labels[keep])
    counts = (int((slices.labels == 0).sum()), int(slices.labels.sum()))
    return SplitAudit(counts, probes, conspicuity(slices, modality), floors, kinds)


def audit_modality(
    datalist: Path, modality: str, splits: Sequence[str] = ("validation", "test"), size: int = 64, sigma: float = 2.0, seed: int = 0
) -> dict[str, SplitAudit]:
    """Audit ``splits`` of a demo datalist of ``modality``; the floors are fitted on ``training``."""
    if modality not in DEMO_MODALITIES:
        raise ValueError(f"modality must be one of {DEMO_MODALITIES}, got {modality!r}.")
    train = floor_inputs(read_slices(datalist, "training"), modality, size)["zscore"]
    torch.manual_seed(seed)
    encoder = ResNetFeatureEncoder(34)
    train_batches = loader(datalist, "training", _BUNDLE_MODALITY[modality], size)
    encoder.calibrate_batch_norm(batch["image"] for batch in train_batches)
    channels = torch.randperm(sum(encoder.out_channels))[:100]
    gaussian = {"encoder": encoder, "channels": channels, "model": fit_gaussian(encoder, train_batches, channels)}
    return {split: audit_split(datalist, modality, split, train, gaussian, size, sigma) for split in splits}


def probe_verdict(auroc: float) -> str:
    """``ok`` within 0.5 +/- :data:`PROBE_TOLERANCE`, else ``SHORTCUT``."""
    return "ok" if abs(auroc - 0.5) <= PROBE_TOLERANCE else "SHORTCUT"


def format_table(modality: str, datalist: Path, audits: dict[str, SplitAudit]) -> str:
    """The printed table of one modality: one row per quantity, one column per split."""
    splits = list(audits)
    unit = "|log ratio|" if modality == "brain_mri" else "|HU diff|"
    rows: list[tuple[str, list[str]]] = [("slices normal / abnormal", [f"{a.counts[0]} / {a.counts[1]}" for a in audits.values()])]
    for name in PROBES:
        rows.append((f"probe {name} AUROC", [f"{a.probes[name]:.3f} {probe_verdict(a.probes[name])}" for a in audits.values()]))
    for label, pick in (
        ("lesions: count", lambda c: f"{len(c['contrast'])}"),
        (f"contrast {unit} median", lambda c: f"{np.median(c['contrast']):.3f}" if len(c["contrast"]) else "-"),
        (f"contrast {unit} p10", lambda c: f"{np.percentile(c['contrast'], 10):.3f}" if len(c["contrast"]) else "-"),
        ("lesions below noise level", lambda c: f"{100 * np.mean(c['contrast'] < c['noise']):.0f} %" if len(c["contrast"]) else "-"),
    ):
        rows.append((label, [pick(a.conspicuity) for a in audits.values()]))
    for floor in FLOORS:
        rows.append(
            (
                f"floor {floor}: image / pixel AUROC, AUPRO",
                [" / ".join(f"{a.floors[floor][k]:.2f}" for k in ("image_auroc", "pixel_auroc", "aupro")) for a in audits.values()],
            )
        )
    kinds = sorted({kind for a in audits.values() for kind in a.kinds})
    for kind in kinds:
        rows.append(
            (
                f"kind {kind}: slices, image AUROC z/t/g",
                [
                    f"{int(a.kinds[kind]['slices'])}: " + " / ".join(f"{a.kinds[kind][f]:.2f}" for f in FLOORS) if kind in a.kinds else "-"
                    for a in audits.values()
                ],
            )
        )
    width = max(len(label) for label, _ in rows) + 2
    columns = [max(len(split), *(len(values[i]) for _, values in rows)) + 2 for i, split in enumerate(splits)]
    lines = [f"== {modality}: {datalist}", " " * width + "".join(s.rjust(c) for s, c in zip(splits, columns))]
    lines += [label.ljust(width) + "".join(v.rjust(c) for v, c in zip(values, columns)) for label, values in rows]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=ROOT / "bundles" / "sp_mamba" / "data")
    parser.add_argument("--datalist", type=Path, default=None, help="audit this datalist (needs --modality)")
    parser.add_argument("--modality", choices=[*DEMO_MODALITIES, "all"], default="all")
    parser.add_argument("--splits", nargs="+", default=["validation", "test"])
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--sigma", type=float, default=2.0, help="smoothing of the z-score and threshold maps, pixels")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.datalist is not None and args.modality == "all":
        parser.error("--datalist needs --modality brain_mri or head_ct")
    modalities = DEMO_MODALITIES if args.modality == "all" else (args.modality,)
    torch.set_num_threads(min(torch.get_num_threads(), 2))
    for modality in modalities:
        datalist = args.datalist or ensure_demo_cohort(args.root, modality)
        audits = audit_modality(datalist, modality, args.splits, args.image_size, args.sigma, args.seed)
        print(format_table(modality, datalist, audits), flush=True)


if __name__ == "__main__":
    main()
