"""The contract of the dense ECF ops (SPEC §1) for the ops written in Python: the Triton op and the
reference op. The twin of csrc/ecf_checks.h, which checks it for the C++ ops, with the same
checks and messages; tests/op_contract.py is its one table of cases, run on every backend's op.

Shapes, dtypes, devices and precision are checked always (also on the fake tensors torch.compile
traces with). The values of perm and offsets are checked only where that needs no host sync
(CPU tensors): on a GPU the kernels make them safe instead (clamped indices: a layout that breaks
the contract gives meaningless sums there, but never a read or write out of bounds).
`classes.class_index` always builds a valid layout.
"""

from __future__ import annotations

import torch

from .precision import PRECISIONS

FLOAT_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


def check_inputs(x, t, perm, offsets, precision, *, check_values: bool, backend: str) -> None:
    """Refuse (ValueError/TypeError naming the argument and the value) a call of the op
    (x, t, perm, offsets, precision) that breaks the contract; `backend` names it in messages."""
    where = f"spectral_kernels ({backend}):"
    if x.dim() != 2 or t.dim() != 2:
        name, bad = ("x", x) if x.dim() != 2 else ("t", t)
        raise ValueError(f"{where} {name} must be 2-D ({'N' if name == 'x' else 'M'}, d), got shape {tuple(bad.shape)}")
    if x.shape[1] != t.shape[1]:
        raise ValueError(f"{where} x has d={x.shape[1]} but t has d={t.shape[1]}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{where} x must be float32, float64, bfloat16 or float16, got {x.dtype}")
    if t.dtype != x.dtype:
        raise TypeError(f"{where} t has dtype {t.dtype} but x has dtype {x.dtype}")
    if perm.dtype != torch.int64 or offsets.dtype != torch.int64:
        raise TypeError(f"{where} perm and offsets must be int64, got {perm.dtype} and {offsets.dtype}")
    if tuple(perm.shape) != (x.shape[0],):
        raise ValueError(f"{where} perm must have shape ({x.shape[0]},), got {tuple(perm.shape)}")
    if offsets.dim() != 1 or offsets.shape[0] < 2:
        raise ValueError(f"{where} offsets must have shape (C+1,) with C >= 1, got {tuple(offsets.shape)}")
    for name, tensor in (("t", t), ("perm", perm), ("offsets", offsets)):
        if tensor.device != x.device:
            raise ValueError(f"{where} {name} is on {tensor.device} but x is on {x.device}")
    if precision not in PRECISIONS:
        raise ValueError(f"{where} precision must be 'ieee' or 'tf32', got {precision!r}")
    if check_values:
        _check_layout_values(perm, offsets, x.shape[0], where)


def _check_layout_values(perm, offsets, n: int, where: str) -> None:
    """offsets a CSR index of N rows, perm a permutation of 0..N-1 (csrc/ecf_checks.h:
    check_layout_values): offsets first, before anything is sized by them."""
    first, last = int(offsets[0]), int(offsets[-1])
    if first != 0 or last != n:
        raise ValueError(f"{where} offsets must start at 0 and end at N={n}, got {first} and {last}")
    steps = offsets[1:] - offsets[:-1]
    if bool((steps < 0).any()):
        c = int(torch.nonzero(steps < 0)[0, 0]) + 1
        raise ValueError(
            f"{where} offsets must be non-decreasing, offsets[{c}]={int(offsets[c])} < "
            f"offsets[{c - 1}]={int(offsets[c - 1])}"
        )
    outside = (perm < 0) | (perm >= n)
    if bool(outside.any()):
        i = int(torch.nonzero(outside)[0, 0])
        raise ValueError(f"{where} perm must hold row numbers in [0, N={n}), got perm[{i}]={int(perm[i])}")
    seen = torch.bincount(perm, minlength=n)
    if bool((seen > 1).any()):
        row = int(torch.nonzero(seen > 1)[0, 0])
        first, second = (int(i) for i in torch.nonzero(perm == row)[:2, 0])
        raise ValueError(f"{where} perm must be a permutation of 0..N-1, but perm[{first}] = perm[{second}] = {row}")


def check_grad(grad, offsets, t, *, backend: str) -> None:
    """The upstream gradient of the backward op: shape (C, 2, M)."""
    expected = (offsets.shape[0] - 1, 2, t.shape[0])
    if tuple(grad.shape) != expected:
        raise ValueError(f"spectral_kernels ({backend}): grad must have shape {expected}, got {tuple(grad.shape)}")
