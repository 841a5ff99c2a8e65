"""Tests for medad_monai.ops.selective_scan: the chunked torch backend and the compiled cpu
backend against the sequential reference (outputs and gradients), the reference against a
literal per-element loop, numerical safety, backend selection and input validation."""

from __future__ import annotations

import importlib.abc
import importlib.util
import itertools
import sys

import pytest
import torch
import torch.nn.functional as F
from monai.utils import OptionalImportError

import medad_monai.ops.selective_scan as ss
from medad_monai.ops.selective_scan import (
    BACKEND_ENV_VAR,
    available_backends,
    selective_scan_fn,
    selective_scan_ref,
)

TOL = 1e-4  # relative-norm error of the float32 fast path against the float64 reference
BC_KINDS = ("shared", "input", "grouped")  # (D, N), (B, N, L), (B, G, N, L)
OPTIONS = {
    "plain": {},
    "all": {"D": True, "z": True, "delta_bias": True, "delta_softplus": True},
    "skip_bias": {"D": True, "delta_bias": True},
    "gate_softplus": {"z": True, "delta_softplus": True},
}


def make_inputs(
    batch: int,
    dim: int,
    n_state: int,
    length: int,
    b_kind: str = "input",
    c_kind: str = "input",
    groups: int = 2,
    delta_scale: float = 0.5,
    seed: int = 0,
    D: bool = False,
    z: bool = False,
    delta_bias: bool = False,
) -> dict[str, torch.Tensor]:
    """Random float64 inputs of selective_scan_fn; ``delta`` is positive, ``A`` negative."""
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    def projection(kind: str) -> torch.Tensor:
        shapes = {
            "shared": (dim, n_state),
            "input": (batch, n_state, length),
            "grouped": (batch, groups, n_state, length),
        }
        return randn(*shapes[kind])

    inputs = {
        "u": randn(batch, dim, length),
        "delta": delta_scale * torch.rand(batch, dim, length, generator=gen, dtype=torch.float64),
        "A": -torch.rand(dim, n_state, generator=gen, dtype=torch.float64) * 2 - 0.1,
        "B": projection(b_kind),
        "C": projection(c_kind),
    }
    if D:
        inputs["D"] = randn(dim)
    if z:
        inputs["z"] = randn(batch, dim, length)
    if delta_bias:
        inputs["delta_bias"] = 0.1 * randn(dim)
    return inputs


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b|| in float64 (the plain difference norm when b is zero)."""
    a, b = a.double(), b.double()
    denom = b.norm().item()
    return (a - b).norm().item() / (denom if denom > 0 else 1.0)


def check_against_reference(
    inputs: dict[str, torch.Tensor], delta_softplus: bool = False, tol: float = TOL, backend: str = "torch"
) -> None:
    """The float32 ``backend`` matches the float64 reference: output, last state and all gradients."""
    fast_in = {k: v.float().requires_grad_() for k, v in inputs.items()}
    ref_in = {k: v.clone().requires_grad_() for k, v in inputs.items()}
    out, last = selective_scan_fn(**fast_in, delta_softplus=delta_softplus, return_last_state=True, backend=backend)
    out_ref, last_ref = selective_scan_ref(**ref_in, delta_softplus=delta_softplus, return_last_state=True)
    assert out.dtype == torch.float32 and out.shape == inputs["u"].shape
    assert last.shape == (inputs["u"].shape[0], inputs["A"].shape[0], inputs["A"].shape[1])
    assert rel_err(out, out_ref) <= tol
    assert rel_err(last, last_ref) <= tol

    gen = torch.Generator().manual_seed(1)
    cot = torch.randn(out_ref.shape, generator=gen, dtype=torch.float64)
    cot_last = torch.randn(last_ref.shape, generator=gen, dtype=torch.float64)
    grads = torch.autograd.grad((out * cot.float()).sum() + (last * cot_last.float()).sum(), list(fast_in.values()))
    grads_ref = torch.autograd.grad((out_ref * cot).sum() + (last_ref * cot_last).sum(), list(ref_in.values()))
    for name, grad, grad_ref in zip(fast_in, grads, grads_ref):
        assert grad.shape == inputs[name].shape, name
        assert rel_err(grad, grad_ref) <= tol, f"gradient of {name}: {rel_err(grad, grad_ref):.2e}"


def chunk_of(inputs: dict[str, torch.Tensor], delta_softplus: bool = False) -> int:
    return ss._chunk_length(inputs["delta"].float(), inputs.get("delta_bias"), delta_softplus, inputs["A"].float())


# ---------------------------------------------------------------------------------------------
# the reference itself
# ---------------------------------------------------------------------------------------------


def literal_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus):
    """The recurrence written element by element with Python floats, for tiny inputs."""
    batch, dim, length = u.shape
    n_state = A.shape[1]
    out = torch.zeros(batch, dim, length, dtype=torch.float64)
    last = torch.zeros(batch, dim, n_state, dtype=torch.float64)

    def proj(P, b, d, n, t):
        if P.ndim == 2:
            return float(P[d, n])
        if P.ndim == 3:
            return float(P[b, n, t])
        return float(P[b, d // (dim // P.shape[1]), n, t])

    for b, d in itertools.product(range(batch), range(dim)):
        h = [0.0] * n_state
        for t in range(length):
            dt = float(delta[b, d, t]) + (float(delta_bias[d]) if delta_bias is not None else 0.0)
            if delta_softplus:
                dt = float(F.softplus(torch.tensor(dt, dtype=torch.float64)))
            y = 0.0
            for n in range(n_state):
                h[n] = float(torch.exp(torch.tensor(dt * float(A[d, n]), dtype=torch.float64))) * h[n]
                h[n] += dt * proj(B, b, d, n, t) * float(u[b, d, t])
                y += proj(C, b, d, n, t) * h[n]
            if D is not None:
                y += float(D[d]) * float(u[b, d, t])
            if z is not None:
                y *= float(F.silu(z[b, d, t]))
            out[b, d, t] = y
        last[b, d] = torch.tensor(h, dtype=torch.float64)
    return out, last


@pytest.mark.parametrize("b_kind, c_kind", [("shared", "grouped"), ("grouped", "input"), ("input", "shared")])
def test_reference_matches_literal_recurrence(b_kind, c_kind):
    inputs = make_inputs(2, 4, 3, 5, b_kind, c_kind, D=True, z=True, delta_bias=True)
    out, last = selective_scan_ref(**inputs, delta_softplus=True, return_last_state=True)
    expected_out, expected_last = literal_scan(
        *(inputs.get(k) for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")), delta_softplus=True
    )
    torch.testing.assert_close(out, expected_out, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(last, expected_last, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# torch backend against the reference
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("b_kind, c_kind", list(itertools.product(BC_KINDS, BC_KINDS)))
@pytest.mark.parametrize("option", list(OPTIONS))
def test_torch_backend_matches_reference(b_kind, c_kind, option):
    flags = dict(OPTIONS[option])
    softplus = flags.pop("delta_softplus", False)
    inputs = make_inputs(2, 8, 4, 151, b_kind, c_kind, groups=4, **flags)
    assert 1 < chunk_of(inputs, softplus) < 151, "the prime length spans several chunks, the last one partial"
    check_against_reference(inputs, delta_softplus=softplus)


@pytest.mark.parametrize(
    "batch, dim, n_state, length, seed",
    [(1, 1, 1, 1, 0), (3, 6, 5, 1, 1), (2, 3, 7, 2, 2), (1, 5, 2, 63, 3), (2, 4, 3, 65, 4), (3, 2, 16, 200, 5)],
)
def test_torch_backend_random_shapes(batch, dim, n_state, length, seed):
    inputs = make_inputs(batch, dim, n_state, length, "input", "grouped", groups=1, seed=seed, D=True, z=True)
    check_against_reference(inputs)


def test_torch_backend_long_sequence():
    inputs = make_inputs(1, 2, 4, 4096, "input", "input", delta_scale=0.2, D=True, z=True, delta_bias=True)
    assert chunk_of(inputs, True) < 4096
    check_against_reference(inputs, delta_softplus=True)


@pytest.mark.parametrize("b_kind", BC_KINDS)
def test_torch_backend_gradcheck(b_kind):
    """Double-precision gradcheck of the hand-written backward pass, several chunks long."""
    inputs = make_inputs(1, 4, 2, 7, b_kind, "grouped", groups=2, delta_scale=20.0, D=True, z=True, delta_bias=True)
    assert 1 < chunk_of(inputs, True) < 7
    names = list(inputs)

    def scan(*tensors):
        kwargs = dict(zip(names, tensors))
        return selective_scan_fn(**kwargs, delta_softplus=True, return_last_state=True, backend="torch")

    assert torch.autograd.gradcheck(scan, tuple(t.clone().requires_grad_() for t in inputs.values()))


# ---------------------------------------------------------------------------------------------
# compiled cpu backend against the reference
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("b_kind, c_kind", list(itertools.product(BC_KINDS, BC_KINDS)))
@pytest.mark.parametrize("option", ["plain", "all"])
def test_cpu_backend_matches_reference(b_kind, c_kind, option):
    """Every form of B and C (different forms go to the torch backend) and every option."""
    flags = dict(OPTIONS[option])
    softplus = flags.pop("delta_softplus", False)
    check_against_reference(make_inputs(2, 8, 4, 151, b_kind, c_kind, groups=4, **flags), softplus, backend="cpu")


@pytest.mark.parametrize("batch, dim, n_state, length, seed", [(1, 1, 1, 1, 0), (3, 6, 5, 2, 1), (2, 4, 16, 4096, 2)])
def test_cpu_backend_shapes_and_long_sequence(batch, dim, n_state, length, seed):
    inputs = make_inputs(batch, dim, n_state, length, "input", "grouped", groups=1, delta_scale=0.2, seed=seed, D=True, z=True)
    check_against_reference(inputs, backend="cpu")


@pytest.mark.parametrize("b_kind", BC_KINDS)
def test_cpu_backend_gradcheck(b_kind):
    """Double-precision gradcheck of the kernel's backward pass, strong decays included."""
    inputs = make_inputs(1, 4, 2, 7, b_kind, b_kind, groups=2, delta_scale=20.0, D=True, z=True, delta_bias=True)
    names = list(inputs)

    def scan(*tensors):
        return selective_scan_fn(**dict(zip(names, tensors)), delta_softplus=True, return_last_state=True, backend="cpu")

    assert torch.autograd.gradcheck(scan, tuple(t.clone().requires_grad_() for t in inputs.values()))


