"""Speed of the selective-scan backends (medad_monai.ops.selective_scan).

Times the compiled CPU kernel ("cpu", when it builds) and the chunked pure-PyTorch backend
("torch") against the sequential reference ("reference": one step of the recurrence per
position on step-major tensors) on the same inputs, forward only (under ``torch.no_grad``) and forward plus backward, and prints the
parity of outputs and gradients, the median of a few interleaved repeats and the
speed-ups. The goal on CPU at the default shape is a forward speed-up of at least 5x and
a forward+backward speed-up of at least 3x.

Inputs follow Mamba's initialization: ``A = -exp(log(arange(1, N + 1)))`` for every
channel, ``delta_bias`` the inverse softplus of step sizes drawn log-uniformly in
[1e-3, 1e-1], raw ``delta`` small noise (so ``softplus(delta + delta_bias)`` stays near
those step sizes), input-dependent ``B`` and ``C`` of shape (B, N, L), ``D`` and ``z``.

``--device cuda`` runs on the GPU and also compares parity and time with mamba-ssm's
kernel ("cuda") when it can be imported.

Example::

    OMP_NUM_THREADS=2 python scripts/bench_selective_scan.py
    python scripts/bench_selective_scan.py --device cuda --length 4096
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable

import torch

from medad_monai.ops.selective_scan import available_backends, selective_scan_fn


def make_inputs(batch: int, dim: int, n_state: int, length: int, device: str, seed: int) -> dict[str, torch.Tensor]:
    """Mamba-style inputs for :func:`selective_scan_fn`, all requiring gradients."""
    gen = torch.Generator().manual_seed(seed)
    dt = torch.exp(torch.rand(dim, generator=gen) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
    inputs = {
        "u": torch.randn(batch, dim, length, generator=gen),
        "delta": 0.1 * torch.randn(batch, dim, length, generator=gen),
        "A": -torch.exp(torch.log(torch.arange(1, n_state + 1, dtype=torch.float32))).repeat(dim, 1),
        "B": torch.randn(batch, n_state, length, generator=gen),
        "C": torch.randn(batch, n_state, length, generator=gen),
        "D": torch.ones(dim),
        "z": torch.randn(batch, dim, length, generator=gen),
        "delta_bias": dt + torch.log(-torch.expm1(-dt)),  # inverse softplus
    }
    return {name: x.to(device).requires_grad_() for name, x in inputs.items()}


def run(inputs: dict[str, torch.Tensor], backend: str, backward: bool, cotangent: torch.Tensor) -> torch.Tensor:
    """One call of the scan (and its backward pass when ``backward``, leaving fresh ``.grad``s)."""
    for x in inputs.values():
        x.grad = None
    with torch.set_grad_enabled(backward):
        out = selective_scan_fn(**inputs, delta_softplus=True, backend=backend)
        if backward:
            out.backward(cotangent)
    return out


def seconds(fn: Callable[[], object], device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--state", type=int, default=16)
    parser.add_argument("--length", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda needs a CUDA device")

    inputs = make_inputs(args.batch, args.dim, args.state, args.length, args.device, args.seed)
    cotangent = torch.randn_like(inputs["u"])
    available = available_backends()
    backends = ["torch", "reference"]
    if args.device == "cuda" and "cuda" in available:
        backends.insert(0, "cuda")
    if args.device == "cpu" and "cpu" in available:
        backends.insert(0, "cpu")

    print(
        f"selective scan, B={args.batch} D={args.dim} N={args.state} L={args.length}, input-dependent B/C, "
        f"D, z, delta_softplus; device={args.device}, torch threads={torch.get_num_threads()}"
    )
    outputs, grads = {}, {}  # warm-up and parity
    for name in backends:
        outputs[name] = run(inputs, name, True, cotangent).detach()
        grads[name] = {key: x.grad for key, x in inputs.items()}
    for name in backends:
        if name != "reference":
            grad_error = max(relative_error(grads[name][key], grads["reference"][key]) for key in inputs)
            print(
                f"parity {name} vs reference: relative error of the output "
                f"{relative_error(outputs[name], outputs['reference']):.2e}, of the gradients <= {grad_error:.2e}"
            )

    times: dict[tuple[str, bool], list[float]] = {(n, b): [] for n in backends for b in (False, True)}
    for _ in range(args.repeats):  # interleaved, so load from other processes hits every backend alike
        for backward in (False, True):
            for name in backends:
                times[name, backward].append(seconds(lambda: run(inputs, name, backward, cotangent), args.device))
    median = {key: statistics.median(values) for key, values in times.items()}

    print(f"median of {args.repeats} repeats:")
    print(f"{'backend':<10} {'forward ms':>12} {'fwd+bwd ms':>12} {'fwd speed-up':>13} {'fwd+bwd speed-up':>17}")
    for name in backends:
        fwd, both = median[name, False], median[name, True]
        print(
            f"{name:<10} {1e3 * fwd:>12.1f} {1e3 * both:>12.1f} "
            f"{median['reference', False] / fwd:>12.2f}x {median['reference', True] / both:>16.2f}x"
        )


if __name__ == "__main__":
    main()
