"""The CUDA backend's algorithm, run on the CPU: the chunk walk of csrc/chunk_walk.h with the
kernel bodies of csrc/chunk_kernels.h in loops over their grid and a column-major reference
GEMM fed the very arguments cuBLAS gets (spectral_kernels::_chunk_walk_forward / _backward).
Only cuBLAS and the kernel launches are left for a GPU (tests/test_gpu.py), so a mistake in the
chunking, the piece/pair bookkeeping, the per-class reduction, W, the products' transposes and
leading dimensions, or the layout cleaning shows up here first."""

import pytest
import torch

import spectral_kernels as sk
from spectral_kernels.classes import class_index
from spectral_kernels.ops.reference import ecf_sums_reference

from .conftest import sums_and_grads

pytestmark = pytest.mark.skipif("cpu" not in sk.available_backends(), reason="the C++ extension is not built")

ops = torch.ops.spectral_kernels
PIECE = 64  # chunk::kPieceRows

# (id, N, M, d, class sizes or None, chunk budget in bytes): budgets small enough for many chunks
# (the smallest gives one piece per chunk), sizes that straddle pieces and chunks.
CASES = [
    ("single_row", 1, 1, 1, None, 1 << 20),
    ("one_piece_per_chunk", 300, 9, 5, [100, 57, 143], 1),
    ("off_piece_chunks", 777, 33, 7, [400, 0, 377], 6000),
    ("many_tiny_classes", 500, 17, 4, [1] * 180 + [0] * 25 + [320], 4096),
    ("empty_classes_at_both_ends", 260, 12, 3, [0, 0, 130, 130, 0], 2048),
    ("long_tail", 3000, 21, 6, [2950, 50], 8192),
    ("unlabelled", 333, 40, 8, None, 1 << 30),
    ("d_larger_than_budget_rows", 200, 5, 300, [120, 80], 1000),
]


def _inputs(n, m, d, sizes, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    t = torch.randn(m, d, generator=gen, dtype=torch.float64) * (3.0 / d**0.5)
    if sizes is None:
        labels, num_classes = None, 1
    else:
        labels = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))[
            torch.randperm(n, generator=gen)
        ]
        num_classes = len(sizes)
    return x, t, class_index(labels, n, num_classes, torch.device("cpu")), gen


def _walk(index, chunk_bytes, precision="ieee"):
    """The walk as one differentiable function of (x, t), for sums_and_grads."""

    class Walk(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, t):
            ctx.save_for_backward(x, t)
            return ops._chunk_walk_forward(x, t, index.perm, index.offsets, precision, chunk_bytes)

        @staticmethod
        def backward(ctx, grad):
            x, t = ctx.saved_tensors
            return ops._chunk_walk_backward(grad, x, t, index.perm, index.offsets, precision, chunk_bytes, True, True)

    return Walk.apply


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_the_chunk_walk_matches_the_float64_reference(case):
    _, n, m, d, sizes, budget = case
    x, t, index, gen = _inputs(n, m, d, sizes)
    grad = torch.randn(index.num_classes, 2, m, generator=gen, dtype=torch.float64)
    truth = sums_and_grads(lambda a, b: ecf_sums_reference(a, b, index.labels, index.num_classes), x, t, grad)
    got = sums_and_grads(_walk(index, budget), x, t, grad)
    for ours, want, name in zip(got, truth, ("sums", "dx", "dt")):
        torch.testing.assert_close(ours, want, rtol=1e-10, atol=1e-10 * max(1.0, want.abs().max().item()), msg=name)
    # float32 (the float kernels: sincos_any) at 2x PyTorch's own float32 error, plus a floor.
    x32, t32, g32 = x.float(), t.float(), grad.float()
    base = sums_and_grads(lambda a, b: ecf_sums_reference(a, b, index.labels, index.num_classes), x32, t32, g32)
    got32 = sums_and_grads(_walk(index, budget), x32, t32, g32)
    for ours, theirs, want, name in zip(got32, base, truth, ("sums", "dx", "dt")):
        floor = 8 * torch.finfo(torch.float32).eps * max(1.0, want.abs().max().item())
        assert ours.dtype == torch.float32
        assert (ours.double() - want).abs().max() <= 2 * (theirs.double() - want).abs().max() + floor, name


def test_one_chunk_and_many_chunks_agree_to_rounding():
    x, t, index, gen = _inputs(1000, 30, 12, [700, 300])
    one = ops._chunk_walk_forward(x, t, index.perm, index.offsets, "ieee", 1 << 30)
    many = ops._chunk_walk_forward(x, t, index.perm, index.offsets, "ieee", 1)  # one 64-row piece per chunk
    torch.testing.assert_close(one, many, rtol=1e-12, atol=1e-12)


def test_only_the_asked_gradients_are_returned():
    x, t, index, gen = _inputs(150, 10, 4, [100, 50])
    grad = torch.randn(2, 2, 10, generator=gen, dtype=torch.float64)
    dx, dt = ops._chunk_walk_backward(grad, x, t, index.perm, index.offsets, "ieee", 4096, True, False)
    assert dx.shape == x.shape and dt.numel() == 0
    dx, dt = ops._chunk_walk_backward(grad, x, t, index.perm, index.offsets, "ieee", 4096, False, True)
    assert dx.numel() == 0 and dt.shape == t.shape


@pytest.mark.parametrize(
    "perm,offsets",
    [
        (torch.zeros(300, dtype=torch.long), torch.tensor([0, 100, 250, 300])),  # every position the same row
        (torch.arange(300) * 1000 - 7, torch.tensor([0, 100, 250, 300])),  # rows far out of range
        (torch.arange(300), torch.tensor([5, -(10**9), 10**12, 3])),  # offsets anything but a CSR index
        (torch.arange(300).flip(0), torch.tensor([300, 0, 0, 0])),
    ],
)
def test_a_broken_layout_is_cleaned_never_read_out_of_bounds(perm, offsets):
    """What the CUDA op does with a perm/offsets it cannot check without a host sync."""
    gen = torch.Generator().manual_seed(1)
    x, t = torch.randn(300, 5, generator=gen), torch.randn(11, 5, generator=gen)
    grad = torch.randn(3, 2, 11, generator=gen)
    sums = ops._chunk_walk_forward(x, t, perm, offsets, "ieee", 2048)
    dx, dt = ops._chunk_walk_backward(grad, x, t, perm, offsets, "ieee", 2048, True, True)
    for value in (sums, dx, dt):
        assert bool(torch.isfinite(value).all()) and float(value.abs().max()) < 1e6
    assert float(sums.sum(0).abs().max()) <= 300 + 1e-3  # each position counted once, in one class


def test_the_walk_checks_the_op_contract_like_every_backend():
    x, t = torch.randn(6, 3), torch.randn(4, 3)
    with pytest.raises(ValueError, match="x has d=3 but t has d=2"):
        ops._chunk_walk_forward(x, t[:, :2], torch.arange(6), torch.tensor([0, 6]), "ieee", 4096)
    with pytest.raises(ValueError, match="precision must be 'ieee' or 'tf32'"):
        ops._chunk_walk_forward(x, t, torch.arange(6), torch.tensor([0, 6]), "bf16", 4096)
    with pytest.raises(ValueError, match="chunk_bytes must be > 0"):
        ops._chunk_walk_forward(x, t, torch.arange(6), torch.tensor([0, 6]), "ieee", 0)
