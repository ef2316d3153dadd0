import torch

import spectral_kernels as sk

from .conftest import make_pair


def _fresh_draw_ncfd(sampler, real, syn, rl, sl, seed):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        return torch.stack([sk.ncfd(real, syn, sampler(generator=gen), rl, sl) for _ in range(20)]).mean()


def test_max_step_moves_the_sampler_and_raises_the_discrepancy(rng):
    """SPEC §5: after gradient ascent the discrepancy under fresh draws has risen."""
    real, syn, rl, sl = make_pair(rng, n=200, s=60, d=8, num_classes=2, shift=0.5, dtype=torch.float32)
    # Start far too wide a bandwidth: low frequencies barely tell the two samples apart.
    sampler = sk.FrequencySampler(8, num_freqs=256, bandwidth=20.0, spread=0.5)
    before_params = sampler.log_scales.detach().clone()
    before = _fresh_draw_ncfd(sampler, real, syn, rl, sl, seed=100)
    opt = torch.optim.Adam(sampler.parameters(), lr=0.1)
    gen = torch.Generator().manual_seed(0)
    for _ in range(25):
        opt.zero_grad()
        loss = sk.ncfd(real, syn, sampler(generator=gen), rl, sl)
        loss.backward()
        for p in sampler.parameters():
            p.grad.neg_()  # ascent
        opt.step()
    after = _fresh_draw_ncfd(sampler, real, syn, rl, sl, seed=100)
    assert not torch.allclose(sampler.log_scales.detach(), before_params)
    assert after > 1.5 * before, (float(before), float(after))


def test_sampler_gradient_reaches_every_component(rng):
    real, syn, rl, sl = make_pair(rng, d=4, dtype=torch.float32)
    sampler = sk.FrequencySampler(4, num_freqs=64, num_components=4)
    sk.ncfd(real, syn, sampler(), rl, sl).backward()
    assert (sampler.log_scales.grad != 0).all()


def test_sampler_default_components_and_seeded_draws():
    sampler = sk.FrequencySampler(3, num_freqs=160)
    assert sampler.num_components == 10
    a = sampler(generator=torch.Generator().manual_seed(1))
    b = sampler(generator=torch.Generator().manual_seed(1))
    assert a.shape == (160, 3) and torch.equal(a, b)
