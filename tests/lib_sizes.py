"""Inputs for the bad-input catalogue's "library values and sizes" cases (tests/test_bad_input.py):
SORF frequencies with one bad value, tensors that are huge without holding memory (expanded
scalars)."""

from __future__ import annotations

import torch

from spectral_kernels.structured import HadamardFrequencies

X = torch.randn(6, 3, generator=torch.Generator().manual_seed(1))
Y = torch.randn(4, 3, generator=torch.Generator().manual_seed(2))
PERM, OFFS = torch.arange(6), torch.tensor([0, 3, 6])


def sorf(signs=None, radii=None, *, num_freqs=8, dim=3, width=4, blocks=2, dtype=torch.float32):
    """HadamardFrequencies with valid random signs and radii, and `signs`/`radii` replaced: a callable (t) -> t, a
    (index, value) pair to set one entry, or a value to use as it is."""
    gen = torch.Generator().manual_seed(width)
    t = HadamardFrequencies(
        (torch.randint(0, 2, (blocks, 3, width), generator=gen) * 2 - 1).to(dtype),
        torch.rand(blocks, width, generator=gen, dtype=dtype) + 0.5,
        num_freqs,
        dim,
    )

    def replace(tensor, how):
        if how is None:
            return tensor
        if callable(how):
            return how(tensor.clone())
        if isinstance(how, tuple) and len(how) == 2 and isinstance(how[0], tuple):
            tensor = tensor.clone()
            tensor[how[0]] = how[1]
            return tensor
        return how

    return HadamardFrequencies(replace(t.signs, signs), replace(t.radii, radii), num_freqs, dim)


def op(name, signs, radii, num_freqs=8, x=X, precision=None):
    """A call of the raw SORF op `name` (its precision argument where it takes one)."""
    extra = () if precision is None else (precision,)
    return lambda: getattr(torch.ops.spectral_kernels, name)(x, signs, radii, PERM, OFFS, num_freqs, *extra)


def op_grad(name, signs, radii, num_freqs=8, precision=None):
    extra = () if precision is None else (precision,)
    grad = torch.ones(2, 2, num_freqs)
    return lambda: getattr(torch.ops.spectral_kernels, name)(grad, X, signs, radii, PERM, OFFS, num_freqs, *extra)


def signs_with(index, value, width=4, blocks=2):
    s = sorf(width=width, blocks=blocks).signs.clone()
    s[index] = value
    return s


def radii_with(index, value, width=4, blocks=2):
    r = sorf(width=width, blocks=blocks).radii.clone()
    r[index] = value
    return r


def requiring_grad(tensor):
    return tensor.requires_grad_(True)


def huge_rows(rows, dim=3):
    """(rows, dim) finite features that hold one value: an expanded scalar, no memory."""
    return torch.ones(1, 1).expand(rows, dim)


def huge_sorf(blocks, width, num_freqs, dim):
    """Valid SORF parameters of any size, as expanded scalars (no memory)."""
    return HadamardFrequencies(
        torch.ones(1, 1, 1).expand(blocks, 3, width), torch.ones(1, 1).expand(blocks, width), num_freqs, dim
    )
