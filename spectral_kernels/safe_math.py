"""Elementwise math whose gradient stays finite where the textbook one is not, shared by the
kernels (kernels.py: Matern distances) and the post-ECF terms (terms.py: moduli)."""

from __future__ import annotations

import torch


def safe_sqrt(value: torch.Tensor) -> torch.Tensor:
    """sqrt(value) for value >= 0 whose derivative at exactly 0 is taken as 0, not inf.

    The double `where` keeps the unused branch's gradient finite, so no NaN reaches the inputs
    from a value of 0. A NaN value stays NaN (`value * 0`), so a NaN that reaches a loss shows
    up as NaN rather than as a silent 0, which would read as a perfect match.
    """
    positive = value > 0
    return torch.where(positive, torch.sqrt(torch.where(positive, value, torch.ones_like(value))), value * 0)
