"""Frequencies (SPEC §4): the one place that turns a request for frequencies into the object the
discrepancies take, or checks one a caller gives.

A frequency object is either a dense (M, d) tensor or SORF parameters (HadamardFrequencies,
never materialised unless asked with `.dense()`). It comes from

- a draw: (kernel, bandwidth, nu, structure, num_freqs, dim, generator, device, dtype) ->
  `sample_frequencies`, which looks the structure up in STRUCTURES and runs its construction
  (the i.i.d. law in kernels.py, ORF and SORF in structured.py), or
- a caller's `t`: a tensor or HadamardFrequencies, checked against the features by `given`.

`resolve` is what sdd and csdm ask (drawn or given, with the factor for a list of bandwidths);
ecf and ncfd, which take t only, ask `given`. A new structure is a construction in its own
module and one entry in STRUCTURES. This module sits above kernels.py and structured.py and
imports nothing that imports it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeAlias

import torch

from . import _checks
from .kernels import check_kernel, iid_frequencies, require_radial
from .structured import HadamardFrequencies, check_hadamard, hadamard_frequencies, orthogonal_frequencies

Frequencies: TypeAlias = "torch.Tensor | HadamardFrequencies"  # t: a matrix (M, d) or SORF parameters

__all__ = [
    "STRUCTURES",
    "Frequencies",
    "HadamardFrequencies",
    "check_structure",
    "given",
    "hadamard_frequencies",
    "resolve",
    "sample_frequencies",
]


@dataclass(frozen=True)
class Structure:
    """How one `structure=` draws: its construction (arguments as sample_frequencies less
    `structure`), and whether it needs a radial spectral measure (the structured ones build
    directions and radii separately, which only a radial law allows)."""

    draw: Callable[..., Frequencies]
    radial: bool


# The registry of structures, in the order error messages list them.
_STRUCTURES = {
    "iid": Structure(iid_frequencies, radial=False),
    "orthogonal": Structure(orthogonal_frequencies, radial=True),
    "hadamard": Structure(hadamard_frequencies, radial=True),  # lazy: HadamardFrequencies
}
STRUCTURES = tuple(_STRUCTURES)


def check_structure(structure, kernel) -> str:
    """A known structure that `kernel` (not yet checked) allows: the structured ones need a
    radial spectral measure."""
    structure = _checks.choice("structure", structure, STRUCTURES)
    if _STRUCTURES[structure].radial:
        require_radial(kernel, structure)
    return structure


def sample_frequencies(
    kernel: str,
    num_freqs: int,
    dim: int,
    *,
    bandwidth: float | list[float] = 1.0,
    nu: float = 1.5,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    structure: str = "iid",
) -> Frequencies:
    """Draw `num_freqs` frequencies in `dim` dimensions from the spectral measure of `kernel`
    (SPEC §4).

    | kernel    | k(x, y), D = x - y               | each row w                          |
    | gaussian  | exp(-|D|_2^2 / (2 sigma^2))      | N(0, I / sigma^2)                   |
    | laplacian | exp(-|D|_1 / sigma)              | i.i.d. Cauchy(0, 1/sigma)           |
    | cauchy    | prod_j 1 / (1 + D_j^2 / sigma^2) | i.i.d. Laplace(0, 1/sigma)          |
    | matern    | Matérn(nu), length-scale sigma   | multivariate t, 2 nu dof, 1/sigma   |

    With a list of bandwidths each row picks one of them uniformly at random: the draws then
    come from the spectral measure of the *average* of those kernels (sdd/csdm multiply by the
    number of bandwidths so that they match the *summed* kernel of `mmd`).

    structure: "iid" (independent rows), or, for the radial kernels (gaussian, matern), the
    lower-variance constructions of SPEC §4.1 (spectral_kernels.structured): "orthogonal" (ORF:
    blocks of d orthogonal directions, each row's length drawn from the kernel's radius law)
    and "hadamard" (SORF: blocks of H D1 H D2 H D3). Each row still has the kernel's spectral
    measure as its law.

    Returns a dense (M, d) tensor for "iid" and "orthogonal"; for "hadamard" the SORF
    parameters, a HadamardFrequencies (the same draw as sk.hadamard_frequencies), which every
    function that takes `t` accepts without building the matrix. Its `.dense()` is the one way
    to materialise the (M, d) tensor.

    The draw happens on the generator's device (CPU without one) in float64, then moves to
    `device` and `dtype` (default: the generator's device, torch's default dtype), so the same
    seed gives the same frequencies on every device.

    Raises ValueError for an unknown or linear kernel, num_freqs or dim < 1, bandwidth <= 0 or
    nu <= 0, a bandwidth whose frequencies `dtype` cannot hold (1 / bandwidth below its
    smallest normal number, or 16 / bandwidth above its largest finite value: the message gives
    the limit), a draw that overflows `dtype` anyway (the laplacian and Matérn laws have heavy
    tails; checked outside torch.compile), an unknown structure or a structured draw of a
    kernel whose measure is not radial; TypeError for arguments of the wrong type.
    """
    structure = check_structure(structure, kernel)
    return _STRUCTURES[structure].draw(
        kernel, num_freqs, dim, bandwidth=bandwidth, nu=nu, generator=generator, device=device, dtype=dtype
    )


def given(name: str, t, like: torch.Tensor, like_name: str, check_finite: bool) -> Frequencies:
    """Frequencies passed in as `name`: an (M, d) tensor, or HadamardFrequencies (structured,
    never materialised), checked against the features `like` as the features are checked."""
    if isinstance(t, HadamardFrequencies):
        check_hadamard(name, t, like, like_name, check_finite)
        return t
    t = _checks.frequencies(name, t, like, like_name)
    if check_finite:
        _checks.finite(name, t)
    return t


def resolve(
    t, *, kernel, bandwidth, nu, num_freqs, generator, structure, like: torch.Tensor, check_finite: bool
) -> tuple[Frequencies, float]:
    """The frequencies of sdd/csdm and the factor that turns their mean into the summed-kernel
    value: `t` checked against `like` (the real features) when given, else a fresh draw of
    `structure` on like's device and dtype, times the number of bandwidths. Drawn frequencies
    are checked by their constructions, given ones here."""
    check_kernel(kernel, spectral=True)
    sigmas = _checks.bandwidths(bandwidth)
    _checks.positive("nu", nu)
    structure = check_structure(structure, kernel)
    if t is not None:
        if structure != "iid":
            raise ValueError(
                f"structure={structure!r} is how frequencies are drawn, but t was given; pass one or the other"
            )
        return given("t", t, like, "real", check_finite), 1.0
    t = sample_frequencies(
        kernel,
        num_freqs,
        like.shape[1],
        bandwidth=list(sigmas),
        nu=nu,
        generator=generator,
        device=like.device,
        dtype=like.dtype,
        structure=structure,
    )
    return t, float(len(sigmas))