def test_cpu_backend_without_gradients_and_in_low_precision():
    inputs = make_inputs(2, 4, 3, 50, "input", "input", D=True, z=True)
    with torch.no_grad():
        out = selective_scan_fn(**{k: v.float() for k, v in inputs.items()}, backend="cpu")
    assert rel_err(out, selective_scan_ref(**inputs)) <= TOL
    low = {k: v.to(torch.bfloat16) for k, v in inputs.items()}
    out = selective_scan_fn(**low, backend="cpu")
    assert out.dtype == torch.bfloat16
    assert rel_err(out, selective_scan_ref(**{k: v.double() for k, v in low.items()})) <= 1e-2


def test_last_state_only_gradient():
    """A loss on the last state alone back-propagates to u, delta, A and B, and not to C."""
    inputs = {k: v.float() for k, v in make_inputs(2, 3, 4, 40, "shared", "input").items()}
    grads = {}
    for backend in ("torch", "cpu", "reference"):
        leaves = {k: v.clone().requires_grad_() for k, v in inputs.items()}
        _, last = selective_scan_fn(**leaves, return_last_state=True, backend=backend)
        last.sum().backward()
        grads[backend] = {k: v.grad for k, v in leaves.items()}
    for name in ("u", "delta", "A", "B"):
        assert grads["reference"][name].norm() > 0
        for backend in ("torch", "cpu"):
            assert rel_err(grads[backend][name], grads["reference"][name]) <= TOL, (backend, name)
    assert grads["reference"]["C"] is None and not grads["torch"]["C"].any() and not grads["cpu"]["C"].any()


