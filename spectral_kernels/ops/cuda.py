"""The CUDA C++ backend: the ops of spectral_kernels._C on CUDA tensors (csrc/cuda/).

The same three ops as the CPU backend, with the same fake kernels and autograd (ops/cpp.py),
implemented with cuBLAS products over bounded chunks of rows and hand-written CUDA kernels for
the sin/cos epilogue, the per-class sums and W (csrc/cuda/ecf_cuda.cu). It needs no Triton and
no JIT: a build of torch without Triton, a program that cannot afford a compile and autotuning
on its first call, or a second, independent GPU implementation to check the Triton one against.
"""

from __future__ import annotations

import torch

from .cpp import LOAD_ERROR
from .gpu import GpuBackend


def built_cuda_version() -> int:
    """CUDART_VERSION the library was built against (e.g. 13000 for CUDA 13.0); 0 if it was built
    without CUDA or is not built at all."""
    if LOAD_ERROR is not None:
        return 0
    return int(torch.ops.spectral_kernels.cuda_version())


class CudaBackend(GpuBackend):
    name = "cuda"

    def unavailable_reason(self) -> str | None:
        if LOAD_ERROR is not None:
            return LOAD_ERROR
        if built_cuda_version() == 0:
            return (
                "spectral_kernels._C was built without CUDA (no nvcc or a CPU-only torch at build time; "
                "FORCE_CUDA=1 forces it)"
            )
        if not torch.cuda.is_available():
            return "no CUDA GPU is visible to torch"
        return None

    def device_reason(self, x: torch.Tensor) -> str | None:
        return None if x.device.type == "cuda" else f"it runs on CUDA tensors only, got a tensor on {x.device}"

    def dense_op(self):
        return torch.ops.spectral_kernels.ecf_sums
