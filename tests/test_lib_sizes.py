"""The size guard (spectral_kernels._checks.allocation) and the structured draws that never
build a D x D matrix, at the widths where the old code asked for gigabytes (issue 26)."""

import pytest
import torch

import spectral_kernels as sk
from spectral_kernels import _checks, structured
from spectral_kernels.structured import HadamardFrequencies, hadamard_frequencies

from . import lib_sizes as L


@pytest.fixture
def no_square_matrix(monkeypatch):
    """Fail any attempt to build a Walsh-Hadamard matrix wider than 64 (the lazy forms need none)."""
    real = structured.hadamard_matrix

    def guarded(n, **kwargs):
        assert n <= 64, f"a {n} x {n} Walsh-Hadamard matrix was built"
        return real(n, **kwargs)

    monkeypatch.setattr(structured, "hadamard_matrix", guarded)


def test_dense_sorf_frequencies_are_the_product_of_their_matrices():
    """dense() without a matrix equals radii / D^1.5 (H D1 H D2 H D3)[:, :d] built from H itself."""
    gen = torch.Generator().manual_seed(4)
    t = hadamard_frequencies("gaussian", 37, 11, generator=gen, dtype=torch.float64)
    h = structured.hadamard_matrix(16)
    want = []
    for b in range(t.signs.shape[0]):
        d1, d2, d3 = (torch.diag(s) for s in t.signs[b])
        want.append(t.radii[b][:, None] * (h @ d1 @ h @ d2 @ h @ d3)[:, :11] / 16**1.5)
    torch.testing.assert_close(t.dense(), torch.cat(want)[:37], rtol=1e-14, atol=1e-14)


def test_structured_draws_at_d_40000_never_build_the_d_by_d_matrix(no_square_matrix):
    gen = torch.Generator().manual_seed(0)
    t = sk.sample_frequencies("gaussian", 8, 40000, structure="hadamard", generator=gen, dtype=torch.float64)
    assert t.shape == (8, 40000) and torch.isfinite(t.dense()).all()  # lazy SORF; .dense() materialises it
    # rows of the D x D chain are orthogonal: cut to d they stay near orthogonal, exactly so in D
    t = hadamard_frequencies("gaussian", 8, 40000, generator=torch.Generator().manual_seed(0))
    assert t.dense().shape == (8, 40000)
    full = HadamardFrequencies(t.signs.double(), torch.ones_like(t.radii).double(), 8, t.width).dense()
    torch.testing.assert_close(full @ full.T, torch.eye(8, dtype=torch.float64), atol=1e-12, rtol=0)


def test_the_reference_sdd_with_hadamard_frequencies_at_d_40000_never_builds_the_matrix(no_square_matrix):
    gen = torch.Generator().manual_seed(1)
    real, syn = torch.randn(3, 40000, generator=gen), torch.randn(2, 40000, generator=gen)
    value = sk.sdd(real, syn, num_freqs=8, structure="hadamard", backend="reference", generator=gen, bandwidth=200.0)
    assert torch.isfinite(value)


def test_an_orthogonal_draw_of_4_rows_at_d_30000_factors_no_d_by_d_matrix(monkeypatch):
    shapes = []
    real_qr = torch.linalg.qr

    def recorded(a, *args, **kwargs):
        shapes.append(tuple(a.shape))
        assert a.numel() <= 30000 * 4, f"QR of {tuple(a.shape)}"
        return real_qr(a, *args, **kwargs)

    monkeypatch.setattr(torch.linalg, "qr", recorded)
    t = sk.sample_frequencies(
        "gaussian", 4, 30000, structure="orthogonal", generator=torch.Generator().manual_seed(2), dtype=torch.float64
    )
    assert shapes == [(30000, 4)] and t.shape == (4, 30000)
    unit = t / t.norm(dim=1, keepdim=True)
    torch.testing.assert_close(unit @ unit.T, torch.eye(4, dtype=torch.float64), atol=1e-12, rtol=0)


def test_the_guard_refuses_above_the_memory_available_with_argument_shape_and_bytes(monkeypatch):
    monkeypatch.setattr(_checks, "available_bytes", lambda device: 100 * 2**20)  # a machine with 100 MiB left
    with pytest.raises(ValueError, match=r"num_freqs=4096 x dim=4096: the float64 draw: shape \(4096, 4096\)") as info:
        sk.sample_frequencies("gaussian", 4096, 4096)  # 128 MiB
    assert "134217728 bytes" in str(info.value) and "104857600 bytes" in str(info.value)
    sk.sample_frequencies("gaussian", 2048, 4096)  # 64 MiB: fits
    with pytest.raises(ValueError, match=r"num_classes=4096 with 4096 frequencies.*\(4096, 2, 4096\).*134217728 bytes"):
        sk.ecf(L.X, torch.randn(4096, 3), L.PERM % 2, num_classes=4096)  # float32 sums: 128 MiB


def test_the_guard_does_not_ask_the_system_for_small_requests(monkeypatch):
    def fail(device):
        raise AssertionError("available_bytes was consulted for a small request")

    monkeypatch.setattr(_checks, "available_bytes", fail)
    sk.sdd(L.X, L.Y, num_freqs=64)
    _checks.allocation("small", (1024, 1024), torch.float32, "cpu")


def test_available_bytes_is_positive_on_the_host_and_none_on_meta():
    assert _checks.available_bytes("cpu") > 0
    assert _checks.available_bytes("meta") is None


@pytest.mark.parametrize(
    "signs_at, radii_at, message",
    [
        (((0, 1, 2), 0.0), None, "signs must hold exactly +1 or -1, got 0 at index (0, 1, 2)"),
        (((0, 0, 3), float("nan")), None, "signs must hold exactly +1 or -1, got nan at index (0, 0, 3)"),
        (None, ((0, 4), float("inf")), "radii must be finite and > 0, got inf at index (0, 4)"),
        (None, ((0, 7), -0.5), "radii must be finite and > 0, got -0.5 at index (0, 7)"),
    ],
)
def test_the_sorf_contract_says_the_same_on_every_backend(signs_at, radii_at, message):
    """One contract, one message: the C++ op, the Triton op and the library (which the reference
    backend relies on) refuse the same bad sign or radius with the same words."""
    t = L.sorf(signs_at, radii_at, num_freqs=16, width=16, blocks=1)
    calls = {
        "library, reference": lambda: sk.ecf(L.X, t, backend="reference"),
        "cpu op": lambda: torch.ops.spectral_kernels.hadamard_sums(L.X, t.signs, t.radii, L.PERM, L.OFFS, 16),
    }
    if "triton" in sk.available_backends():
        calls["triton op"] = lambda: torch.ops.spectral_kernels.hadamard_sums_triton(
            L.X, t.signs, t.radii, L.PERM, L.OFFS, 16, "ieee"
        )
    for where, call in calls.items():
        with pytest.raises(ValueError) as info:
            call()
        assert message in str(info.value), (where, str(info.value))
