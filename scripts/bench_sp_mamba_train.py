"""SP-Mamba CPU training: where a step's time goes, how fast an epoch runs, side by side in one process.

Prints:

1. The machine: GFLOP/s of a large float32 matrix product (2048 x 2048, the same threads).
2. A profile of one training step (batch 16, the bundle's network and optimizer, median of
   ``--repeats`` steps): forward time of the encoder, the Half-FPN fusion, the prototypes, and
   each decoder stage split into its selective scans and the rest; the loss; the backward pass
   (its scans apart); the optimizer. Beside each part its floating-point work and the achieved
   GFLOP/s. FLOPs: convolutions and matrix products of the forward pass as
   ``torch.utils.flop_counter`` counts them (2 per multiply-add), the scan as VMamba counts it
   (9 per batch, channel, state and position), elementwise work not counted; the backward pass
   is counted as twice the forward work of the trainable parts (fusion, prototypes, decoder),
   the usual convention (the frozen encoder has no backward pass).
3. Training epochs at each ``--sizes`` (default 64, 96, 128), side by side: the ``"torch"``
   scan backend without the encoder feature cache (the starting point), with it, and the
   compiled ``"cpu"`` scan backend with it (the bundle's default on CPU); ``--train-images``
   random training images (the demo cohort has 300) at batch 16 plus a validation pass over
   ``--val-images`` (80). Epoch 1 fills the cache, later epochs read it; the steady-state
   speed-up is epoch 2's, against the first configuration.

The profile runs once per ``--backends`` (default ``torch cpu``).

Usage: ``python scripts/bench_sp_mamba_train.py [--sizes 64 96 128] [--threads 2] [--epochs 2] [--backends torch cpu]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections import defaultdict
from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

import medad_monai.networks.blocks.ss2d as ss2d_module
from medad_monai.detectors.sp_mamba import SPMamba, SPMambaLoss
from medad_monai.networks.blocks import SS2D
from medad_monai.ops import selective_scan as scan_module

#: ``network_def`` of bundles/sp_mamba/configs/train.json (image size and smoothing set per run).
BUNDLE_NETWORK = {"encoder_depth": 34, "encoder_weights": "random", "decoder_depths": (3, 4, 6, 3),
                  "scan": "circular_hilbert", "num_directions": 8, "num_prototypes": 10, "prototype_window": 3}
FEATURE_CACHE_BYTES = 2**31


def matmul_gflops(repeats: int = 5, n: int = 2048) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = min(_seconds(lambda: torch.mm(a, b)) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def _seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


class ScanTimer:
    """Accumulates the time of every selective scan, forward and backward, by sequence length (one per stage)."""

    def __init__(self) -> None:
        self.seconds: dict[tuple[str, int], float] = defaultdict(float)
        self._fn = ss2d_module.selective_scan_fn
        self._backwards = {scan_module._ChunkedScan: scan_module._ChunkedScan.backward,
                           scan_module._CompiledScan: scan_module._CompiledScan.backward}

    def __enter__(self) -> ScanTimer:
        timer = self

        def forward(u, *args, **kwargs):
            start = time.perf_counter()
            out = timer._fn(u, *args, **kwargs)
            timer.seconds["forward", u.shape[-1]] += time.perf_counter() - start
            return out

        def timed(original):
            def backward(ctx, *grads):
                start = time.perf_counter()
                out = original(ctx, *grads)
                timer.seconds["backward", grads[0].shape[-1]] += time.perf_counter() - start
                return out

            return staticmethod(backward)

        ss2d_module.selective_scan_fn = forward
        for function, original in self._backwards.items():
            function.backward = timed(original)
        return self

    def __exit__(self, *exc) -> None:
        ss2d_module.selective_scan_fn = self._fn
        for function, original in self._backwards.items():
            function.backward = staticmethod(original)


def scan_flops(net: SPMamba, batch: int) -> dict[int, float]:
    """VMamba's forward FLOP count of the selective scans, by sequence length: 9 B K d N L (+ K d L for D)."""
    flops: dict[int, float] = defaultdict(float)
    grid = (net.image_size[0] // 32, net.image_size[1] // 32)
    for i, stage in enumerate(net.stages):
        length = grid[0] * grid[1] * 4**i
        for m in stage.modules():
            if isinstance(m, SS2D):
                channels = m.num_directions * m.out_proj.in_features
                flops[length] += batch * (9 * channels * m.ssm.d_state * length + channels * length)
    return flops


def timed_step(net: SPMamba, loss_fn, optimizer, images: torch.Tensor) -> dict[str, float]:
    """One training step, timed part by part (the forward pass written out as SPMamba.reconstruct runs it)."""
    times: dict[str, float] = {}
    with ScanTimer() as scans:
        start = time.perf_counter()
        features = net.encode(images)
        times["encoder"] = time.perf_counter() - (mark := start)
        mark = time.perf_counter()
        x = net.bottleneck(features)
        times["fusion"] = time.perf_counter() - mark
        mark = time.perf_counter()
        distance = net.prototypes(x)
        times["prototypes"] = time.perf_counter() - mark
        reconstructions = []
        for i, stage in enumerate(net.stages):
            mark = time.perf_counter()
            x = stage(net.upsamples[i - 1](x) if i else x)
            times[f"stage {i}"] = time.perf_counter() - mark
            if i:
                reconstructions.append(x)
        mark = time.perf_counter()
        loss = loss_fn({"features": features, "reconstructions": reconstructions[::-1], "prototype_distance": distance})
        times["loss"] = time.perf_counter() - mark
        mark = time.perf_counter()
        loss.backward()
        times["backward"] = time.perf_counter() - mark
        mark = time.perf_counter()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times["optimizer"] = time.perf_counter() - mark
    lengths = sorted({length for _, length in scans.seconds})
    for i, length in enumerate(lengths):
        times[f"stage {i} scan"] = scans.seconds["forward", length]
        times[f"backward scan {i}"] = scans.seconds["backward", length]
    return times


def counted_flops(net: SPMamba, images: torch.Tensor) -> dict[str, float]:
    """Forward convolution / matrix-product FLOPs per part (torch's counter, the scan run by the elementwise
    reference backend so that its internal products are not counted), the scans analytically, and the
    backward pass as twice the forward work of the trainable parts."""
    backends = {m: m.backend for m in net.modules() if isinstance(m, SS2D)}
    for m in backends:
        m.backend = "reference"  # elementwise only: the counter sees no scan work, which is added analytically
    flops: dict[str, float] = {}
    try:
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            features = net.encode(images)
        flops["encoder"] = counter.get_total_flops()
        with (counter := FlopCounterMode(display=False)):
            x = net.bottleneck(features)
        flops["fusion"] = counter.get_total_flops()
        with (counter := FlopCounterMode(display=False)):
            net.prototypes(x)
        flops["prototypes"] = counter.get_total_flops()
        for i, stage in enumerate(net.stages):
            with (counter := FlopCounterMode(display=False)):
                x = stage(net.upsamples[i - 1](x) if i else x)
            flops[f"stage {i}"] = counter.get_total_flops()
    finally:
        for m, backend in backends.items():
            m.backend = backend
    trainable = sum(value for key, value in flops.items() if key != "encoder")
    scans = scan_flops(net, images.shape[0])
    for i, length in enumerate(sorted(scans)):
        flops[f"stage {i} scan"] = scans[length]
        flops[f"backward scan {i}"] = 2 * scans[length]
    flops["backward"] = 2 * (trainable + sum(scans.values()))
    return flops


def build(size: int, cache: bool, seed: int = 0) -> tuple[SPMamba, SPMambaLoss, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    net = SPMamba(image_size=(size, size), smoothing_sigma=4.0 * size / 256,
                  feature_cache_bytes=FEATURE_CACHE_BYTES if cache else 0, **BUNDLE_NETWORK)
    net.encoder.calibrate_batch_norm([torch.randn(8, 3, size, size)])
    optimizer = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-3, weight_decay=1e-4)
    return net.train(), SPMambaLoss(), optimizer


def profile(size: int, batch: int, repeats: int, peak: float, backend: str) -> None:
    os.environ[scan_module.BACKEND_ENV_VAR] = backend
    net, loss_fn, optimizer = build(size, cache=False)
    images = torch.randn(batch, 3, size, size)
    runs = [timed_step(net, loss_fn, optimizer, images) for _ in range(repeats + 1)][1:]
    median = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
    flops = counted_flops(net, images)
    total = sum(median[k] for k in median if "scan" not in k)
    print(f"\nprofile of one training step, {size} x {size}, batch {batch}, scan backend {backend!r} (median of {repeats}):")
    print("| part | ms | share | GFLOP | GFLOP/s |\n|---|---|---|---|---|")
    rows = ["encoder", "fusion", "prototypes"]
    for i in range(4):
        rows += [f"stage {i} scan", f"stage {i} rest"]
        median[f"stage {i} rest"] = median[f"stage {i}"] - median[f"stage {i} scan"]
        flops[f"stage {i} rest"] = flops[f"stage {i}"]
    rows += ["loss", "backward scan", "backward rest", "optimizer"]
    median["backward scan"] = sum(median[f"backward scan {i}"] for i in range(4))
    median["backward rest"] = median["backward"] - median["backward scan"]
    flops["backward scan"] = sum(flops[f"backward scan {i}"] for i in range(4))
    flops["backward rest"] = flops["backward"] - flops["backward scan"]
    for row in rows:
        gflop = flops.get(row, 0.0) / 1e9
        rate = f"{gflop / median[row]:.1f}" if gflop else "-"
        print(f"| {row} | {1e3 * median[row]:.0f} | {100 * median[row] / total:.1f} % | {gflop:.2f} | {rate} |")
    work = sum(flops.get(row, 0.0) for row in rows) / 1e9
    print(f"| step | {1e3 * total:.0f} | 100 % | {work:.2f} | {work / total:.1f} |")
    print(f"achieved {work / total:.1f} GFLOP/s over the step; a 2048 x 2048 matmul reaches {peak:.1f} GFLOP/s here "
          f"({100 * work / total / peak:.0f} %)")


def run_epochs(nets: dict[str, tuple], size: int, train: torch.Tensor, val: torch.Tensor, batch: int, epochs: int):
    """Epoch times of every configuration ``name: (scan backend, (net, loss, optimizer))``, interleaved
    epoch by epoch so that load hits them alike."""
    times = {name: [] for name in nets}
    for epoch in range(epochs):
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(epoch))
        for name, (backend, (net, loss_fn, optimizer)) in nets.items():
            os.environ[scan_module.BACKEND_ENV_VAR] = backend
            start = time.perf_counter()
            net.train()
            for i in range(0, len(train), batch):
                loss_fn(net(train[order[i : i + batch]])).backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            net.eval()
            with torch.no_grad():
                for i in range(0, len(val), batch):
                    net(val[i : i + batch])
            times[name].append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 96, 128])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train-images", type=int, default=300)
    parser.add_argument("--val-images", type=int, default=80)
    parser.add_argument("--skip-profile", action="store_true")
    parser.add_argument("--skip-epochs", action="store_true")
    parser.add_argument("--backends", nargs="+", choices=["torch", "cpu"], default=["torch", "cpu"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # as the bundles do
    peak = matmul_gflops()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; 2048 x 2048 float32 matmul: {peak:.1f} GFLOP/s")
    if not args.skip_profile:
        for backend in args.backends:
            profile(args.sizes[0], args.batch, args.repeats, peak, backend)
    if args.skip_epochs:
        return
    print(f"\nepochs: {args.train_images} training images (batch {args.batch}) + {args.val_images} validation images")
    print("| size | configuration | epoch 1 s | epoch 2 s | speed-up (epoch 2) |\n|---|---|---|---|---|")
    for size in args.sizes:
        gen = torch.Generator().manual_seed(size)
        train = torch.randn(args.train_images, 3, size, size, generator=gen)
        val = torch.randn(args.val_images, 3, size, size, generator=gen)
        nets = {
            "torch scan, no cache": ("torch", build(size, cache=False)),
            "torch scan, feature cache": ("torch", build(size, cache=True)),
            "cpu scan, feature cache": ("cpu", build(size, cache=True)),
        }
        times = run_epochs(nets, size, train, val, args.batch, args.epochs)
        base = times["torch scan, no cache"][-1]
        for name, t in times.items():
            print(f"| {size} | {name} | {t[0]:.1f} | {t[-1]:.1f} | {base / t[-1]:.2f}x |")


if __name__ == "__main__":
    main()
