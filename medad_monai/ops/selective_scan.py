"""Selective scan (the S6 recurrence of Mamba) with interchangeable backends.

:func:`selective_scan_fn` has the signature and semantics of mamba-ssm's
``selective_scan_fn``. For every batch ``b``, channel ``d`` and state ``n`` it runs,
over the sequence axis ``t`` and from a zero state,

    h_t = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t
    y_t = <C_t, h_t> + D * u_t,     out_t = y_t * silu(z_t)   (when ``z`` is given)

after ``delta <- softplus(delta + delta_bias)`` (bias and softplus optional). The
arithmetic is float32 whatever the input dtype (as in mamba-ssm; float64 inputs stay
float64) and ``out`` is cast back to ``u``'s dtype.

Backends (callers never branch on them):

- ``"cuda"``: mamba-ssm's fused kernel
  (``mamba_ssm.ops.selective_scan_interface.selective_scan_fn``). Used only when it
  imports and the tensors are float32/float16/bfloat16 on a CUDA device. It is
  imported lazily, so CPU code never touches mamba-ssm. Like mamba-ssm itself, it
  ignores the gradient of ``last_state``.
- ``"cpu"``: this project's compiled CPU kernel
  (:mod:`medad_monai.ops.selective_scan_cpu`), built on first use with a C++ compiler;
  the fastest on CPU, used for CPU tensors when it builds and nothing is being traced.
- ``"torch"``: this project's chunked pure-PyTorch scan (:class:`_ChunkedScan`),
  used everywhere else (and while tracing: its operations are what a trace records). The sequence is cut into chunks; inside a chunk the
  recurrence is solved in closed form from cumulative sums of the log-decays and of
  the rescaled inputs, and one small carry state passes sequentially from chunk to
  chunk. The chunk length adapts to the largest decay so that nothing overflows
  (:func:`_chunk_length` explains the choice). Step size, skip term and gate are
  applied once to whole (B, D, L) tensors, outside the loop over chunks, and the
  backward pass is written by hand: it keeps only the inputs and the per-chunk
  carries, and recomputes each chunk's states.
- ``"reference"``: a plain sequential loop over the sequence, kept as the ground
  truth for tests (:func:`selective_scan_ref`).

``backend`` picks one explicitly; otherwise the environment variable
``MEDAD_SELECTIVE_SCAN_BACKEND`` does; otherwise ``"auto"`` chooses ``"cuda"`` when it
can run, else ``"cpu"`` when it can, else ``"torch"``. :func:`available_backends` lists what can run here.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from functools import lru_cache

import torch
import torch.nn.functional as F
from monai.utils import OptionalImportError, optional_import
from torch.autograd.function import once_differentiable

from medad_monai.ops.selective_scan_cpu import kernel_error, load_kernel

__all__ = ["BACKEND_ENV_VAR", "available_backends", "selective_scan_fn", "selective_scan_ref"]

BACKEND_ENV_VAR = "MEDAD_SELECTIVE_SCAN_BACKEND"
_BACKENDS = ("auto", "cuda", "cpu", "torch", "reference")
_CUDA_KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

# Largest |sum of delta * A| over one chunk of the torch backend (see _chunk_length).
_LOG_DECAY_RANGE = 60.0
# Chunks hold about this many state elements (B * N * D * T), so the work tensors stay a few
# megabytes, with at least _MIN_CHUNK steps to spread the per-chunk overhead of large states.
_CHUNK_ELEMENTS = 2**20
_MIN_CHUNK, _MAX_CHUNK = 16, 64
# Chunk length of a traced scan (TorchScript export): the segment-sum form costs O(T^2) per chunk.
_TRACE_CHUNK = 16
# On a GPU a chunk's time is its dozen kernel launches, not cache misses: chunks as long as the decays allow.
_MAX_CHUNK_CUDA = 256


@lru_cache(maxsize=None)
def _mamba_kernel() -> Callable | None:
    """mamba-ssm's ``selective_scan_fn``, or None when it cannot be imported.

    mamba-ssm raises ImportError, or OSError when its compiled extension does not load;
    ``optional_import`` turns both into a flag, and the result is cached so a failed
    import is not retried on every call.
    """
    kernel, found = optional_import("mamba_ssm.ops.selective_scan_interface", name="selective_scan_fn")
    return kernel if found else None


def available_backends() -> list[str]:
    """Backends that can run in this environment, fastest first.

    ``"cuda"`` is listed when mamba-ssm imports and a CUDA device is present, ``"cpu"`` when the
    compiled CPU kernel builds (which this call does, once, if it has not been tried yet).
    """
    backends = ["torch", "reference"]
    if load_kernel() is not None:
        backends.insert(0, "cpu")
    if torch.cuda.is_available() and _mamba_kernel() is not None:
        backends.insert(0, "cuda")
    return backends


def _resolve_backend(backend: str | None, u: torch.Tensor) -> str:
    """The concrete backend for ``u``: argument, else environment variable, else auto."""
    source = "backend"
    if backend is None:
        backend = os.environ.get(BACKEND_ENV_VAR) or "auto"
        source = f"environment variable {BACKEND_ENV_VAR}"
    if backend not in _BACKENDS:
        raise ValueError(f"{source} must be one of {', '.join(_BACKENDS)}; got {backend!r}.")
    cuda_ok = u.is_cuda and u.dtype in _CUDA_KERNEL_DTYPES and _mamba_kernel() is not None
    if backend == "auto":
        if cuda_ok:
            return "cuda"
        # a trace records tensor operations, and the compiled kernel is one opaque call
        return "cpu" if u.device.type == "cpu" and not torch.jit.is_tracing() and load_kernel() is not None else "torch"
    if backend == "cpu":
        if u.device.type != "cpu":
            raise ValueError(f"{source} asks for 'cpu', which needs CPU tensors; u is on {u.device}.")
        if torch.jit.is_tracing():
            raise ValueError(f"{source} asks for 'cpu', which a trace cannot record: use 'torch' while tracing.")
        if load_kernel() is None:
            raise OptionalImportError(
                f"{source} asks for 'cpu', but the compiled CPU selective scan could not be built "
                f"({kernel_error()}); it needs a C++ compiler and ninja. Use 'torch' instead."
            )
    if backend == "cuda" and not cuda_ok:
        if _mamba_kernel() is None:
            raise OptionalImportError(
                f"{source} asks for 'cuda', but mamba_ssm.ops.selective_scan_interface.selective_scan_fn "
                "could not be imported; install medad-monai[cuda] on a CUDA machine, or use 'torch'."
            )
        if not u.is_cuda:
            raise ValueError(f"{source} asks for 'cuda', which needs CUDA tensors; u is on {u.device}.")
        raise TypeError(
            f"{source} asks for 'cuda', whose kernel supports float32, float16 and bfloat16; u is {u.dtype}."
        )
    return backend


def _check_tensor(name: str, tensor: torch.Tensor, device: torch.device) -> None:
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}.")
    if tensor.is_complex():
        raise TypeError(f"{name} must be real: complex {name} ({tensor.dtype}) is not supported.")
    if not tensor.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {tensor.dtype}.")
    if tensor.device != device:
        raise ValueError(f"{name} must be on the same device as u ({device}), got {tensor.device}.")


def _check_shape(name: str, tensor: torch.Tensor, layout: str, shape: tuple[int, ...]) -> None:
    if tuple(tensor.shape) != shape:
        raise ValueError(f"{name} must have shape {layout} = {shape}, got {tuple(tensor.shape)}.")


def _check_inputs(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None,
    z: torch.Tensor | None,
    delta_bias: torch.Tensor | None,
) -> None:
    """Raise TypeError / ValueError naming the first argument with a wrong type, dtype or shape."""
    if not isinstance(u, torch.Tensor):
        raise TypeError(f"u must be a torch.Tensor, got {type(u).__name__}.")
    for name, tensor in (("u", u), ("delta", delta), ("A", A), ("B", B), ("C", C)):
        _check_tensor(name, tensor, u.device)
    for name, tensor in (("D", D), ("z", z), ("delta_bias", delta_bias)):
        if tensor is not None:
            _check_tensor(name, tensor, u.device)
    if u.ndim != 3 or 0 in u.shape:
        raise ValueError(f"u must have shape (B, D, L) with non-zero sizes, got {tuple(u.shape)}.")
    batch, dim, length = u.shape
    _check_shape("delta", delta, "(B, D, L)", (batch, dim, length))
    if A.ndim != 2 or A.shape[0] != dim or A.shape[1] == 0:
        raise ValueError(f"A must have shape (D, N) = ({dim}, N) with N >= 1, got {tuple(A.shape)}.")
    n_state = A.shape[1]
    for name, tensor in (("B", B), ("C", C)):
        if tensor.ndim == 2:
            _check_shape(name, tensor, "(D, N)", (dim, n_state))
        elif tensor.ndim == 3:
            _check_shape(name, tensor, "(B, N, L)", (batch, n_state, length))
        elif tensor.ndim == 4:
            groups = tensor.shape[1]
            if groups == 0 or dim % groups:
                raise ValueError(f"{name} has G = {groups} groups in shape (B, G, N, L), which must divide D = {dim}.")
            _check_shape(name, tensor, "(B, G, N, L)", (batch, groups, n_state, length))
        else:
            raise ValueError(f"{name} must have shape (D, N), (B, N, L) or (B, G, N, L), got {tuple(tensor.shape)}.")
    if D is not None:
        _check_shape("D", D, "(D,)", (dim,))
    if z is not None:
        _check_shape("z", z, "(B, D, L)", (batch, dim, length))
    if delta_bias is not None:
        _check_shape("delta_bias", delta_bias, "(D,)", (dim,))


def _compute_dtype(*tensors: torch.Tensor | None) -> torch.dtype:
    """float32, or float64 when an input is float64 (mamba-ssm itself computes in float32 only)."""
    return torch.float64 if any(t is not None and t.dtype == torch.float64 for t in tensors) else torch.float32


# ----------------------------------------------------------------------------------------------
# "torch" backend
# ----------------------------------------------------------------------------------------------


def _as_groups(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """B or C as a (B or 1, N, G, L or 1) tensor; channel d reads group d // (D / G).

    (D, N) becomes (1, N, D, 1): one group per channel, shared over batch and time.
    (B, N, L) becomes (B, N, 1, L) and (B, G, N, L) becomes (B, N, G, L).
    """
    if x.ndim == 2:
        x = x.t()[None, :, :, None]
    elif x.ndim == 3:
        x = x.unsqueeze(2)
    else:
        x = x.transpose(1, 2)
    return x.to(dtype).contiguous()


def _time_slice(x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """Steps ``start:stop`` of a (..., L) tensor; ``x`` itself when it is shared over time (L = 1)."""
    return x if x.shape[-1] == 1 else x[..., start:stop]


def _pad_time(x: torch.Tensor, pad: int) -> torch.Tensor:
    """``x`` (..., L) with ``pad`` zero steps appended; unchanged when shared over time (L = 1)."""
    return x if pad == 0 or x.shape[-1] == 1 else F.pad(x, (0, pad))


def _grad_accumulator(x: torch.Tensor, chunk: int) -> torch.Tensor:
    """Zeros to accumulate the gradient of a (b, N, G, L or 1) tensor over the chunks.

    A tensor shared over time (L = 1) gets one slot per step of a chunk, summed once at the
    end by :func:`_accumulated`: on CPU a reduction over the last axis per chunk is slow.
    """
    return x.new_zeros(*x.shape[:3], chunk) if x.shape[-1] == 1 else torch.zeros_like(x)


def _accumulator_slice(acc: torch.Tensor, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """The part of ``acc`` (from :func:`_grad_accumulator` for ``x``) that steps ``start:stop`` add to."""
    return acc if x.shape[-1] == 1 else acc[..., start:stop]


def _accumulated(acc: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The gradient of ``x`` from its accumulator."""
    return acc.sum(-1, keepdim=True) if x.shape[-1] == 1 else acc


