"""The reference backend: plain PyTorch on the full N x M phase matrix.

It is what one writes without this library (and what the public NCFM code does): x t^T, cos
and sin of it, then a per-class sum; autograd stores the N x M intermediates for the backward.
Every other backend is tested against it in float64.
"""
from __future__ import annotations

import torch

from ..classes import ClassIndex


class ReferenceBackend:
    name = "reference"

    def unavailable_reason(self) -> str | None:
        return None

    def unsupported_reason(self, x: torch.Tensor) -> str | None:
        return None

    def ecf_sums(self, x: torch.Tensor, t: torch.Tensor, index: ClassIndex, precision: str | None = None) -> torch.Tensor:
        return ecf_sums_reference(x, t, index.labels, index.num_classes)


def ecf_sums_reference(x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None, num_classes: int) -> torch.Tensor:
    """S (C, 2, M) with S[c,0,m] = sum_{labels_i = c} cos(<t_m, x_i>) and S[c,1,m] the sine sum."""
    phase = x @ t.T
    cos, sin = torch.cos(phase), torch.sin(phase)
    if labels is None:
        return torch.stack([cos.sum(0), sin.sum(0)]).unsqueeze(0)
    zeros = phase.new_zeros(num_classes, phase.shape[1])
    return torch.stack([zeros.index_add(0, labels, cos), zeros.index_add(0, labels, sin)], dim=1)
