"""csrc/ecf_math.h, the per-element math every C++ backend shares (the CPU kernels and the CUDA
kernels call the same functions), tested on the CPU against float64 through the test ops
spectral_kernels::_sincos and ::_grad_weight, which run the header's code element by element.
sin/cos are measured on the shared grid of phases (tests/sincos_grid.py) against the one bound of
SPEC §6 (ops/ecf_math.py), the Python copy of the header's numbers."""

import pathlib
import re

import pytest
import torch

import spectral_kernels as sk
from spectral_kernels.ops import ecf_math
from spectral_kernels.ops.ecf_math import SINCOS_MAX_ABS_ERROR

from . import sincos_grid

pytestmark = pytest.mark.skipif("cpu" not in sk.available_backends(), reason="the C++ extension is not built")

HEADER = (pathlib.Path(__file__).resolve().parents[1] / "csrc" / "ecf_math.h").read_text()


def _constant(name: str) -> float:
    return float(re.search(rf"{name} = ([0-9.e+-]+)f?;", HEADER).group(1))


MAX_FAST_PHASE = _constant("kMaxFastPhase")
HEADER_BOUND = _constant("kFastSinCosMaxAbsError")


def _errors(phases: torch.Tensor):
    p = phases.float()
    sin_p, cos_p = torch.ops.spectral_kernels._sincos(p)
    return sincos_grid.errors(p, sin_p, cos_p)


def test_the_header_and_python_state_the_same_numbers():
    assert MAX_FAST_PHASE == ecf_math.MAX_FAST_PHASE == 8192.0
    assert HEADER_BOUND == ecf_math.SINCOS_MAX_ABS_ERROR


def test_sincos_meets_the_bound_on_the_shared_grid():
    err_sin, err_cos = _errors(sincos_grid.fast_range())
    assert err_sin <= SINCOS_MAX_ABS_ERROR and err_cos <= SINCOS_MAX_ABS_ERROR, (err_sin, err_cos)


@pytest.mark.parametrize("bound", [1.0, 100.0, 1000.0, MAX_FAST_PHASE])
def test_sincos_meets_the_stated_bound_over_the_fast_range(bound):
    gen = torch.Generator().manual_seed(int(bound))
    phases = (torch.rand(1_000_000, generator=gen, dtype=torch.float64) * 2 - 1) * bound
    err_sin, err_cos = _errors(phases)
    assert err_sin <= SINCOS_MAX_ABS_ERROR and err_cos <= SINCOS_MAX_ABS_ERROR, (err_sin, err_cos)


def test_beyond_the_fast_range_sincos_stays_accurate():
    """Past kMaxFastPhase the CUDA kernels switch to sincosf per element (here the host's
    sin/cos): the result must stay within a float32 ulp or two for every argument."""
    gen = torch.Generator().manual_seed(3)
    magnitudes = torch.logspace(3.92, 12, 20_000, dtype=torch.float64)
    signs = torch.where(torch.rand(20_000, generator=gen) < 0.5, -1.0, 1.0).double()
    err_sin, err_cos = _errors(torch.cat([magnitudes * signs, torch.tensor([8192.0009765625, -3.0e38])]))
    assert err_sin <= SINCOS_MAX_ABS_ERROR and err_cos <= SINCOS_MAX_ABS_ERROR, (err_sin, err_cos)


def test_grad_weight_is_w_of_spec_1():
    gen = torch.Generator().manual_seed(4)
    p = (torch.rand(50_000, generator=gen, dtype=torch.float64) * 2 - 1) * 50
    g_re, g_im = torch.randn(2, 50_000, generator=gen, dtype=torch.float64)
    w = torch.ops.spectral_kernels._grad_weight(g_re.float(), g_im.float(), p.float())
    pf = p.float().double()
    exact = -g_re.float().double() * pf.sin() + g_im.float().double() * pf.cos()
    scale = (g_re.abs() + g_im.abs()).max().item()
    assert (w.double() - exact).abs().max().item() <= 4 * SINCOS_MAX_ABS_ERROR * scale


def test_test_ops_refuse_what_they_cannot_take():
    with pytest.raises(TypeError, match="float32"):
        torch.ops.spectral_kernels._sincos(torch.zeros(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="one shape"):
        torch.ops.spectral_kernels._grad_weight(torch.zeros(3), torch.zeros(2), torch.zeros(3))