# ---------------------------------------------------------------------------------------------
# numerical safety
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "delta_scale, a_scale, expected_chunk",
    [
        (1.0, 20.0, 7),  # delta * A down to -20 per step: short chunks, (7 // 2) * 20 <= 60
        (10.0, 16.0, 1),  # delta up to 10 with |A| up to 16: one step per chunk, exact
    ],
)
def test_strong_decay_is_finite_and_exact(delta_scale, a_scale, expected_chunk):
    inputs = make_inputs(2, 4, 4, 301, "input", "input", delta_scale=delta_scale, D=True)
    inputs["A"] = -a_scale * torch.linspace(0.05, 1.0, 16, dtype=torch.float64).view(4, 4)
    assert chunk_of(inputs) == expected_chunk
    fast_in = {k: v.float() for k, v in inputs.items()}
    out, last = selective_scan_fn(**fast_in, return_last_state=True, backend="torch")
    assert torch.isfinite(out).all() and torch.isfinite(last).all()
    check_against_reference(inputs)


def test_weak_decay_long_chunks():
    """With tiny decays the chunk length is the size cap and the result still matches."""
    inputs = make_inputs(1, 2, 3, 300, "input", "input", delta_scale=1e-3)
    assert chunk_of(inputs) == 64
    check_against_reference(inputs)


