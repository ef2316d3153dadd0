"""Which precision CUDA float32 products run in: read torch's TF32 setting, and set it for a
block of cuBLAS calls, without tripping torch's check against mixing its two TF32 APIs.

torch >= 2.9 has the new `torch.backends.cuda.matmul.fp32_precision` ("tf32" / "ieee" /
"none") next to the legacy `allow_tf32`. Once a program sets the new one, merely *reading*
`allow_tf32` raises RuntimeError, and writing it changes the new one. So a library must read
`fp32_precision` first and fall back to `allow_tf32` only when it says "none", and must restore
a setting through the same API the program used, or it breaks the program's own reads later.
"""

from __future__ import annotations

import contextlib

import torch

PRECISIONS = ("ieee", "tf32")


def _assume_constant_result(fn):
    """torch.compiler.assume_constant_result without its cost: that one imports all of dynamo
    (1.7 s) only to set this attribute, and importing spectral_kernels (or starting the CLI)
    should not pay for a compiler it may never use. test_precision checks dynamo honours it."""
    fn._dynamo_marked_constant = True
    return fn


# Dynamo cannot trace the fp32_precision getter (a pybind builtin); under torch.compile the
# answer is taken once at trace time. Dynamo's global-state guard covers torch's TF32 flag, so a
# later change of the setting recompiles rather than running with a stale choice.
@_assume_constant_result
def cuda_matmul_uses_tf32() -> bool:
    """Whether torch's float32 CUDA matmuls currently use TF32 (either API)."""
    matmul = torch.backends.cuda.matmul
    mode = getattr(matmul, "fp32_precision", "none")  # absent before torch 2.9
    if mode != "none":
        return mode == "tf32"
    try:
        return bool(matmul.allow_tf32)
    except RuntimeError:  # the APIs were mixed; "none" then means the default, IEEE
        return False


def resolve_precision(precision: str | None) -> str:
    """ "ieee" or "tf32": the explicit choice, else what torch's setting says."""
    if precision is None:
        return "tf32" if cuda_matmul_uses_tf32() else "ieee"
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be None, 'ieee' or 'tf32'; got {precision!r}")
    return precision


@contextlib.contextmanager
def cuda_matmul_precision(precision: str, device: torch.device):
    """cuBLAS float32 products in `precision` inside the block; the program's setting after."""
    if device.type != "cuda":
        yield
        return
    matmul = torch.backends.cuda.matmul
    try:
        before_legacy = matmul.allow_tf32
    except RuntimeError:  # the program uses the new API: set and restore through it
        before_new = matmul.fp32_precision
        matmul.fp32_precision = precision
        try:
            yield
        finally:
            matmul.fp32_precision = before_new
        return
    matmul.allow_tf32 = precision == "tf32"
    try:
        yield
    finally:
        matmul.allow_tf32 = before_legacy
