"""What a backend is (SPEC §1): the class every backend subclasses, with the protocol's defaults.

A backend computes per-class ECF sums. It must say whether it can run (`unavailable_reason`,
`unsupported_reason`) and provide its op, `dense_op()`: (x, t, perm, offsets, precision) ->
(C, 2, M), differentiable in x and t, keeping the op contract (ops/contract.py and
csrc/ecf_checks.h; tests/op_contract.py runs its cases on every backend's op). The rest has
defaults that a backend overrides only where it has something better:

    ecf_sums         the sums for a ClassIndex; default: the op, with `precision` resolved
    structured_sums  the sums at structured frequencies (an object with .dense(), such as
                     structured.HadamardFrequencies); default: t materialised, then ecf_sums.
                     The cpu and triton backends override it with fused SORF kernels.
    fused            True for a fused kernel; False for the reference's N x M path (autocast
                     keeps a low dtype only where a fused backend would take it)

Nothing outside a backend asks for its name except to register and choose it (ops/__init__.py):
what differs between backends is a method or an attribute here, never a branch on `name`
(tests/test_backend_protocol.py greps the package for one).
"""

from __future__ import annotations

import torch

from ..classes import ClassIndex
from .precision import resolve_precision


class Backend:
    name: str
    fused: bool = True

    def unavailable_reason(self) -> str | None:
        """None when usable in this process, else why not (shown in errors)."""
        raise NotImplementedError

    def unsupported_reason(self, x: torch.Tensor) -> str | None:
        """None when this backend can take tensors like x (device, dtype), else why not."""
        raise NotImplementedError

    def dense_op(self):
        """The op (x, t, perm, offsets, precision) -> (C, 2, M) sums, with the contract of SPEC §1."""
        raise NotImplementedError

    def ecf_sums(
        self, x: torch.Tensor, t: torch.Tensor, index: ClassIndex, precision: str | None = None
    ) -> torch.Tensor:
        """Per-class sums S (C, 2, M) of cos and sin of x t^T, differentiable in x and t.

        precision: None (follow torch's TF32 setting for CUDA matmuls), "ieee" or "tf32"; CPU
        backends always compute in IEEE arithmetic.
        """
        return self.dense_op()(x, t, index.perm, index.offsets, resolve_precision(precision))

    def structured_sums(self, x: torch.Tensor, t, index: ClassIndex, precision: str | None = None) -> torch.Tensor:
        """ecf_sums at structured frequencies t, differentiable in x (their parameters are samples,
        not parameters). The default builds t (M x d, the size of an input): the same values as
        a fused structured kernel, at the dense cost."""
        return self.ecf_sums(x, t.dense(), index, precision)
