"""Orthogonal (ORF) and structured Hadamard (SORF) frequencies (spectral_kernels.structured,
SPEC §4) and the fused op that evaluates SORF without materialising t
(csrc/cpu/hadamard_cpu.cpp), against the dense product with the same signs and radii."""

import statistics

import pytest
import torch
from scipy import stats

import spectral_kernels as sk
from spectral_kernels.classes import class_index
from spectral_kernels.ops.reference import ecf_sums_reference
from spectral_kernels.structured import block_width, hadamard_frequencies, hadamard_matrix

from .conftest import max_error, sums_and_grads

needs_cpu = pytest.mark.skipif("cpu" not in sk.available_backends(), reason="the C++ extension is not built")
needs_triton = pytest.mark.skipif("triton" not in sk.available_backends(), reason="triton is not installed")
ops = torch.ops.spectral_kernels


def _layout(n, sizes, gen):
    if sizes is None:
        return class_index(None, n, 1, torch.device("cpu"))
    labels = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))[torch.randperm(n, generator=gen)]
    return class_index(labels, n, len(sizes), torch.device("cpu"))


# ----------------------------------------------------------------------------- the draws


@pytest.mark.parametrize("dim", [1, 7, 16, 33])
def test_orthogonal_blocks_hold_orthogonal_rows_with_radii_of_the_kernel(dim):
    gen = torch.Generator().manual_seed(dim)
    t = sk.sample_frequencies(
        "gaussian", 3 * dim + 2, dim, structure="orthogonal", bandwidth=2.0, generator=gen, dtype=torch.float64
    )
    assert t.shape == (3 * dim + 2, dim)  # the last block cut
    unit = t / t.norm(dim=1, keepdim=True)
    for b in range(3):
        block = unit[b * dim : (b + 1) * dim]
        torch.testing.assert_close(block @ block.T, torch.eye(dim, dtype=torch.float64), atol=1e-12, rtol=0)
    # 2 |t| ~ chi(d): the gaussian kernel's radius law at bandwidth 2.
    many = sk.sample_frequencies(
        "gaussian", 4000, dim, structure="orthogonal", bandwidth=2.0, generator=gen, dtype=torch.float64
    )
    assert stats.kstest((2 * many.norm(dim=1)).numpy(), stats.chi(dim).cdf).pvalue > 1e-3


