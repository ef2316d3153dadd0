"""The op contract of SPEC §1 as one table of cases, run on every backend's op by
tests/test_backends.py (reference, cpu, triton under the interpreter, cuda with a GPU).

A backend's op (Backend.dense_op()) takes (x, t, perm, offsets, precision) and returns the
(C, 2, M) sums; a fused one has a backward op (grad, x, t, perm, offsets, precision, need_x,
need_t). Both refuse a call that breaks the contract with a ValueError or TypeError that names the
argument and the value, before any kernel reads memory through it. The checks are written twice,
in C++ (csrc/ecf_checks.h, the cpu and cuda ops) and in Python (spectral_kernels/ops/contract.py,
the triton and reference ops), so a pattern below accepts either spelling of a shape ("[9]" or
"(9,)") or a dtype ("Long" or "torch.int64") and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from spectral_kernels.classes import class_index

N, D, M = 10, 3, 4  # rows, dims, frequencies; two classes of 5 rows


@dataclass(frozen=True)
class Inputs:
    x: torch.Tensor
    t: torch.Tensor
    perm: torch.Tensor
    offsets: torch.Tensor
    grad: torch.Tensor


def inputs(device: str) -> Inputs:
    """A valid call on `device`: the cases break one thing of it each."""
    gen = torch.Generator().manual_seed(0)
    x, t = torch.randn(N, D, generator=gen), torch.randn(M, D, generator=gen)
    index = class_index((torch.arange(N) % 2).to(device), N, 2, torch.device(device))
    grad = torch.randn(2, 2, M, generator=gen)
    return Inputs(x.to(device), t.to(device), index.perm, index.offsets, grad.to(device))


def _shape(*dims: int) -> str:
    """A shape as C++ ([9]) or Python ((9,)) prints it."""
    cpp = r"\[" + ", ".join(map(str, dims)) + r"\]"
    python = r"\(" + ", ".join(map(str, dims)) + ("," if len(dims) == 1 else "") + r"\)"
    return f"({cpp}|{python})"


def _dtype(dtype: torch.dtype) -> str:
    """A dtype as C++ (Long) or Python (torch.int64) prints it."""
    cpp = {torch.int64: "Long", torch.int32: "Int", torch.float16: "Half", torch.float32: "Float"}
    cpp[torch.float64] = "Double"
    return rf"({cpp[dtype]}|torch\.{str(dtype).split('.')[1]})"


@dataclass(frozen=True)
class Case:
    id: str
    call: Callable  # (forward op, backward op or None, Inputs) -> the refused call's result
    exception: type
    pattern: str  # a regular expression the message must match (re.search)
    values: bool = False  # a check of perm's or offsets' values: made where they are CPU tensors
    backward: bool = False  # a call of the backward op: run where the backend has one
    refused_dtype: torch.dtype | None = None  # run where the backend refuses x of this dtype


def _fwd(**change):
    """A forward call of the valid inputs with some of them changed (callables of the inputs)."""

    def call(op, _backward, i: Inputs):
        args = {"x": i.x, "t": i.t, "perm": i.perm, "offsets": i.offsets, "precision": "ieee"}
        args.update({k: v(i) if callable(v) else v for k, v in change.items()})
        return op(args["x"], args["t"], args["perm"], args["offsets"], args["precision"])

    return call


def _bwd(**change):
    def call(_op, backward, i: Inputs):
        args = {"grad": i.grad, "perm": i.perm, "offsets": i.offsets}
        args.update({k: v(i) for k, v in change.items()})
        return backward(args["grad"], i.x, i.t, args["perm"], args["offsets"], "ieee", True, True)

    return call


def _long(values):
    return lambda i: torch.tensor(values, device=i.x.device)


CASES = [
    Case("x 1-D", _fwd(x=lambda i: i.x[0]), ValueError, r"x must be 2-D \(N, d\), got shape " + _shape(3)),
    Case("t 1-D", _fwd(t=lambda i: i.t[:, 0]), ValueError, r"t must be 2-D \(M, d\), got shape " + _shape(4)),
    Case("d differs", _fwd(t=lambda i: i.t[:, :2]), ValueError, r"x has d=3 but t has d=2"),
    Case(
        "x integer",
        _fwd(x=lambda i: i.x.long(), t=lambda i: i.t.long()),
        TypeError,
        r"x must be float32.*, got " + _dtype(torch.int64),
    ),
    Case(
        "x float16 where not taken",
        _fwd(x=lambda i: i.x.half(), t=lambda i: i.t.half()),
        TypeError,
        r"x must be float32 or float64, got " + _dtype(torch.float16),
        refused_dtype=torch.float16,
    ),
    Case(
        "t dtype differs",
        _fwd(t=lambda i: i.t.double()),
        TypeError,
        rf"t has dtype {_dtype(torch.float64)} but x has dtype {_dtype(torch.float32)}",
    ),
    Case(
        "perm int32",
        _fwd(perm=lambda i: i.perm.int()),
        TypeError,
        r"perm and offsets must be int64, got " + _dtype(torch.int32),
    ),
    Case(
        "perm too short", _fwd(perm=lambda i: i.perm[:9]), ValueError, r"perm must have shape \(10,\), got " + _shape(9)
    ),
    Case(
        "offsets too short",
        _fwd(offsets=lambda i: i.offsets[:1]),
        ValueError,
        r"offsets must have shape \(C\+1,\) with C >= 1, got " + _shape(1),
    ),
    Case(
        "t on another device",
        _fwd(t=lambda i: i.t.to("meta")),
        ValueError,
        # the Python check names the two devices; the C++ op's meta kernel (the dispatcher picks it
        # for a meta input) names every device it was given
        r"(t is on meta but x is on \w+|every input must be on one device, got \[.*'meta'\])",
    ),
    Case("precision unknown", _fwd(precision="fp16"), ValueError, r"precision must be 'ieee' or 'tf32', got 'fp16'"),
    Case(
        "grad wrong shape",
        _bwd(grad=lambda i: torch.zeros(2, 2, 5, device=i.x.device)),
        ValueError,
        r"grad must have shape \(2, 2, 4\), got " + _shape(2, 2, 5),
        backward=True,
    ),
    Case(
        "offsets do not end at N",
        _fwd(offsets=_long([0, 5, 9])),
        ValueError,
        r"offsets must start at 0 and end at N=10, got 0 and 9",
        values=True,
    ),
    Case(
        "offsets do not start at 0",
        _fwd(offsets=_long([1, 5, 10])),
        ValueError,
        r"offsets must start at 0 and end at N=10, got 1 and 10",
        values=True,
    ),
    Case(
        "offsets decreasing",
        _fwd(offsets=_long([0, 6, 5, 10])),
        ValueError,
        r"offsets must be non-decreasing, offsets\[2\]=5 < offsets\[1\]=6",
        values=True,
    ),
    Case(
        "offsets absurd",
        _fwd(offsets=_long([0, 10**12, 10])),
        ValueError,
        r"offsets must be non-decreasing, offsets\[2\]=10 < offsets\[1\]=1000000000000",
        values=True,
    ),
    Case(
        "perm row out of range",
        _fwd(perm=lambda i: torch.where(i.perm == 3, 10, i.perm)),
        ValueError,
        r"perm must hold row numbers in \[0, N=10\), got perm\[\d\]=10",
        values=True,
    ),
    Case(
        "perm negative row",
        _fwd(perm=lambda i: torch.where(i.perm == 3, -1, i.perm)),
        ValueError,
        r"perm must hold row numbers in \[0, N=10\), got perm\[\d\]=-1",
        values=True,
    ),
    Case(
        "perm repeats a row",
        _fwd(perm=lambda i: torch.where(i.perm == 3, 4, i.perm)),
        ValueError,
        r"perm must be a permutation of 0..N-1, but perm\[\d\] = perm\[\d\] = 4",
        values=True,
    ),
    Case(
        "backward perm repeats a row",
        _bwd(perm=lambda i: torch.where(i.perm == 3, 4, i.perm)),
        ValueError,
        r"perm must be a permutation of 0..N-1, but perm\[\d\] = perm\[\d\] = 4",
        values=True,
        backward=True,
    ),
]


def backend_ops(backend) -> tuple[Callable, Callable | None]:
    """(forward op, backward op) of a backend: the backward op of a torch.library op `name` is
    `name_backward`; an op written in Python (the reference's) has none, autograd differentiates it."""
    forward = backend.dense_op()
    qualified = getattr(forward, "_qualified_op_name", None)
    if qualified is None:
        return forward, None
    return forward, getattr(torch.ops.spectral_kernels, qualified.split("::")[1] + "_backward")


def applies(case: Case, backend, device: str) -> bool:
    """Whether the case holds for this backend's op on `device` (see Case)."""
    if case.values and device != "cpu":
        return False
    if case.backward and backend_ops(backend)[1] is None:
        return False
    if case.refused_dtype is not None:
        return backend.unsupported_reason(torch.empty(1, dtype=case.refused_dtype, device=device)) is not None
    return True
