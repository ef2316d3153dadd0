"""csrc/ecf_math.h, the per-element math every C++ backend shares (the CPU kernels and the CUDA
kernels call the same functions), tested on the CPU against float64 through the test ops
spectral_kernels::_sincos and ::_grad_weight, which run the header's code element by element."""

import pathlib
import re

import pytest
import torch

import spectral_kernels as sk
from spectral_kernels.ops import triton_ecf

pytestmark = pytest.mark.skipif("cpu" not in sk.available_backends(), reason="the C++ extension is not built")

HEADER = (pathlib.Path(__file__).resolve().parents[1] / "csrc" / "ecf_math.h").read_text()


def _constant(name: str) -> float:
    return float(re.search(rf"{name} = ([0-9.e+-]+)f?;", HEADER).group(1))


MAX_FAST_PHASE = _constant("kMaxFastPhase")
STATED_BOUND = _constant("kFastSinCosMaxAbsError")


def _errors(phases: torch.Tensor):
    p = phases.float()
    sin_p, cos_p = torch.ops.spectral_kernels._sincos(p)
    exact = p.double()  # the float32 argument itself, exactly: the test measures sin/cos, not rounding
    return (sin_p.double() - exact.sin()).abs().max().item(), (cos_p.double() - exact.cos()).abs().max().item()


def test_one_phase_limit_for_every_backend():
    assert MAX_FAST_PHASE == 8192.0 and triton_ecf.MAX_FAST_PHASE == MAX_FAST_PHASE
    assert STATED_BOUND == 1e-7


@pytest.mark.parametrize("bound", [1.0, 100.0, 1000.0, MAX_FAST_PHASE])
def test_sincos_meets_the_stated_bound_over_the_fast_range(bound):
    gen = torch.Generator().manual_seed(int(bound))
    phases = (torch.rand(1_000_000, generator=gen, dtype=torch.float64) * 2 - 1) * bound
    err_sin, err_cos = _errors(phases)
    assert err_sin <= STATED_BOUND and err_cos <= STATED_BOUND, (err_sin, err_cos)


def test_sincos_at_the_edges_and_near_every_multiple_of_half_pi():
    """Where the reduction cancels most (p near k pi/2) and at +-kMaxFastPhase itself."""
    k = torch.arange(0, int(MAX_FAST_PHASE / (torch.pi / 2)) + 1, dtype=torch.float64) * (torch.pi / 2)
    p = k.float()
    neighbours = torch.cat([p, p.nextafter(torch.tensor(1e9)), p.nextafter(torch.tensor(-1e9)), -p])
    neighbours = neighbours[neighbours.abs() <= MAX_FAST_PHASE]
    edges = torch.tensor([MAX_FAST_PHASE, -MAX_FAST_PHASE, 0.0, -0.0, 1e-30, -1e-30])
    err_sin, err_cos = _errors(torch.cat([neighbours, edges]))
    assert err_sin <= STATED_BOUND and err_cos <= STATED_BOUND, (err_sin, err_cos)


def test_beyond_the_fast_range_sincos_stays_accurate():
    """Past kMaxFastPhase the CUDA kernels switch to sincosf per element (here the host's
    sin/cos): the result must stay within a float32 ulp or two for every argument."""
    gen = torch.Generator().manual_seed(3)
    magnitudes = torch.logspace(3.92, 12, 20_000, dtype=torch.float64)
    signs = torch.where(torch.rand(20_000, generator=gen) < 0.5, -1.0, 1.0).double()
    err_sin, err_cos = _errors(torch.cat([magnitudes * signs, torch.tensor([8192.0009765625, -3.0e38])]))
    assert err_sin <= 1.5e-7 and err_cos <= 1.5e-7, (err_sin, err_cos)


def test_grad_weight_is_w_of_spec_1():
    gen = torch.Generator().manual_seed(4)
    p = (torch.rand(50_000, generator=gen, dtype=torch.float64) * 2 - 1) * 50
    g_re, g_im = torch.randn(2, 50_000, generator=gen, dtype=torch.float64)
    w = torch.ops.spectral_kernels._grad_weight(g_re.float(), g_im.float(), p.float())
    pf = p.float().double()
    exact = -g_re.float().double() * pf.sin() + g_im.float().double() * pf.cos()
    scale = (g_re.abs() + g_im.abs()).max().item()
    assert (w.double() - exact).abs().max().item() <= 4 * STATED_BOUND * scale


def test_test_ops_refuse_what_they_cannot_take():
    with pytest.raises(TypeError, match="float32"):
        torch.ops.spectral_kernels._sincos(torch.zeros(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="one shape"):
        torch.ops.spectral_kernels._grad_weight(torch.zeros(3), torch.zeros(2), torch.zeros(3))
