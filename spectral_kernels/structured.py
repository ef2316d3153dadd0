"""Orthogonal and structured spectral frequencies (SPEC §4): the same expectation as i.i.d.
draws, with less variance, for kernels whose spectral measure is radial (gaussian, matern).

A radial measure is the law of r u with u uniform on the unit sphere and r an independent
radius: for the gaussian kernel r = |z| / sigma with z ~ N(0, I_d) (a chi law with d degrees of
freedom), for Matérn(nu) r = |z| sqrt(2 nu / g) / sigma with g ~ chi^2(2 nu). Instead of d
independent directions, a block of d frequencies can take d orthogonal ones:

- orthogonal (ORF; Yu et al., "Orthogonal Random Features", NeurIPS 2016): each block is a
  Haar-random orthogonal matrix Q (QR of a Gaussian matrix, signs fixed by R's diagonal), row i
  scaled by an independent radius r_i. Every row still has the kernel's law, so the estimator is
  unbiased; the rows of a block are negatively correlated, which lowers its variance.
- hadamard (SORF; same paper, after Le et al., "Fastfood", ICML 2013): Q replaced by
  H D1 H D2 H D3 / D^{3/2} (H the D x D Walsh-Hadamard matrix, Di random +-1 diagonals, D the
  next power of two >= d, x zero-padded to D), r_i drawn for D dimensions (a radius of the
  D-dimensional law: the first d coordinates of such a vector have the d-dimensional one). Near
  orthogonal and near uniform, and never materialised: x t^T for a block is three fast
  Walsh-Hadamard transforms of x, O(N M log D) instead of O(N M d). The price of padding: a
  block holds D >= d frequencies, and the transforms run at width D.

M need not be a multiple of the block size: the last block is cut. These are constructions:
sk.sample_frequencies (spectral_kernels.frequencies) picks one by `structure=`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from . import _checks
from .kernels import DrawArguments, require_radial, standard_gamma


def _radii(draw: DrawArguments, rows: int, dims: int) -> torch.Tensor:
    """`rows` radii (float64) of the kernel's radial law in `dims` dimensions, over the bandwidth."""
    # |z| for z ~ N(0, I_dims) is chi(dims) = sqrt(2 Gamma(dims / 2)): one gamma draw per radius
    # instead of `dims` normals (at D = 2048 that was most of a SORF estimate's drawing time).
    radius = torch.sqrt(2.0 * standard_gamma(dims / 2.0, rows, generator=draw.generator, device=draw.device))
    if draw.kernel == "matern":
        g = 2.0 * standard_gamma(draw.nu, rows, generator=draw.generator, device=draw.device)
        radius = radius * torch.sqrt(2.0 * draw.nu / g)
    return radius * draw.inverse_bandwidths(rows)


def orthogonal_frequencies(
    kernel, num_freqs, dim, *, bandwidth=1.0, nu=1.5, generator=None, device=None, dtype=None
) -> torch.Tensor:
    """ORF: (M, d) frequencies in blocks of d orthogonal rows, each scaled by a radius of the
    kernel's law: sk.sample_frequencies(structure="orthogonal") (spectral_kernels.frequencies)
    documents the arguments."""
    require_radial(kernel, "orthogonal")
    draw = DrawArguments.check(kernel, num_freqs, dim, bandwidth=bandwidth, nu=nu, generator=generator, dtype=dtype)
    d = draw.dim
    # A block of d rows is a d x d QR; a cut block of k < d rows (M = 4 at d = 30000) needs only
    # the QR of a d x k matrix, whose k orthonormal columns are a Haar-random k-frame: never d x d.
    _checks.allocation(
        f"num_freqs={draw.num_freqs} x dim={d}: an orthogonal block",
        (3, d, min(d, draw.num_freqs)),
        torch.float64,
        draw.device,
    )
    blocks = []
    for start in range(0, draw.num_freqs, d):
        rows = min(d, draw.num_freqs - start)
        if rows == d:
            g = torch.randn(d, d, generator=draw.generator, device=draw.device, dtype=torch.float64)
            q, r = torch.linalg.qr(g)
            blocks.append(q * torch.sign(torch.diagonal(r)).unsqueeze(0))  # Haar: fix the signs QR leaves arbitrary
        else:
            g = torch.randn(d, rows, generator=draw.generator, device=draw.device, dtype=torch.float64)
            q, r = torch.linalg.qr(g)  # reduced: q is d x rows
            blocks.append((q * torch.sign(torch.diagonal(r)).unsqueeze(0)).T)
    directions = torch.cat(blocks)
    return draw.finish(directions * _radii(draw, draw.num_freqs, draw.dim).unsqueeze(1), device)


def block_width(dim: int) -> int:
    """D: the power of two >= dim the Hadamard blocks run at."""
    return 1 << max(0, (dim - 1).bit_length())


