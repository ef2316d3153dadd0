"""An autograd-aware sum over a torch.distributed process group (SPEC §1: ECF sums are additive).

torch.distributed.nn.functional.all_reduce does this too, but it is deprecated, and importing
torch.distributed.nn (which pulls in the RPC stack) made a gloo process abort at exit with
"terminate called without an active exception" (in about 1 of 10 two-process runs on the CPU,
every run when imported after init_process_group). This one needs nothing beyond
torch.distributed.all_reduce.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


class _SumOverGroup(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor: torch.Tensor, group) -> torch.Tensor:
        ctx.group = group
        total = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(total, op=dist.ReduceOp.SUM, group=group)
        return total

    @staticmethod
    def backward(ctx, grad_total: torch.Tensor):
        # Every process's output is the same sum, and each computes its own loss from it: the
        # gradient for one process's summand is the sum of all processes' output gradients.
        # (With a replicated loss that is WORLD times the local one; DDP's averaging undoes it.)
        grad = grad_total.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        return grad, None


def sum_over_group(tensor: torch.Tensor, group) -> torch.Tensor:
    """`tensor` summed over every process of `group`, differentiable; each process must call it."""
    return _SumOverGroup.apply(tensor, group)
