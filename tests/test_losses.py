import torch

import spectral_kernels as sk

from .conftest import make_pair


def test_modules_equal_their_functions(rng):
    real, syn, rl, sl = make_pair(rng)
    t = torch.randn(30, real.shape[1], generator=rng, dtype=torch.float64)
    torch.testing.assert_close(sk.NCFDLoss(alpha=0.3)(real, syn, t, rl, sl), sk.ncfd(real, syn, t, rl, sl, alpha=0.3))
    torch.testing.assert_close(sk.SDDLoss(kernel="cauchy")(real, syn, rl, sl, t=t), sk.sdd(real, syn, rl, sl, t=t))
    loss = sk.CSDMLoss([10, 5, 1], alpha_head=0.7, reduction="none")
    torch.testing.assert_close(
        loss(real, syn, rl, sl, t=t),
        sk.csdm(real, syn, rl, sl, class_counts=[10, 5, 1], alpha_head=0.7, t=t, reduction="none"),
    )
    torch.testing.assert_close(
        sk.MMDLoss(kernel="laplacian", bandwidth=2.0)(real, syn, rl, sl),
        sk.mmd(real, syn, rl, sl, kernel="laplacian", bandwidth=2.0),
    )


def test_sdd_loss_draws_fresh_seeded_frequencies_each_call(rng):
    real, syn, _, _ = make_pair(rng)
    loss = sk.SDDLoss(num_freqs=64, generator=torch.Generator().manual_seed(0))
    first, second = loss(real, syn), loss(real, syn)
    assert first != second
    again = sk.SDDLoss(num_freqs=64, generator=torch.Generator().manual_seed(0))
    assert again(real, syn) == first


def test_a_loss_in_a_training_step_moves_the_synthetic_set_toward_the_real_one(rng):
    real, _, rl, _ = make_pair(rng, n=120, d=4, num_classes=2, dtype=torch.float32)
    syn = (torch.randn(20, 4, generator=rng) + 2.0).requires_grad_(True)
    sl = torch.arange(20) % 2
    loss_fn = sk.SDDLoss(bandwidth=2.0, num_freqs=512, generator=torch.Generator().manual_seed(0))
    opt = torch.optim.Adam([syn], lr=0.05)
    start = float(sk.mmd(real, syn.detach(), rl, sl, bandwidth=2.0))
    for _ in range(60):
        opt.zero_grad()
        loss_fn(real, syn, rl, sl).backward()
        opt.step()
    assert float(sk.mmd(real, syn.detach(), rl, sl, bandwidth=2.0)) < 0.3 * start
