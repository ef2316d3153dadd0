"""GPU-only checks of the Triton backend at real sizes (skipped without CUDA; run by
benchmarks/gpu_suite.sh on a GPU machine). The interpreter-sized checks of the same kernels
run everywhere in test_backends.py."""
import pytest
import torch

import spectral_kernels as sk
from spectral_kernels import ops
from spectral_kernels.classes import class_index
from spectral_kernels.ops.reference import ecf_sums_reference

from .conftest import max_error, sums_and_grads

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _case(n, m, d, sizes, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    t = torch.randn(m, d, generator=gen, dtype=torch.float64) * (3.0 / d**0.5)
    labels = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))[torch.randperm(n, generator=gen)]
    index = class_index(labels.cuda(), n, len(sizes), torch.device("cuda"))
    return x.cuda(), t.cuda(), index


@pytest.mark.parametrize("n,m,d,sizes", [(20000, 1000, 512, [15000, 4000, 1000]), (4097, 4099, 2048, [4000, 97]), (1, 7, 3, [1])])
def test_triton_matches_float64_reference_at_real_sizes(n, m, d, sizes):
    x64, t64, index = _case(n, m, d, sizes, torch.float64)
    grad = torch.randn(len(sizes), 2, m, device="cuda", dtype=torch.float64)
    triton_backend = ops.resolve("triton", x64.float())
    ref = lambda a, b: ecf_sums_reference(a, b, index.labels, index.num_classes)
    truth = sums_and_grads(ref, x64, t64, grad)
    ours = sums_and_grads(lambda a, b: triton_backend.ecf_sums(a, b, index, precision="ieee"), x64.float(), t64.float(), grad.float())
    base = sums_and_grads(ref, x64.float(), t64.float(), grad.float())
    for got, theirs, want in zip(ours, base, truth):
        assert max_error(got, want) <= 2 * max_error(theirs, want) + 1e-5 * max(1.0, want.abs().max().item())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_error_at_most_twice_the_reference_in_that_precision(dtype):
    x64, t64, index = _case(8192, 2048, 512, [6000, 2000, 192], torch.float64)
    x, t = x64.to(dtype), t64.to(dtype)
    truth = ecf_sums_reference(x.double(), t.double(), index.labels, index.num_classes)
    ours = ops.resolve("triton", x).ecf_sums(x, t, index)
    theirs = ecf_sums_reference(x, t, index.labels, index.num_classes)
    assert max_error(ours, truth) <= 2 * max_error(theirs, truth)


def test_triton_is_bitwise_deterministic_on_the_gpu():
    x, t, index = _case(30000, 3000, 512, [25000, 5000], torch.float32)
    grad = torch.randn(2, 2, 3000, device="cuda")
    backend = ops.resolve("triton", x)
    first = sums_and_grads(lambda a, b: backend.ecf_sums(a, b, index), x.float(), t.float(), grad)
    for _ in range(9):
        again = sums_and_grads(lambda a, b: backend.ecf_sums(a, b, index), x.float(), t.float(), grad)
        assert all(torch.equal(a, b) for a, b in zip(first, again))


def test_auto_picks_triton_for_cuda_tensors():
    assert ops.resolve("auto", torch.empty(2, 2, device="cuda")).name == "triton"


def test_opcheck_and_inductor_compile_on_the_gpu():
    x, t, index = _case(300, 200, 64, [200, 100], torch.float32)
    x, t = x.float().requires_grad_(True), t.float().requires_grad_(True)
    torch.library.opcheck(torch.ops.spectral_kernels.ecf_sums_triton.default, (x, t, index.perm, index.offsets, "ieee"))
    syn = torch.randn(40, 64, device="cuda", requires_grad=True)
    sl = (torch.arange(40) % 2).cuda()
    fn = lambda a, b, f: sk.ncfd(a, b, f, index.labels, sl, num_classes=2)
    compiled = torch.compile(fn, fullgraph=True)
    torch.testing.assert_close(compiled(x.detach(), syn, t.detach()), fn(x.detach(), syn, t.detach()))


def test_triton_forward_and_backward_never_wait_on_the_gpu():
    """No host sync once tuned: the op stays asynchronous (class layout, work items and chunks
    all have static shapes), so a training step keeps the GPU queue full."""
    x, t, index = _case(5000, 700, 96, [4000, 900, 100], torch.float32)
    x, t = x.float().requires_grad_(True), t.float().requires_grad_(True)
    op = lambda: torch.ops.spectral_kernels.ecf_sums_triton(x, t, index.perm, index.offsets, "tf32")
    op().sum().backward()  # autotuning times its candidates (and syncs) on the first call only
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        op().sum().backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
