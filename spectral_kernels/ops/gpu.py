"""What the two GPU backends (cuda, triton) share: the dtypes they take and the check that says
why a tensor is not for them. They run their dense op through the protocol's ecf_sums."""

from __future__ import annotations

import torch

from .contract import FLOAT_DTYPES
from .protocol import Backend


class GpuBackend(Backend):
    def device_reason(self, x: torch.Tensor) -> str | None:
        """None when this backend runs on x's device, else why not."""
        raise NotImplementedError

    def unsupported_reason(self, x: torch.Tensor) -> str | None:
        reason = self.device_reason(x)
        if reason is None and x.dtype not in FLOAT_DTYPES:
            reason = f"it takes float32, float64, bfloat16 or float16, got {x.dtype}"
        return reason
