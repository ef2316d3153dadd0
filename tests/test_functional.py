import math

import pytest
import torch

import spectral_kernels as sk

from .conftest import FUSED_BACKENDS, make_pair

BACKENDS = ["reference"] + FUSED_BACKENDS


def ncfm_reference_loss(real, syn, t, rl, sl, num_classes):
    """The NCFM public code's loss, written out independently: per class, then averaged."""
    losses = []
    for c in range(num_classes):
        feat_tg, feat = real[rl == c], syn[sl == c]
        tx, ttg = t @ feat.T, t @ feat_tg.T  # (M, n): the NCFM code's layout
        x_re, x_im = torch.cos(tx).mean(1), torch.sin(tx).mean(1)
        tg_re, tg_im = torch.cos(ttg).mean(1), torch.sin(ttg).mean(1)
        x_norm, tg_norm = torch.sqrt(x_re**2 + x_im**2), torch.sqrt(tg_re**2 + tg_im**2)
        loss_amp = (tg_norm - x_norm) ** 2
        loss_pha = (2 * (tg_norm * x_norm - x_re * tg_re - x_im * tg_im)).clamp(min=1e-12)
        losses.append(torch.mean(torch.sqrt(0.5 * loss_amp + 0.5 * loss_pha)))
    return torch.stack(losses).mean()


