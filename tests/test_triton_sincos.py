"""The Triton epilogue's sin/cos (ops/triton_ecf.py) against float64, on both of its paths: the
shared Cody-Waite reduction, and libdevice for tiles that hold a phase beyond 8192."""

import pytest
import torch

import spectral_kernels as sk

pytestmark = pytest.mark.skipif("triton" not in sk.available_backends(), reason="triton is not installed")

if "triton" in sk.available_backends():
    import triton
    import triton.language as tl

    from spectral_kernels.ops import triton_ecf as te

    @triton.jit
    def _sincos_tiles(p_ptr, sin_ptr, cos_ptr, TILE: tl.constexpr, SINCOS: tl.constexpr):
        offs = tl.program_id(0) * TILE * TILE + tl.arange(0, TILE)[:, None] * TILE + tl.arange(0, TILE)[None, :]
        sin_p, cos_p = te._sincos(tl.load(p_ptr + offs), tl.float32, SINCOS)
        tl.store(sin_ptr + offs, sin_p)
        tl.store(cos_ptr + offs, cos_p)


TILE = 16
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _run(phases: torch.Tensor, mode: str):
    p = phases.to(DEVICE, torch.float32).contiguous()
    sin_p, cos_p = torch.empty_like(p), torch.empty_like(p)
    _sincos_tiles[(p.numel() // (TILE * TILE),)](p, sin_p, cos_p, TILE=TILE, SINCOS=mode)
    exact = p.double()
    return (sin_p.double() - exact.sin()).abs().cpu(), (cos_p.double() - exact.cos()).abs().cpu()


@pytest.mark.parametrize("mode", te.SINCOS_MODES if "triton" in sk.available_backends() else [])
@pytest.mark.parametrize("bound", [1.0, 100.0, 8192.0])
def test_sincos_is_accurate_to_a_few_ulp_on_every_path(mode, bound):
    gen = torch.Generator().manual_seed(int(bound))
    phases = (torch.rand(8 * TILE * TILE, generator=gen, dtype=torch.float64) * 2 - 1) * bound
    phases[:4] = torch.tensor(
        [0.0, bound, -bound, 0.5 * torch.pi * round(bound / torch.pi)]
    )  # edges, a multiple of pi/2
    err_sin, err_cos = _run(phases, mode)
    # float32 sin/cos of 1-ulp-correct implementations land within 6e-8 of the float64 value.
    assert err_sin.max() < 1.5e-7 and err_cos.max() < 1.5e-7, (err_sin.max(), err_cos.max())


def test_tiles_with_huge_phases_take_the_accurate_path():
    gen = torch.Generator().manual_seed(7)
    phases = torch.randn(4 * TILE * TILE, generator=gen, dtype=torch.float64)
    phases[TILE * TILE + 5] = 3.0e7  # beyond the fast reduction's range, in the second tile only
    phases[3 * TILE * TILE - 1] = -1.0e12
    err_sin, err_cos = _run(phases, "reduced")
    assert err_sin.max() < 1.5e-7 and err_cos.max() < 1.5e-7, (err_sin.max(), err_cos.max())
