"""CPU speed of the three detectors side by side, in one process, at their paper defaults.

For SP-Mamba, Wave-MambaAD and UMIAD-EGMF (random encoder weights, batch norm calibrated, the
networks' default arguments except the image size) prints, per image size:

- inference latency per image (eval mode, anomaly map) at batch 1 and 8;
- one training step (forward, the detector's loss, backward, Adam) at the bundles' demo batch 16
  (64 x 64) or batch 2 (256 x 256).

The papers' own figures, on their GPUs: Wave-MambaAD 58.8 img/s (RTX A6000), UMIAD-EGMF 55.2 ms per
image. Absolute CPU times move with the machine's load; the ratios between the detectors, measured
alike in one run, are the stable part.

Usage: ``python scripts/bench_detectors.py [--sizes 64 256] [--threads 2] [--repeats 3]
[--detectors sp_mamba wave_mambaad umiad_egmf]``
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
from benchutils import timed

from medad_monai.detectors import (
    UMIADEGMF,
    SPMamba,
    SPMambaLoss,
    UMIADEGMFLoss,
    WaveMambaAD,
    WaveMambaADLoss,
)

DETECTORS: dict[str, tuple[Callable[..., torch.nn.Module], Callable[[], torch.nn.Module]]] = {
    "sp_mamba": (SPMamba, SPMambaLoss),
    "wave_mambaad": (WaveMambaAD, WaveMambaADLoss),
    "umiad_egmf": (UMIADEGMF, UMIADEGMFLoss),
}
TRAIN_BATCH = {64: 16, 256: 2}


def measure(name: str, size: int, repeats: int) -> dict[str, float]:
    """Latencies (ms/image) and training-step time (s) of one detector at ``size`` x ``size``."""
    network, loss_class = DETECTORS[name]
    torch.manual_seed(0)
    model = network(image_size=(size, size))
    model.encoder.calibrate_batch_norm([torch.randn(4, 3, size, size)])
    results = {}
    model.eval()
    with torch.no_grad():
        for batch in (1, 8):
            x = torch.randn(batch, 3, size, size)
            results[f"inference batch {batch} (ms/image)"] = 1e3 * timed(lambda x=x: model(x), repeats) / batch
    model.train()
    loss_fn = loss_class()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    batch = TRAIN_BATCH.get(size, 2)
    x = torch.randn(batch, 3, size, size)

    def step() -> None:
        optimizer.zero_grad()
        loss_fn(model(x)).backward()
        optimizer.step()

    results[f"training step batch {batch} (s)"] = timed(step, repeats)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats (median) after one warm-up")
    parser.add_argument("--detectors", nargs="+", choices=list(DETECTORS), default=list(DETECTORS))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # as the bundles do: subnormal decays are slow on CPUs
    print(f"CPU, {torch.get_num_threads()} threads, median of {args.repeats} after one warm-up")
    for size in args.sizes:
        table = {name: measure(name, size, args.repeats) for name in args.detectors}
        print(f"\n{size} x {size}")
        print(f"| measure | {' | '.join(args.detectors)} |")
        print(f"|---|{'---|' * len(args.detectors)}")
        for measure_name in next(iter(table.values())):
            cells = " | ".join(f"{table[name][measure_name]:.2f}" for name in args.detectors)
            print(f"| {measure_name} | {cells} |")


if __name__ == "__main__":
    main()
