"""The per-class ECF sums at SORF frequencies (spectral_kernels.structured.HadamardFrequencies).

The cpu and triton backends have fused ops that never build t (csrc/cpu/hadamard_cpu.cpp: three
fast Walsh-Hadamard transforms per row and block, then the shared sin/cos epilogue;
ops/triton_hadamard.py: the transforms as small products on tensor cores); every other case
(the reference and cuda backends, Triton with D < 16 or float64) gets t materialised (M x d,
the size of an input) and runs its dense op, so the values are the same and only the cost
differs. Registration here: fake kernels and autograd (dx only:
the signs and radii are samples, not parameters).
"""

from __future__ import annotations

import torch

from .. import _checks
from ..classes import ClassIndex
from . import triton_hadamard
from .autograd import register_sorf_autograd
from .cpp import LOAD_ERROR, _one_device
from .precision import resolve_precision


def hadamard_ecf_sums(x: torch.Tensor, t, index: ClassIndex, backend, precision) -> torch.Tensor:
    """(C, 2, M) sums of cos/sin of x t^T for t = HadamardFrequencies, by `backend`: fused on
    cpu and triton (ops/triton_hadamard.py; D >= 16, not float64), else t materialised."""
    if backend.name == "cpu":
        return torch.ops.spectral_kernels.hadamard_sums(x, t.signs, t.radii, index.perm, index.offsets, t.num_freqs)
    if backend.name == "triton" and triton_hadamard.supports(x, t.width):
        return torch.ops.spectral_kernels.hadamard_sums_triton(
            x, t.signs.float(), t.radii.float(), index.perm, index.offsets, t.num_freqs, resolve_precision(precision)
        )
    return backend.ecf_sums(x, t.dense(), index, precision)


def _register() -> None:
    ops = torch.ops.spectral_kernels

    # The fake kernels also run when one real input sits on the meta device (the dispatcher picks
    # them then): one device first, then the shapes of the contract, before anything is sized by
    # num_freqs (2**62 would otherwise ask the allocator for the output).
    @torch.library.register_fake("spectral_kernels::hadamard_sums")
    def _sums_fake(x, signs, radii, perm, offsets, num_freqs):
        _one_device(x, signs, radii, perm, offsets)
        _checks.sorf(signs, radii, num_freqs, x.shape[-1], where="spectral_kernels: ", check_values=False)
        return x.new_empty(offsets.shape[0] - 1, 2, num_freqs)

    @torch.library.register_fake("spectral_kernels::hadamard_sums_grad_x")
    def _grad_fake(grad, x, signs, radii, perm, offsets, num_freqs):
        _one_device(grad, x, signs, radii, perm, offsets)
        _checks.sorf(signs, radii, num_freqs, x.shape[-1], where="spectral_kernels: ", check_values=False)
        return x.new_empty(x.shape)  # contiguous, as the real op returns (not x's strides)

    register_sorf_autograd("spectral_kernels::hadamard_sums", ops.hadamard_sums_grad_x)


if LOAD_ERROR is None:
    _register()
