"""GPU-only checks of the Triton and cuda backends at real sizes, and of the two against each
other (skipped without CUDA; run by benchmarks/gpu_suite.sh on a GPU machine). The small
checks of the same code run everywhere: test_backends.py (Triton in the interpreter, gradcheck
for every backend that can run), test_chunk_walk.py (the cuda backend's walk on the CPU)."""

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


@pytest.mark.parametrize(
    "n,m,d,sizes", [(20000, 1000, 512, [15000, 4000, 1000]), (4097, 4099, 2048, [4000, 97]), (1, 7, 3, [1])]
)
def test_triton_matches_float64_reference_at_real_sizes(n, m, d, sizes):
    x64, t64, index = _case(n, m, d, sizes, torch.float64)
    grad = torch.randn(len(sizes), 2, m, device="cuda", dtype=torch.float64)
    triton_backend = ops.resolve("triton", x64.float())
    ref = lambda a, b: ecf_sums_reference(a, b, index.labels, index.num_classes)
    truth = sums_and_grads(ref, x64, t64, grad)
    ours = sums_and_grads(
        lambda a, b: triton_backend.ecf_sums(a, b, index, precision="ieee"), x64.float(), t64.float(), grad.float()
    )
    base = sums_and_grads(ref, x64.float(), t64.float(), grad.float())
    for got, theirs, want in zip(ours, base, truth):
        assert max_error(got, want) <= 2 * max_error(theirs, want) + 1e-5 * max(1.0, want.abs().max().item())


