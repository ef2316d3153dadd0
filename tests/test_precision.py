"""ops/precision.py: reading and setting torch's TF32 choice for CUDA matmuls through either of
its APIs. The flags are process-wide and exist without a GPU, so this runs everywhere."""

import pytest
import torch

from spectral_kernels.ops.precision import cuda_matmul_precision, cuda_matmul_uses_tf32, resolve_precision
from spectral_kernels.ops.reference import _PhaseProduct

MATMUL = torch.backends.cuda.matmul
CUDA = torch.device("cuda")  # only its type is read: no GPU is needed
NEW_API = hasattr(MATMUL, "fp32_precision")


def _legacy_readable() -> bool:
    try:
        _ = MATMUL.allow_tf32
    except RuntimeError:
        return False
    return True


@pytest.fixture(autouse=True)
def pristine_flags():
    """Leave torch's TF32 flags as a fresh process has them (IEEE, both APIs readable)."""
    yield
    torch.set_float32_matmul_precision("highest")
    if NEW_API:
        torch.backends.fp32_precision = "none"
        MATMUL.fp32_precision = "none"
    MATMUL.allow_tf32 = False
    if NEW_API:
        MATMUL.fp32_precision = "none"
    assert MATMUL.allow_tf32 is False


def test_default_is_ieee_and_explicit_choices_win():
    assert resolve_precision(None) == "ieee"
    MATMUL.allow_tf32 = True
    assert resolve_precision(None) == "tf32"
    assert resolve_precision("ieee") == "ieee"
    with pytest.raises(ValueError, match="precision must be None, 'ieee' or 'tf32'; got 'fp16'"):
        resolve_precision("fp16")


def test_legacy_setting_is_set_and_restored_through_the_legacy_api():
    MATMUL.allow_tf32 = True
    with cuda_matmul_precision("ieee", CUDA):
        assert MATMUL.allow_tf32 is False and not cuda_matmul_uses_tf32()
    assert MATMUL.allow_tf32 is True and _legacy_readable()


@pytest.mark.skipif(not NEW_API, reason="torch < 2.9 has only allow_tf32")
def test_new_api_setting_is_read_without_the_mixing_error_and_restored_through_it():
    MATMUL.fp32_precision = "tf32"
    assert not _legacy_readable()  # torch refuses legacy reads now: a library must not do them
    assert resolve_precision(None) == "tf32"
    with cuda_matmul_precision("ieee", CUDA):
        assert MATMUL.fp32_precision == "ieee" and not cuda_matmul_uses_tf32()
    assert MATMUL.fp32_precision == "tf32" and cuda_matmul_uses_tf32()


def test_cpu_blocks_leave_the_flags_alone():
    MATMUL.allow_tf32 = True
    with cuda_matmul_precision("ieee", torch.device("cpu")):
        assert MATMUL.allow_tf32 is True


def test_the_reference_phase_product_has_the_gradients_of_x_t_transposed():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(7, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    t = torch.randn(5, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: _PhaseProduct.apply(a, b, "ieee"), (x, t))
    torch.testing.assert_close(_PhaseProduct.apply(x, t, "ieee"), x @ t.T)


def test_the_tf32_read_is_a_trace_time_constant_under_fullgraph_compile():
    """precision.py marks cuda_matmul_uses_tf32 as dynamo's assume_constant_result does, without
    importing dynamo; without the mark dynamo cannot trace the pybind getter and fullgraph fails."""

    def scaled(x):
        return x * 2 if cuda_matmul_uses_tf32() else x * 3

    assert torch.equal(torch.compile(scaled, fullgraph=True, backend="eager")(torch.ones(2)), torch.full((2,), 3.0))