def test_cuda_chunk_cap_matches_reference(monkeypatch):
    """Chunks as long as the CUDA cap (256 steps), run here on CPU: the closed form stays exact."""
    monkeypatch.setattr(ss, "_MIN_CHUNK", ss._MAX_CHUNK_CUDA)
    monkeypatch.setattr(ss, "_MAX_CHUNK", ss._MAX_CHUNK_CUDA)
    inputs = make_inputs(1, 2, 3, 600, "input", "input", delta_scale=1e-3)
    assert chunk_of(inputs) == 256
    check_against_reference(inputs)


def test_chunk_length_bounds():
    """Chunks hold at least 16 steps for large states, at most 64 and at most L, and fewer only for
    strong decays."""
    A = -torch.ones(4096, 64)
    assert ss._chunk_length(torch.full((4, 4096, 32), 0.01), None, False, A) == 16  # 2**20 state elements per step
    assert ss._chunk_length(torch.full((1, 2, 128), 0.01), None, False, A[:2]) == 64
    assert ss._chunk_length(torch.full((1, 2, 40), 0.01), None, False, A[:2]) == 40
    assert ss._chunk_length(torch.full((1, 2, 128), 3.0), None, False, A[:2]) == 41  # (41 // 2) * 3 <= 60
    assert ss._chunk_length(torch.full((1, 2, 128), 3.0), torch.full((2,), -100.0), True, A[:2]) == 64
    assert ss._chunk_length(torch.full((1, 2, 128), float("nan")), None, False, A[:2]) == 1


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_inputs(dtype):
    inputs = make_inputs(2, 4, 3, 50, "input", "shared", D=True, z=True)
    low = {k: v.to(dtype) for k, v in inputs.items()}
    out, last = selective_scan_fn(**low, return_last_state=True, backend="torch")
    assert out.dtype == dtype and last.dtype == torch.float32
    ref, ref_last = selective_scan_ref(**{k: v.double() for k, v in low.items()}, return_last_state=True)
    assert rel_err(out, ref) <= 1e-2
    assert rel_err(last, ref_last) <= 1e-4


# ---------------------------------------------------------------------------------------------
# backend selection
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def spies(monkeypatch):
    """Record which backend implementation selective_scan_fn calls."""
    calls = []
    for attr in ("_scan_torch", "selective_scan_ref", "_scan_cuda", "_scan_cpu"):
        original = getattr(ss, attr)

        def spy(*args, _attr=attr, _original=original, **kwargs):
            calls.append(_attr)
            return _original(*args, **kwargs)

        monkeypatch.setattr(ss, attr, spy)
    monkeypatch.delenv(BACKEND_ENV_VAR, raising=False)
    return calls


