"""The autograd wiring every fused op shares, written once (SPEC §1).

Dense ops take (x, t, perm, offsets, precision) and return the (C, 2, M) sums; their fused
backward is one op (grad, x, t, perm, offsets, precision, need_x, need_t) -> (dx, dt) that
computes only what is asked for. SORF ops take (x, signs, radii, perm, offsets, num_freqs,
*extra) and have a fused dx only (the signs and radii are samples, not parameters).

Double backward (create_graph=True): the fused gradient ops have no derivative of their own,
so the backward then differentiates the unfused formula instead (O(N M) memory, as the
reference would need); first-order training never takes that path, also not under
torch.compile.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .reference import ecf_sums_backward_unfused


def register_dense_autograd(op, fused_backward: Callable) -> None:
    """Autograd for a dense ECF op; `op` a torch.library op or its qualified name."""

    def setup_context(ctx, inputs, output):
        x, t, perm, offsets, precision = inputs
        ctx.save_for_backward(x, t, perm, offsets)
        ctx.precision = precision

    def backward(ctx, grad):
        x, t, perm, offsets = ctx.saved_tensors
        need_x, need_t = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if not (need_x or need_t):
            return None, None, None, None, None
        if torch.is_grad_enabled():
            dx, dt = ecf_sums_backward_unfused(grad, x, t, perm, offsets, need_x, need_t)
        else:
            dx, dt = fused_backward(grad, x, t, perm, offsets, ctx.precision, need_x, need_t)
        return (dx if need_x else None), (dt if need_t else None), None, None, None

    torch.library.register_autograd(op, backward, setup_context=setup_context)


def register_sorf_autograd(op, fused_grad_x: Callable) -> None:
    """Autograd (dx only) for a SORF op (x, signs, radii, perm, offsets, num_freqs, *extra);
    `fused_grad_x(grad, x, signs, radii, perm, offsets, num_freqs, *extra)` gives dx."""

    def setup_context(ctx, inputs, output):
        x, signs, radii, perm, offsets, num_freqs, *extra = inputs
        ctx.save_for_backward(x, signs, radii, perm, offsets)
        ctx.num_freqs, ctx.extra = num_freqs, extra

    def backward(ctx, grad):
        x, signs, radii, perm, offsets = ctx.saved_tensors
        nothing = (None,) * (5 + len(ctx.extra))  # signs, radii, perm, offsets, num_freqs, *extra
        if not ctx.needs_input_grad[0]:
            return (None, *nothing)
        if torch.is_grad_enabled():
            from ..structured import HadamardFrequencies

            t = HadamardFrequencies(signs, radii, ctx.num_freqs, x.shape[1]).dense().to(x.dtype)
            dx, _ = ecf_sums_backward_unfused(grad, x, t, perm, offsets, True, False)
        else:
            dx = fused_grad_x(grad, x, signs, radii, perm, offsets, ctx.num_freqs, *ctx.extra)
        return (dx, *nothing)

    torch.library.register_autograd(op, backward, setup_context=setup_context)