@pytest.mark.parametrize("backend", ["triton", "cuda"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_error_at_most_twice_the_reference_in_that_precision(backend, dtype):
    reason = ops.get_backend(backend).unavailable_reason()
    if reason is not None:
        pytest.skip(f"the {backend} backend cannot run here: {reason}")
    x64, t64, index = _case(8192, 2048, 512, [6000, 2000, 192], torch.float64)
    x, t = x64.to(dtype), t64.to(dtype)
    truth = ecf_sums_reference(x.double(), t.double(), index.labels, index.num_classes)
    ours = ops.resolve(backend, x).ecf_sums(x, t, index)
    theirs = ecf_sums_reference(x, t, index.labels, index.num_classes)
    assert ours.dtype == torch.float32
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


@pytest.mark.parametrize("backend", ["triton", "cuda"])
def test_opcheck_and_inductor_compile_on_the_gpu(backend):
    reason = ops.get_backend(backend).unavailable_reason()
    if reason is not None:
        pytest.skip(f"the {backend} backend cannot run here: {reason}")
    x, t, index = _case(300, 200, 64, [200, 100], torch.float32)
    x, t = x.float().requires_grad_(True), t.float().requires_grad_(True)
    op = torch.ops.spectral_kernels.ecf_sums_triton if backend == "triton" else torch.ops.spectral_kernels.ecf_sums
    torch.library.opcheck(op.default, (x, t, index.perm, index.offsets, "ieee"))
    syn = torch.randn(40, 64, device="cuda", requires_grad=True)
    sl = (torch.arange(40) % 2).cuda()
    fn = lambda a, b, f: sk.ncfd(a, b, f, index.labels, sl, num_classes=2, backend=backend)
    compiled = torch.compile(fn, fullgraph=True)
    torch.testing.assert_close(compiled(x.detach(), syn, t.detach()), fn(x.detach(), syn, t.detach()))


@pytest.mark.parametrize("backend", ["triton", "cuda"])
def test_forward_and_backward_never_wait_on_the_gpu(backend):
    """No host sync per call: Triton's layout, work items and chunks have static shapes (and it
    autotunes, syncing, on its first call only); the cuda op cleans perm and offsets on the
    device instead of reading them. So a training step keeps the GPU queue full."""
    reason = ops.get_backend(backend).unavailable_reason()
    if reason is not None:
        pytest.skip(f"the {backend} backend cannot run here: {reason}")
    x, t, index = _case(5000, 700, 96, [4000, 900, 100], torch.float32)
    x, t = x.float().requires_grad_(True), t.float().requires_grad_(True)
    ecf = torch.ops.spectral_kernels.ecf_sums_triton if backend == "triton" else torch.ops.spectral_kernels.ecf_sums
    op = lambda: ecf(x, t, index.perm, index.offsets, "tf32")
    op().sum().backward()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        op().sum().backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()


# ----------------------------------------------------------------------------- the cuda backend

needs_cuda_backend = pytest.mark.skipif(
    not torch.cuda.is_available() or ops.get_backend("cuda").unavailable_reason() is not None,
    reason=f"the cuda backend cannot run here: {ops.get_backend('cuda').unavailable_reason()}",
)


@needs_cuda_backend
@pytest.mark.parametrize("chunk_bytes", [None, 65536])  # 64 KiB: many chunks even at these sizes
@pytest.mark.parametrize(
    "n,m,d,sizes",
    [
        (20000, 1000, 512, [15000, 4000, 1000]),
        (4097, 4099, 2048, [4000, 97]),
        (3000, 300, 64, [1] * 500 + [0] * 20 + [2500]),
        (1, 7, 3, [1]),
    ],
)
def test_cuda_matches_float64_reference_at_real_sizes(monkeypatch, chunk_bytes, n, m, d, sizes):
    if chunk_bytes:
        monkeypatch.setenv("SPECTRAL_KERNELS_CUDA_CHUNK_BYTES", str(chunk_bytes))
    x64, t64, index = _case(n, m, d, sizes, torch.float64)
    grad = torch.randn(len(sizes), 2, m, device="cuda", dtype=torch.float64)
    backend = ops.resolve("cuda", x64)
    ref = lambda a, b: ecf_sums_reference(a, b, index.labels, index.num_classes)
    truth = sums_and_grads(ref, x64, t64, grad)
    ours64 = sums_and_grads(lambda a, b: backend.ecf_sums(a, b, index), x64, t64, grad)
    for got, want in zip(ours64, truth):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10 * max(1.0, want.abs().max().item()))
    ours = sums_and_grads(
        lambda a, b: backend.ecf_sums(a, b, index, precision="ieee"), x64.float(), t64.float(), grad.float()
    )
    base = sums_and_grads(ref, x64.float(), t64.float(), grad.float())
    for got, theirs, want in zip(ours, base, truth):
        assert max_error(got, want) <= 2 * max_error(theirs, want) + 1e-5 * max(1.0, want.abs().max().item())


@needs_cuda_backend
@pytest.mark.skipif("triton" not in sk.available_backends(), reason="triton is not available")
def test_cuda_and_triton_agree_on_the_same_inputs():
    x, t, index = _case(12000, 1500, 256, [9000, 2500, 500], torch.float32)
    x, t = x.float(), t.float()
    grad = torch.randn(3, 2, 1500, device="cuda")
    results = {
        name: sums_and_grads(
            lambda a, b, name=name: ops.resolve(name, x).ecf_sums(a, b, index, precision="ieee"), x, t, grad
        )
        for name in ("cuda", "triton")
    }
    for a, b in zip(results["cuda"], results["triton"]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * max(1.0, b.abs().max().item()))


@needs_cuda_backend
def test_cuda_precision_reaches_the_products():
    """tf32 products (10-bit mantissa inputs) err visibly more than ieee ones: the explicit
    cuBLAS compute type is honoured in both directions, whatever torch's global flag says."""
    x64, t64, index = _case(4096, 1024, 2048, [4096], torch.float64)
    truth = ecf_sums_reference(x64, t64, index.labels, index.num_classes)
    backend = ops.resolve("cuda", x64.float())
    errors = {}
    for flag in (False, True):
        torch.backends.cuda.matmul.allow_tf32 = flag
        try:
            errors[flag] = {
                p: max_error(backend.ecf_sums(x64.float(), t64.float(), index, precision=p), truth)
                for p in ("ieee", "tf32")
            }
        finally:
            torch.backends.cuda.matmul.allow_tf32 = False
    for flag in (False, True):
        assert errors[flag]["tf32"] > 10 * errors[flag]["ieee"], errors


@needs_cuda_backend
def test_cuda_is_bitwise_deterministic_over_ten_runs(monkeypatch):
    monkeypatch.setenv("SPECTRAL_KERNELS_CUDA_CHUNK_BYTES", str(1 << 20))
    x, t, index = _case(30000, 3000, 512, [25000, 5000], torch.float32)
    grad = torch.randn(2, 2, 3000, device="cuda")
    backend = ops.resolve("cuda", x.float())
    first = sums_and_grads(lambda a, b: backend.ecf_sums(a, b, index), x.float(), t.float(), grad)
    for _ in range(9):
        again = sums_and_grads(lambda a, b: backend.ecf_sums(a, b, index), x.float(), t.float(), grad)
        assert all(torch.equal(a, b) for a, b in zip(first, again))


@needs_cuda_backend
def test_cuda_op_stays_in_bounds_whatever_perm_and_offsets_hold():
    """On the GPU the layout's values are not checked (a host sync); they are clamped instead."""
    x, t, _ = _case(400, 50, 16, [400], torch.float32)
    x, t = x.float(), t.float()
    grad = torch.randn(3, 2, 50, device="cuda")
    layouts = [
        (torch.zeros(400, dtype=torch.long), torch.tensor([0, 100, 300, 400])),
        (torch.arange(400) * 1000 - 7, torch.tensor([0, 100, 300, 400])),
        (torch.arange(400), torch.tensor([5, -(10**9), 10**12, 3])),
    ]
    for perm, offsets in layouts:
        perm, offsets = perm.cuda(), offsets.cuda()
        sums = torch.ops.spectral_kernels.ecf_sums(x, t, perm, offsets, "ieee")
        dx, dt = torch.ops.spectral_kernels.ecf_sums_backward(grad, x, t, perm, offsets, "ieee", True, True)
        torch.cuda.synchronize()
        for value in (sums, dx, dt):
            assert bool(torch.isfinite(value).all())


def test_a_learned_sampler_on_the_gpu_draws_with_the_runs_cpu_generator():
    """The distillation keeps its generators on the CPU (distill/hardware.py) and moves NCFM's
    learned sampler to --device: the sampler must take a CPU generator there (it refused it, so
    every NCFM step with --learned-sampler failed on a GPU) and draw the CPU's numbers."""
    sampler = sk.FrequencySampler(16, num_freqs=64)
    want = sampler(generator=torch.Generator().manual_seed(3))
    got = sampler.cuda()(generator=torch.Generator().manual_seed(3))
    assert got.device.type == "cuda"
    torch.testing.assert_close(got.cpu(), want)
