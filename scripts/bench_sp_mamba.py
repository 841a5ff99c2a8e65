"""SP-Mamba size, cost and speed, measured side by side in one process.

Prints:
1. parameters and multiply-accumulates (MACs) per module at 256 x 256, beside the official
   implementation's (github.com/Ray-RuiPan/SP-Mamba, instantiated on CPU with its CUDA-only
   imports stubbed and counted with fvcore 0.1.5: 25,830,529 parameters, 8.30 G MACs without
   the scan, the paper's 25.8 M and 8.3 G). MACs follow fvcore's rules (``benchutils.fvcore_macs``):
   convolutions and matrix products (einsum included) one per multiply-add, batch / layer /
   instance norms 2 / 5 / 4 per element, elementwise work not counted. The selective scan is
   counted apart, in FLOPs as VMamba counts them (9 per batch, channel, state and position,
   plus the skip term), since fvcore does not see it; the paper-comparable headline excludes it;
2. the vectorised window-sliding prototype distance against a straightforward per-patch loop
   written here (the shape of the public code: 8 x 8 grid, batch 16, K = 10, 512 channels, window 3);
3. CPU inference latency per image (batch 1 and 8) and training-step time at 256 x 256
   and at the demo size.

Usage: ``python scripts/bench_sp_mamba.py [--demo-size 64] [--threads 2] [--skip-256-train] [--counts-only]``
"""

from __future__ import annotations

import argparse
import time

import torch
from benchutils import count_macs, timed

from medad_monai.detectors.sp_mamba import SPMamba, SPMambaLoss, window_prototype_distance
from medad_monai.networks.blocks import SS2D

PAPER_PARAMS_M, PAPER_GMACS = 25.8, 8.3
#: The official model at 256 x 256 per module: (parameters, fvcore MACs). A decoder stage includes
#: its upsampling; the prototypes include the unused ``vis_conv``. K = 5 prototypes (its configs).
OFFICIAL = {
    "encoder (ResNet34 to layer3, frozen)": (8_170_304, 3_955_097_600),
    "fusion (Half-FPN)": (1_458_304, 268_713_984),
    "prototypes": (163_905, 0),
    "decoder stage 0 (512 ch, 8 x 8)": (9_440_640, 576_875_696),
    "decoder stage 1 (256 ch, 16 x 16)": (4_432_384, 961_412_128),
    "decoder stage 2 (128 ch, 32 x 32)": (1_816_320, 1_528_762_960),
    "decoder stage 3 (64 ch, 64 x 64)": (348_672, 1_009_262_920),
}
OFFICIAL_SCAN_GFLOPS = 4.49
#: Why a module differs from the official one (see SPMamba's docstring).
DEVIATIONS = {
    "prototypes": "K = 10 (paper) vs 5 (official configs); official counts its unused vis_conv (65); "
    "fvcore does not count the official loop's cosine similarities",
    "decoder stage 0 (512 ch, 8 x 8)": "official holds an unused 3x3 conv per SPSS block and stores each scan order "
    "(2 x L integers per SS2D) as parameters",
}
for _stage in list(OFFICIAL)[4:]:
    DEVIATIONS.setdefault(_stage, DEVIATIONS["decoder stage 0 (512 ch, 8 x 8)"])


def scan_flops(net: SPMamba, image_size: tuple[int, int]) -> int:
    """VMamba's selective-scan FLOPs of one forward pass (batch 1): 9 K d N L + K d L per SS2D."""
    total, size = 0, (image_size[0] // 32, image_size[1] // 32)
    for i, stage in enumerate(net.stages):
        length = size[0] * size[1] * 4**i
        for module in stage.modules():
            if isinstance(module, SS2D):
                channels = module.num_directions * module.out_proj.in_features
                total += 9 * channels * module.ssm.d_state * length + channels * length
    return total


def module_table(net: SPMamba) -> None:
    """Parameters and MACs per module at 256 x 256 beside the official figures."""
    image = torch.randn(1, 3, 256, 256)
    params = lambda *modules: sum(p.numel() for m in modules for p in m.parameters())  # noqa: E731
    features, encoder_macs = count_macs(lambda: net.encoder(image))
    x, fusion_macs = count_macs(lambda: net.bottleneck(features))
    _, prototype_macs = count_macs(lambda: net.prototypes(x))
    ours = {
        "encoder (ResNet34 to layer3, frozen)": (params(net.encoder), encoder_macs),
        "fusion (Half-FPN)": (params(net.bottleneck), fusion_macs),
        "prototypes": (params(net.prototypes), prototype_macs),
    }
    for i, (name, stage) in enumerate(zip(list(OFFICIAL)[3:], net.stages)):
        modules = (stage, net.upsamples[i - 1]) if i else (stage,)
        x, macs = count_macs(lambda: stage(net.upsamples[i - 1](x) if i else x))
        ours[name] = (params(*modules), macs)
    print("| module | parameters, official | ours | difference | GMACs, official | ours | difference | reason |")
    print("|---|---|---|---|---|---|---|---|")
    for name, (p_off, m_off) in OFFICIAL.items():
        p_ours, m_ours = ours[name]
        dp = f"{100 * (p_ours / p_off - 1):+.1f} %"
        dm = f"{100 * (m_ours / m_off - 1):+.2f} %" if m_off else "-"
        print(f"| {name} | {p_off:,} | {p_ours:,} | {dp} | {m_off / 1e9:.3f} | {m_ours / 1e9:.3f} | {dm} | "
              f"{DEVIATIONS.get(name, '') if abs(p_ours / p_off - 1) > 0.02 or (m_off and abs(m_ours / m_off - 1) > 0.02) else ''} |")
    p_tot, m_tot = sum(v[0] for v in ours.values()), sum(v[1] for v in ours.values())
    p_off, m_off = sum(v[0] for v in OFFICIAL.values()), sum(v[1] for v in OFFICIAL.values())
    print(f"| **total** | {p_off:,} | {p_tot:,} | {100 * (p_tot / p_off - 1):+.1f} % | {m_off / 1e9:.3f} | "
          f"{m_tot / 1e9:.3f} | {100 * (m_tot / m_off - 1):+.2f} % | |")
    print(f"headline (paper-comparable, scan excluded): {p_tot / 1e6:.2f} M parameters, {m_tot / 1e9:.2f} GMACs at "
          f"256 x 256 (paper {PAPER_PARAMS_M} M, {PAPER_GMACS} G; official code {p_off / 1e6:.2f} M, {m_off / 1e9:.2f} G)")
    print(f"selective scan, counted apart: {scan_flops(net, (256, 256)) / 1e9:.2f} GFLOPs (official {OFFICIAL_SCAN_GFLOPS})")


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
    parser.add_argument("--counts-only", action="store_true", help="print the parameter and MAC table only")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # as the bundles do: subnormal decays are slow on CPUs
    torch.manual_seed(0)

    for k in (10, 5):
        net = SPMamba(image_size=(256, 256), num_prototypes=k, scan_backend="reference").eval()
        print(f"\nK = {k} prototypes" + (" (the paper's)" if k == 10 else " (the official configs')"))
        module_table(net)
    if args.counts_only:
        return

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
