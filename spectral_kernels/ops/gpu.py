"""What the two GPU backends (cuda, triton) share: the dtypes they take, the check that says why
a tensor is not for them, and how they call their dense op."""

from __future__ import annotations

import torch

from ..classes import ClassIndex
from .precision import resolve_precision

FLOAT_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


class GpuBackend:
    name: str

    def device_reason(self, x: torch.Tensor) -> str | None:
        """None when this backend runs on x's device, else why not."""
        raise NotImplementedError

    def dense_op(self):
        """The op (x, t, perm, offsets, precision) -> (C, 2, M) sums."""
        raise NotImplementedError

    def unsupported_reason(self, x: torch.Tensor) -> str | None:
        reason = self.device_reason(x)
        if reason is None and x.dtype not in FLOAT_DTYPES:
            reason = f"it takes float32, float64, bfloat16 or float16, got {x.dtype}"
        return reason

    def ecf_sums(
        self, x: torch.Tensor, t: torch.Tensor, index: ClassIndex, precision: str | None = None
    ) -> torch.Tensor:
        return self.dense_op()(x, t, index.perm, index.offsets, resolve_precision(precision))
