"""The Triton epilogue's sin/cos (ops/triton_common.py) against float64 on the shared grid of
phases (tests/sincos_grid.py), on both of its paths: the reduction of csrc/ecf_math.h, and
libdevice for tiles that hold a phase beyond MAX_FAST_PHASE. The bound is the one of SPEC §6."""

import pytest
import torch

import spectral_kernels as sk
from spectral_kernels.ops.ecf_math import SINCOS_MAX_ABS_ERROR

from . import sincos_grid

pytestmark = pytest.mark.skipif("triton" not in sk.available_backends(), reason="triton is not installed")

if "triton" in sk.available_backends():
    import triton
    import triton.language as tl

    from spectral_kernels.ops import triton_common as tc

    @triton.jit
    def _sincos_tiles(p_ptr, sin_ptr, cos_ptr, TILE: tl.constexpr, SINCOS: tl.constexpr):
        offs = tl.program_id(0) * TILE * TILE + tl.arange(0, TILE)[:, None] * TILE + tl.arange(0, TILE)[None, :]
        sin_p, cos_p = tc.sincos(tl.load(p_ptr + offs), tl.float32, SINCOS)
        tl.store(sin_ptr + offs, sin_p)
        tl.store(cos_ptr + offs, cos_p)

    @triton.jit
    def _sincos_reduced_elements(p_ptr, sin_ptr, cos_ptr, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        sin_p, cos_p = tc.sincos_reduced(tl.load(p_ptr + offs))
        tl.store(sin_ptr + offs, sin_p)
        tl.store(cos_ptr + offs, cos_p)


TILE = 64  # the interpreter runs a program per tile: few large tiles are faster than many small ones
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _padded(phases: torch.Tensor, multiple: int) -> torch.Tensor:
    """phases padded with zeros to a multiple of `multiple` (zeros change no maximum error)."""
    return torch.cat([phases, phases.new_zeros(-phases.numel() % multiple)]).to(DEVICE).contiguous()


def _tiles(phases: torch.Tensor, mode: str):
    p = _padded(phases, TILE * TILE)
    sin_p, cos_p = torch.empty_like(p), torch.empty_like(p)
    _sincos_tiles[(p.numel() // (TILE * TILE),)](p, sin_p, cos_p, TILE=TILE, SINCOS=mode)
    return sincos_grid.errors(p, sin_p, cos_p)


@pytest.mark.parametrize("mode", tc.SINCOS_MODES if "triton" in sk.available_backends() else [])
def test_sincos_meets_the_bound_over_the_fast_range_on_every_path(mode):
    err_sin, err_cos = _tiles(sincos_grid.fast_range(), mode)
    assert err_sin <= SINCOS_MAX_ABS_ERROR and err_cos <= SINCOS_MAX_ABS_ERROR, (err_sin, err_cos)


def test_the_reduction_itself_meets_the_bound_on_every_phase_of_the_fast_range():
    """Element by element, no tile-wide fallback: the reduction alone (as csrc/ecf_math.h's
    sincos_reduced is measured in test_ecf_math.py)."""
    p = _padded(sincos_grid.fast_range(), 1024)
    sin_p, cos_p = torch.empty_like(p), torch.empty_like(p)
    _sincos_reduced_elements[(p.numel() // 1024,)](p, sin_p, cos_p, BLOCK=1024)
    err_sin, err_cos = sincos_grid.errors(p, sin_p, cos_p)
    assert err_sin <= SINCOS_MAX_ABS_ERROR and err_cos <= SINCOS_MAX_ABS_ERROR, (err_sin, err_cos)


@pytest.mark.skipif(DEVICE != "cpu" or "cpu" not in sk.available_backends(), reason="needs the interpreter and _C")
def test_the_reduction_is_the_one_of_csrc_ecf_math_bit_for_bit():
    """The same operations in the same order as csrc/ecf_math.h's sincos_reduced (run here by the
    test op spectral_kernels::_sincos): equal bits on the CPU, where neither side fuses a
    multiply-add (a GPU build may contract to FMA, which the split of pi/4 tolerates)."""
    phases = sincos_grid.fast_range()
    p = _padded(phases, 1024)
    sin_p, cos_p = torch.empty_like(p), torch.empty_like(p)
    _sincos_reduced_elements[(p.numel() // 1024,)](p, sin_p, cos_p, BLOCK=1024)
    want_sin, want_cos = torch.ops.spectral_kernels._sincos(phases)
    assert torch.equal(sin_p[: phases.numel()], want_sin) and torch.equal(cos_p[: phases.numel()], want_cos)


def test_tiles_with_huge_phases_take_the_accurate_path():
    err_sin, err_cos = _tiles(sincos_grid.beyond_fast_range(), "reduced")
    assert err_sin <= SINCOS_MAX_ABS_ERROR and err_cos <= SINCOS_MAX_ABS_ERROR, (err_sin, err_cos)
    gen = torch.Generator().manual_seed(7)
    phases = torch.randn(4 * TILE * TILE, generator=gen, dtype=torch.float64)
    phases[TILE * TILE + 5] = 3.0e7  # beyond the fast reduction's range, in the second tile only
    phases[3 * TILE * TILE - 1] = -1.0e12
    err_sin, err_cos = _tiles(phases.float(), "reduced")
    assert err_sin <= SINCOS_MAX_ABS_ERROR and err_cos <= SINCOS_MAX_ABS_ERROR, (err_sin, err_cos)
