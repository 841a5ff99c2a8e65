"""The compiled kernel of the ``"cpu"`` backend of :func:`~medad_monai.ops.selective_scan.selective_scan_fn`.

``csrc/selective_scan_cpu.cpp`` runs the recurrence one (batch, channel) sequence at a time, its
N states in registers, over ATen's thread pool; its backward pass recomputes each sequence's
states into a per-thread buffer and runs the adjoint recurrence back over it. It reads every input
once per pass where the ``"torch"`` backend's closed form makes about ten passes over
(B, N, D, T) chunk tensors: about 5x faster on two cores (``scripts/bench_selective_scan.py``).

Neither mamba-ssm (CUDA only) nor PyTorch ships a CPU selective scan, hence this kernel. It is
built on first use with :func:`torch.utils.cpp_extension.load` (a C++ compiler and ninja, about
40 s once; the build is cached in ``$TORCH_EXTENSIONS_DIR``, by default
``~/.cache/torch_extensions``) with ``-O3 -ffast-math`` (which lets the compiler call the
vectorised ``exp`` of glibc) and, on Linux, ``-march=native``; the build's name carries a hash of
the CPU's feature flags and of the torch version, so a cache shared between different machines
or environments never hands one a build for another's instruction set or torch. Where it cannot be built, :func:`load_kernel` returns None with the
reason, and ``"auto"`` uses the ``"torch"`` backend.
"""

from __future__ import annotations

import hashlib
import logging
import platform
from functools import lru_cache
from pathlib import Path
from types import ModuleType

import torch

__all__ = ["kernel_error", "load_kernel"]

_SOURCE = Path(__file__).resolve().parent / "csrc" / "selective_scan_cpu.cpp"
_logger = logging.getLogger(__name__)


def _cpu_flags() -> str | None:
    """The CPU's feature flags (Linux ``/proc/cpuinfo``), or None where they cannot be read."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


@lru_cache(maxsize=1)
def _build() -> tuple[ModuleType | None, str | None]:
    """Build (or load the cached build of) the kernel once per process: ``(module, None)`` or ``(None, reason)``."""
    from torch.utils.cpp_extension import load

    flags = _cpu_flags()
    cflags = ["-O3", "-ffast-math", "-fopenmp"]
    machine = "portable"
    if flags is not None and platform.system() == "Linux":
        cflags.append("-march=native")
        machine = flags
    # a build links against one torch: another torch (another environment sharing the cache) builds its own
    tag = hashlib.sha256(f"{machine} {torch.__version__}".encode()).hexdigest()[:12]
    try:
        module = load(
            name=f"medad_selective_scan_cpu_{tag}",
            sources=[str(_SOURCE)],
            extra_cflags=cflags,
            extra_ldflags=["-fopenmp"],
            verbose=False,
        )
    except Exception as error:  # a missing compiler or ninja surfaces as several exception types
        reason = f"{type(error).__name__}: {str(error).strip().splitlines()[-1] if str(error).strip() else ''}"
        _logger.warning(f"the compiled CPU selective scan could not be built ({reason}); using the 'torch' backend.")
        return None, reason
    return module, None


def load_kernel() -> ModuleType | None:
    """The compiled kernel module, built on first call; None when it cannot be built (see :func:`kernel_error`)."""
    return _build()[0]


def kernel_error() -> str | None:
    """Why the kernel could not be built, or None when it was (builds it if not yet tried)."""
    return _build()[1]
