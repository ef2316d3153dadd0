"""The C++ backends: fake (meta) kernels and autograd for the ops of spectral_kernels._C.

The schemas and kernels are C++ (csrc/: cpu/ for CPU tensors, cuda/ for CUDA tensors when the
library was built with CUDA); this module tells PyTorch the output shapes (so torch.compile and
opcheck can trace the ops without running them) and how to differentiate ecf_sums: the
backward calls the fused gradient ops, and only for inputs that need a gradient. Two backends
use these ops: "cpu" (below) and "cuda" (ops/cuda.py).

The SORF ops (hadamard_sums, hadamard_sums_grad_x: csrc/cpu/hadamard_cpu.cpp, three fast
Walsh-Hadamard transforms per row and block, then the shared sin/cos epilogue) are CPU only: the
cpu backend's structured_sums runs them for structured.HadamardFrequencies, never building t.
Their autograd gives dx only: the signs and radii are samples, not parameters.
"""

from __future__ import annotations

import torch

from .. import _checks
from ..classes import ClassIndex
from . import torch_tie
from .autograd import register_dense_autograd, register_sorf_autograd
from .protocol import Backend

torch_tie.check()  # before loading: a library built against another torch must not be loaded at all
try:
    from .. import _C  # noqa: F401  (loading the library registers the ops)

    LOAD_ERROR: str | None = None
except ImportError as error:  # a source checkout that was never built
    LOAD_ERROR = (
        f"the C++ extension spectral_kernels._C is not built ({error}); run `pip install -e . --no-build-isolation`"
    )

HALF_DTYPES = (torch.bfloat16, torch.float16)


def sums_dtype(dtype: torch.dtype) -> torch.dtype:
    """Half-precision inputs get float32 sums: they are accumulated in float32."""
    return torch.float32 if dtype in HALF_DTYPES else dtype


class CppBackend(Backend):
    name = "cpu"

    def unavailable_reason(self) -> str | None:
        return LOAD_ERROR

    def unsupported_reason(self, x: torch.Tensor) -> str | None:
        if x.device.type != "cpu":
            return f"it runs on CPU tensors only, got a tensor on {x.device}"
        if x.dtype not in (torch.float32, torch.float64):
            return f"it takes float32 or float64, got {x.dtype} (use backend='reference' or cast)"
        return None

    def dense_op(self):
        return torch.ops.spectral_kernels.ecf_sums

    def ecf_sums(
        self, x: torch.Tensor, t: torch.Tensor, index: ClassIndex, precision: str | None = None
    ) -> torch.Tensor:
        return self.dense_op()(x, t, index.perm, index.offsets, "ieee")  # CPU products: IEEE

    def structured_sums(self, x: torch.Tensor, t, index: ClassIndex, precision: str | None = None) -> torch.Tensor:
        """SORF frequencies run the fused op; any other structure gets the default."""
        from ..structured import HadamardFrequencies

        if isinstance(t, HadamardFrequencies):
            return torch.ops.spectral_kernels.hadamard_sums(x, t.signs, t.radii, index.perm, index.offsets, t.num_freqs)
        return super().structured_sums(x, t, index, precision)


def _one_device(*tensors) -> None:
    """The fake kernels also run when one real input sits on the meta device (the dispatcher picks
    them then): refuse mixed devices there rather than hand back uninitialised memory."""
    devices = {tensor.device for tensor in tensors}
    if len(devices) > 1:
        raise ValueError(f"spectral_kernels: every input must be on one device, got {sorted(map(str, devices))}")


def _register() -> None:
    ops = torch.ops.spectral_kernels
    # The gradient fakes use new_empty(shape), not empty_like: the kernels return contiguous
    # gradients whatever the inputs' strides, and Inductor asserts the fake's strides (a
    # transposed x failed there).

    @torch.library.register_fake("spectral_kernels::ecf_sums")
    def _ecf_sums_fake(x, t, perm, offsets, precision):
        _one_device(x, t, perm, offsets)
        return x.new_empty(offsets.shape[0] - 1, 2, t.shape[0], dtype=sums_dtype(x.dtype))

    @torch.library.register_fake("spectral_kernels::ecf_sums_grad_x")
    def _grad_x_fake(grad, x, t, perm, offsets, precision):
        _one_device(grad, x, t, perm, offsets)
        return x.new_empty(x.shape)

    @torch.library.register_fake("spectral_kernels::ecf_sums_grad_t")
    def _grad_t_fake(grad, x, t, perm, offsets, precision):
        _one_device(grad, x, t, perm, offsets)
        return t.new_empty(t.shape)

    @torch.library.register_fake("spectral_kernels::ecf_sums_backward")
    def _backward_fake(grad, x, t, perm, offsets, precision, need_x, need_t):
        _one_device(grad, x, t, perm, offsets)
        return (x.new_empty(x.shape) if need_x else x.new_empty(0)), (
            t.new_empty(t.shape) if need_t else t.new_empty(0)
        )

    register_dense_autograd("spectral_kernels::ecf_sums", ops.ecf_sums_backward)

    # The SORF fakes also run when one real input sits on the meta device: one device first, then
    # the shapes of the contract, before anything is sized by num_freqs (2**62 would otherwise
    # ask the allocator for the output).
    @torch.library.register_fake("spectral_kernels::hadamard_sums")
    def _sorf_sums_fake(x, signs, radii, perm, offsets, num_freqs):
        _one_device(x, signs, radii, perm, offsets)
        _checks.sorf(signs, radii, num_freqs, x.shape[-1], where="spectral_kernels: ", check_values=False)
        return x.new_empty(offsets.shape[0] - 1, 2, num_freqs)

    @torch.library.register_fake("spectral_kernels::hadamard_sums_grad_x")
    def _sorf_grad_fake(grad, x, signs, radii, perm, offsets, num_freqs):
        _one_device(grad, x, signs, radii, perm, offsets)
        _checks.sorf(signs, radii, num_freqs, x.shape[-1], where="spectral_kernels: ", check_values=False)
        return x.new_empty(x.shape)  # contiguous, as the real op returns (not x's strides)

    register_sorf_autograd("spectral_kernels::hadamard_sums", ops.hadamard_sums_grad_x)


if LOAD_ERROR is None:
    _register()