def small_inputs() -> dict[str, torch.Tensor]:
    return {k: v.float() for k, v in make_inputs(1, 2, 2, 3).items()}


@pytest.mark.parametrize(
    "backend, called",
    [
        (None, "_scan_cpu"),
        ("auto", "_scan_cpu"),
        ("cpu", "_scan_cpu"),
        ("torch", "_scan_torch"),
        ("reference", "selective_scan_ref"),
    ],
)
def test_backend_argument(spies, backend, called):
    selective_scan_fn(**small_inputs(), backend=backend)
    assert spies == [called]


@pytest.mark.parametrize(
    "env, called",
    [("reference", "selective_scan_ref"), ("torch", "_scan_torch"), ("auto", "_scan_cpu"), ("", "_scan_cpu")],
)
def test_backend_environment_variable(spies, monkeypatch, env, called):
    monkeypatch.setenv(BACKEND_ENV_VAR, env)
    selective_scan_fn(**small_inputs())
    assert spies == [called]


def test_auto_backend_without_the_compiled_kernel(spies, monkeypatch):
    """Where the kernel cannot be built, "auto" runs the torch backend and "cpu" says why it cannot run."""
    monkeypatch.setattr(ss, "load_kernel", lambda: None)
    monkeypatch.setattr(ss, "kernel_error", lambda: "CalledProcessError: no compiler")
    selective_scan_fn(**small_inputs())
    assert spies == ["_scan_torch"]
    with pytest.raises(OptionalImportError, match="could not be built \\(CalledProcessError: no compiler\\)"):
        selective_scan_fn(**small_inputs(), backend="cpu")
    assert "cpu" not in available_backends()


def test_auto_backend_while_tracing(spies):
    """A trace records the torch backend's operations, and refuses the opaque compiled kernel."""
    inputs = small_inputs()
    names = ("u", "delta", "A", "B", "C")

    def scan(*tensors, backend=None):
        return selective_scan_fn(*tensors, backend=backend)

    # check_trace would rerun the function untraced, where "auto" picks the compiled kernel
    traced = torch.jit.trace(scan, tuple(inputs[k] for k in names), check_trace=False)
    assert spies == ["_scan_torch"]
    torch.testing.assert_close(traced(*(inputs[k] for k in names)), selective_scan_ref(**inputs))
    with pytest.raises(ValueError, match="a trace cannot record"):
        torch.jit.trace(lambda *t: scan(*t, backend="cpu"), tuple(inputs[k] for k in names), check_trace=False)


def test_backend_argument_overrides_environment(spies, monkeypatch):
    monkeypatch.setenv(BACKEND_ENV_VAR, "reference")
    selective_scan_fn(**small_inputs(), backend="torch")
    assert spies == ["_scan_torch"]


def test_unknown_backend(monkeypatch):
    with pytest.raises(ValueError, match="backend must be one of auto, cuda, cpu, torch, reference; got 'triton'"):
        selective_scan_fn(**small_inputs(), backend="triton")
    monkeypatch.setenv(BACKEND_ENV_VAR, "fast")
    with pytest.raises(ValueError, match=f"environment variable {BACKEND_ENV_VAR} must be one of"):
        selective_scan_fn(**small_inputs())


def test_cuda_backend_unavailable(monkeypatch):
    monkeypatch.setattr(ss, "_mamba_kernel", lambda: None)
    with pytest.raises(OptionalImportError, match="could not be imported"):
        selective_scan_fn(**small_inputs(), backend="cuda")
    assert "cuda" not in available_backends()


def test_cuda_backend_needs_cuda_tensors(monkeypatch):
    monkeypatch.setattr(ss, "_mamba_kernel", lambda: selective_scan_ref)
    with pytest.raises(ValueError, match="needs CUDA tensors; u is on cpu"):
        selective_scan_fn(**small_inputs(), backend="cuda")


