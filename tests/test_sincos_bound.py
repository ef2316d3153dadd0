"""One sin/cos bound for every backend (SPEC §6, ops/ecf_math.py: SINCOS_MAX_ABS_ERROR), measured
on one grid of phases (tests/sincos_grid.py) through each backend's own op: with one row x = 1
of one dimension and frequencies t = p, the sums are cos p and sin p themselves (the product
1 * p is exact in IEEE arithmetic), whichever path (fast reduction, full-range routine,
torch's own) the backend takes for them."""

import pytest
import torch

from spectral_kernels import ops
from spectral_kernels.classes import class_index
from spectral_kernels.ops.ecf_math import SINCOS_MAX_ABS_ERROR

from . import sincos_grid
from .conftest import BACKEND_DEVICES, backend_params


def _through_the_op(backend: str, phases: torch.Tensor):
    device = "cpu" if backend == "reference" else BACKEND_DEVICES[backend]
    x = torch.ones(1, 1, device=device)
    t = phases.to(device).unsqueeze(1)
    index = class_index(None, 1, 1, torch.device(device))
    sums = ops.get_backend(backend).ecf_sums(x, t, index, "ieee")
    assert sums.dtype == torch.float32
    return sums[0, 1], sums[0, 0]


def _wide_interpreter_tiles(monkeypatch):
    """The interpreter runs one program per 32 x 32 tile at some 50 ms each, so the 100,000
    phases of the grid would take minutes: there, the forward kernel gets 16 x 2048 tiles (the
    epilogue, whose sin/cos this measures, is the same code at any tile shape)."""
    import triton

    from spectral_kernels.ops import triton_ecf as te

    if te.INTERPRETED:
        monkeypatch.setattr(te, "AUTOTUNE", True)  # through the autotuner, which holds the configs
        monkeypatch.setattr(
            te._forward_kernel, "configs", [triton.Config({"BLOCK_N": 16, "BLOCK_M": 2048, "BLOCK_K": 16})]
        )
        monkeypatch.setattr(te._forward_kernel, "cache", {})


@pytest.mark.parametrize("backend", [pytest.param("reference"), *backend_params()])
@pytest.mark.parametrize("where", ["fast_range", "beyond_fast_range"])
def test_every_backends_sin_and_cos_meet_the_one_bound(backend, where, monkeypatch):
    if backend == "triton":
        _wide_interpreter_tiles(monkeypatch)
    phases = getattr(sincos_grid, where)()
    sin_p, cos_p = _through_the_op(backend, phases)
    err_sin, err_cos = sincos_grid.errors(phases, sin_p, cos_p)
    assert err_sin <= SINCOS_MAX_ABS_ERROR and err_cos <= SINCOS_MAX_ABS_ERROR, (err_sin, err_cos)
