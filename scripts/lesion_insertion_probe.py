"""Does a trained bundle's map answer a lesion its encoder sees? A probe on the VALIDATION split's normal slices.

Each normal validation slice gets a synthetic lesion: a disc, inside the foreground (the anatomy, the
pixels above the slice's minimum), whose intensity is multiplied by ``factor`` before the bundle's
ImageNet normalisation. For each (factor, radius) the probe reports

- how much the frozen encoder's features change at the disc (1 - cosine similarity with the features of
  the untouched slice, per scale, upsampled to the image, and their sum, the scale of the reconstruction
  detectors' maps before smoothing): what the encoder sees of the lesion;
- the anomaly map at the disc before and after, beside the map's mean over the foreground;
- the disc's percentile among the slice's foreground pixels on the map, before and after.

A detector that reconstructs normal features should raise its map where the features changed. If the
features change by as much as the decoder's error on normal tissue while the map does not move, the
decoder reconstructs the lesion's features too (it generalises to them) rather than failing to see them.
The disc is a probe, not a lesion model: it changes intensity only, with sharp edges. The test split
stays untouched.

Usage (repository root)::

    python scripts/lesion_insertion_probe.py [--bundle sp_mamba] [--ckpt bundles/<bundle>/models/model.pt] \\
        [--factors 1.15 1.3 1.6] [--radii 4 6] [-- bundle overrides, e.g. --dataset_dir /data]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F
from diagnostics import trained_bundle

from medad_monai.transforms import IMAGENET_MEAN, IMAGENET_STD


def disc_masks(foreground: torch.Tensor, radius: float, offset: float) -> torch.Tensor:
    """(N, 1, H, W) discs of ``radius`` pixels centred ``offset`` x the width to the right of each
    foreground's centroid, cut to the foreground."""
    _, _, height, width = foreground.shape
    rows, cols = torch.meshgrid(torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32), indexing="ij")
    weight = foreground[:, 0].float()
    total = weight.sum(dim=(1, 2)).clamp_min(1)
    row0 = (weight * rows).sum(dim=(1, 2)) / total
    col0 = (weight * cols).sum(dim=(1, 2)) / total + offset * width
    inside = (rows - row0[:, None, None]) ** 2 + (cols - col0[:, None, None]) ** 2 <= radius**2
    return (inside & foreground[:, 0])[:, None]


def percentile_among_foreground(amap: torch.Tensor, disc: torch.Tensor, foreground: torch.Tensor) -> float:
    """Mean over slices of the share of a slice's foreground pixels below the map's mean over its disc."""
    shares = []
    for m, d, f in zip(amap[:, 0], disc[:, 0], foreground[:, 0]):
        if d.any():
            shares.append((m[f] < m[d].mean()).float().mean().item())
    return sum(shares) / len(shares)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", default="sp_mamba", help="bundle folder name under bundles/")
    parser.add_argument("--ckpt", type=Path, help="default: bundles/<bundle>/models/model.pt")
    parser.add_argument("--factors", type=float, nargs="+", default=[1.15, 1.3, 1.6], help="intensity factors in the disc")
    parser.add_argument("--radii", type=float, nargs="+", default=[4, 6], help="disc radii in pixels of the network input")
    parser.add_argument("--offset", type=float, default=0.125, help="disc centre: the centroid plus this x the width")
    args, overrides = parser.parse_known_args()
    config, network = trained_bundle(args.bundle, args.ckpt, overrides)
    images = [b["image"].as_subclass(torch.Tensor)[torch.as_tensor(b["label"]) == 0]
              for b in config.get_parsed_content("validate#dataloader")]
    normal = torch.cat(images)
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (IMAGENET_MEAN, IMAGENET_STD))
    unit = normal * std + mean  # the bundle's [0, 1] intensities
    foreground = unit[:, :1] > unit[:, :1].amin(dim=(2, 3), keepdim=True)
    size = normal.shape[-2:]
    with torch.no_grad():
        features, amap = network.encoder(normal), network(normal)
    print(f"{len(normal)} normal validation slices of {args.bundle} ({args.ckpt or f'bundles/{args.bundle}/models/model.pt'}); map mean over the foreground "
          f"{amap[foreground].mean():.4f}")
    for factor in args.factors:
        for radius in args.radii:
            disc = disc_masks(foreground, radius, args.offset)
            probed = (unit * (1 + (factor - 1) * disc) - mean) / std
            with torch.no_grad():
                probed_features, probed_map = network.encoder(probed), network(probed)
            change = []
            for f0, f1 in zip(features, probed_features):
                distance = 1 - F.cosine_similarity(f0, f1, dim=1, eps=1e-6)
                change.append(F.interpolate(distance[:, None], size, mode="bilinear", align_corners=True)[disc].mean().item())
            print(f"x{factor:g}, radius {radius:g}: encoder 1 - cos at the disc {' / '.join(f'{c:.3f}' for c in change)} "
                  f"(sum {sum(change):.3f}); "
                  f"map at the disc {amap[disc].mean():.4f} -> {probed_map[disc].mean():.4f}; disc's percentile "
                  f"among foreground pixels {percentile_among_foreground(amap, disc, foreground):.2f} -> "
                  f"{percentile_among_foreground(probed_map, disc, foreground):.2f}")


if __name__ == "__main__":
    main()
