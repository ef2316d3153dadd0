import math

import pytest
import torch
from scipy import stats

import spectral_kernels as sk
from spectral_kernels.kernels import standard_gamma

from .conftest import make_pair


def _sdd_draws(real, syn, rl, sl, kernel, bandwidth, nu, draws=30, num_freqs=2048):
    gen = torch.Generator().manual_seed(7)
    return torch.stack(
        [
            sk.sdd(real, syn, rl, sl, kernel=kernel, bandwidth=bandwidth, nu=nu, num_freqs=num_freqs, generator=gen)
            for _ in range(draws)
        ]
    )


CASES = [
    ("gaussian", 0.5, 1.5),
    ("gaussian", 1.0, 1.5),
    ("gaussian", 3.0, 1.5),
    ("gaussian", [0.5, 2.0], 1.5),
    ("laplacian", 0.7, 1.5),
    ("laplacian", 2.0, 1.5),
    ("laplacian", 5.0, 1.5),
    ("cauchy", 0.5, 1.5),
    ("cauchy", 1.0, 1.5),
    ("cauchy", 3.0, 1.5),
    ("matern", 1.0, 0.5),
    ("matern", 0.7, 1.5),
    ("matern", 2.0, 1.5),
    ("matern", 1.5, 2.5),
    ("matern", [0.5, 3.0], 2.5),
]


@pytest.mark.parametrize("kernel,bandwidth,nu", CASES)
def test_sdd_averaged_over_draws_matches_exact_mmd(rng, kernel, bandwidth, nu):
    """Bochner: E_w |P(w) - Q(w)|^2 = biased MMD^2. Checks the samplers and the whole SDD path."""
    real, syn, rl, sl = make_pair(rng, n=40, s=30, d=3, num_classes=2, shift=0.6)
    exact = sk.mmd(real, syn, rl, sl, kernel=kernel, bandwidth=bandwidth, nu=nu, estimator="v")
    draws = _sdd_draws(real, syn, rl, sl, kernel, bandwidth, nu)
    standard_error = draws.std() / math.sqrt(draws.numel())
    # The test has power only if the estimate is tight relative to the value it checks.
    assert 5 * standard_error < 0.15 * exact, (float(standard_error), float(exact))
    assert abs(draws.mean() - exact) <= 5 * standard_error, (float(draws.mean()), float(exact), float(standard_error))


def test_sdd_of_one_class_matches_exact_mmd_per_class(rng):
    real, syn, rl, sl = make_pair(rng, n=30, s=18, d=4, num_classes=3, shift=0.5)
    exact = sk.mmd(real, syn, rl, sl, kernel="gaussian", bandwidth=1.5, reduction="none")
    gen = torch.Generator().manual_seed(3)
    draws = torch.stack(
        [sk.sdd(real, syn, rl, sl, bandwidth=1.5, num_freqs=4096, generator=gen, reduction="none") for _ in range(20)]
    )
    se = draws.std(0) / math.sqrt(20)
    assert (abs(draws.mean(0) - exact) <= 5 * se).all()


MARGINALS = [
    ("gaussian", 2.0, 1.5, stats.norm(scale=0.5)),
    ("laplacian", 2.0, 1.5, stats.cauchy(scale=0.5)),
    ("cauchy", 2.0, 1.5, stats.laplace(scale=0.5)),
    ("matern", 2.0, 1.5, stats.t(df=3.0, scale=0.5)),
    ("matern", 0.5, 0.75, stats.t(df=1.5, scale=2.0)),
]


@pytest.mark.parametrize("kernel,bandwidth,nu,law", MARGINALS)
def test_frequency_marginals_follow_the_spectral_law(kernel, bandwidth, nu, law):
    gen = torch.Generator().manual_seed(11)
    w = sk.sample_frequencies(kernel, 4000, 3, bandwidth=bandwidth, nu=nu, generator=gen, dtype=torch.float64)
    for column in w.T:
        assert stats.kstest(column.numpy(), law.cdf).pvalue > 1e-3


@pytest.mark.parametrize("shape", [0.3, 1.0, 2.5, 7.0])
def test_standard_gamma_has_the_gamma_law(shape):
    gen = torch.Generator().manual_seed(5)
    g = standard_gamma(shape, 5000, generator=gen, device=torch.device("cpu"))
    assert stats.kstest(g.numpy(), stats.gamma(a=shape).cdf).pvalue > 1e-3


@pytest.mark.parametrize("kernel", ["gaussian", "laplacian", "cauchy", "matern"])
def test_seeded_sampling_is_reproducible_bit_for_bit(kernel):
    draw = lambda seed: sk.sample_frequencies(
        kernel, 257, 9, bandwidth=[0.5, 2.0], generator=torch.Generator().manual_seed(seed)
    )
    assert torch.equal(draw(42), draw(42))
    assert not torch.equal(draw(42), draw(43))


def test_seeded_sdd_is_reproducible_bit_for_bit(rng):
    real, syn, rl, sl = make_pair(rng)
    run = lambda: sk.sdd(real, syn, rl, sl, kernel="matern", num_freqs=300, generator=torch.Generator().manual_seed(9))
    assert torch.equal(run(), run())


def test_sample_frequencies_honours_device_and_dtype():
    w = sk.sample_frequencies("gaussian", 5, 2, device="meta", dtype=torch.float16)
    assert w.device.type == "meta" and w.dtype == torch.float16 and w.shape == (5, 2)
