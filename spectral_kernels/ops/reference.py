"""The reference backend: plain PyTorch on the full N x M phase matrix.

It is what one writes without this library (and what the public NCFM code does): x t^T, cos
and sin of it, then a per-class sum; autograd stores the N x M intermediates for the backward.
Every other backend is tested against it in float64. Its op (`ecf_sums_op`) keeps the op contract
(ops/contract.py) with the same checks and messages as the fused ops, so the contract's table of
cases (tests/op_contract.py) runs on it too: what a new backend's op is held to.
"""

from __future__ import annotations

import torch

from .. import _checks
from ..classes import ClassIndex
from .contract import check_inputs
from .precision import cuda_matmul_precision, resolve_precision
from .protocol import Backend


class ReferenceBackend(Backend):
    name = "reference"
    fused = False

    def unavailable_reason(self) -> str | None:
        return None

    def unsupported_reason(self, x: torch.Tensor) -> str | None:
        return None

    def dense_op(self):
        return ecf_sums_op

    def ecf_sums(
        self, x: torch.Tensor, t: torch.Tensor, index: ClassIndex, precision: str | None = None
    ) -> torch.Tensor:
        return ecf_sums_reference(x, t, index.labels, index.num_classes, precision)


class _PhaseProduct(torch.autograd.Function):
    """x t^T on CUDA with its forward and backward products in one explicit precision (plain
    x @ t.T would run its backward under whatever setting holds when autograd gets there)."""

    @staticmethod
    def forward(ctx, x, t, precision):
        ctx.save_for_backward(x, t)
        ctx.precision = precision
        with cuda_matmul_precision(precision, x.device):
            return x @ t.T

    @staticmethod
    def backward(ctx, grad):
        x, t = ctx.saved_tensors
        with cuda_matmul_precision(ctx.precision, x.device):
            dx = grad @ t if ctx.needs_input_grad[0] else None
            dt = grad.T @ x if ctx.needs_input_grad[1] else None
        return dx, dt, None


def ecf_sums_reference(
    x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None, num_classes: int, precision: str | None = None
) -> torch.Tensor:
    """S (C, 2, M) with S[c,0,m] = sum_{labels_i = c} cos(<t_m, x_i>) and S[c,1,m] the sine sum.

    precision: None follows torch's TF32 setting; "ieee" or "tf32" fixes CUDA float32 products."""
    _checks.allocation(
        f"the reference backend's phases x t^T and their cos and sin ({x.shape[0]} rows x {t.shape[0]} frequencies)",
        (3, x.shape[0], t.shape[0]),
        x.dtype,
        x.device,
    )
    if precision is None or x.device.type != "cuda":
        phase = x @ t.T
    else:
        phase = _PhaseProduct.apply(x, t, resolve_precision(precision))
    cos, sin = torch.cos(phase), torch.sin(phase)
    if labels is None:
        return torch.stack([cos.sum(0), sin.sum(0)]).unsqueeze(0)
    zeros = phase.new_zeros(num_classes, phase.shape[1])
    return torch.stack([zeros.index_add(0, labels, cos), zeros.index_add(0, labels, sin)], dim=1)


def ecf_sums_op(x: torch.Tensor, t: torch.Tensor, perm: torch.Tensor, offsets: torch.Tensor, precision: str):
    """The reference as an op of the layout of SPEC §1: (x, t, perm, offsets, precision) ->
    (C, 2, M), refusing what the fused ops refuse (values of perm and offsets on CPU tensors)."""
    check_inputs(x, t, perm, offsets, precision, check_values=x.device.type == "cpu", backend="reference")
    labels = row_classes(perm, offsets, x.shape[0])
    return ecf_sums_reference(x, t, labels, offsets.shape[0] - 1, precision)


def row_classes(perm: torch.Tensor, offsets: torch.Tensor, num_rows: int) -> torch.Tensor:
    """Class of every row of x, in x's order, from the (perm, offsets) layout (SPEC §1).

    Safe with any perm/offsets, even ones that break the contract (the fused GPU paths cannot
    check values without a host sync): indices are clamped into range and every entry is set,
    so a reader of the result never goes out of bounds; only the values are then meaningless.
    """
    num_classes = offsets.shape[0] - 1
    clean = torch.cummax(offsets.clamp(0, num_rows), 0).values  # in [0, N] and non-decreasing
    positions = torch.arange(num_rows, device=perm.device)
    classes = torch.searchsorted(clean[1:], positions, right=True).clamp_max(num_classes - 1)
    out = torch.zeros(num_rows, dtype=torch.long, device=perm.device)
    out[perm.clamp(0, max(num_rows - 1, 0))] = classes
    return out


def ecf_sums_backward_unfused(grad, x, t, perm, offsets, need_x: bool, need_t: bool):
    """(dx, dt) of SPEC §1 written with differentiable torch ops on the full N x M matrix:
    W = -G_re[c_i] sin(x t^T) + G_im[c_i] cos(x t^T), dx = W t, dt = W^T x.

    The fused backends' backward uses it only when the backward itself is differentiated
    (create_graph=True: Hessian-vector products, gradient penalties), where autograd needs the
    intermediate matrices anyway; first-order training never comes here.
    """
    work = torch.float64 if x.dtype == torch.float64 else torch.float32
    xw, tw = x.to(work), t.to(work)
    g = grad.to(work)[row_classes(perm, offsets, x.shape[0])]  # (N, 2, M)
    phase = xw @ tw.T
    w = g[:, 1] * torch.cos(phase) - g[:, 0] * torch.sin(phase)
    dx = (w @ tw).to(x.dtype) if need_x else None
    dt = (w.T @ xw).to(t.dtype) if need_t else None
    return dx, dt
