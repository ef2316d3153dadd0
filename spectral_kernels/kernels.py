"""Shift-invariant kernels and their spectral measures (SPEC §4).

k(0) = 1 for every kernel, so by Bochner's theorem k(x - y) = E_w[cos(<w, x - y>)] with w drawn
from a probability law, the kernel's spectral measure. `sample_frequencies` draws from it;
`kernel_matrix` evaluates k exactly for the pairwise MMD baseline.

Every draw goes through the caller's torch.Generator, so a seeded run is reproducible bit for
bit (the gamma variates of the Matérn law use a rejection sampler written here for that reason:
torch's own gamma sampler takes no generator).
"""
from __future__ import annotations

import math

import torch

from . import _checks
from .terms import safe_sqrt

SPECTRAL_KERNELS = ("gaussian", "laplacian", "cauchy", "matern")
KERNELS = SPECTRAL_KERNELS + ("linear",)
# Matérn kernels with a closed form in elementary functions (nu = p + 1/2), for the exact MMD.
CLOSED_FORM_MATERN_NU = (0.5, 1.5, 2.5)


def check_kernel(kernel, *, spectral: bool) -> str:
    if not isinstance(kernel, str):
        raise TypeError(f"kernel must be a string, one of {KERNELS}; got {kernel!r}")
    if spectral and kernel == "linear":
        raise ValueError(
            "kernel='linear' has no spectral measure, so SDD/CSDM cannot use it; "
            "use sk.mmd(..., kernel='linear') (the DM objective) instead"
        )
    return _checks.choice("kernel", kernel, SPECTRAL_KERNELS if spectral else KERNELS)


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
) -> torch.Tensor:
    """Draw `num_freqs` frequencies (M, d) from the spectral measure of `kernel` (SPEC §4).

    | kernel    | k(x, y), D = x - y               | each row w                          |
    | gaussian  | exp(-|D|_2^2 / (2 sigma^2))      | N(0, I / sigma^2)                   |
    | laplacian | exp(-|D|_1 / sigma)              | i.i.d. Cauchy(0, 1/sigma)           |
    | cauchy    | prod_j 1 / (1 + D_j^2 / sigma^2) | i.i.d. Laplace(0, 1/sigma)          |
    | matern    | Matérn(nu), length-scale sigma   | multivariate t, 2 nu dof, 1/sigma   |

    With a list of bandwidths each row picks one of them uniformly at random: the draws then
    come from the spectral measure of the *average* of those kernels (sdd/csdm multiply by the
    number of bandwidths so that they match the *summed* kernel of `mmd`).

    The draw happens on the generator's device (CPU without one) in float64, then moves to
    `device` and `dtype` (default: the generator's device, torch's default dtype), so the same
    seed gives the same frequencies on every device.

    Raises ValueError for an unknown or linear kernel, num_freqs or dim < 1, bandwidth <= 0 or
    nu <= 0; TypeError for arguments of the wrong type.
    """
    kernel = check_kernel(kernel, spectral=True)
    num_freqs = _checks.positive_int("num_freqs", num_freqs)
    dim = _checks.positive_int("dim", dim)
    sigmas = _checks.bandwidths(bandwidth)
    nu = _checks.positive("nu", nu)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    draw_device = generator.device if generator is not None else torch.device("cpu")
    opts = dict(device=draw_device, dtype=torch.float64)

    if kernel == "gaussian":
        w = torch.randn(num_freqs, dim, generator=generator, **opts)
    elif kernel == "laplacian":
        w = torch.empty(num_freqs, dim, **opts).cauchy_(0.0, 1.0, generator=generator)
    elif kernel == "cauchy":
        # Laplace(0, 1) as the difference of two Exp(1) variates.
        w = torch.empty(num_freqs, dim, **opts).exponential_(generator=generator)
        w -= torch.empty(num_freqs, dim, **opts).exponential_(generator=generator)
    else:  # matern: z / sqrt(g / (2 nu)) with g ~ chi^2(2 nu) = 2 Gamma(nu), one g per row
        z = torch.randn(num_freqs, dim, generator=generator, **opts)
        g = 2.0 * standard_gamma(nu, num_freqs, generator=generator, device=draw_device)
        w = z * torch.sqrt(2.0 * nu / g).unsqueeze(1)

    inv_sigma = torch.tensor([1.0 / s for s in sigmas], **opts)
    if len(sigmas) == 1:
        w = w * inv_sigma[0]
    else:
        component = torch.randint(len(sigmas), (num_freqs,), generator=generator, device=draw_device)
        w = w * inv_sigma[component].unsqueeze(1)
    return w.to(device=device if device is not None else draw_device, dtype=dtype or torch.get_default_dtype())


