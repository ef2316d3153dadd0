"""The backend protocol (spectral_kernels/ops/protocol.py): what differs between backends is a
method or an attribute, never a branch on a backend's name; a new backend is one class and a
registry entry; structured (SORF) frequencies go through `structured_sums`, fused where the
backend has a kernel for them and materialised otherwise."""

import pathlib
import re

import pytest
import torch

import spectral_kernels as sk
from spectral_kernels import ops
from spectral_kernels.classes import class_index
from spectral_kernels.ops.protocol import Backend
from spectral_kernels.ops.reference import ecf_sums_reference, row_classes
from spectral_kernels.structured import HadamardFrequencies, hadamard_frequencies

from .conftest import BACKEND_DEVICES, sums_and_grads

PACKAGE = pathlib.Path(sk.__file__).resolve().parent
# A comparison of some object's .name, or of a variable called backend, with anything: how code
# branches on which backend it was given (`backend.name == "cpu"`, `.name != "reference"`,
# `backend in ("triton", "cuda")`).
NAME_BRANCH = re.compile(r"\.name\s*(==|!=|\bin\b|\bnot\s+in\b)|\bbackend\s*(==|!=)|\bbackend\s+(not\s+)?in\b")


def test_the_pattern_catches_every_form_of_name_branching():
    for line in (
        'if backend.name == "cpu":',
        'if backend.name == "triton" and triton_hadamard.supports(x, t.width):',
        'resolve(backend, x).name != "reference"',
        'chosen.name in ("cpu", "cuda")',
        'if backend in ("triton", "cuda"):',
        'if backend == "cpu":',
    ):
        assert NAME_BRANCH.search(line), line
    for line in ('if name == "auto":', "backend.fused", "register_backend(backend)", 'x.device.type == "cpu"'):
        assert not NAME_BRANCH.search(line), line


def test_no_code_in_the_package_branches_on_a_backends_name():
    found = [
        f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if NAME_BRANCH.search(line)
    ]
    assert found == []


class _PolarBackend(Backend):
    """A backend as a user would add one: only its op, computed another way than the reference's
    (one complex exponential instead of cos and sin), nothing else overridden."""

    name = "test_polar"
    dense_calls = 0

    def unavailable_reason(self):
        return None

    def unsupported_reason(self, x):
        return None if x.device.type == "cpu" and x.dtype == torch.float64 else "CPU float64 only"

    def dense_op(self):
        def op(x, t, perm, offsets, precision):
            type(self).dense_calls += 1
            waves = torch.exp(1j * (x @ t.T))
            rows = torch.zeros(offsets.shape[0] - 1, t.shape[0], dtype=waves.dtype).index_add(
                0, row_classes(perm, offsets, x.shape[0]), waves
            )
            return torch.stack([rows.real, rows.imag], dim=1)

        return op


def test_a_new_backend_is_one_class_and_a_registry_entry(rng):
    """Registered, it runs every discrepancy on dense and on SORF frequencies (the protocol's
    default materialises those) and agrees with the reference, gradients included."""
    ops.register_backend(_PolarBackend())
    try:
        real, syn = torch.randn(40, 6, generator=rng).double(), torch.randn(12, 6, generator=rng).double()
        rl, sl = torch.arange(40) % 3, torch.arange(12) % 3
        dense = torch.randn(20, 6, generator=rng, dtype=torch.float64)
        sorf = hadamard_frequencies("gaussian", 20, 6, generator=rng, dtype=torch.float64)
        for t in (dense, sorf):
            losses = {}
            for name in ("reference", _PolarBackend.name):
                s = syn.clone().requires_grad_(True)
                loss = sk.sdd(real, s, rl, sl, t=t, backend=name)
                (grad,) = torch.autograd.grad(loss, s)
                losses[name] = (loss, grad)
            torch.testing.assert_close(losses[_PolarBackend.name], losses["reference"])
    finally:
        del ops._REGISTRY[_PolarBackend.name]  # the registry has no removal: tests only
    assert _PolarBackend.dense_calls >= 4  # its op ran: real and syn sums, dense and SORF