def _outer(x: torch.Tensor, g: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Write ``x[b, d, t] * g[b, n, d // (D / G), t]`` into ``out`` (B, N, D, T) and return it.

    ``x`` is (B, D, T) and ``g`` (b, N, G, t), broadcast over batch and time when b or t is 1.
    """
    batch, dim, steps = x.shape
    n_state, groups = g.shape[1:3]
    shape = (batch, n_state, groups, dim // groups, steps)
    torch.mul(x.view(batch, 1, *shape[2:]), g.unsqueeze(3), out=out.view(shape))
    return out


def _inner(h: torch.Tensor, g: torch.Tensor, scratch: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Write ``sum_n h[b, n, d, t] * g[b, n, d // (D / G), t]`` into ``out`` (B, D, T), for ``h`` (B, N, D, T).

    ``g`` is (b, N, G, t); the product is formed in ``scratch``, which may be ``h`` itself.
    ``out`` may be a strided view, e.g. a chunk of a (B, D, L) tensor: the sum is written
    in place, without a copy.
    """
    batch, n_state, dim, steps = h.shape
    groups = g.shape[2]
    shape = (batch, n_state, groups, dim // groups, steps)
    product = torch.mul(h.view(shape), g.unsqueeze(3), out=scratch.view(shape))
    return torch.sum(product.view(h.shape), 1, out=out)


def _outer_grad(grad: torch.Tensor, x: torch.Tensor, shape: torch.Size, scratch: torch.Tensor) -> torch.Tensor:
    """Gradient wrt ``g`` of ``_outer(x, g)`` given the gradient (B, N, D, T) of its output.

    Sums ``grad * x`` over the channels of each group and, when ``shape`` (b, N, G, T)
    has b = 1, over the batch; ``scratch`` (B, N, D, T) may be ``grad`` itself.
    """
    batch, n_state, dim, steps = grad.shape
    groups = shape[2]
    if groups == dim:
        return torch.mul(grad, x.unsqueeze(1), out=scratch).sum_to_size(shape)
    shape5 = (batch, n_state, groups, dim // groups, steps)
    product = torch.mul(grad.view(shape5), x.view(batch, 1, *shape5[2:]), out=scratch.view(shape5))
    return product.sum(3).sum_to_size(shape)


def _reverse_cumsum(x: torch.Tensor, upper: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``out[..., t] = sum_{s>=t} x[..., s]`` for contiguous (..., T) tensors.

    ``upper`` is the (T, T) matrix of ones on and above the diagonal. A product with its
    transpose: torch has no reversed cumsum, flipping costs two extra copies per chunk, and
    ``total - cumsum`` would cancel catastrophically between terms as far apart as ``e**+-60``.
    """
    steps = x.shape[-1]
    torch.matmul(x.view(-1, steps), upper.t(), out=out.view(-1, steps))
    return out


def _raw_and_step_sizes(
    delta: torch.Tensor, delta_bias: torch.Tensor | None, delta_softplus: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """``delta + delta_bias`` and the step sizes ``softplus`` of it (or it), both (B, D, L), bias
    and softplus optional; the backward passes need the first for the softplus's gradient."""
    raw = delta if delta_bias is None else delta + delta_bias[:, None]
    return raw, F.softplus(raw) if delta_softplus else raw


class _Decays:
    """Decays of every chunk of a padded sequence, in the closed form of :func:`_chunk_states`.

    Built from ``dt`` (B, D, L'), the step sizes with L' a multiple of ``chunk``, and ``At``
    = A as (1, N, D, 1). For chunk ``i``, :meth:`relative` gives
    ``rel_t = exp(A * (S_t - S_m))`` (B, N, D, T), where ``S_t = sum_{k=1..t} dt_k`` sums the
    chunk's steps after its first and ``m = T // 2``: every decay between two steps of the chunk
    is a ratio ``rel_t / rel_s``, and centring the exponents on the middle step halves their
    range, so chunks can be twice as long as with ``S_0 = 0`` as reference (see
    :func:`_chunk_length`). ``first[..., i]`` (B, N, D) is ``exp(dt_0 A)``, the decay of the
    state entering the chunk.

    ``rel`` is ``exp2`` of the outer product of the exponents with ``A log2(e)``: ``torch.exp2``
    runs about twice as fast as ``torch.exp`` on CPU (and ``torch.pow`` of a broadcast base
    several times slower), and these exponentials are the largest single cost of the scan.
    """

    def __init__(self, dt: torch.Tensor, At: torch.Tensor, chunk: int) -> None:
        batch, dim, length = dt.shape
        steps = dt.view(batch, dim, length // chunk, chunk)
        middle = chunk // 2
        after_first = torch.ones(chunk, chunk, dtype=dt.dtype, device=dt.device).triu_()
        after_first[0] = 0
        # column t sums dt_1..dt_t minus dt_1..dt_m: the exponent of step t relative to the middle
        centred = after_first - after_first[:, middle : middle + 1]
        self.exponents = torch.matmul(steps, centred)  # (B, D, C, T)
        self.At2 = At * math.log2(math.e)
        self.first = torch.exp2(steps[:, None, :, :, 0] * self.At2)  # (B, N, D, C)

    def relative(self, i: int, out: torch.Tensor) -> torch.Tensor:
        """``rel`` of chunk ``i`` written into ``out`` (B, N, D, T)."""
        return torch.mul(self.exponents[:, None, :, i], self.At2, out=out).exp2_()


def _chunk_states(
    x: torch.Tensor, rel: torch.Tensor, carry: torch.Tensor, out: torch.Tensor
) -> torch.Tensor:
    """Write the states of one chunk, ``h_t = rel_t * sum_{s<=t} x'_s / rel_s``, into ``out``.

    ``x`` (B, N, D, T) is the input term ``dt_t u_t B_t`` (``out`` may be ``x``); ``x'`` is
    ``x`` with ``carry`` (B, N, D), the decayed state entering the chunk, added to its first
    step. ``rel`` is from :class:`_Decays`.
    """
    torch.div(x, rel, out=out)
    out[..., 0].addcdiv_(carry, rel[..., 0])
    return out.cumsum_(-1).mul_(rel)


def _chunk_states_segsum(x: torch.Tensor, log_decay: torch.Tensor, carry: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """The states of one chunk, as :func:`_chunk_states`, in a form that no step size can overflow.

    ``h_t = sum_{s<=t} exp(sum_{k=s+1..t} a_k) x'_s`` with ``a_k = log_decay[..., k]`` (``delta_k A``, never
    positive) and ``x'`` the input terms ``x`` (B, N, D, T) with ``carry`` (B, N, D) added to the first step
    (``out`` may be ``x``: it is copied first).
    Every exponent is a sum of non-positive terms, formed as a segment sum (a masked running sum, not a
    difference of running sums), so it stays exact and its exponential stays in [0, 1] whatever the step
    sizes: O(T^2) work per chunk instead of O(T). Used while tracing (:func:`_scan_torch`), where the
    chunk length is frozen into the graph and :func:`_chunk_length` cannot adapt it to each input.
    """
    steps = x.shape[-1]
    xs = x.clone()
    xs[..., 0] += carry
    strictly_after = torch.ones(steps, steps, dtype=torch.bool, device=x.device).tril_(-1)  # [k, s]: k > s
    # segment[..., t, s] = sum over k <= t of a_k [k > s]
    segment = log_decay.unsqueeze(-1).expand(*log_decay.shape, steps).masked_fill(~strictly_after, 0.0).cumsum(-2)
    weights = segment.exp_().masked_fill_(strictly_after.t(), 0.0)  # keep s <= t
    return torch.matmul(weights, xs.unsqueeze(-1), out=out.unsqueeze(-1)).squeeze(-1)


def _padded_chunks(
    dt: torch.Tensor, u: torch.Tensor, At: torch.Tensor, Bg: torch.Tensor, Cg: torch.Tensor, chunk: int
) -> tuple[torch.Tensor, torch.Tensor, _Decays, torch.Tensor, torch.Tensor]:
    """What the forward and backward passes of :class:`_ChunkedScan` both loop over.

    The step sizes ``dt`` and ``u`` (B, D, L), and ``Bg``, ``Cg`` when they vary over time, are
    padded with zero steps (``dt = 0``: no decay, no input) to a multiple of ``chunk``.

    Returns:
        The padded ``dt`` and ``dt * u`` (B, D, L'), the :class:`_Decays` of every chunk, and the
        padded ``Bg`` and ``Cg``.
    """
    pad = -dt.shape[-1] % chunk
    dt_p = _pad_time(dt, pad)
    return dt_p, _pad_time(dt * u, pad), _Decays(dt_p, At, chunk), _pad_time(Bg, pad), _pad_time(Cg, pad)


def _chunk_length(
    delta: torch.Tensor, delta_bias: torch.Tensor | None, delta_softplus: bool, A: torch.Tensor
) -> int:
    """Number of steps T per chunk of the torch backend.

    ``delta`` (B, D, L) is the raw step size, turned into ``softplus(delta + delta_bias)``
    as in :func:`selective_scan_fn`; ``A`` is (D, N).

    Inside a chunk the states are ``rel_t * cumsum_s(x_s / rel_s)`` with
    ``rel_t = exp(P_t)``, ``P_t = A * sum_{k=m+1..t} delta_k`` centred on the middle step
    ``m = T // 2`` (:class:`_Decays`). That closed form needs ``1 / rel`` and ``rel`` to stay
    finite, and its error grows with ``|P|``: float32 rounds ``P`` to about ``6e-8 * |P|``,
    which becomes the relative error of every decay. ``|P|`` spans at most ``T // 2`` steps,
    so T is the largest length with ``(T // 2) * max|delta * A| <= 60``: ``exp(+-60)`` is
    about ``1e+-26``, leaving a factor 1e12 below float32 overflow for ``x`` and its running
    sums, and decays stay accurate to a few 1e-6. The first step of a chunk never enters
    ``P`` (it only decays the incoming carry, where ``exp(delta_0 A)`` may underflow to 0
    harmlessly), so a single step may decay by any amount: for ``max|delta * A| > 60`` the
    chunks shrink to T = 1 and the scan becomes sequential, slower but exact. Typical Mamba
    values (delta <= 0.1, |A| <= 16) allow T >= 75. Below that bound, on CPU, T is capped so
    that a chunk holds about 2**20 state elements (B * N * D * T), which keeps the working
    tensors a few megabytes, but kept between 16 and 64 steps, so that large states still
    amortize the per-chunk work; on CUDA, where each chunk costs a fixed number of kernel
    launches whatever its size, the cap is 256 steps. T never exceeds L.
    """
    batch, dim, length = delta.shape
    if delta.is_cuda:
        cap = min(length, _MAX_CHUNK_CUDA)
    else:
        cap = min(length, max(_MIN_CHUNK, min(_MAX_CHUNK, _CHUNK_ELEMENTS // (batch * dim * A.shape[1]))))
    high, low = delta.amax(dim=(0, 2)), delta.amin(dim=(0, 2))  # per channel
    if delta_bias is not None:
        high, low = high + delta_bias, low + delta_bias
    # softplus is positive and increasing, so its largest value comes from the largest input
    largest = F.softplus(high) if delta_softplus else torch.maximum(high, -low)
    step = (largest * A.abs().amax(dim=1)).max().item()
    if not math.isfinite(step):
        return 1
    if step * (cap // 2) <= _LOG_DECAY_RANGE:
        return cap
    return min(cap, 2 * int(_LOG_DECAY_RANGE // step) + 1)


def _skip_and_gate(
    ctx, y: torch.Tensor, u: torch.Tensor, D: torch.Tensor | None, z: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``out = (y + D u) * silu(z)`` (B, D, L), and the ungated output that the gradient of ``z``
    needs (None when there is no ``z`` or no gradient to compute)."""
    if D is not None:
        y = torch.addcmul(y, u, D[:, None])
    ungated = y if z is not None and any(ctx.needs_input_grad) else None
    return (y * F.silu(z) if z is not None else y.contiguous()), ungated


def _skip_and_gate_backward(
    dout: torch.Tensor, u: torch.Tensor, D: torch.Tensor | None, z: torch.Tensor | None, ungated: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Through :func:`_skip_and_gate`: the gradient reaching the scan's ``y``, and those of ``z`` and ``D``."""
    dout = dout.contiguous()
    dz = None
    if z is not None:
        dz = torch.ops.aten.silu_backward(dout * ungated, z)
        dout = dout * F.silu(z)
    return dout, dz, None if D is None else (dout * u).sum((0, 2))


def _input_grads(
    d_u: torch.Tensor,
    d_dt: torch.Tensor,
    dout: torch.Tensor,
    raw: torch.Tensor,
    D: torch.Tensor | None,
    delta_bias: torch.Tensor | None,
    delta_softplus: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The gradients of ``u``, ``delta`` and ``delta_bias`` from the scan's ``d_u`` and ``d_dt``
    (changed in place), the skip term's share of ``u``'s and the softplus."""
    if D is not None:
        d_u.addcmul_(dout, D[:, None])
    d_delta = torch.ops.aten.softplus_backward(d_dt, raw, 1.0, 20.0) if delta_softplus else d_dt
    return d_u, d_delta, None if delta_bias is None else d_delta.sum((0, 2))


class _ChunkedScan(torch.autograd.Function):
    """The whole selective scan, chunk by chunk, with a hand-written backward pass.

    Inputs: ``u``, ``delta`` and ``z`` (B, D, L); ``At`` = A as (1, N, D, 1); ``Bg`` and
    ``Cg`` (B or 1, N, G, L or 1) from :func:`_as_groups`; ``D`` and ``delta_bias`` (D,);
    ``z``, ``D``, ``delta_bias`` may be None; ``chunk`` from :func:`_chunk_length`.
    Outputs: ``out`` (B, D, L) and the last state (B, D, N).

    Everything that is (B, D, L) (step sizes, ``dt * u``, the skip term and the gate) is
    computed once on whole contiguous tensors; only the (B, N, D, T) state work runs per
    chunk. The sequence is padded to a multiple of the chunk (:func:`_padded_chunks`), so
    every chunk has the same length. The working layout is
    (B, N, D, T): time last, so the running sums and the chunk slices of (B, D, L) inputs
    need no transposes, and sums over the state run over an outer axis. Only the inputs,
    the state entering each chunk and (with ``z``) the ungated output are saved; the
    backward pass recomputes each chunk's states and runs the adjoint recurrence
    ``g_t = C_t dy_t + exp(delta_{t+1} A) g_{t+1}`` backwards with the same closed form.
    The (B, N, D, T) working tensors are allocated once per call and reused by every
    chunk: fresh multi-megabyte CPU allocations cost page faults that would dominate.
    """

    @staticmethod
    def forward(ctx, u, delta, At, Bg, Cg, D, z, delta_bias, delta_softplus, chunk):  # type: ignore[override]
        batch, dim, length = u.shape
        n_state = At.shape[1]
        dt_p, dt_u, decays, Bp, Cp = _padded_chunks(_raw_and_step_sizes(delta, delta_bias, delta_softplus)[1], u, At, Bg, Cg, chunk)
        n_chunks = dt_u.shape[-1] // chunk
        ys = torch.empty_like(dt_u)
        carries = u.new_empty(n_chunks + 1, batch, n_state, dim)  # carries[i]: state before chunk i
        carries[0] = 0
        rel, states = (u.new_empty(batch, n_state, dim, chunk) for _ in range(2))
        tracing = torch.jit.is_tracing()
        for i in range(n_chunks):
            start, stop = i * chunk, (i + 1) * chunk
            x = _outer(dt_u[..., start:stop], _time_slice(Bp, start, stop), out=states)
            carry = decays.first[..., i] * carries[i]
            if tracing:  # the frozen chunk length must hold for any input's step sizes
                _chunk_states_segsum(x, dt_p[:, None, :, start:stop] * At, carry, out=states)
            else:
                decays.relative(i, out=rel)
                _chunk_states(x, rel, carry, out=states)
            carries[i + 1] = states[..., -1]
            _inner(states, _time_slice(Cp, start, stop), scratch=states, out=ys[..., start:stop])
        out, ungated = _skip_and_gate(ctx, ys[..., :length], u, D, z)
        ctx.save_for_backward(u, delta, At, Bg, Cg, D, z, delta_bias, carries, ungated)
        ctx.chunk, ctx.delta_softplus = chunk, delta_softplus
        return out, carries[-1].transpose(1, 2).contiguous()

    @staticmethod
    @once_differentiable
    def backward(ctx, dout, dlast):  # type: ignore[override]
        u, delta, At, Bg, Cg, D, z, delta_bias, carries, ungated = ctx.saved_tensors
        (batch, dim, length), chunk = u.shape, ctx.chunk
        n_state = At.shape[1]
        raw, dt = _raw_and_step_sizes(delta, delta_bias, ctx.delta_softplus)
        dout, dz, dD = _skip_and_gate_backward(dout, u, D, z, ungated)
        dt_p, dt_u, decays, Bp, Cp = _padded_chunks(dt, u, At, Bg, Cg, chunk)
        dy = _pad_time(dout, dt_u.shape[-1] - length)
        d_dt_u, d_dt = torch.empty_like(dt_u), torch.empty_like(dt_u)
        dAt, dBp, dCp = (_grad_accumulator(x, chunk) for x in (At, Bp, Cp))
        rel, x, states, adj, scratch = (u.new_empty(batch, n_state, dim, chunk) for _ in range(5))
        upper = torch.ones(chunk, chunk, dtype=u.dtype, device=u.device).triu_()
        g = dlast.transpose(1, 2)  # gradient reaching the chunk's last state from later steps
        for i in reversed(range(carries.shape[0] - 1)):
            start, stop = i * chunk, (i + 1) * chunk
            Bc, Cc = _time_slice(Bp, start, stop), _time_slice(Cp, start, stop)
            dy_c, dt_c = dy[..., start:stop], dt_p[..., start:stop]
            decays.relative(i, out=rel)
            first = decays.first[..., i]
            _chunk_states(_outer(dt_u[..., start:stop], Bc, x), rel, first * carries[i], out=states)
            # adjoint g_t = (1 / rel_t) * (sum_{s>=t} rel_s C_s dy_s + rel_{T-1} g): a reversed running sum
            _outer(dy_c, Cc, scratch).mul_(rel)
            scratch[..., -1].addcmul_(rel[..., -1], g)
            adj = _reverse_cumsum(scratch, upper, out=adj).div_(rel)
            g = first * adj[..., 0]
            _inner(adj, Bc, scratch, out=d_dt_u[..., start:stop])
            for acc, x_full, grad, weight in ((dBp, Bp, adj, dt_u[..., start:stop]), (dCp, Cp, states, dy_c)):
                acc_c = _accumulator_slice(acc, x_full, start, stop)
                acc_c += _outer_grad(grad, weight, acc_c.shape, scratch)
            # d h_t / d(dt_t A) = exp(dt_t A) h_{t-1} = h_t - x_t
            d_log_decay = states.sub_(x).mul_(adj)
            _inner(d_log_decay, At, scratch, out=d_dt[..., start:stop])
            dAt += _outer_grad(d_log_decay, dt_c, dAt.shape, scratch=d_log_decay)
        d_dt_u, d_dt = d_dt_u[..., :length], d_dt[..., :length]
        d_u, d_delta, d_bias = _input_grads(d_dt_u * dt, d_dt.addcmul_(d_dt_u, u), dout, raw, D, delta_bias, ctx.delta_softplus)
        dBg = _accumulated(dBp, Bp)[..., : Bg.shape[-1]]
        dCg = _accumulated(dCp, Cp)[..., : Cg.shape[-1]]
        return d_u, d_delta, _accumulated(dAt, At), dBg, dCg, dD, dz, d_bias, None, None


class _NoGradContext:
    """Stands in for autograd's context when :meth:`_ChunkedScan.forward` runs without autograd."""

    needs_input_grad = (False,) * 10

    def save_for_backward(self, *tensors: torch.Tensor | None) -> None:
        pass


class _CompiledScan(torch.autograd.Function):
    """The whole selective scan on the compiled CPU kernel (:mod:`medad_monai.ops.selective_scan_cpu`).

    Inputs: ``u``, ``delta``, ``z`` (B, D, L); ``A`` (D, N); ``Bs``, ``Cs`` (B or 1, G, L or 1, N),
    both of one shape (channel ``d`` reads group ``d // (D / G)``); ``D`` and ``delta_bias`` (D,);
    ``z``, ``D``, ``delta_bias`` may be None; all contiguous, of one float dtype. Outputs: ``out``
    (B, D, L) and the last state (B, D, N). The kernel recomputes the states in its backward pass,
    so only the inputs (and with ``z`` the ungated output) are saved.
    """

    @staticmethod
    def forward(ctx, u, delta, A, Bs, Cs, D, z, delta_bias, delta_softplus):  # type: ignore[override]
        y, last = load_kernel().forward(u, _raw_and_step_sizes(delta, delta_bias, delta_softplus)[1], A, Bs, Cs)
        out, ungated = _skip_and_gate(ctx, y, u, D, z)
        ctx.save_for_backward(u, delta, A, Bs, Cs, D, z, delta_bias, ungated)
        ctx.delta_softplus = delta_softplus
        return out, last

    @staticmethod
    @once_differentiable
    def backward(ctx, dout, dlast):  # type: ignore[override]
        u, delta, A, Bs, Cs, D, z, delta_bias, ungated = ctx.saved_tensors
        raw, dt = _raw_and_step_sizes(delta, delta_bias, ctx.delta_softplus)
        dout, dz, dD = _skip_and_gate_backward(dout, u, D, z, ungated)
        dlast = u.new_zeros(*u.shape[:2], A.shape[1]) if dlast is None else dlast.contiguous()
        d_u, d_dt, dA, dBs, dCs = load_kernel().backward(u, dt, A, Bs, Cs, dout, dlast)
        d_u, d_delta, d_bias = _input_grads(d_u, d_dt, dout, raw, D, delta_bias, ctx.delta_softplus)
        return d_u, d_delta, dA, dBs, dCs, dD, dz, d_bias, None


def _apply(function: type[torch.autograd.Function], args: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    """``function.apply(*args)``, or its forward alone when no argument needs a gradient: no autograd
    node, so inference saves nothing and ``torch.jit.trace`` can record the forward's operations."""
    if torch.is_grad_enabled() and any(isinstance(a, torch.Tensor) and a.requires_grad for a in args):
        return function.apply(*args)
    return function.forward(_NoGradContext(), *args)


def _contiguous(x: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    return None if x is None else x.to(dtype).contiguous()


def _scan_torch(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None,
    z: torch.Tensor | None,
    delta_bias: torch.Tensor | None,
    delta_softplus: bool,
    return_last_state: bool,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    dtype = _compute_dtype(u, delta, A, B, C, D, z, delta_bias)
    u_c, delta_c, D_c, z_c, bias_c = (_contiguous(x, dtype) for x in (u, delta, D, z, delta_bias))
    with torch.no_grad():
        chunk = _chunk_length(delta_c, bias_c, delta_softplus, A)
    if torch.jit.is_tracing():  # the trace freezes the chunk: a length any step size allows (see _chunk_states_segsum)
        chunk = min(u_c.shape[-1], _TRACE_CHUNK)
    At = A.to(dtype).t()[None, :, :, None].contiguous()
    args = (u_c, delta_c, At, _as_groups(B, dtype), _as_groups(C, dtype), D_c, z_c, bias_c, delta_softplus, chunk)
    out, last_state = _apply(_ChunkedScan, args)
    out = out.to(u.dtype)
    return (out, last_state) if return_last_state else out


# ----------------------------------------------------------------------------------------------
# "cpu" backend
# ----------------------------------------------------------------------------------------------


def _scan_cpu(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None,
    z: torch.Tensor | None,
    delta_bias: torch.Tensor | None,
    delta_softplus: bool,
    return_last_state: bool,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """The compiled kernel (:mod:`medad_monai.ops.selective_scan_cpu`); B and C of different shapes
    (one shared over time, say, the other not) go to the ``"torch"`` backend, since the kernel reads
    both with one layout and broadcasting one to the other's would copy it L or B times."""
    if B.shape != C.shape:
        return _scan_torch(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
    dtype = _compute_dtype(u, delta, A, B, C, D, z, delta_bias)
    Bs, Cs = (_as_groups(x, dtype).permute(0, 2, 3, 1).contiguous() for x in (B, C))  # (B or 1, G, L or 1, N)
    u_c, delta_c, A_c, D_c, z_c, bias_c = (_contiguous(x, dtype) for x in (u, delta, A, D, z, delta_bias))
    out, last_state = _apply(_CompiledScan, (u_c, delta_c, A_c, Bs, Cs, D_c, z_c, bias_c, delta_softplus))
    out = out.to(u.dtype)
    return (out, last_state) if return_last_state else out


# ----------------------------------------------------------------------------------------------
# "cuda" backend
# ----------------------------------------------------------------------------------------------


def _scan_cuda(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None,
    z: torch.Tensor | None,
    delta_bias: torch.Tensor | None,
    delta_softplus: bool,
    return_last_state: bool,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """mamba-ssm's kernel, with each argument in the dtype the kernel accepts: A, D, delta_bias
    and a time-invariant B or C in float32; delta, z and a time-varying B or C in u's dtype."""
    kernel = _mamba_kernel()
    f32 = torch.float32
    return kernel(
        u,
        delta.to(u.dtype),
        A.to(f32),
        B.to(f32 if B.ndim == 2 else u.dtype),
        C.to(f32 if C.ndim == 2 else u.dtype),
        D=None if D is None else D.to(f32),
        z=None if z is None else z.to(u.dtype),
        delta_bias=None if delta_bias is None else delta_bias.to(f32),
        delta_softplus=delta_softplus,
        return_last_state=return_last_state,
    )


# ----------------------------------------------------------------------------------------------
# "reference" backend and the public entry point
# ----------------------------------------------------------------------------------------------


def _prepare_delta(
    delta: torch.Tensor, delta_bias: torch.Tensor | None, delta_softplus: bool, dtype: torch.dtype
) -> torch.Tensor:
    """``softplus(delta + delta_bias)`` in ``dtype``, bias and softplus optional; (B, D, L)."""
    delta = delta.to(dtype)
    if delta_bias is not None:
        delta = delta + delta_bias.to(dtype)[:, None]
    return F.softplus(delta) if delta_softplus else delta


def _gate(y: torch.Tensor, u: torch.Tensor, D: torch.Tensor | None, z: torch.Tensor | None) -> torch.Tensor:
    """``(y + D * u) * silu(z)``, both terms optional; (B, D, L) in y's dtype."""
    if D is not None:
        y = y + u * D.to(y.dtype)[:, None]
    if z is not None:
        y = y * F.silu(z.to(y.dtype))
    return y


def _per_step(x: torch.Tensor, dim: int, dtype: torch.dtype) -> torch.Tensor:
    """B or C as (L or 1, B or 1, D or 1, N), one slice per step, each channel's vector explicit."""
    if x.ndim == 2:
        x = x[None, None]
    elif x.ndim == 3:
        x = x.permute(2, 0, 1).unsqueeze(2)
    else:
        x = x.repeat_interleave(dim // x.shape[1], dim=1).permute(3, 0, 1, 2)
    return x.to(dtype)


def selective_scan_ref(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Sequential selective scan: one step of the recurrence per sequence position.

    The ground truth the other backends are tested against; the arguments and the result
    are those of :func:`selective_scan_fn` (without ``backend``). Its cost is linear in L
    with one small tensor operation per step, so prefer :func:`selective_scan_fn`.
    """
    _check_inputs(u, delta, A, B, C, D, z, delta_bias)
    dtype = _compute_dtype(u, delta, A, B, C, D, z, delta_bias)
    delta = _prepare_delta(delta, delta_bias, delta_softplus, dtype)
    u_c = u.to(dtype)
    batch, dim, length = u.shape
    # step-major (L, B, D, N) tensors, so that every step reads contiguous slices
    delta_steps = delta.permute(2, 0, 1).contiguous().unsqueeze(-1)
    decays = torch.exp(delta_steps * A.to(dtype))
    inputs = delta_steps * u_c.permute(2, 0, 1).unsqueeze(-1) * _per_step(B, dim, dtype)
    readouts = _per_step(C, dim, dtype)
    readouts = readouts.expand(length, *readouts.shape[1:])
    state = u_c.new_zeros(batch, dim, A.shape[1])
    ys = []
    for decay, x, c in zip(decays.unbind(0), inputs.unbind(0), readouts.unbind(0)):
        state = decay * state + x
        ys.append((state * c).sum(-1))
    out = _gate(torch.stack(ys, dim=-1), u_c, D, z).to(u.dtype)
    return (out, state) if return_last_state else out


def selective_scan_fn(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    backend: str | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Selective scan with mamba-ssm's ``selective_scan_fn`` semantics (see the module docstring).

    Args:
        u: input, (B, D, L), floating point.
        delta: step sizes, (B, D, L).
        A: state matrix diagonal, (D, N), real (complex A is not supported).
        B: input projection: (D, N) shared over batch and time, (B, N, L) input-dependent,
            or (B, G, N, L) with G dividing D (channel d uses group d // (D / G)).
        C: output projection, shaped like one of the forms of ``B``.
        D: skip connection, (D,); adds ``D * u``.
        z: gate, (B, D, L); multiplies the output by ``silu(z)``.
        delta_bias: (D,), added to ``delta`` before the softplus.
        delta_softplus: apply softplus to ``delta`` (after ``delta_bias``).
        return_last_state: also return the state after the last step.
        backend: ``"auto"``, ``"cuda"``, ``"cpu"``, ``"torch"`` or ``"reference"``; None reads the
            environment variable ``MEDAD_SELECTIVE_SCAN_BACKEND``, and ``"auto"`` when unset.

    Returns:
        ``out`` (B, D, L) in ``u``'s dtype, or ``(out, last_state)`` with ``last_state``
        (B, D, N) in float32 (float64 for float64 inputs).

    Raises:
        TypeError: a non-tensor, non-floating or complex input, or a dtype the cuda kernel lacks.
        ValueError: a shape or device that does not match ``u``, or an unknown backend.
        OptionalImportError: ``"cuda"`` requested but mamba-ssm cannot be imported, or ``"cpu"``
            requested but the compiled CPU kernel cannot be built.
    """
    _check_inputs(u, delta, A, B, C, D, z, delta_bias)
    name = _resolve_backend(backend, u)
    args = (u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
    if name == "reference":
        return selective_scan_ref(*args)
    return {"cuda": _scan_cuda, "cpu": _scan_cpu}.get(name, _scan_torch)(*args)