def standard_gamma(
    shape: float, n: int, *, generator: torch.Generator | None, device: torch.device
) -> torch.Tensor:
    """n draws of Gamma(shape, 1) in float64 through `generator` (Marsaglia and Tsang, 2000).

    Vectorised rejection: every round proposes for all rows still empty; acceptance is above
    95%, so a few rounds fill them. Shapes below 1 use Gamma(a) = Gamma(a + 1) * U^(1/a).
    """
    boosted = shape < 1.0
    a = shape + 1.0 if boosted else shape
    d = a - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    out = torch.empty(n, dtype=torch.float64, device=device)
    filled = torch.zeros(n, dtype=torch.bool, device=device)
    while not bool(filled.all()):
        z = torch.randn(n, generator=generator, dtype=torch.float64, device=device)
        u = torch.rand(n, generator=generator, dtype=torch.float64, device=device)
        v = (1.0 + c * z) ** 3
        accept = (v > 0) & (torch.log(u) < 0.5 * z * z + d - d * v + d * torch.log(v.clamp_min(1e-300)))
        take = accept & ~filled
        out = torch.where(take, d * v, out)
        filled |= accept
    if boosted:
        u = torch.rand(n, generator=generator, dtype=torch.float64, device=device)
        out = out * u ** (1.0 / shape)
    return out


def _pairwise_sq_dist(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    # The expanded form is one GEMM; clamping removes the small negatives of cancellation.
    sq = (x * x).sum(1, keepdim=True) + (y * y).sum(1).unsqueeze(0) - 2.0 * (x @ y.T)
    return sq.clamp_min(0.0)


def _cauchy_kernel(x: torch.Tensor, y: torch.Tensor, sigma: float) -> torch.Tensor:
    # prod_j 1 / (1 + D_j^2 / sigma^2) needs every coordinate difference: evaluate in row blocks
    # so the (rows, S, d) temporary stays near 2^24 elements.
    block = max(1, (1 << 24) // max(1, y.shape[0] * x.shape[1]))
    out = []
    for start in range(0, x.shape[0], block):
        diff = x[start : start + block].unsqueeze(1) - y.unsqueeze(0)
        out.append(torch.exp(-torch.log1p((diff / sigma) ** 2).sum(-1)))
    return torch.cat(out)


def _matern_kernel(x: torch.Tensor, y: torch.Tensor, sigma: float, nu: float) -> torch.Tensor:
    r = safe_sqrt(_pairwise_sq_dist(x, y)) / sigma
    if nu == 0.5:
        return torch.exp(-r)
    if nu == 1.5:
        s = math.sqrt(3.0) * r
        return (1.0 + s) * torch.exp(-s)
    s = math.sqrt(5.0) * r
    return (1.0 + s + s * s / 3.0) * torch.exp(-s)


def kernel_matrix(
    kernel: str, x: torch.Tensor, y: torch.Tensor, sigmas: tuple[float, ...], nu: float = 1.5
) -> torch.Tensor:
    """k(x_i, y_j) as an (N, S) matrix, summed over `sigmas` (arguments already checked)."""
    if kernel == "linear":
        return x @ y.T
    if kernel == "matern" and nu not in CLOSED_FORM_MATERN_NU:
        raise ValueError(
            f"the exact Matérn MMD supports nu in {CLOSED_FORM_MATERN_NU} (closed forms), got nu={nu}; "
            "sdd/csdm accept any nu > 0"
        )
    total = None
    for sigma in sigmas:
        if kernel == "gaussian":
            k = torch.exp(-_pairwise_sq_dist(x, y) / (2.0 * sigma * sigma))
        elif kernel == "laplacian":
            k = torch.exp(-torch.cdist(x, y, p=1.0) / sigma)
        elif kernel == "cauchy":
            k = _cauchy_kernel(x, y, sigma)
        else:
            k = _matern_kernel(x, y, sigma, nu)
        total = k if total is None else total + k
    return total
