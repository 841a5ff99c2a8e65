"""Wave-MambaAD size and cost per part of the network, against the paper's Table 2.

Prints parameters and multiply-accumulates (MACs) at 256 x 256 per part of the network (encoder,
   Half-FPN, upsamplings, each decoder stage and, over the whole decoder, HFSS / LFSS / DSE), for
   the default decoder ((1, 4, 4, 4) = 13 Wavelet-Mamba modules, the official code's block count
   and the model the paper measured) and for the paper's text read literally ([1, 2, 2, 2] = 7),
   against the paper's Table 2 (22.3 M, 7.5 G) and
   the official model file (22,293,250 parameters of which 1,820,928 unused, 7.49 G with fvcore).
   MACs exclude the selective scan, as the paper's table does (fvcore counts one multiply-add as
   one "FLOP" and does not see the scan): torch's ``FlopCounterMode`` counts convolutions and
   matrix products (reported FLOPs / 2 = MACs) with the elementwise reference scan, which it does
   not see either. The scan is reported separately, 5 MACs per (batch, channel, state, position)
   of every sequence (``delta*A``, ``delta*B*u`` (2), ``dA*h + dBu``, ``C*h``), from forward hooks on
   the scan modules. When fvcore is importable its total is printed too.
Speed, side by side with the other detectors in one process: ``scripts/bench_detectors.py``.

Usage: ``python scripts/bench_wave_mambaad.py [--threads 2]``
"""

from __future__ import annotations

import argparse
import logging
from collections import defaultdict

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from medad_monai.detectors import WaveMambaAD
from medad_monai.detectors.wave_mambaad.blocks import DSE, HFSS, LFSS, ChannelMLP
from medad_monai.networks.blocks import SelectiveSSM

PAPER_PARAMS_M, PAPER_GMACS = 22.3, 7.5
OFFICIAL_PARAMS, OFFICIAL_UNUSED, OFFICIAL_GMACS = 22_293_250, 1_820_928, 7.49


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def scan_mac_hooks(net: nn.Module, counts: dict[str, int]) -> list:
    """Forward hooks adding each selective scan's MACs to ``counts[module name]``."""

    def hook(name: str):
        def add(module: SelectiveSSM, args: tuple, _output: torch.Tensor) -> None:
            counts[name] += 5 * args[0].numel() * module.d_state  # (B, K, D, L) sequences, N states each

        return add

    return [m.register_forward_hook(hook(name)) for name, m in net.named_modules() if isinstance(m, SelectiveSSM)]


def size_report(decoder_depths: tuple[int, ...], label: str) -> tuple[float, float, float]:
    """Print the per-part table of one configuration; return (params M, MACs G, scan MACs G)."""
    torch.manual_seed(0)
    # the reference scan is elementwise only, so the counter sees no scan work.
    net = WaveMambaAD(image_size=(256, 256), decoder_depths=decoder_depths, scan_backend="reference").eval()
    scans: dict[str, int] = defaultdict(int)
    handles = scan_mac_hooks(net, scans)
    counter = FlopCounterMode(display=False)
    image = torch.randn(1, 3, 256, 256)
    with torch.no_grad(), counter:
        net(image)
    for handle in handles:
        handle.remove()
    flops = {k.removeprefix("WaveMambaAD").lstrip("."): sum(v.values()) for k, v in counter.get_flop_counts().items()}

    def row(name: str, params: int, macs: float, scan: float) -> None:
        print(f"  {name:<44} {params / 1e6:>8.3f} {macs / 1e9:>9.3f} {scan / 1e9:>9.3f}")

    def part(prefixes: list[str]) -> tuple[int, float, float]:
        modules = [net.get_submodule(p) for p in prefixes]
        macs = sum(flops.get(p, 0) for p in prefixes) / 2
        scan = sum(v for k, v in scans.items() if any(k == p or k.startswith(p + ".") for p in prefixes))
        return sum(count_params(m) for m in modules), macs, scan

    print(f"\n{label}: decoder_depths={decoder_depths}, {sum(decoder_depths)} Wavelet-Mamba modules, 256 x 256, batch 1")
    print(f"  {'part':<44} {'params M':>8} {'MACs G':>9} {'scan G':>9}")
    row("encoder ResNet34 layer1-3 (frozen)", *part(["encoder"]))
    row("Half-FPN bottleneck", *part(["bottleneck"]))
    for i, stage in enumerate(net.stages):
        ch = stage[0].mixer.norm.normalized_shape[0]
        side = 256 // 2 ** (5 - i)
        if i > 0:
            row(f"upsample to stage {i}", *part([f"upsamples.{i - 1}"]))
        row(f"stage {i}: {ch} ch, {side}x{side}, {len(stage)} module(s)", *part([f"stages.{i}"]))
    names = dict(net.stages.named_modules())
    for kind, types in (("HFSS", (HFSS,)), ("LFSS", (LFSS,)), ("DSE / MLP", (DSE, ChannelMLP))):
        row(f"  all {kind} blocks", *part([f"stages.{n}" for n, m in names.items() if isinstance(m, types)]))
    params, macs, scan = count_params(net), flops[""] / 2, sum(scans.values())
    row("total", params, macs, scan)
    print(
        f"  vs paper Table 2: parameters {100 * (params / 1e6 / PAPER_PARAMS_M - 1):+.1f}% of {PAPER_PARAMS_M} M, "
        f"MACs without the scan {100 * (macs / 1e9 / PAPER_GMACS - 1):+.1f}% of {PAPER_GMACS} G"
    )
    try:
        from fvcore.nn import FlopCountAnalysis
    except ImportError:
        pass
    else:
        logging.getLogger("fvcore").setLevel(logging.ERROR)
        analysis = FlopCountAnalysis(net, image)
        analysis.unsupported_ops_warnings(False)
        analysis.uncalled_modules_warnings(False)
        print(f"  fvcore total (counts norms and upsampling too, not the scan): {analysis.total() / 1e9:.3f} G")
    return params / 1e6, macs / 1e9, scan / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # as the bundles do: subnormal decays are slow on CPUs

    print(
        f"paper Table 2: {PAPER_PARAMS_M} M parameters, {PAPER_GMACS} G MACs at 256 x 256. Official model file: "
        f"{OFFICIAL_PARAMS:,} parameters ({OFFICIAL_UNUSED:,} in unused 1x1 convolutions), {OFFICIAL_GMACS} G (fvcore), "
        "13 blocks."
    )
    size_report((1, 4, 4, 4), "Wave-MambaAD, default: the official block count the paper measured")
    size_report((1, 2, 2, 2), "Wave-MambaAD, the paper's [1, 2, 2, 2] read literally")


if __name__ == "__main__":
    main()
