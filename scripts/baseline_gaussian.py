"""Baseline for the demo cohort: per-location Gaussian feature distances (PaDiM-style) on SP-Mamba's encoder.

Same split, preprocessing, image size and frozen encoder as the sp_mamba bundle (ResNet34 with
random weights, batch-norm statistics calibrated on the normal training images, seeded):
features of layers 1-3 are upsampled to layer 1's grid and concatenated, reduced to
``--dims`` channels by a fixed random selection (as PaDiM does), and a Gaussian is fitted per
grid position on the training images. The anomaly map is the Mahalanobis distance,
upsampled and smoothed (sigma 4); the image score is its maximum. Thresholds are chosen on the
validation split (F1-max); metrics are reported on the test split.

Usage: ``python scripts/baseline_gaussian.py [--datalist PATH] [--image-size 64] [--modality mri]``
(the default datalist is the sp_mamba bundle's demo cohort, generated if missing).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from monai.data import DataLoader, Dataset

from medad_monai.data import ensure_demo_cohort, load_anomaly_datalist
from medad_monai.metrics.functional import accuracy_at, average_precision, f1_max, image_auroc, pixel_metrics
from medad_monai.networks.blocks import ResNetFeatureEncoder
from medad_monai.ops.filters import gaussian_blur
from medad_monai.transforms import modality_preset

ROOT = Path(__file__).resolve().parents[1]


def loader(datalist: Path, split: str, modality: str, size: int) -> DataLoader:
    transform = modality_preset(modality, spatial_size=(size, size), **({"crop_foreground": False} if modality == "mri" else {}))
    return DataLoader(Dataset(load_anomaly_datalist(datalist, split), transform), batch_size=16, shuffle=False)


@torch.no_grad()
def embed(encoder: ResNetFeatureEncoder, images: torch.Tensor, channels: torch.Tensor) -> torch.Tensor:
    """``(B, 3, H, W)`` -> ``(B, dims, h, w)`` concatenated multi-scale features, channel-selected."""
    features = encoder(images.as_subclass(torch.Tensor))
    size = features[0].shape[2:]
    stacked = torch.cat([F.interpolate(f, size, mode="bilinear", align_corners=False) for f in features], dim=1)
    return stacked[:, channels]


def fit_gaussian(
    encoder: ResNetFeatureEncoder, train: DataLoader, channels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-location Gaussian of the embedded training images.

    Returns:
        ``(mean, precision)``: ``(h*w, 1, dims)`` and ``(h*w, dims, dims)``, one per feature-grid
        position (the covariance is regularised by ``0.01 I`` before inversion, as PaDiM does).
    """
    feats = torch.cat([embed(encoder, b["image"], channels) for b in train])  # (N, d, h, w)
    n, d, h, w = feats.shape
    flat = feats.permute(2, 3, 0, 1).reshape(h * w, n, d)
    mean = flat.mean(dim=1, keepdim=True)
    centred = flat - mean
    cov = centred.transpose(1, 2) @ centred / (n - 1) + 0.01 * torch.eye(d)
    return mean, torch.linalg.inv(cov)


def gaussian_maps(
    encoder: ResNetFeatureEncoder,
    gaussian: tuple[torch.Tensor, torch.Tensor],
    batches: DataLoader,
    channels: torch.Tensor,
    image_size: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mahalanobis anomaly maps of a split under ``gaussian`` (from :func:`fit_gaussian`).

    Returns:
        ``(maps, masks, labels, scores)``: maps ``(N, 1, S, S)`` (upsampled to ``image_size`` and
        smoothed with sigma 4), masks ``(N, 1, S, S)``, labels ``(N,)``, image scores ``(N,)``
        (the maximum of each map).
    """
    mean, precision = gaussian
    d = mean.shape[-1]
    maps, masks, labels = [], [], []
    for batch in batches:
        features = embed(encoder, batch["image"], channels)
        h, w = features.shape[2:]
        x = features.permute(2, 3, 0, 1).reshape(h * w, -1, d) - mean
        dist = torch.einsum("pbd,pde,pbe->pb", x, precision, x).clamp_min(0).sqrt()
        amap = F.interpolate(dist.T.reshape(-1, 1, h, w), (image_size,) * 2, mode="bilinear", align_corners=False)
        maps.append(gaussian_blur(amap, 4.0))
        masks.append(batch["mask"])
        labels.append(torch.as_tensor(batch["label"]))
    maps_t = torch.cat(maps)
    return maps_t, torch.cat(masks), torch.cat(labels), maps_t.flatten(1).amax(dim=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datalist", type=Path, default=None)
    parser.add_argument("--modality", default="mri")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--dims", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    datalist = args.datalist or ensure_demo_cohort(ROOT / "bundles" / "sp_mamba" / "data", "brain_mri")
    torch.manual_seed(args.seed)
    encoder = ResNetFeatureEncoder(34)
    train = loader(datalist, "training", args.modality, args.image_size)
    encoder.calibrate_batch_norm(batch["image"] for batch in train)
    channels = torch.randperm(sum(encoder.out_channels))[: args.dims]
    gaussian = fit_gaussian(encoder, train, channels)

    def score(split: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        return gaussian_maps(encoder, gaussian, loader(datalist, split, args.modality, args.image_size), channels, args.image_size)

    _, _, val_labels, val_scores = score("validation")
    _, threshold = f1_max(val_scores, val_labels)
    maps, masks, labels, scores = score("test")
    results = {
        "image_auroc": image_auroc(scores, labels),
        "image_ap": average_precision(scores, labels),
        "image_f1_max": f1_max(scores, labels)[0],
        "image_accuracy_at_validation_threshold": accuracy_at(scores, labels, threshold),
        **pixel_metrics(maps[:, 0], masks[:, 0]),
        "num_test_images": int(labels.numel()),
    }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
