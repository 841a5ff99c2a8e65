"""Timing and MAC-counting helpers shared by the benchmark scripts (imported as ``benchutils`` when a script runs from scripts/)."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode


def timed(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median wall time in seconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


class fvcore_macs(TorchDispatchMode):  # noqa: N801 - a context manager named like a function
    """MACs of the tensor operations run inside, by fvcore's rules.

    Convolutions count output elements times kernel volume times input channels per group, matrix
    products m x n x k, layer norm 5 (4 without affine) and batch norm 2 (1) per element in eval mode,
    as fvcore 0.1.5 does; everything else (activations, the selective scan, upsampling) counts 0."""

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = func.overloadpacket.__name__
        if name == "convolution":
            weight = args[1]
            self.total += out.numel() * math.prod(weight.shape[1:])
        elif name in ("mm", "addmm", "bmm", "baddbmm"):
            a, b = (args[-2], args[-1]) if name in ("mm", "bmm") else (args[1], args[2])
            self.total += a.numel() * b.shape[-1]
        elif name == "native_layer_norm":
            self.total += args[0].numel() * (5 if args[2] is not None else 4)
        elif name in ("native_batch_norm", "_native_batch_norm_legit", "_native_batch_norm_legit_no_training"):
            training = name == "_native_batch_norm_legit" or (name == "native_batch_norm" and args[5])
            affine = args[1] is not None
            self.total += args[0].numel() * ((5 if affine else 4) if training else (2 if affine else 1))
        return out


def count_macs(fn: Callable[[], object]) -> tuple[object, int]:
    """Run ``fn`` without autograd and return its output and its fvcore-rule MACs."""
    with torch.no_grad(), fvcore_macs() as counter:
        out = fn()
    return out, counter.total
