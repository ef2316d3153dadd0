"""Mixed precision: what the losses and the fused ops do under torch.autocast (SPEC §6).

torch.autocast runs matmul-like ops in bfloat16/float16 and losses in float32. The discrepancies
here are losses whose inner product x t^T is a matmul, so under autocast for the features' device:

- the inputs (features, frequencies) may come in different dtypes among float32, bfloat16 and
  float16 (a network's bf16 output next to a learned sampler's float32 frequencies), as autocast
  allows; they are brought to one compute dtype, the widest of them (torch.promote_types);
- a low compute dtype stays low where the backend that would run takes it natively (triton,
  cuda: low-precision products accumulated in float32, float32 sums); where it does not (the
  cpu backend takes float32 and float64 only), the inputs are cast to float32, so the fused
  backend runs and never the N x M reference path that `auto` falls back to for a dtype the
  fused one refuses. The reference backend named explicitly computes in the compute dtype;
- the function then runs with autocast off for that device (inside, the library chooses the
  precision of every op, as torch's custom_fwd(cast_inputs=...) does), and a low-precision
  floating result comes back as float32, as torch's own losses under autocast do.

Casts are autograd ops: a bf16 leaf gets a bf16 gradient, a float32 one a float32 gradient.
They come before the function's own checks, so a refused call may have made one copy of its
inputs' size (never more: nothing is sized by a value).
float64 is never cast (autocast never touches it). Outside autocast nothing here acts: explicit
bf16/fp16 inputs keep their dtype and their backend choice.

The C++ CPU ops themselves take float32 and float64 only; called directly under CPU autocast
they cast floating inputs to float32 (torch.library.register_autocast), so they never refuse a
bf16/fp16 tensor there. The GPU ops (cuda, triton) take bf16/fp16 natively and get no rule.
"""

from __future__ import annotations

import functools

import torch

from .cpp import LOAD_ERROR

LOW_DTYPES = (torch.bfloat16, torch.float16)
MIXABLE_DTYPES = (torch.float32, *LOW_DTYPES)
# The C++ ops whose CPU kernels take float32/float64 only and that a user calls directly (the
# gradient ops are called by the autograd wiring, always on what the forward saw).
CPU_FLOAT32_OPS = ("spectral_kernels::ecf_sums", "spectral_kernels::hadamard_sums")


# Whether torch.autocast exists for a device type, asked once here: torch 2.11's dynamo cannot
# trace torch.amp.is_autocast_available (a graph break, so fullgraph compiles of every public
# function failed there), while a dict lookup and torch.is_autocast_enabled trace on every version.
_AUTOCAST_AVAILABLE = {kind: torch.amp.is_autocast_available(kind) for kind in ("cpu", "cuda", "meta")}


def enabled(device: torch.device) -> bool:
    """Whether torch.autocast is on for tensors on `device`."""
    kind = device.type
    available = _AUTOCAST_AVAILABLE.get(kind)
    if available is None:  # another device type: asked when first met (eagerly, in practice)
        available = _AUTOCAST_AVAILABLE[kind] = torch.amp.is_autocast_available(kind)
    return available and torch.is_autocast_enabled(kind)


def _fused_takes(backend: str, dtype: torch.dtype, device: torch.device) -> bool:
    """Whether inputs of the low `dtype` can stay in it: the backend that would run for them is
    a fused one, or the reference is what runs for float32 too (named, or nothing fused here)."""
    from . import resolve

    try:
        if resolve(backend, torch.empty(0, dtype=dtype, device=device)).fused:
            return True
    except ValueError:  # a named backend that refuses this dtype: float32 it may take
        return False
    try:
        return not resolve(backend, torch.empty(0, device=device, dtype=torch.float32)).fused
    except ValueError:
        return True  # nothing runs float32 either: leave the refusal to the call itself


def compute_dtype(dtypes, backend: str | None, device: torch.device) -> torch.dtype:
    """The dtype the inputs are cast to under autocast: their widest, then float32 where the
    backend has no fused kernel for a low one (backend None: no fused kernel at all, as mmd)."""
    dtype = functools.reduce(torch.promote_types, dtypes)
    if dtype in LOW_DTYPES and (backend is None or not _fused_takes(backend, dtype, device)):
        return torch.float32
    return dtype


def _get(args, kwargs, position: int | None, name: str):
    """An argument given by position (None: keyword-only) or by name."""
    return args[position] if position is not None and position < len(args) else kwargs.get(name)


def _to_float32(value):
    if isinstance(value, torch.Tensor) and value.dtype in LOW_DTYPES:
        return value.float()
    if isinstance(value, tuple):
        return tuple(_to_float32(v) for v in value)
    return value


def policy(*inputs: tuple[int | None, str], fused: bool = True):
    """Decorate a public function with the autocast policy above. `inputs`: (position or None
    for keyword-only, name) of its tensor arguments (features first, then frequencies); `fused`: whether it runs on a
    backend (read from its `backend` keyword) or, like mmd, has no fused kernel."""

    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            first = _get(args, kwargs, *inputs[0])
            # The common case, autocast off, costs one check and leaves the call untouched.
            if not (isinstance(first, torch.Tensor) and enabled(first.device)):
                return fn(*args, **kwargs)
            values = [_get(args, kwargs, *spec) for spec in inputs]
            given = [v for v in values if v is not None]
            # Anything that is not a floating tensor (or SORF frequencies) of a mixable dtype on
            # the features' device is left as it is: the function's own checks refuse or take it.
            if not all(hasattr(v, "dtype") and v.dtype in MIXABLE_DTYPES and v.device == first.device for v in given):
                return fn(*args, **kwargs)
            backend = kwargs.get("backend", "auto") if fused else None
            dtype = compute_dtype([v.dtype for v in given], backend, first.device)
            args, kwargs = list(args), dict(kwargs)
            for (position, name), value in zip(inputs, values):
                if value is None or value.dtype == dtype:
                    continue
                cast = value.to(dtype=dtype)
                if position is not None and position < len(args):
                    args[position] = cast
                else:
                    kwargs[name] = cast
            with torch.autocast(first.device.type, enabled=False):
                return _to_float32(fn(*args, **kwargs))

        return wrapper

    return decorate


def register() -> None:
    """The autocast rules of the C++ CPU ops (see the module docstring)."""
    for op in CPU_FLOAT32_OPS:
        torch.library.register_autocast(op, "cpu", torch.float32)


# Registered on this module's first import (functional.py imports it, so `import spectral_kernels`
# does), where the C++ library loaded. Not by the registry in ops/__init__.py: this module asks the
# registry which backend would run (resolve), so the registry importing it would close a circle.
if LOAD_ERROR is None:
    register()