@dataclass(frozen=True)
class HadamardFrequencies:
    """SORF frequencies, as their parameters: frequency j of block b is
    radii[b, j] / D^{3/2} (H D1 H D2 H D3)[j, :dim] with D_k = diag(signs[b, k - 1]).

    signs: (B, 3, D) +-1; radii: (B, D) (already over the bandwidth); num_freqs: M, with the
    last block cut; dim: d <= D. Pass it as `t` to ncfd/sdd/csdm/ecf."""

    signs: torch.Tensor
    radii: torch.Tensor
    num_freqs: int
    dim: int

    @property
    def width(self) -> int:
        return self.signs.shape[2]

    @property
    def dtype(self) -> torch.dtype:
        return self.radii.dtype

    @property
    def device(self) -> torch.device:
        return self.radii.device

    @property
    def shape(self) -> tuple[int, int]:
        return (self.num_freqs, self.dim)

    def to(self, device=None, dtype=None) -> HadamardFrequencies:
        return HadamardFrequencies(
            self.signs.to(device=device, dtype=dtype),
            self.radii.to(device=device, dtype=dtype),
            self.num_freqs,
            self.dim,
        )

    def dense(self) -> torch.Tensor:
        """The (M, d) frequencies themselves (what the fused op never builds), without the D x D
        matrix: row j of H D1 H D2 H D3 is e_j run through the chain from the left, three fast
        Walsh-Hadamard transforms of the block's rows (exact: integers below 2^53)."""
        width, blocks = self.width, self.signs.shape[0]
        rows = min(width, self.num_freqs)  # rows of each block that are used (all but the last block's: all)
        what = f"HadamardFrequencies(num_freqs={self.num_freqs}, dim={self.dim}).dense()"
        _checks.allocation(what, (self.num_freqs, self.dim), self.dtype, self.device)
        _checks.allocation(f"{what}'s transforms", (2, blocks, rows, width), torch.float64, self.device)
        v = torch.eye(rows, width, dtype=torch.float64, device=self.device).expand(blocks, rows, width)
        for k in range(3):  # e_j^T H D1 H D2 H D3, every block at once: a transform, then a diagonal
            v = fwht(v) * self.signs[:, k, None, :].to(torch.float64)
        structured = (v[..., : self.dim] / width**1.5).to(self.dtype)
        return (self.radii[:, :rows, None] * structured).reshape(blocks * rows, self.dim)[: self.num_freqs]


def fwht(v: torch.Tensor) -> torch.Tensor:
    """v H along the last dimension (unnormalised Walsh-Hadamard transform; its length a power
    of two), in log2 D butterfly passes: O(D log D) per row, never the D x D matrix."""
    width = v.shape[-1]
    h = 1
    while h < width:
        pairs = v.reshape(*v.shape[:-1], width // (2 * h), 2, h)
        v = torch.stack((pairs[..., 0, :] + pairs[..., 1, :], pairs[..., 0, :] - pairs[..., 1, :]), dim=-2)
        v = v.reshape(*v.shape[:-3], width)
        h *= 2
    return v


def hadamard_matrix(n: int, *, dtype=torch.float64, device=None) -> torch.Tensor:
    """The n x n Walsh-Hadamard matrix (Sylvester's construction, entries +-1), n a power of two."""
    _checks.allocation(f"hadamard_matrix(n={n})", (n, n), dtype, device)
    h = torch.ones(1, 1, dtype=dtype, device=device)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)])
    return h


def hadamard_frequencies(
    kernel: str,
    num_freqs: int,
    dim: int,
    *,
    bandwidth: float | list[float] = 1.0,
    nu: float = 1.5,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> HadamardFrequencies:
    """SORF: M frequencies in blocks of D = block_width(dim), as HadamardFrequencies:
    sk.hadamard_frequencies, the same as sk.sample_frequencies(structure="hadamard")
    (spectral_kernels.frequencies), which documents the arguments."""
    require_radial(kernel, "hadamard")
    draw = DrawArguments.check(kernel, num_freqs, dim, bandwidth=bandwidth, nu=nu, generator=generator, dtype=dtype)
    width = block_width(draw.dim)
    blocks = math.ceil(draw.num_freqs / width)
    # the signs are drawn as int64 and turned into float64: two (B, 3, D) arrays of 8 bytes
    _checks.allocation(
        f"num_freqs={draw.num_freqs} x dim={draw.dim}: the SORF signs",
        (2, blocks, 3, width),
        torch.float64,
        draw.device,
    )
    signs = torch.randint(0, 2, (blocks, 3, width), generator=draw.generator, device=draw.device).double() * 2 - 1
    radii = draw.finish(_radii(draw, blocks * width, width), device).reshape(blocks, width)
    return HadamardFrequencies(signs.to(device=radii.device, dtype=radii.dtype), radii, draw.num_freqs, draw.dim)


def check_hadamard(name: str, t: HadamardFrequencies, like: torch.Tensor, like_name: str, check_finite: bool) -> None:
    """SORF frequencies passed to a discrepancy: the op contract (_checks.sorf: the same checks
    and messages whichever backend runs, the reference included), matching x, and no gradient
    asked of the signs or radii (no backend's fused op gives one: refused rather than given on
    one backend and silently dropped on another). The values of host signs and radii are read
    always (a sign of 0 is a perfect match, not a NaN: check_finite would not catch it); on a GPU,
    where reading them costs a host sync, with check_finite like the other value scans."""
    check_values = check_finite or (isinstance(t.signs, torch.Tensor) and t.signs.device.type == "cpu")
    _checks.sorf(t.signs, t.radii, t.num_freqs, t.dim, name=f"{name}.", check_values=check_values)
    if t.dim != like.shape[1]:
        raise ValueError(f"{name} has d={t.dim} but {like_name} has d={like.shape[1]}")
    if t.dtype != like.dtype or t.signs.dtype != like.dtype:
        raise TypeError(f"{name} has dtype {t.dtype} but {like_name} has dtype {like.dtype}; use {name}.to(dtype=...)")
    if t.device != like.device or t.signs.device != like.device:
        raise ValueError(f"{name} is on {t.device} but {like_name} is on {like.device}; use {name}.to(device=...)")
    for part in ("signs", "radii"):
        if getattr(t, part).requires_grad:
            raise ValueError(
                f"{name}.{part} requires grad, but SORF frequencies get no gradient on any backend (their signs and "
                f"radii are samples, not parameters); pass {name}.{part}.detach(), or learn dense frequencies"
            )
