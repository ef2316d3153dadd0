"""spectral_kernels.frequencies, the one home of frequency objects (SPEC §4): every structure is
drawn through sk.sample_frequencies, SORF stays lazy there too, and what sdd/csdm draw for a
structure is that same draw."""

import pytest
import torch

import spectral_kernels as sk
from spectral_kernels import frequencies


def test_sample_frequencies_with_the_hadamard_structure_is_the_lazy_sorf_draw():
    draw = dict(nu=2.5, bandwidth=[0.5, 2.0], dtype=torch.float64)
    t = sk.sample_frequencies(
        "matern", 37, 11, structure="hadamard", generator=torch.Generator().manual_seed(4), **draw
    )
    same = sk.hadamard_frequencies("matern", 37, 11, generator=torch.Generator().manual_seed(4), **draw)
    assert isinstance(t, sk.HadamardFrequencies) and t.shape == (37, 11)
    assert torch.equal(t.signs, same.signs) and torch.equal(t.radii, same.radii)
    dense = t.dense()  # the one way to materialise it
    assert isinstance(dense, torch.Tensor) and dense.shape == (37, 11) and dense.dtype == torch.float64


@pytest.mark.parametrize("structure", frequencies.STRUCTURES)
def test_what_sdd_draws_for_a_structure_is_sample_frequencies_draw(structure):
    gen = torch.Generator().manual_seed(11)
    real, syn = torch.randn(40, 6, generator=gen, dtype=torch.float64), torch.randn(25, 6, generator=gen).double()
    ry, sy = torch.arange(40) % 3, torch.arange(25) % 3
    options = dict(kernel="gaussian", bandwidth=[0.7, 3.0])
    drawn = sk.sdd(
        real, syn, ry, sy, num_freqs=21, structure=structure, generator=torch.Generator().manual_seed(5), **options
    )
    gen = torch.Generator().manual_seed(5)
    t = sk.sample_frequencies(
        "gaussian", 21, 6, structure=structure, bandwidth=[0.7, 3.0], generator=gen, dtype=real.dtype
    )
    # with t given there is no factor for the two bandwidths: the drawn value is twice it (exactly: a power of two)
    assert torch.equal(drawn, 2.0 * sk.sdd(real, syn, ry, sy, t=t, **options))


def test_every_public_draw_comes_from_the_frequencies_module():
    assert sk.sample_frequencies is frequencies.sample_frequencies
    assert sk.hadamard_frequencies is frequencies.hadamard_frequencies
    assert sk.HadamardFrequencies is frequencies.HadamardFrequencies
    assert frequencies.STRUCTURES == ("iid", "orthogonal", "hadamard")
