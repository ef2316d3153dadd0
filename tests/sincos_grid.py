"""One grid of float32 phases on which every sin/cos implementation is measured against float64
(SPEC §6: ops/ecf_math.py SINCOS_MAX_ABS_ERROR): csrc/ecf_math.h directly (test_ecf_math.py),
the Triton epilogue directly (test_triton_sincos.py), and every backend through its op
(test_sincos_bound.py)."""

from __future__ import annotations

import torch

from spectral_kernels.ops.ecf_math import MAX_FAST_PHASE


def fast_range(per_range: int = 1 << 14) -> torch.Tensor:
    """float32 phases within |p| <= MAX_FAST_PHASE: uniform over four ranges, every float32 next
    to a multiple of pi/2 (where the reduction cancels most) and its neighbours, and the edges."""
    gen = torch.Generator().manual_seed(0)
    uniform = [
        (torch.rand(per_range, generator=gen, dtype=torch.float64) * 2 - 1) * b
        for b in (1.0, 100.0, 1000.0, MAX_FAST_PHASE)
    ]
    k = (torch.arange(0, int(MAX_FAST_PHASE / (torch.pi / 2)) + 1, dtype=torch.float64) * (torch.pi / 2)).float()
    near = torch.cat([k, k.nextafter(torch.tensor(1e9)), k.nextafter(torch.tensor(-1e9))])
    near = torch.cat([near, -near])
    near = near[near.abs() <= MAX_FAST_PHASE]
    edges = torch.tensor([MAX_FAST_PHASE, -MAX_FAST_PHASE, 0.0, -0.0, 1e-30, -1e-30])
    return torch.cat([torch.cat(uniform).float(), near, edges])


def beyond_fast_range(count: int = 4096) -> torch.Tensor:
    """float32 phases past MAX_FAST_PHASE, where a full-range routine takes over."""
    gen = torch.Generator().manual_seed(1)
    magnitudes = torch.logspace(3.92, 12, count, dtype=torch.float64)
    signs = torch.where(torch.rand(count, generator=gen) < 0.5, -1.0, 1.0).double()
    return torch.cat([magnitudes * signs, torch.tensor([8192.0009765625, -3.0e38])]).float()


def errors(phases: torch.Tensor, sin_p: torch.Tensor, cos_p: torch.Tensor) -> tuple[float, float]:
    """Max |sin - sin_64| and |cos - cos_64| of the float32 arguments themselves (the test measures
    sin/cos, not the rounding of an argument to float32)."""
    exact = phases.double().cpu()
    return (
        (sin_p.double().cpu() - exact.sin()).abs().max().item(),
        (cos_p.double().cpu() - exact.cos()).abs().max().item(),
    )