def _sorf_case(rng, d, num_freqs=40, dtype=torch.float32, device="cpu"):
    x = torch.randn(30, d, generator=rng).to(device, dtype)
    labels = (torch.arange(30) % 3).to(device)
    index = class_index(labels, 30, 3, torch.device(device))
    t = hadamard_frequencies("gaussian", num_freqs, d, generator=rng).to(device=device, dtype=dtype)
    return x, t, index


def _count_dense(monkeypatch):
    calls = []
    dense = HadamardFrequencies.dense

    def counted(self):
        calls.append(self.width)
        return dense(self)

    monkeypatch.setattr(HadamardFrequencies, "dense", counted)
    return calls


def _check_against_dense(backend, x, t, index):
    """structured_sums and its dx equal the reference's at the materialised frequencies."""
    t64 = t.dense().double()
    grad = torch.randn(index.num_classes, 2, t.num_freqs, generator=torch.Generator().manual_seed(5))
    grad = grad.to(x.device, torch.float64)
    truth = sums_and_grads(
        lambda a, b: ecf_sums_reference(a, b, index.labels, index.num_classes), x.double(), t64, grad
    )
    x_ = x.detach().requires_grad_(True)
    got = backend.structured_sums(x_, t, index, "ieee")
    got.backward(grad.to(got.dtype))
    scale = max(1.0, truth[0].abs().max().item())
    torch.testing.assert_close(got.double(), truth[0], rtol=1e-4, atol=1e-4 * scale)
    torch.testing.assert_close(x_.grad.double(), truth[1], rtol=1e-4, atol=1e-4 * max(1.0, truth[1].abs().max().item()))


@pytest.mark.skipif("cpu" not in sk.available_backends(), reason="the C++ extension is not built")
def test_the_cpu_backend_runs_sorf_fused_and_never_builds_t(rng, monkeypatch):
    x, t, index = _sorf_case(rng, d=7)
    calls = _count_dense(monkeypatch)
    backend = ops.get_backend("cpu")
    got = backend.structured_sums(x, t, index, "ieee")
    assert calls == []
    monkeypatch.undo()
    _check_against_dense(backend, x, t, index)
    assert got.shape == (3, 2, 40)


@pytest.mark.skipif("triton" not in BACKEND_DEVICES, reason="triton cannot run here")
@pytest.mark.parametrize(
    "d, dtype, fused",
    [(12, torch.float32, True), (7, torch.float32, False), (12, torch.float64, False), (2049, torch.float32, False)],
    ids=["D16", "D8_below_tl_dot", "float64", "D4096_above_shared_memory"],
)
def test_the_triton_backend_runs_sorf_fused_where_its_kernels_fit_and_builds_t_elsewhere(
    rng, monkeypatch, d, dtype, fused
):
    device = BACKEND_DEVICES["triton"]
    x, t, index = _sorf_case(rng, d, num_freqs=20, dtype=dtype, device=device)
    calls = _count_dense(monkeypatch)
    backend = ops.get_backend("triton")
    backend.structured_sums(x, t, index, "ieee")
    assert calls == ([] if fused else [t.width])
    monkeypatch.undo()
    _check_against_dense(backend, x, t, index)


def test_the_reference_backend_builds_t_through_the_protocols_default(rng, monkeypatch):
    x, t, index = _sorf_case(rng, d=5, dtype=torch.float64)
    calls = _count_dense(monkeypatch)
    ops.get_backend("reference").structured_sums(x, t, index, "ieee")
    assert calls == [t.width]
    assert type(ops.get_backend("reference")).structured_sums is Backend.structured_sums
    monkeypatch.undo()
    _check_against_dense(ops.get_backend("reference"), x, t, index)


def test_autocast_tells_fused_backends_from_the_reference_by_an_attribute():
    assert ops.get_backend("reference").fused is False
    assert all(ops.get_backend(name).fused for name in ops.backend_names() if name not in ("auto", "reference"))
