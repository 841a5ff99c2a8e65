"""Map-term and image-score ablation of a trained sp_mamba bundle on the VALIDATION split (never the test split).

Runs the trained network once over the validation split and reports

- for the terms of the pixel map (eq. 6-7): the reconstruction term alone, the prototype distance
  alone and the paper's sum: pixel AUROC, AUPRO, the pixel AUROC among the foreground pixels of the
  abnormal images (foreground: above the image's minimum, e.g. the skull-stripped brain), the
  max-pooled image AUROC and how often an abnormal image's map peaks inside its lesion (what a
  max-pooled score relies on); and, for scale, the pixel AUROC of the foreground mask itself, a
  "map" that knows only where the anatomy is;
- for the image-score variants of SP-Mamba's Table 4 (pooled map alone, + concentration,
  + contrast, both), each with the paper's weights (beta = -0.025, gamma = 400), on the bundle's map:
  image AUROC / AP / F1-max.

Use it to decide which terms a dataset's bundle config keeps; the test split stays untouched.

Usage (repository root)::

    python scripts/score_ablation.py [--ckpt bundles/sp_mamba/models/model.pt] [-- bundle overrides, e.g. --image_size "[64,64]"]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from diagnostics import trained_bundle
from sklearn.metrics import roc_auc_score

from medad_monai.detectors.sp_mamba import SPMambaImageScore
from medad_monai.metrics.functional import average_precision, f1_max, image_auroc, pixel_metrics


def _maps(network: torch.nn.Module, outputs: list, weights: tuple[float, float]) -> torch.Tensor:
    """The pixel maps of ``outputs`` with ``(reconstruction_weight, prototype_weight)``; the network keeps its own."""
    own = network.reconstruction_weight, network.prototype_weight
    network.reconstruction_weight, network.prototype_weight = weights
    try:
        return torch.cat([network.anomaly_map(o) for o in outputs])
    finally:
        network.reconstruction_weight, network.prototype_weight = own


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", type=Path, help="default: bundles/sp_mamba/models/model.pt")
    parser.add_argument("--beta", type=float, default=-0.025)
    parser.add_argument("--gamma", type=float, default=400.0)
    args, overrides = parser.parse_known_args()
    config, network = trained_bundle("sp_mamba", args.ckpt, overrides)
    kernel = config.get_parsed_content("image_score").kernel_size
    outputs, masks, foregrounds, labels = [], [], [], []
    with torch.no_grad():
        for batch in config.get_parsed_content("validate#dataloader"):
            image = batch["image"].as_subclass(torch.Tensor)
            outputs.append(network.reconstruct(image))
            masks.append(batch["mask"].as_subclass(torch.Tensor))
            foregrounds.append(image[:, :1] > image[:, :1].amin(dim=(2, 3), keepdim=True))
            labels.append(torch.as_tensor(batch["label"]))
    mask, foreground, label = torch.cat(masks), torch.cat(foregrounds), torch.cat(labels)
    lesion_pixels, inside = mask[label == 1].flatten() > 0, foreground[label == 1].flatten()
    print(f"validation split: {int((label == 0).sum())} normal, {int((label == 1).sum())} abnormal images; "
          f"the foreground mask as a map: pixel AUROC {roc_auc_score(mask.flatten() > 0, foreground.flatten()):.4f}")
    bundle_weights = (network.reconstruction_weight, network.prototype_weight)
    terms = {
        "reconstruction term only": (bundle_weights[0], 0.0),
        "prototype distance only": (0.0, 1.0),
        "reconstruction + prototype distance (paper, alpha = 1)": (bundle_weights[0], 1.0),
    }
    for name, weights in terms.items():
        amap = _maps(network, outputs, weights)
        pixel = pixel_metrics(amap[:, 0], mask[:, 0])
        peaks = amap[label == 1].flatten(1).argmax(1, keepdim=True)
        peak_in_lesion = mask[label == 1].flatten(1).gather(1, peaks).gt(0).float().mean().item()
        in_foreground = roc_auc_score(lesion_pixels[inside], amap[label == 1].flatten()[inside])
        print(f"{name:55s}{' (bundle)' if weights == bundle_weights else '         '} pixel AUROC {pixel['pixel_auroc']:.4f}  "
              f"AUPRO {pixel['aupro']:.4f}  pixel AUROC in the foreground {in_foreground:.4f}  "
              f"image AUROC (map maximum) {image_auroc(amap.flatten(1).amax(1), label):.4f}  "
              f"maps peaking inside the lesion {peak_in_lesion:.0%}")
    amap = _maps(network, outputs, bundle_weights)
    variants = {
        "pooled map only": (0.0, 0.0),
        "+ concentration": (args.beta, 0.0),
        "+ contrast": (0.0, args.gamma),
        "+ concentration + contrast (paper)": (args.beta, args.gamma),
    }
    print(f"image scores on the bundle map ({bundle_weights[0]:g} x reconstruction + {bundle_weights[1]:g} x prototype distance):")
    for name, (beta, gamma) in variants.items():
        scores = SPMambaImageScore(kernel_size=kernel, concentration_weight=beta, contrast_weight=gamma)(amap)
        print(f"{name:40s} image AUROC {image_auroc(scores, label):.4f}  AP {average_precision(scores, label):.4f}"
              f"  F1-max {f1_max(scores, label)[0]:.4f}")


if __name__ == "__main__":
    main()
