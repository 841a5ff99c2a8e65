"""SP-Mamba size, cost and speed, measured side by side in one process.

Prints:
1. parameters (whole model, and trainable) against the paper's 25.8 M;
2. multiply-accumulates at 256 x 256 against the paper's 8.3 G (fvcore counts one
   multiply-add as one "FLOP", i.e. MACs): torch's ``FlopCounterMode`` counts the
   convolutions and matrix products (reported FLOPs / 2 = MACs); the selective
   scan is elementwise work that counter does not see, so it is added analytically
   as 5 MACs per (batch, channel, state, position) of every SS2D scan
   (``delta*A``, ``delta*B*u`` (2), ``dA*h + dBu``, ``C*h``);
3. the vectorised window-sliding prototype distance against a straightforward
   per-patch loop written here (the shape of the public code: 8 x 8 grid, batch 16,
   K = 10, 512 channels, window 3);
4. CPU inference latency per image (batch 1 and 8) and training-step time at 256 x 256
   and at the demo size.

Usage: ``python scripts/bench_sp_mamba.py [--demo-size 64] [--threads 2] [--skip-256-train]``
"""

from __future__ import annotations

import argparse
import time

import torch
from benchutils import timed
from torch.utils.flop_counter import FlopCounterMode

from medad_monai.detectors.sp_mamba import SPMamba, SPMambaLoss, window_prototype_distance
from medad_monai.networks.blocks import SS2D

PAPER_PARAMS_M, PAPER_GMACS = 25.8, 8.3


def scan_macs(net: SPMamba, image_size: tuple[int, int]) -> int:
    """Analytic selective-scan MACs of one forward pass (batch 1)."""
    total, size = 0, (image_size[0] // 32, image_size[1] // 32)
    for i, stage in enumerate(net.stages):
        h, w = size[0] * 2**i, size[1] * 2**i
        for module in stage.modules():
            if isinstance(module, SS2D):
                d_inner = module.out_proj.in_features
                total += 5 * module.num_directions * d_inner * module.d_state * h * w
    return total


def loop_prototype_distance(features: torch.Tensor, prototypes: torch.Tensor, window: int) -> torch.Tensor:
    """Per-patch Python loops over batch, position, prototype and window cell (the public code's shape)."""
    b, _, h, w = features.shape
    r = window // 2
    out = torch.empty(b, 1, h, w)
    for n in range(b):
        for i in range(h):
            for j in range(w):
                best = float("inf")
                for proto in prototypes:
                    top = max(
                        torch.cosine_similarity(proto[:, i, j], features[n, :, y, x], dim=0).item()
                        for y in range(max(0, i - r), min(h, i + r + 1))
                        for x in range(max(0, j - r), min(w, j + r + 1))
                    )
                    best = min(best, 1 - top)
                out[n, 0, i, j] = best
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-256-train", action="store_true", help="skip the slow 256 x 256 training step")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # as the bundles do: subnormal decays are slow on CPUs
    torch.manual_seed(0)

    # the reference scan is elementwise only, so the counter sees no scan work (the fast path's
    # chunk products would otherwise be counted twice: by the counter and analytically).
    net = SPMamba(image_size=(256, 256), scan_backend="reference").eval()
    params = sum(p.numel() for p in net.parameters()) / 1e6
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad) / 1e6
    print(f"parameters: {params:.2f} M (trainable {trainable:.2f} M); paper {PAPER_PARAMS_M} M "
          f"-> {100 * (params / PAPER_PARAMS_M - 1):+.1f}%")
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        net(torch.randn(1, 3, 256, 256))
    conv_macs = counter.get_total_flops() / 2e9
    ssm_macs = scan_macs(net, (256, 256)) / 1e9
    total = conv_macs + ssm_macs
    print(f"MACs at 256x256: {conv_macs:.2f} G conv/matmul (torch FlopCounterMode / 2) + {ssm_macs:.2f} G selective "
          f"scan (analytic) = {total:.2f} G; paper {PAPER_GMACS} G (fvcore, MACs) -> {100 * (total / PAPER_GMACS - 1):+.1f}%")

    features, prototypes = torch.randn(16, 512, 8, 8), torch.randn(10, 512, 8, 8)
    fast = timed(lambda: window_prototype_distance(features, prototypes, 3), repeats=30, warmup=3)
    start = time.perf_counter()
    reference = loop_prototype_distance(features, prototypes, 3)
    slow = time.perf_counter() - start
    error = (window_prototype_distance(features, prototypes, 3)[0] - reference).abs().max().item()
    print(f"prototype distance (B=16, K=10, 8x8, C=512, p=3): vectorised {1e3 * fast:.2f} ms, per-patch loop "
          f"{1e3 * slow:.0f} ms -> {slow / fast:.0f}x (max abs difference {error:.1e})")

    loss_fn = SPMambaLoss()
    for size in (256, args.demo_size):
        model = SPMamba(image_size=(size, size))
        model.encoder.calibrate_batch_norm([torch.randn(4, 3, size, size)])
        model.eval()
        with torch.no_grad():
            for batch in (1, 8):
                x = torch.randn(batch, 3, size, size)
                latency = timed(lambda: model(x), repeats=3) / batch
                print(f"inference {size}x{size} batch {batch}: {1e3 * latency:.0f} ms/image")
        if size == 256 and args.skip_256_train:
            continue
        model.train()
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-3, weight_decay=1e-4)
        x = torch.randn(16, 3, size, size)

        def step() -> None:
            optimizer.zero_grad()
            loss_fn(model(x)).backward()
            optimizer.step()

        print(f"training step {size}x{size} batch 16: {timed(step, repeats=2):.2f} s")


if __name__ == "__main__":
    main()