def test_hadamard_blocks_are_orthonormal_before_their_radii():
    gen = torch.Generator().manual_seed(3)
    t = hadamard_frequencies("gaussian", 40, 13, generator=gen, dtype=torch.float64)
    assert t.width == 16 == block_width(13) and t.signs.shape == (3, 3, 16) and t.radii.shape == (3, 16)
    h = hadamard_matrix(16)
    torch.testing.assert_close(h @ h.T, 16 * torch.eye(16, dtype=torch.float64))
    d1, d2, d3 = t.signs[0]
    s = h @ torch.diag(d1) @ h @ torch.diag(d2) @ h @ torch.diag(d3) / 16**1.5
    torch.testing.assert_close(s @ s.T, torch.eye(16, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(t.dense()[:16], t.radii[0][:, None] * s[:, :13])
    assert t.dense().shape == (40, 13)


def test_structured_draws_are_seeded_and_refuse_kernels_that_are_not_radial():
    draw = lambda s: hadamard_frequencies("matern", 70, 9, nu=2.5, generator=torch.Generator().manual_seed(s))
    assert torch.equal(draw(1).radii, draw(1).radii) and torch.equal(draw(1).signs, draw(1).signs)
    assert not torch.equal(draw(1).radii, draw(2).radii)
    for kernel in ("laplacian", "cauchy"):
        for structure in ("orthogonal", "hadamard"):
            with pytest.raises(ValueError, match="not radial"):
                sk.sample_frequencies(kernel, 8, 3, structure=structure)


@pytest.mark.slow
@pytest.mark.parametrize("kernel,nu", [("gaussian", 1.5), ("matern", 2.5)])
def test_every_structure_estimates_the_exact_mmd_and_the_structured_ones_with_less_variance(kernel, nu):
    """Bochner, for each structure: the mean SDD over many draws equals the exact MMD^2 (z-test
    from the draws' own spread), and the spread is measured, not assumed."""
    gen = torch.Generator().manual_seed(0)
    real = torch.randn(300, 16, dtype=torch.float64, generator=gen)
    syn = torch.randn(100, 16, dtype=torch.float64, generator=gen) * 1.2 + 0.3
    exact = float(sk.mmd(real, syn, kernel=kernel, nu=nu, bandwidth=4.0))
    spread = {}
    for structure in ("iid", "orthogonal", "hadamard"):
        values = [
            float(
                sk.sdd(real, syn, kernel=kernel, nu=nu, bandwidth=4.0, num_freqs=64, structure=structure, generator=gen)
            )
            for _ in range(300)
        ]
        mean, std = statistics.fmean(values), statistics.stdev(values)
        z = (mean - exact) / (std / len(values) ** 0.5)
        assert abs(z) < 4.5, (structure, mean, exact, z)
        spread[structure] = std / exact
    assert spread["orthogonal"] < 0.7 * spread["iid"] and spread["hadamard"] < 0.7 * spread["iid"], spread


# ----------------------------------------------------------------------------- the fused op

CASES = [  # (id, N, M, d, class sizes): widths that are and are not powers of two, M off the blocks
    ("d1", 90, 5, 1, [30, 60]),
    ("d13_cut_block", 257, 50, 13, [100, 57, 100]),
    ("d16_exact_blocks", 130, 32, 16, None),
    ("fewer_freqs_than_width", 64, 3, 40, [64]),
    ("empty_classes_long_tail", 1100, 70, 9, [1000, 0, 99, 1, 0]),
    ("d300_blocks_wider_than_a_tile", 300, 700, 300, [150, 0, 150]),  # D = 512 > the 256-column tile
]


@needs_cpu
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_the_fused_op_equals_the_dense_product_with_the_same_signs_and_radii(case):
    _, n, m, d, sizes = case
    gen = torch.Generator().manual_seed(n)
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    t = hadamard_frequencies("gaussian", m, d, bandwidth=0.7, generator=gen, dtype=torch.float64)
    index = _layout(n, sizes, gen)
    grad = torch.randn(index.num_classes, 2, m, generator=gen, dtype=torch.float64)
    fused = lambda a, _: ops.hadamard_sums(a, t.signs, t.radii, index.perm, index.offsets, m)
    dense = lambda a, _: ecf_sums_reference(a, t.dense(), index.labels, index.num_classes)
    truth = sums_and_grads(dense, x, t.radii, grad)[:2]
    got = sums_and_grads(fused, x, t.radii, grad)[:2]
    for ours, want in zip(got, truth):
        torch.testing.assert_close(ours, want, rtol=1e-10, atol=1e-10 * max(1.0, want.abs().max().item()))
    # float32: at most twice PyTorch's own float32 error on the dense product, plus a floor.
    t32 = t.to(dtype=torch.float32)
    got32 = sums_and_grads(
        lambda a, _: ops.hadamard_sums(a, t32.signs, t32.radii, index.perm, index.offsets, m),
        x.float(),
        t32.radii,
        grad.float(),
    )[:2]
    base = sums_and_grads(
        lambda a, _: ecf_sums_reference(a, t32.dense(), index.labels, index.num_classes),
        x.float(),
        t32.radii,
        grad.float(),
    )[:2]
    for ours, theirs, want in zip(got32, base, truth):
        assert max_error(ours, want) <= 2 * max_error(theirs, want) + 8e-7 * max(1.0, want.abs().max().item())


@needs_cpu
def test_phases_beyond_the_fast_range_take_the_full_range_sin_and_cos():
    """A float32 panel holding a phase past math::kMaxFastPhase (8192) is redone with the
    full-range routine, forward and backward: no silent garbage from the reduced polynomials."""
    gen = torch.Generator().manual_seed(11)
    n, m, d = 200, 70, 24
    x = torch.randn(n, d, generator=gen, dtype=torch.float64) * 2000
    t = hadamard_frequencies("gaussian", m, d, bandwidth=1.0, generator=gen, dtype=torch.float64)
    assert (x @ t.dense().T).abs().max() > 2 * 8192  # some panels hold large phases, others need not
    index = _layout(n, [120, 80], gen)
    grad = torch.randn(2, 2, m, generator=gen, dtype=torch.float64)
    truth = sums_and_grads(lambda a, _: ecf_sums_reference(a, t.dense(), index.labels, 2), x, t.radii, grad)[:2]
    t32 = t.to(dtype=torch.float32)
    got = sums_and_grads(
        lambda a, _: ops.hadamard_sums(a, t32.signs, t32.radii, index.perm, index.offsets, m),
        x.float(),
        t32.radii,
        grad.float(),
    )[:2]
    base = sums_and_grads(
        lambda a, _: ecf_sums_reference(a, t32.dense(), index.labels, 2), x.float(), t32.radii, grad.float()
    )[:2]
    for ours, theirs, want in zip(got, base, truth):
        assert torch.isfinite(ours).all()
        assert max_error(ours, want) <= 2 * max_error(theirs, want) + 1e-6 * max(1.0, want.abs().max().item())


@needs_cpu
def test_the_fused_op_gives_the_same_bits_whatever_the_thread_count():
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(1500, 40, generator=gen)  # 6+ row tiles in 2 classes, 3 blocks of 64
    t = hadamard_frequencies("gaussian", 150, 40, generator=gen)
    index = _layout(1500, [900, 600], gen)
    grad = torch.randn(2, 2, 150, generator=gen)
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            sums = ops.hadamard_sums(x, t.signs, t.radii, index.perm, index.offsets, 150)
            dx = ops.hadamard_sums_grad_x(grad, x, t.signs, t.radii, index.perm, index.offsets, 150)
            results.append((sums, dx))
    finally:
        torch.set_num_threads(threads)
    for sums, dx in results[1:]:
        assert torch.equal(sums, results[0][0]) and torch.equal(dx, results[0][1])


@needs_cpu
def test_gradcheck_opcheck_and_double_backward_of_the_fused_op():
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(11, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    t = hadamard_frequencies("gaussian", 10, 5, generator=gen, dtype=torch.float64)
    index = _layout(11, [4, 0, 7], gen)
    fn = lambda a: ops.hadamard_sums(a, t.signs, t.radii, index.perm, index.offsets, 10)
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))
    torch.library.opcheck(ops.hadamard_sums.default, (x, t.signs, t.radii, index.perm, index.offsets, 10))
    grad = torch.randn(3, 2, 10, generator=gen, dtype=torch.float64)
    torch.library.opcheck(
        ops.hadamard_sums_grad_x.default, (grad, x.detach(), t.signs, t.radii, index.perm, index.offsets, 10)
    )


TRITON_CASES = [  # block widths 16 (one product), 64, and 256 = 16 x 16 (the two-product transform)
    ("d13_cut_block", 77, 50, 13, [40, 0, 37]),
    ("fewer_freqs_than_width", 40, 3, 40, [40]),
    ("d130_two_products", 50, 300, 130, [20, 1, 29]),
]


@needs_triton
@pytest.mark.parametrize("case", TRITON_CASES, ids=[c[0] for c in TRITON_CASES])
def test_the_triton_op_equals_the_dense_product_with_the_same_signs_and_radii(case):
    """On a GPU this is the tensor-core transform; here the interpreter runs the same kernels."""
    _, n, m, d, sizes = case
    gen = torch.Generator().manual_seed(n + m)
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    t = hadamard_frequencies("gaussian", m, d, bandwidth=0.7, generator=gen, dtype=torch.float64)
    index = _layout(n, sizes, gen)
    grad = torch.randn(index.num_classes, 2, m, generator=gen, dtype=torch.float64)
    truth = sums_and_grads(
        lambda a, _: ecf_sums_reference(a, t.dense(), index.labels, index.num_classes), x, t.radii, grad
    )[:2]
    t32 = t.to(dtype=torch.float32)
    got = sums_and_grads(
        lambda a, _: ops.hadamard_sums_triton(a, t32.signs, t32.radii, index.perm, index.offsets, m, "ieee"),
        x.float(),
        t32.radii,
        grad.float(),
    )[:2]
    base = sums_and_grads(
        lambda a, _: ecf_sums_reference(a, t32.dense(), index.labels, index.num_classes),
        x.float(),
        t32.radii,
        grad.float(),
    )[:2]
    # Three float32 transforms (and, for dx, three more) round more often than one dense product:
    # within 4x PyTorch's float32 error on the dense form, plus a floor of 2e-6 relative.
    for ours, theirs, want in zip(got, base, truth):
        assert max_error(ours, want) <= 4 * max_error(theirs, want) + 2e-6 * max(1.0, want.abs().max().item())
    # The public route: backend="triton" takes HadamardFrequencies to this op.
    loss = sk.sdd(x[: n // 2].float(), x[n // 2 :].float(), None, None, t=t32, backend="triton")
    torch.testing.assert_close(
        loss,
        sk.sdd(x[: n // 2].float(), x[n // 2 :].float(), None, None, t=t32.dense(), backend="reference"),
        rtol=1e-4,
        atol=1e-6,
    )


@needs_triton
def test_the_triton_ops_pass_opcheck():
    gen = torch.Generator().manual_seed(9)
    x = torch.randn(21, 16, generator=gen)
    t = hadamard_frequencies("gaussian", 20, 16, generator=gen)
    index = _layout(21, [10, 0, 11], gen)
    args = (t.signs, t.radii, index.perm, index.offsets, 20, "ieee")
    torch.library.opcheck(ops.hadamard_sums_triton.default, (x, *args))
    grad = torch.randn(3, 2, 20, generator=gen)
    torch.library.opcheck(ops.hadamard_sums_triton_grad_x.default, (grad, x, *args))


@needs_cpu
@pytest.mark.parametrize("name", ["ncfd", "sdd", "csdm"])
def test_every_discrepancy_takes_hadamard_frequencies_and_agrees_with_their_dense_form(name):
    gen = torch.Generator().manual_seed(7)
    real, syn = torch.randn(120, 12, generator=gen), torch.randn(30, 12, generator=gen) + 0.2
    ry, sy = torch.arange(120) % 3, torch.arange(30) % 3
    t = hadamard_frequencies("gaussian", 100, 12, bandwidth=3.0, generator=gen)
    fns = {
        "ncfd": lambda f, b: sk.ncfd(real, syn, f, ry, sy, backend=b),
        "sdd": lambda f, b: sk.sdd(real, syn, ry, sy, t=f, backend=b),
        "csdm": lambda f, b: sk.csdm(real, syn, ry, sy, class_counts=[60, 40, 20], t=f, backend=b),
    }
    torch.testing.assert_close(fns[name](t, "cpu"), fns[name](t.dense(), "reference"), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(fns[name](t, "reference"), fns[name](t.dense(), "reference"))


@needs_cpu
def test_hadamard_frequencies_compile_with_fullgraph():
    torch._dynamo.reset()
    gen = torch.Generator().manual_seed(8)
    real, syn = torch.randn(64, 10, generator=gen), torch.randn(16, 10, generator=gen).requires_grad_(True)
    ry, sy = torch.arange(64) % 2, torch.arange(16) % 2
    t = hadamard_frequencies("gaussian", 40, 10, generator=gen)
    fn = lambda a, b: sk.sdd(a, b, ry, sy, t=t, num_classes=2, backend="cpu")
    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    eager = fn(real, syn)
    got = compiled(real, syn)
    torch.testing.assert_close(got, eager)
    torch.testing.assert_close(torch.autograd.grad(got, syn)[0], torch.autograd.grad(eager, syn)[0])


def test_losses_and_the_distillation_driver_take_a_structure(tmp_path):
    real, syn = torch.randn(50, 8), torch.randn(20, 8)
    for structure in ("orthogonal", "hadamard"):
        loss = sk.SDDLoss(structure=structure, num_freqs=32, generator=torch.Generator().manual_seed(0))
        assert torch.isfinite(loss(real, syn)) and structure in repr(loss)
    with pytest.raises(ValueError, match="not radial"):
        sk.CSDMLoss([3, 3], kernel="laplacian", structure="orthogonal")
    with pytest.raises(ValueError, match="t was given"):
        sk.sdd(real, syn, t=torch.randn(4, 8), structure="hadamard")