def test_available_backends(monkeypatch):
    monkeypatch.setattr(ss, "_mamba_kernel", lambda: selective_scan_ref)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert available_backends() == ["cuda", "cpu", "torch", "reference"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert available_backends() == ["cpu", "torch", "reference"]
    monkeypatch.setattr(ss, "load_kernel", lambda: None)
    assert available_backends() == ["torch", "reference"]


class RecordImports(importlib.abc.MetaPathFinder):
    """Meta-path finder that only records the names of modules looked up."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def find_spec(self, name, path, target=None):
        self.names.append(name)


def test_cpu_use_does_not_import_mamba_ssm(monkeypatch):
    """Importing the module and scanning CPU tensors never looks mamba_ssm up."""
    finder = RecordImports()
    monkeypatch.setattr(sys, "meta_path", [finder, *sys.meta_path])
    spec = importlib.util.spec_from_file_location("_selective_scan_copy", ss.__file__)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.selective_scan_fn(**small_inputs())
    assert importlib.util.find_spec("medad_no_such_module") is None and "medad_no_such_module" in finder.names
    assert not any(name.startswith("mamba_ssm") for name in finder.names)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_device():
    inputs = make_inputs(2, 8, 4, 300, "input", "input", D=True, z=True, delta_bias=True)
    gpu = {k: v.float().cuda() for k, v in inputs.items()}
    expected = selective_scan_ref(**inputs, delta_softplus=True)
    for backend in available_backends()[:-1]:  # cuda (when mamba-ssm imports) and torch
        out = selective_scan_fn(**gpu, delta_softplus=True, backend=backend)
        assert out.is_cuda and rel_err(out.cpu(), expected) <= TOL, backend


# ---------------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------------


def replace(name, value):
    inputs = small_inputs() | {"D": torch.ones(2), "z": torch.ones(1, 2, 3), "delta_bias": torch.ones(2)}
    inputs[name] = value
    return inputs


@pytest.mark.parametrize(
    "inputs, error, message",
    [
        (
            replace("delta", torch.ones(1, 2, 4)),
            ValueError,
            r"delta must have shape \(B, D, L\) = \(1, 2, 3\), got \(1, 2, 4\)",
        ),
        (replace("u", torch.ones(2, 3)), ValueError, r"u must have shape \(B, D, L\) with non-zero sizes"),
        (replace("u", torch.ones(1, 2, 0)), ValueError, "u must have shape"),
        (replace("A", torch.ones(3, 2)), ValueError, r"A must have shape \(D, N\) = \(2, N\)"),
        (replace("B", torch.ones(2, 3)), ValueError, r"B must have shape \(D, N\) = \(2, 2\), got \(2, 3\)"),
        (replace("C", torch.ones(1, 2, 4)), ValueError, r"C must have shape \(B, N, L\) = \(1, 2, 3\)"),
        (replace("B", torch.ones(1, 3, 2, 3)), ValueError, "B has G = 3 groups"),
        (replace("C", torch.ones(1, 1, 1, 2, 3)), ValueError, r"C must have shape \(D, N\), \(B, N, L\) or"),
        (replace("D", torch.ones(3)), ValueError, r"D must have shape \(D,\) = \(2,\)"),
        (replace("z", torch.ones(1, 2, 2)), ValueError, r"z must have shape \(B, D, L\)"),
        (replace("delta_bias", torch.ones(2, 1)), ValueError, "delta_bias must have shape"),
        (replace("A", -torch.ones(2, 2, dtype=torch.complex64)), TypeError, "complex A .* is not supported"),
        (replace("u", torch.ones(1, 2, 3, dtype=torch.int64)), TypeError, "u must be a floating-point tensor"),
        (replace("u", [[[1.0]]]), TypeError, "u must be a torch.Tensor, got list"),
        (replace("C", None), TypeError, "C must be a torch.Tensor, got NoneType"),
        (replace("z", torch.ones(1, 2, 3, device="meta")), ValueError, "z must be on the same device as u"),
    ],
)
@pytest.mark.parametrize("fn", [selective_scan_fn, selective_scan_ref])
def test_invalid_inputs(fn, inputs, error, message):
    with pytest.raises(error, match=message):
        fn(**inputs)
