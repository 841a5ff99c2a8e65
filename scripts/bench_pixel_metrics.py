"""Benchmark: all pixel metrics (AUROC, AP, F1-max, AUPRO) over a test set of anomaly maps.

Goal: 500 maps of 256 x 256 in under 10 s and under 1 GB of extra memory on 2 CPU cores.

Data: smooth random anomaly maps (float32) and realistic masks: half of the images carry
1 to 3 random elliptical lesions of radius 4 to 30 pixels (overlapping ones merge), and the
maps (smooth noise plus pixel noise) are raised inside them by a smoothed bump of random,
spatially varying strength, so that part of each lesion is missed. Data generation is not timed.

For each mode of ``PixelAnomalyMetrics`` the script feeds the maps as torch batches of
(B, 1, H, W), as an evaluator would, then calls ``aggregate()``; it reports:

- time: wall-clock seconds for update + aggregate, measured in a run without tracing;
- peak extra memory: the peak of ``tracemalloc`` over a second, traced run, relative to the
  start of that run. NumPy registers its buffers with tracemalloc, so this counts every
  NumPy array the metric allocates (state and temporaries); the input tensors, created
  before, are not counted.

Usage::

    OMP_NUM_THREADS=2 python scripts/bench_pixel_metrics.py [--num-images 500] [--size 256]
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np
import torch
from scipy import ndimage

from medad_monai.metrics import PixelAnomalyMetrics


def make_data(num_images: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Anomaly maps (N, 1, H, W) float32 and masks (N, 1, H, W) float32 in {0, 1}."""
    rng = np.random.default_rng(seed)
    maps = np.empty((num_images, 1, size, size), dtype=np.float32)
    masks = np.zeros((num_images, 1, size, size), dtype=np.float32)
    yy, xx = np.mgrid[:size, :size]
    for i in range(num_images):
        background = ndimage.zoom(rng.random((size // 16, size // 16)), 16, order=1)
        mask = np.zeros((size, size), dtype=bool)
        if i % 2:
            for _ in range(rng.integers(1, 4)):
                cy, cx = rng.integers(16, size - 16, size=2)
                ry, rx = rng.uniform(4, 30, size=2)
                angle = rng.uniform(0, np.pi)
                u = (yy - cy) * np.cos(angle) + (xx - cx) * np.sin(angle)
                v = -(yy - cy) * np.sin(angle) + (xx - cx) * np.cos(angle)
                mask |= (u / ry) ** 2 + (v / rx) ** 2 <= 1
        strength = ndimage.zoom(rng.random((size // 32, size // 32)), 32, order=1)  # lesions partly missed
        bump = ndimage.gaussian_filter(mask * strength * rng.uniform(0.2, 0.8), sigma=4)
        maps[i, 0] = 0.5 * background + bump + rng.normal(0, 0.05, (size, size))
        masks[i, 0] = mask
    return torch.from_numpy(maps), torch.from_numpy(masks)


def run(mode: str, maps: torch.Tensor, masks: torch.Tensor, batch_size: int, num_bins: int):
    metric = PixelAnomalyMetrics(mode=mode, num_bins=num_bins)
    for start in range(0, len(maps), batch_size):
        metric(maps[start : start + batch_size], masks[start : start + batch_size])
    return metric.aggregate(), metric.error_bounds()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-images", type=int, default=500)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--num-bins", type=int, default=2**16)
    parser.add_argument("--modes", nargs="+", default=["binned", "exact"], choices=["binned", "exact"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    maps, masks = make_data(args.num_images, args.size, args.seed)
    regions = sum(ndimage.label(m[0].numpy(), structure=np.ones((3, 3)))[1] for m in masks)
    print(
        f"{args.num_images} maps of {args.size}x{args.size} ({maps.numel() / 1e6:.1f} M pixels, "
        f"{masks.mean().item():.2%} anomalous, {regions} regions), batch {args.batch_size}, "
        f"torch threads {torch.get_num_threads()}"
    )
    values = {}
    for mode in args.modes:
        start = time.perf_counter()
        values[mode], bounds = run(mode, maps, masks, args.batch_size, args.num_bins)
        seconds = time.perf_counter() - start
        tracemalloc.start()
        run(mode, maps, masks, args.batch_size, args.num_bins)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        metrics = "  ".join(f"{k}={v:.6f}" for k, v in values[mode].items())
        print(f"{mode:>6}: {seconds:6.2f} s  peak extra memory {peak / 2**20:7.1f} MiB  {metrics}")
        if mode == "binned":
            print("        certified error bounds: " + "  ".join(f"{k}={v:.2e}" for k, v in bounds.items()))
    if len(values) == 2:
        print(
            "  |binned - exact|: "
            + "  ".join(f"{k}={abs(values['binned'][k] - values['exact'][k]):.2e}" for k in values["exact"])
        )


if __name__ == "__main__":
    main()
