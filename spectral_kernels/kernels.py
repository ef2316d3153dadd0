"""Shift-invariant kernels and their spectral measures (SPEC §4).

k(0) = 1 for every kernel, so by Bochner's theorem k(x - y) = E_w[cos(<w, x - y>)] with w drawn
from a probability law, the kernel's spectral measure. `iid_frequencies` draws independent rows
from it (sk.sample_frequencies, in frequencies.py, is the public draw that picks a structure);
`kernel_matrix` evaluates k exactly for the pairwise MMD baseline. This module imports none of
the frequency constructions built on it (structured.py, frequencies.py).

Every draw goes through the caller's torch.Generator, so a seeded run is reproducible bit for
bit (the gamma variates of the Matérn law use a rejection sampler written here for that reason:
torch's own gamma sampler takes no generator).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from . import _checks
from .safe_math import safe_sqrt

SPECTRAL_KERNELS = ("gaussian", "laplacian", "cauchy", "matern")
KERNELS = SPECTRAL_KERNELS + ("linear",)
# Matérn kernels with a closed form in elementary functions (nu = p + 1/2), for the exact MMD.
CLOSED_FORM_MATERN_NU = (0.5, 1.5, 2.5)
# A bound on |z| for torch's float64 standard normal draws (Box-Muller from 53-bit uniforms
# gives at most sqrt(-2 ln 2^-53) ~ 8.6), with room to spare: Gaussian frequencies are at most
# this many times 1 / bandwidth, so a bandwidth is refused when that would overflow the dtype.
NORMAL_DRAW_BOUND = 16.0


def frequency_scale_limits(dtype: torch.dtype) -> tuple[float, float]:
    """(smallest, largest) value of 1 / bandwidth whose frequencies fit `dtype`: below the
    smallest normal number every frequency rounds towards 0 (a loss of 0 whatever the data);
    above finfo.max / NORMAL_DRAW_BOUND a Gaussian frequency can overflow to inf."""
    info = torch.finfo(dtype)
    return info.tiny, info.max / NORMAL_DRAW_BOUND


def check_frequency_scale(name: str, inverse_scale: float, dtype: torch.dtype, what: str) -> None:
    """Refuse a frequency scale (1 / bandwidth, or a sampler's exp(log-scale)) that `dtype`
    cannot hold, naming the argument and the limit."""
    low, high = frequency_scale_limits(dtype)
    if inverse_scale > high:
        raise ValueError(
            f"{name} gives frequencies up to {NORMAL_DRAW_BOUND:g} x {inverse_scale:.3g}, beyond {dtype}'s largest "
            f"finite value {torch.finfo(dtype).max:.3g}; {what} (or use float64)"
        )
    if inverse_scale < low:
        raise ValueError(
            f"{name} gives frequencies of scale {inverse_scale:.3g}, below {dtype}'s smallest normal number {low:.3g}: "
            f"they would round to 0 and the loss would be 0 whatever the data; {what} (or use float64)"
        )


def check_kernel(kernel, *, spectral: bool) -> str:
    if not isinstance(kernel, str):
        raise TypeError(f"kernel must be a string, one of {KERNELS}; got {kernel!r}")
    if spectral and kernel == "linear":
        raise ValueError(
            "kernel='linear' has no spectral measure, so SDD/CSDM cannot use it; "
            "use sk.mmd(..., kernel='linear') (the DM objective) instead"
        )
    return _checks.choice("kernel", kernel, SPECTRAL_KERNELS if spectral else KERNELS)


RADIAL_KERNELS = ("gaussian", "matern")


def require_radial(kernel, structure: str) -> None:
    """Refuse a structured draw (`structure`, SPEC §4.1) of a kernel whose measure is not radial."""
    if kernel not in RADIAL_KERNELS:
        raise ValueError(
            f"structure={structure!r} needs a radial spectral measure (gaussian, matern); the {kernel} kernel's "
            "is not radial (its coordinates are independent), so use structure='iid'"
        )


def iid_frequencies(
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
    """`num_freqs` independent rows (M, d) of the spectral measure of `kernel`: the "iid"
    structure of sk.sample_frequencies (spectral_kernels.frequencies), which documents the laws,
    the arguments and the errors."""
    draw = DrawArguments.check(kernel, num_freqs, dim, bandwidth=bandwidth, nu=nu, generator=generator, dtype=dtype)
    kernel, num_freqs, dim, nu, generator = draw.kernel, draw.num_freqs, draw.dim, draw.nu, draw.generator
    opts = dict(device=draw.device, dtype=torch.float64)

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
        g = 2.0 * standard_gamma(nu, num_freqs, generator=generator, device=draw.device)
        w = z * torch.sqrt(2.0 * nu / g).unsqueeze(1)
    return draw.finish(w * draw.inverse_bandwidths(num_freqs).unsqueeze(1), device)


@dataclass(frozen=True)
class DrawArguments:
    """The checked arguments of a frequency draw, shared by every structure."""

    kernel: str
    num_freqs: int
    dim: int
    sigmas: tuple
    nu: float
    generator: torch.Generator | None
    dtype: torch.dtype
    device: torch.device  # where the float64 draw happens: the generator's device

    @classmethod
    def check(cls, kernel, num_freqs, dim, *, bandwidth, nu, generator, dtype) -> DrawArguments:
        kernel = check_kernel(kernel, spectral=True)
        num_freqs = _checks.positive_int("num_freqs", num_freqs)
        dim = _checks.positive_int("dim", dim)
        sigmas = _checks.bandwidths(bandwidth)
        nu = _checks.positive("nu", nu)
        generator = _checks.generator("generator", generator)
        _checks.draw_size(num_freqs, dim, generator.device if generator is not None else None)
        if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise TypeError(f"dtype must be a floating torch.dtype or None, got {dtype!r}")
        out_dtype = dtype or torch.get_default_dtype()
        for i, sigma in enumerate(sigmas):
            name = f"bandwidth={sigma}" if len(sigmas) == 1 else f"bandwidth[{i}]={sigma}"
            low, high = frequency_scale_limits(out_dtype)
            check_frequency_scale(name, 1.0 / sigma, out_dtype, f"use a bandwidth in [{1 / high:.3g}, {1 / low:.3g}]")
        draw_device = generator.device if generator is not None else torch.device("cpu")
        return cls(kernel, num_freqs, dim, sigmas, nu, generator, out_dtype, draw_device)

    def inverse_bandwidths(self, rows: int) -> torch.Tensor:
        """1 / sigma per row (float64, on the draw device): one sigma, or one drawn per row."""
        inv_sigma = torch.tensor([1.0 / s for s in self.sigmas], device=self.device, dtype=torch.float64)
        if len(self.sigmas) == 1:
            return inv_sigma.expand(rows)
        return inv_sigma[torch.randint(len(self.sigmas), (rows,), generator=self.generator, device=self.device)]

    def finish(self, w: torch.Tensor, device) -> torch.Tensor:
        """Cast to the dtype and check there (on the draw device: no sync with the target, meta
        targets work), then move to `device`."""
        w = w.to(dtype=self.dtype)
        if not _checks.tracing() and not bool(torch.isfinite(w).all()):
            bandwidth = list(self.sigmas) if len(self.sigmas) > 1 else self.sigmas[0]
            law = "Cauchy" if self.kernel == "laplacian" else "Student t with 2 nu degrees of freedom"
            raise ValueError(
                f"sample_frequencies: a {self.kernel} frequency (bandwidth={bandwidth}, nu={self.nu}) does not fit in "
                f"{self.dtype} (largest finite value {torch.finfo(self.dtype).max:.3g}): this law's tails are heavy "
                f"({law}); use a larger bandwidth"
                + (", a larger nu" if self.kernel == "matern" else "")
                + " or dtype=torch.float64"
            )
        return w.to(device=device if device is not None else self.device)


def standard_gamma(shape: float, n: int, *, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
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
    if x is y:
        # A point's distance to itself is 0; cancellation can leave +1e-7 there (how much depends
        # on the CPU's GEMM path), which a huge 1 / sigma^2 turns into k(x, x) = 0 instead of 1.
        sq.diagonal().zero_()
    return sq.clamp_min(0.0)


def _multiplier(value: float, dtype: torch.dtype) -> float:
    """A Python factor made safe for tensors of `dtype`: capped at its largest finite value, so
    0 * factor stays 0 (no NaN) and a larger factor, which would only push exp(-...) further
    below its underflow, changes nothing."""
    return min(value, torch.finfo(dtype).max)


def _cauchy_kernel(x: torch.Tensor, y: torch.Tensor, sigma: float) -> torch.Tensor:
    # prod_j 1 / (1 + D_j^2 / sigma^2) needs every coordinate difference: evaluate in row blocks
    # so the (rows, S, d) temporary stays near 2^24 elements.
    block = max(1, (1 << 24) // max(1, y.shape[0] * x.shape[1]))
    inverse = _multiplier(1.0 / sigma, x.dtype)
    out = []
    for start in range(0, x.shape[0], block):
        diff = x[start : start + block].unsqueeze(1) - y.unsqueeze(0)
        out.append(torch.exp(-torch.log1p((diff * inverse) ** 2).sum(-1)))
    return torch.cat(out)


# Beyond this r = distance / sigma every Matérn kernel below is 0 in float64 (exp(-sqrt(5) r)
# underflows), and clamping r keeps (1 + r + ...) * exp(-r) from becoming inf * 0 = NaN.
_MATERN_MAX_R = 1e4


def _matern_kernel(x: torch.Tensor, y: torch.Tensor, sigma: float, nu: float) -> torch.Tensor:
    r = (safe_sqrt(_pairwise_sq_dist(x, y)) * _multiplier(1.0 / sigma, x.dtype)).clamp_max(_MATERN_MAX_R)
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
    """k(x_i, y_j) as an (N, S) matrix, summed over `sigmas` (arguments already checked).

    Distances are formed as given: callers with large inputs centre and scale them first
    (functional.mmd does). Bandwidth factors are capped so that a tiny sigma gives a kernel of
    0 off the diagonal and 1 on it, never 0 * inf = NaN.
    """
    if kernel == "linear":
        return x @ y.T
    if kernel == "matern" and nu not in CLOSED_FORM_MATERN_NU:
        raise ValueError(
            f"the exact Matérn MMD supports nu in {CLOSED_FORM_MATERN_NU} (closed forms), got nu={nu}; "
            "sdd/csdm accept any nu > 0"
        )
    total = None
    for sigma in sigmas:
        inverse = 1.0 / sigma
        if kernel == "gaussian":
            k = torch.exp(-_pairwise_sq_dist(x, y) * _multiplier(0.5 * inverse * inverse, x.dtype))
        elif kernel == "laplacian":
            k = torch.exp(-torch.cdist(x, y, p=1.0) * _multiplier(inverse, x.dtype))
        elif kernel == "cauchy":
            k = _cauchy_kernel(x, y, sigma)
        else:
            k = _matern_kernel(x, y, sigma, nu)
        total = k if total is None else total + k
    return total