@pytest.mark.parametrize("backend", BACKENDS)
def test_ncfd_with_half_alpha_equals_the_ncfm_formula(rng, backend):
    real, syn, rl, sl = make_pair(rng, n=50, s=21, d=6, num_classes=3)
    t = torch.randn(40, 6, generator=rng, dtype=torch.float64)
    ours = sk.ncfd(real, syn, t, rl, sl, alpha=0.5, backend=backend)
    torch.testing.assert_close(ours, ncfm_reference_loss(real, syn, t, rl, sl, 3), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("backend", BACKENDS)
def test_ecf_is_the_per_class_mean_of_cos_and_sin(rng, backend):
    x = torch.randn(31, 4, generator=rng, dtype=torch.float64)
    t = torch.randn(9, 4, generator=rng, dtype=torch.float64)
    y = torch.randint(0, 5, (31,), generator=rng)
    re, im = sk.ecf(x, t, y, num_classes=6, backend=backend)
    for c in range(6):
        p = x[y == c] @ t.T
        expected_re = p.cos().mean(0) if p.shape[0] else torch.zeros(9, dtype=torch.float64)
        expected_im = p.sin().mean(0) if p.shape[0] else torch.zeros(9, dtype=torch.float64)
        torch.testing.assert_close(re[c], expected_re)
        torch.testing.assert_close(im[c], expected_im)
    re1, im1 = sk.ecf(x, t, backend=backend)
    torch.testing.assert_close(re1[0], (x @ t.T).cos().mean(0))
    torch.testing.assert_close(im1[0], (x @ t.T).sin().mean(0))


@pytest.mark.parametrize("backend", BACKENDS)
def test_discrepancies_vanish_for_identical_sets(rng, backend):
    x, _, y, _ = make_pair(rng, n=30, num_classes=3)
    t = torch.randn(50, x.shape[1], generator=rng, dtype=torch.float64)
    assert float(sk.ncfd(x, x, t, y, y, sqrt=False, eps=0.0, backend=backend)) < 1e-14
    # With the sqrt, the eps clamp leaves exactly sqrt((1 - alpha) eps).
    torch.testing.assert_close(
        sk.ncfd(x, x, t, y, y, backend=backend), torch.tensor(math.sqrt(0.5e-12), dtype=torch.float64)
    )
    assert abs(float(sk.sdd(x, x, y, y, t=t, backend=backend))) < 1e-14
    assert abs(float(sk.csdm(x, x, y, y, class_counts=[5, 3, 1], t=t, backend=backend))) < 1e-14
    for kernel in ("gaussian", "linear", "laplacian", "cauchy", "matern"):
        assert abs(float(sk.mmd(x, x, y, y, kernel=kernel))) < 1e-12


@pytest.mark.parametrize("backend", BACKENDS)
def test_discrepancies_are_invariant_to_sample_order(rng, backend):
    real, syn, rl, sl = make_pair(rng, n=40, s=17, num_classes=3)
    t = torch.randn(30, real.shape[1], generator=rng, dtype=torch.float64)
    pr, ps = torch.randperm(40, generator=rng), torch.randperm(17, generator=rng)
    fns = [
        lambda a, b, ya, yb: sk.ncfd(a, b, t, ya, yb, backend=backend, reduction="none"),
        lambda a, b, ya, yb: sk.sdd(a, b, ya, yb, t=t, backend=backend, reduction="none"),
        lambda a, b, ya, yb: sk.csdm(a, b, ya, yb, class_counts=[9, 4, 2], t=t, backend=backend, reduction="none"),
        lambda a, b, ya, yb: sk.mmd(a, b, ya, yb, reduction="none"),
    ]
    for fn in fns:
        torch.testing.assert_close(fn(real, syn, rl, sl), fn(real[pr], syn[ps], rl[pr], sl[ps]), rtol=1e-12, atol=1e-14)


def test_reductions_and_classes_absent_from_both_sides(rng):
    real, syn, rl, sl = make_pair(rng, num_classes=3)
    t = torch.randn(20, real.shape[1], generator=rng, dtype=torch.float64)
    # Relabel class 1 as class 4 so that classes 1 and 3 are absent from both sides (C = 5).
    rl, sl = torch.where(rl == 1, 4, rl), torch.where(sl == 1, 4, sl)
    per = sk.ncfd(real, syn, t, rl, sl, num_classes=5, reduction="none")
    assert per.shape == (5,) and per[1] == 0 and per[3] == 0 and (per[[0, 2, 4]] > 0).all()
    torch.testing.assert_close(sk.ncfd(real, syn, t, rl, sl, num_classes=5, reduction="sum"), per.sum())
    torch.testing.assert_close(sk.ncfd(real, syn, t, rl, sl, num_classes=5), per.sum() / 3)
    torch.testing.assert_close(
        sk.mmd(real, syn, rl, sl, num_classes=5), sk.mmd(real, syn, rl, sl, num_classes=5, reduction="none").sum() / 3
    )


def test_no_labels_means_one_class(rng):
    real, syn, _, _ = make_pair(rng)
    t = torch.randn(20, real.shape[1], generator=rng, dtype=torch.float64)
    zeros_r, zeros_s = torch.zeros(real.shape[0], dtype=torch.long), torch.zeros(syn.shape[0], dtype=torch.long)
    torch.testing.assert_close(sk.sdd(real, syn, t=t), sk.sdd(real, syn, zeros_r, zeros_s, t=t))
    assert sk.ncfd(real, syn, t, reduction="none").shape == (1,)


def test_csdm_with_half_alpha_is_half_the_sdd(rng):
    real, syn, rl, sl = make_pair(rng, num_classes=3)
    t = torch.randn(25, real.shape[1], generator=rng, dtype=torch.float64)
    half = sk.csdm(real, syn, rl, sl, class_counts=[10, 5, 1], alpha_head=0.5, t=t, reduction="none")
    torch.testing.assert_close(half, sk.sdd(real, syn, rl, sl, t=t, reduction="none") / 2)


def test_csdm_weights_amplitude_for_head_and_phase_for_tail_classes(rng):
    real, syn, rl, sl = make_pair(rng, num_classes=2)
    t = torch.randn(25, real.shape[1], generator=rng, dtype=torch.float64)
    per = sk.csdm(real, syn, rl, sl, class_counts=[100, 10], alpha_head=0.8, t=t, reduction="none")
    re_p, im_p = sk.ecf(real, t, rl)
    re_q, im_q = sk.ecf(syn, t, sl)
    from spectral_kernels.terms import amplitude_phase

    amplitude, phase = amplitude_phase(re_p, im_p, re_q, im_q)
    expected = torch.stack([(0.8 * amplitude[0] + 0.2 * phase[0]).mean(), (0.2 * amplitude[1] + 0.8 * phase[1]).mean()])
    torch.testing.assert_close(per, expected)


@pytest.mark.parametrize(
    "counts,expected_head",
    [
        ([50, 10, 30], [True, False, True]),  # odd C: median 30
        ([50, 10, 30, 20], [True, False, True, False]),  # even C: median (20 + 30) / 2 = 25
        ([7, 7, 7, 7], [True, True, True, True]),  # equal counts: all head
        ([1, 2], [False, True]),  # median 1.5
    ],
)
def test_csdm_median_rule(counts, expected_head):
    alpha = sk.csdm_class_alpha(counts, alpha_head=0.8)
    expected = torch.where(torch.tensor(expected_head), 0.8, 0.2).double()
    torch.testing.assert_close(alpha, expected)


def test_csdm_explicit_head_mask_overrides_the_rule():
    alpha = sk.csdm_class_alpha([100, 1, 50], alpha_head=0.9, head_classes=torch.tensor([False, True, False]))
    torch.testing.assert_close(alpha, torch.tensor([0.1, 0.9, 0.1], dtype=torch.float64))


def test_csdm_log_linear_rule():
    alpha = sk.csdm_class_alpha([1000, 10, 100], alpha_head=0.8, alpha_rule="log-linear")
    # log10 counts 3, 1, 2: rarest 0.2, most frequent 0.8, the middle one halfway.
    torch.testing.assert_close(alpha, torch.tensor([0.8, 0.2, 0.5], dtype=torch.float64))
    torch.testing.assert_close(
        sk.csdm_class_alpha([4, 4], alpha_rule="log-linear"), torch.tensor([0.8, 0.8], dtype=torch.float64)
    )


def test_mmd_linear_is_the_squared_mean_difference(rng):
    real, syn, _, _ = make_pair(rng)
    torch.testing.assert_close(sk.mmd(real, syn, kernel="linear"), ((real.mean(0) - syn.mean(0)) ** 2).sum())


@pytest.mark.parametrize("kernel", ["gaussian", "laplacian", "cauchy", "matern", "linear"])
def test_mmd_u_statistic_leaves_out_the_diagonal(rng, kernel):
    from spectral_kernels.kernels import kernel_matrix

    real, syn, _, _ = make_pair(rng, n=12, s=9)
    k = lambda a, b: kernel_matrix(kernel, a, b, (1.3,), 1.5)
    off_diag = lambda z: (k(z, z).sum() - k(z, z).diagonal().sum()) / (z.shape[0] * (z.shape[0] - 1))
    expected = off_diag(real) + off_diag(syn) - 2 * k(real, syn).mean()
    torch.testing.assert_close(sk.mmd(real, syn, kernel=kernel, bandwidth=1.3, estimator="u"), expected)


def test_mmd_with_several_bandwidths_sums_the_kernels(rng):
    real, syn, _, _ = make_pair(rng)
    total = sk.mmd(real, syn, bandwidth=[0.5, 2.0])
    torch.testing.assert_close(total, sk.mmd(real, syn, bandwidth=0.5) + sk.mmd(real, syn, bandwidth=2.0))


# ----------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradcheck_of_every_function_in_features_and_frequencies(rng, backend):
    real, syn, rl, sl = make_pair(rng, n=9, s=6, d=3, num_classes=2)
    t = torch.randn(7, 3, generator=rng, dtype=torch.float64)
    for tensor in (real, syn, t):
        tensor.requires_grad_(True)
    fns = {
        "ncfd": lambda a, b, f: sk.ncfd(a, b, f, rl, sl, backend=backend),
        "ncfd_alpha": lambda a, b, f: sk.ncfd(
            a, b, f, rl, sl, alpha=torch.tensor([0.2, 0.9], dtype=torch.float64), sqrt=False, backend=backend
        ),
        "sdd": lambda a, b, f: sk.sdd(a, b, rl, sl, t=f, backend=backend, reduction="none"),
        "csdm": lambda a, b, f: sk.csdm(a, b, rl, sl, class_counts=[9, 2], t=f, backend=backend),
        "ecf": lambda a, b, f: torch.cat(sk.ecf(a, f, rl, backend=backend)),
    }
    for name, fn in fns.items():
        assert torch.autograd.gradcheck(fn, (real, syn, t)), name


@pytest.mark.parametrize("kernel", ["gaussian", "laplacian", "cauchy", "matern", "linear"])
def test_gradcheck_of_mmd(rng, kernel):
    real, syn, rl, sl = make_pair(rng, n=8, s=6, d=3, num_classes=2)
    real.requires_grad_(True)
    syn.requires_grad_(True)
    for estimator in ("v", "u"):
        fn = lambda a, b, estimator=estimator: sk.mmd(a, b, rl, sl, kernel=kernel, nu=2.5, estimator=estimator)
        assert torch.autograd.gradcheck(fn, (real, syn))


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradients_are_finite_for_identical_sets_and_vanishing_ecf(backend):
    # Two points half a period apart: cos sums to 0 and sin to ~1e-16, so |P| is ~0.
    t = torch.tensor([[1.0], [2.0]], dtype=torch.float64, requires_grad=True)
    real = torch.tensor([[0.0], [math.pi]], dtype=torch.float64, requires_grad=True)
    syn = real.detach().clone().requires_grad_(True)
    fns = [
        lambda: sk.ncfd(real, syn, t, backend=backend),
        lambda: sk.ncfd(real, syn, t, alpha=1.0, backend=backend),
        lambda: sk.sdd(real, syn, t=t, backend=backend),
        lambda: sk.csdm(
            real,
            syn,
            torch.zeros(2, dtype=torch.long),
            torch.zeros(2, dtype=torch.long),
            class_counts=[2],
            t=t,
            backend=backend,
        ),
    ]
    for fn in fns:
        grads = torch.autograd.grad(fn(), (real, syn, t))
        assert all(torch.isfinite(g).all() for g in grads)
    # At identical sets SDD is at its minimum: its gradient is zero.
    grads = torch.autograd.grad(sk.sdd(real, syn, t=t, backend=backend), (syn,))
    assert grads[0].abs().max() < 1e-12
