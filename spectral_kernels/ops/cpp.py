"""The fused C++ backend: fake (meta) kernels and autograd for the ops of spectral_kernels._C.

The schemas and CPU kernels are C++ (csrc/); this module tells PyTorch the output shapes (so
torch.compile and opcheck can trace the ops without running them) and how to differentiate
ecf_sums: the backward calls the fused gradient ops, and only for inputs that need a gradient.
"""
from __future__ import annotations

import torch

from ..classes import ClassIndex
from .reference import ecf_sums_backward_unfused

try:
    from .. import _C  # noqa: F401  (loading the library registers the ops)

    _LOAD_ERROR: str | None = None
except ImportError as error:  # a source checkout that was never built
    _LOAD_ERROR = f"the C++ extension spectral_kernels._C is not built ({error}); run `pip install -e . --no-build-isolation`"


class CppBackend:
    name = "cpu"

    def unavailable_reason(self) -> str | None:
        return _LOAD_ERROR

    def unsupported_reason(self, x: torch.Tensor) -> str | None:
        if x.device.type != "cpu":
            return f"it runs on CPU tensors only, got a tensor on {x.device}"
        if x.dtype not in (torch.float32, torch.float64):
            return f"it takes float32 or float64, got {x.dtype} (use backend='reference' or cast)"
        return None

    def ecf_sums(self, x: torch.Tensor, t: torch.Tensor, index: ClassIndex, precision: str | None = None) -> torch.Tensor:
        return torch.ops.spectral_kernels.ecf_sums(x, t, index.perm, index.offsets)


def _register() -> None:
    ops = torch.ops.spectral_kernels

    @torch.library.register_fake("spectral_kernels::ecf_sums")
    def _ecf_sums_fake(x, t, perm, offsets):
        return x.new_empty(offsets.shape[0] - 1, 2, t.shape[0])

    @torch.library.register_fake("spectral_kernels::ecf_sums_grad_x")
    def _grad_x_fake(grad, x, t, perm, offsets):
        return torch.empty_like(x)

    @torch.library.register_fake("spectral_kernels::ecf_sums_grad_t")
    def _grad_t_fake(grad, x, t, perm, offsets):
        return torch.empty_like(t)

    def setup_context(ctx, inputs, output):
        x, t, perm, offsets = inputs
        ctx.save_for_backward(x, t, perm, offsets)

    def backward(ctx, grad):
        x, t, perm, offsets = ctx.saved_tensors
        need_x, need_t = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if torch.is_grad_enabled():
            # create_graph=True: the gradient will itself be differentiated, and the fused
            # gradient ops have no derivative of their own, so take the differentiable path.
            return (*ecf_sums_backward_unfused(grad, x, t, perm, offsets, need_x, need_t), None, None)
        grad_x = ops.ecf_sums_grad_x(grad, x, t, perm, offsets) if need_x else None
        grad_t = ops.ecf_sums_grad_t(grad, x, t, perm, offsets) if need_t else None
        return grad_x, grad_t, None, None

    torch.library.register_autograd("spectral_kernels::ecf_sums", backward, setup_context=setup_context)


if _LOAD_ERROR is None:
    _register()
