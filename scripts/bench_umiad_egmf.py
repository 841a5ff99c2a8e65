"""UMIAD-EGMF size per module against the paper, and the edge-injection check.

Prints:
1. parameters per module against the paper's 14 M (Table 4): the frozen encoder, the EGM, the EAM,
   each scale's flow, the MFF, the trainable total (what the 14 M is compared with: the frozen ResNet18
   up to ``layer4`` alone has 11.2 M) and the total with the encoder; also for the literal EAM
   (``edge_injection="feature"``) and the complexity section's 3 x 3 coupling subnets;
2. with ``--edge-injection-check``: how the EAM output entering the flows as their data
   (``edge_injection="feature"``) compares with the conditional coupling (default), with eq. 8's raw GAP
   factor and with the sigmoid gate. The deepest scale's edge path and flow are trained alone on fixed
   encoder features of smooth random images; printed: the per-dimension negative log-likelihood on the
   training and on held-out features, and the spread (standard deviation over images) of the flow's input
   ``z^4`` relative to that of the pooled ``F4``. (64 images are far too few for a 512-dimensional
   density: held-out values show overfitting; the check is about divergence and contraction.)

Latency, side by side with the other detectors in one process: ``scripts/bench_detectors.py``.

Usage: ``python scripts/bench_umiad_egmf.py [--threads 2] [--edge-injection-check] [--check-size 128] [--check-steps 200] [--check-lr 1e-3]``
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from medad_monai.detectors import UMIADEGMF

PAPER_PARAMS_M = 14.0


def count(module: torch.nn.Module | None, trainable_only: bool = False) -> float:
    if module is None:
        return 0.0
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only) / 1e6


def parameter_table() -> None:
    variants = {
        "default (coupling EAM)": {},
        "literal EAM (feature)": {"edge_injection": "feature"},
        "3x3 coupling subnets": {"subnet_kernel_size": 3},
    }
    print(f"parameters (M), 256 x 256; the paper: {PAPER_PARAMS_M} M")
    header = f"{'module':<24}" + "".join(f"{name:>26}" for name in variants)
    print(header)
    nets = {name: UMIADEGMF(image_size=(256, 256), **kwargs) for name, kwargs in variants.items()}
    rows = [
        ("encoder (frozen)", lambda n: count(n.encoder)),
        ("EGM", lambda n: count(n.edge)),
        ("EAM", lambda n: count(n.aggregation)),
        *[(f"flow g^{k + 1}", lambda n, k=k: count(n.flows[k])) for k in range(4)],
        ("MFF", lambda n: count(n.fusion)),
    ]
    for label, fn in rows:
        print(f"{label:<24}" + "".join(f"{fn(net):>26.3f}" for net in nets.values()))
    for label, fn in (("trainable", lambda n: count(n, True)), ("total with encoder", count)):
        cells = "".join(
            f"{f'{fn(net):.2f} ({100 * (fn(net) / PAPER_PARAMS_M - 1):+.0f}%)':>26}" for net in nets.values()
        )
        print(f"{label:<24}{cells}")


def smooth_images(n: int, size: int, generator: torch.Generator) -> torch.Tensor:
    return F.avg_pool2d(torch.randn(n, 3, size, size, generator=generator), 5, 1, 2) * 3


def deepest_scale_nll(net: UMIADEGMF, features: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The deepest scale's flow input ``z^4`` and its per-dimension negative log-likelihood (batch mean)."""
    edge = net.edge(features[0], features[1])
    log_det = 0.0
    if net.edge_injection == "feature":
        z = net.pool(net.aggregation(features[3], edge)[0])
    else:
        z, log_det = net.aggregation(net.pool(features[3]), edge)
    u, flow_log_det = net.flows[3](z, [net.conditions(z.shape[0])[3]])
    return z, ((0.5 * u.flatten(1).square().sum(1) - flow_log_det - log_det) / u[0].numel()).mean()


def edge_injection_check(size: int, steps: int, lr: float) -> None:
    generator = torch.Generator().manual_seed(1)
    torch.manual_seed(0)
    reference = UMIADEGMF(image_size=(size, size))
    reference.encoder.calibrate_batch_norm([smooth_images(8, size, generator) for _ in range(4)])
    with torch.no_grad():
        train = [reference.encoder(smooth_images(8, size, generator)) for _ in range(8)]
        test = [torch.cat(f) for f in zip(*[reference.encoder(smooth_images(8, size, generator)) for _ in range(2)])]
        base_spread = reference.pool(test[3]).std(0).mean().item()
    print(f"edge-injection check: {size}x{size}, the deepest scale alone, {steps} Adam steps, lr {lr}, "
          f"64 training / 16 held-out smooth random images")
    for injection in ("feature", "coupling"):
        for gate in ("none", "sigmoid"):
            torch.manual_seed(0)
            net = UMIADEGMF(image_size=(size, size), edge_injection=injection, eam_gate=gate, use_mff=False)
            params = [*net.edge.parameters(), *net.aggregation.parameters(), *net.flows[3].parameters()]
            optimizer = torch.optim.Adam(params, lr=lr)
            worst = 0.0
            for step in range(steps):
                _, loss = deepest_scale_nll(net, train[step % len(train)])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                worst = max(worst, loss.item()) if torch.isfinite(loss) else float("inf")
            with torch.no_grad():
                z, held_out = deepest_scale_nll(net, test)
            print(f"  {injection:<8} gate {gate:<7}: train NLL/dim {loss.item():10.3f} (worst {worst:10.3g}), "
                  f"held-out {held_out.item():10.3f}, spread of z^4 / spread of pooled F4 "
                  f"{z.std(0).mean().item() / base_spread:7.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--edge-injection-check", action="store_true")
    parser.add_argument("--check-size", type=int, default=128)
    parser.add_argument("--check-steps", type=int, default=200)
    parser.add_argument("--check-lr", type=float, default=1e-3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # as the bundles do: subnormal decays are slow on CPUs
    torch.manual_seed(0)
    parameter_table()
    if args.edge_injection_check:
        edge_injection_check(args.check_size, args.check_steps, args.check_lr)


if __name__ == "__main__":
    main()
