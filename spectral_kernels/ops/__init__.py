"""Backend registry: who computes the per-class ECF sums (SPEC §1).

A backend (ops/protocol.py: what it must provide and what it gets by default) computes the sums
`ecf_sums(x, t, index) -> (C, 2, M)`, differentiable with respect to x and t, and
`structured_sums` for structured frequencies (default: t materialised); everything after the
sums is shared (spectral_kernels.terms). A new backend is one file with a Backend subclass, plus
a line in `_register_builtin` below (docs/backends.md). Backends:

    reference  plain PyTorch on the full N x M matrix: the oracle and the baseline
    cpu        fused C++ kernels (spectral_kernels._C) for CPU tensors
    cuda       C++/CUDA kernels (spectral_kernels._C built with CUDA) for CUDA tensors
    triton     fused Triton kernels for CUDA tensors (and CPU tensors under TRITON_INTERPRET=1)

Choice, most specific first: the `backend=` argument of a call, then the environment variable
SPECTRAL_KERNELS_BACKEND, then "auto" (CPU tensors: cpu if built, else reference; CUDA tensors:
triton, then cuda, then reference, whichever is available). Triton comes first on CUDA because
its forward is fully fused (no phase matrix in memory at all) and it is autotuned per shape;
the cuda backend needs no JIT or autotuning and is the fallback where Triton is missing.
Which is faster is for the GPU benchmark to say (benchmarks/bench_ops.py --device cuda).
Under torch.autocast the dtype the backend gets is chosen first (ops/autocast.py), so that a
bf16 tensor reaches a fused backend, cast to float32 where that backend needs it.
"""

from __future__ import annotations

import os

import torch

from .protocol import Backend

ENV_VAR = "SPECTRAL_KERNELS_BACKEND"

_REGISTRY: dict[str, Backend] = {}
_AUTO_ORDER = {"cpu": ("cpu", "reference"), "cuda": ("triton", "cuda", "reference")}


def register_backend(backend: Backend) -> None:
    _REGISTRY[backend.name] = backend


def get_backend(name: str) -> Backend:
    """The registered backend called `name` (KeyError if there is none)."""
    return _REGISTRY[name]


def backend_names() -> tuple[str, ...]:
    return tuple(_REGISTRY) + ("auto",)


def available_backends() -> tuple[str, ...]:
    """Names of the backends usable in this process."""
    return tuple(name for name, b in _REGISTRY.items() if b.unavailable_reason() is None)


def runs_on(name: str, x: torch.Tensor) -> bool:
    """Whether backend `name` is available and takes tensors like x."""
    backend = _REGISTRY[name]
    return backend.unavailable_reason() is None and backend.unsupported_reason(x) is None


def check_name(name) -> str:
    """A backend name that exists and, unless "auto", can run in this process (modules check
    theirs at construction, so a typo fails where it was made, not at the first step)."""
    if not isinstance(name, str):
        raise TypeError(f"backend must be a string, one of {backend_names()}; got {name!r}")
    if name != "auto":
        if name not in _REGISTRY:
            raise ValueError(f"backend must be one of {backend_names()}; got {name!r}")
        reason = _REGISTRY[name].unavailable_reason()
        if reason is not None:
            raise ValueError(f"backend={name!r} cannot run in this process: {reason}")
    return name


def resolve(name: str, x: torch.Tensor) -> Backend:
    """The backend that will run for tensors like x, or a ValueError that says why none can."""
    if not isinstance(name, str):
        raise TypeError(f"backend must be a string, one of {backend_names()}; got {name!r}")
    if name == "auto":
        name = os.environ.get(ENV_VAR, "auto") or "auto"
        source = f"environment variable {ENV_VAR}"
    else:
        source = "backend"
    if name == "auto":
        for candidate in _AUTO_ORDER.get(x.device.type, ("reference",)):
            backend = _REGISTRY.get(candidate)
            if backend and backend.unavailable_reason() is None and backend.unsupported_reason(x) is None:
                return backend
        return _REGISTRY["reference"]
    if name not in _REGISTRY:
        raise ValueError(f"{source} must be one of {backend_names()}; got {name!r}")
    backend = _REGISTRY[name]
    reason = backend.unavailable_reason() or backend.unsupported_reason(x)
    if reason is not None:
        raise ValueError(f"{source}={name!r} cannot run here: {reason}")
    return backend


def _register_builtin() -> None:
    from . import cpp, cuda, reference, triton_ecf

    register_backend(reference.ReferenceBackend())
    register_backend(cpp.CppBackend())
    register_backend(cuda.CudaBackend())
    register_backend(triton_ecf.TritonBackend())


_register_builtin()
