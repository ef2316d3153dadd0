"""Class layout of a batch: which rows belong to which class.

Every backend reads the same description: `perm` lists the rows class by class and the CSR
`offsets` say where each class starts in it (SPEC §1). Building it takes an argsort and a
scatter, all with static shapes, so it traces under torch.compile without a host sync.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ClassIndex:
    """Rows of an (N, d) batch grouped by class.

    labels:      (N,) int64 in the batch's own order, or None when everything is one class.
    num_classes: C.
    perm:        (N,) int64, the rows of class 0, then class 1, ... (stable within a class).
    offsets:     (C+1,) int64, class c owns perm[offsets[c]:offsets[c+1]].
    counts:      (C,) int64, n_c.
    """

    labels: torch.Tensor | None
    num_classes: int
    perm: torch.Tensor
    offsets: torch.Tensor
    counts: torch.Tensor


def class_index(labels: torch.Tensor | None, num_rows: int, num_classes: int, device: torch.device) -> ClassIndex:
    """Group `num_rows` rows by `labels` (already checked to lie in [0, num_classes))."""
    if labels is None:
        perm = torch.arange(num_rows, device=device)
        counts = torch.full((1,), num_rows, dtype=torch.long, device=device)
    else:
        perm = torch.argsort(labels, stable=True)
        counts = torch.zeros(num_classes, dtype=torch.long, device=device)
        counts.index_add_(0, labels, torch.ones_like(labels))
    offsets = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
    return ClassIndex(labels=labels, num_classes=num_classes, perm=perm, offsets=offsets, counts=counts)
