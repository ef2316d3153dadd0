"""GPU-code defects shown without a GPU (issue 27, item 5): what the CPU can see of the device
guard around Triton launches, the fake kernels' strides, the untuned float64 tile, the int64
offsets, the class-reduce grid cap and the cuda op's zero sizes (through its CPU emulation)."""

import contextlib
import json
import os
import re
import subprocess
import sys

import pytest
import torch

import spectral_kernels as sk
from spectral_kernels.classes import class_index
from spectral_kernels.ops import reference

from .conftest import BACKEND_DEVICES, backend_params

needs_triton = pytest.mark.skipif("triton" not in BACKEND_DEVICES, reason="the triton backend cannot run here")
needs_cpu = pytest.mark.skipif("cpu" not in sk.available_backends(), reason="the C++ extension is not built")


def _layout(labels, num_classes):
    index = class_index(labels, labels.shape[0], num_classes, labels.device)
    return index.perm, index.offsets


class _Launches:
    """Stands in for a Triton kernel: records, at every launch, the device of the guard that is
    open at that moment (None outside any guard) and the launch's keyword arguments."""

    def __init__(self, kernel, log, guards):
        self.kernel, self.log, self.guards = kernel, log, guards

    def __getitem__(self, grid):
        launch = self.kernel[grid]

        def run(*args, **kwargs):
            self.log.append((self.guards[-1] if self.guards else None, kwargs))
            return launch(*args, **kwargs)

        return run

    @property
    def fn(self):  # the untuned path of triton_ecf._launch launches kernel.fn
        return _Launches(self.kernel.fn, self.log, self.guards)


def _spy_kernels(monkeypatch, te, th, log, guards):
    from spectral_kernels.ops import triton_common as tc

    for module, names in (
        (te, ("_forward_kernel", "_weight_kernel")),
        (th, ("_hadamard_forward_kernel", "_hadamard_backward_kernel")),
        (tc, ("class_reduce_kernel",)),  # both files launch the shared one
    ):
        for name in names:
            monkeypatch.setattr(module, name, _Launches(getattr(module, name), log, guards))


@needs_triton
def test_every_triton_launch_runs_inside_a_guard_of_the_tensors_device(monkeypatch):
    """Triton launches on the *current* CUDA device and custom_op adds no guard: cuda:1 tensors
    would run on cuda:0. There is one device here, so the guard is spied on: every launch must
    happen while a guard for the tensors' own device is open."""
    from spectral_kernels.ops import triton_common as tc
    from spectral_kernels.ops import triton_ecf as te
    from spectral_kernels.ops import triton_hadamard as th
    from spectral_kernels.structured import hadamard_frequencies

    device = torch.device(BACKEND_DEVICES["triton"])
    log, guards, real_guard = [], [], tc.device_guard

    @contextlib.contextmanager
    def spy(dev):
        with real_guard(dev):
            guards.append(torch.device(dev))
            try:
                yield
            finally:
                guards.pop()

    monkeypatch.setattr(tc, "device_guard", spy)  # the one guard both Triton files open
    _spy_kernels(monkeypatch, te, th, log, guards)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(20, 12, generator=gen).to(device).requires_grad_(True)
    t = torch.randn(9, 12, generator=gen).to(device).requires_grad_(True)
    perm, offsets = _layout(torch.arange(20, device=device) % 3, 3)
    sums = torch.ops.spectral_kernels.ecf_sums_triton(x, t, perm, offsets, "ieee")
    sums.sum().backward()
    sorf = hadamard_frequencies("gaussian", 20, 12, generator=gen).to(device)
    sorf_sums = torch.ops.spectral_kernels.hadamard_sums_triton(
        x, sorf.signs.float(), sorf.radii.float(), perm, offsets, sorf.num_freqs, "ieee"
    )
    sorf_sums.sum().backward()
    # forward + class reduce, weight kernel (backward), SORF forward + class reduce, SORF backward
    assert len(log) == 6
    assert all(guard == device for guard, _ in log), [guard for guard, _ in log]


def test_the_device_guard_selects_the_tensors_cuda_device_and_is_a_no_op_on_the_cpu(monkeypatch):
    from spectral_kernels.ops import triton_common as tc

    if tc.IMPORT_ERROR is not None:
        pytest.skip(tc.IMPORT_ERROR)
    entered = []

    class FakeCudaDevice:
        def __init__(self, device):
            entered.append(torch.device(device))

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(torch.cuda, "device", FakeCudaDevice)
    with tc.device_guard(torch.device("cuda:1")):
        pass
    with tc.device_guard(torch.device("cpu")):  # the interpreter's tensors: nothing to select
        pass
    assert entered == [torch.device("cuda:1")]


_OPS = {  # (dense op, SORF op) of each backend that has fake kernels of its own
    "cpu": ("ecf_sums", "hadamard_sums"),
    "triton": ("ecf_sums_triton", "hadamard_sums_triton"),
}


@pytest.mark.parametrize("backend", backend_params("cpu", "triton"))
@pytest.mark.parametrize("structure", ["dense", "hadamard"])
def test_inductor_compiles_the_backward_of_transposed_inputs(backend, structure):
    """The fake gradient kernels must give the strides the real ops return (contiguous), or
    Inductor's stride asserts fail in the compiled backward when x (or t) is a transposed view.
    The ops are called directly under fullgraph, so nothing upstream makes x contiguous first."""
    from spectral_kernels.structured import hadamard_frequencies

    torch._dynamo.reset()
    device = BACKEND_DEVICES[backend]
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(12, 18, generator=gen).T.to(device).requires_grad_(True)
    assert x.stride() == (1, 18)
    perm, offsets = _layout(torch.arange(18, device=device) % 2, 2)
    dense, sorf = (getattr(torch.ops.spectral_kernels, name) for name in _OPS[backend])
    extra = ("ieee",) if backend == "triton" else ()
    if structure == "dense":
        t = torch.randn(12, 20, generator=gen).T.to(device).requires_grad_(True)
        inputs = (x, t)
        fn = lambda a, b: dense(a, b, perm, offsets, "ieee").square().sum()
    else:
        f = hadamard_frequencies("gaussian", 20, 12, generator=gen).to(device)
        signs, radii = f.signs.float(), f.radii.float()
        inputs = (x,)
        fn = lambda a: sorf(a, signs, radii, perm, offsets, f.num_freqs, *extra).square().sum()
    eager = torch.autograd.grad(fn(*inputs), inputs)
    # Inductor's on-disk caches do not key on a custom op's fake kernel: a graph compiled with an
    # earlier fake would be reused, and the test would not see the fake it is about.
    with torch._inductor.config.patch(force_disable_caches=True):
        compiled = torch.autograd.grad(torch.compile(fn, fullgraph=True)(*inputs), inputs)
    for got, want in zip(compiled, eager):
        torch.testing.assert_close(got, want)


@needs_triton
def test_untuned_float64_launches_run_the_pruned_tile(monkeypatch):
    """SPECTRAL_KERNELS_TRITON_AUTOTUNE=0 leaves one config, and Triton's autotuner skips the
    pruning when it has one: float64 compiled the 128 x 128 x 32 tile (12.2 KB of stack per
    thread on sm_90). Untuned launches must take the same tile as the pruning gives."""
    from spectral_kernels.ops import triton_ecf as te
    from spectral_kernels.ops import triton_hadamard as th

    log = []
    _spy_kernels(monkeypatch, te, th, log, [])
    monkeypatch.setattr(te, "AUTOTUNE", False, raising=False)
    monkeypatch.setattr(te, "INTERPRETED", False)  # the GPU's tile shapes, not the interpreter's
    device = BACKEND_DEVICES["triton"]
    gen = torch.Generator().manual_seed(2)
    perm, offsets = _layout(torch.arange(10, device=device) % 2, 2)
    for dtype, expected in ((torch.float64, te.FP64_CONFIG), (torch.float32, te.gpu_configs()[0])):
        log.clear()
        x, t = (torch.randn(n, 4, generator=gen, dtype=dtype).to(device) for n in (10, 7))
        torch.ops.spectral_kernels.ecf_sums_triton(x, t, perm, offsets, "ieee")
        (_, kwargs) = log[0]
        assert {k: kwargs.get(k) for k in expected.kwargs} == expected.kwargs, (dtype, kwargs)
        assert (kwargs.get("num_warps"), kwargs.get("num_stages")) == (expected.num_warps, expected.num_stages)


@needs_triton
def test_class_reduce_grid_is_capped_at_the_cuda_y_limit_before_anything_is_allocated():
    from spectral_kernels.ops import triton_common as tc

    assert tc.class_reduce_grid(3, 65535 * 128) == (3, 65535)
    assert tc.class_reduce_grid(2, 1) == (2, 1)
    with pytest.raises(ValueError, match="M=8388481"):
        tc.class_reduce_grid(3, 65535 * 128 + 1)
    # Through the ops, also with no rows (the cuda op refuses such an M whatever N is).
    x, t = torch.empty(0, 1), torch.zeros(65535 * 128 + 1, 1)
    perm, offsets = torch.empty(0, dtype=torch.int64), torch.zeros(2, dtype=torch.int64)
    with pytest.raises(ValueError, match="at most 8388480 frequencies"):
        torch.ops.spectral_kernels.ecf_sums_triton(x, t, perm, offsets, "ieee")


@needs_triton
def test_sorf_ops_refuse_blocks_wider_than_fit_in_shared_memory():
    """D = 4096 needs more shared memory than an H100 has per block (tests/test_triton_compile.py
    checks every width up to MAX_WIDTH fits): the op refuses it, the library materialises t."""
    from spectral_kernels.ops import triton_hadamard as th

    device = BACKEND_DEVICES["triton"]
    width = 2 * th.MAX_WIDTH
    x = torch.randn(3, 4).to(device)
    signs, radii = torch.ones(1, 3, width).to(device), torch.ones(1, width).to(device)
    perm, offsets = _layout(torch.zeros(3, dtype=torch.int64, device=device), 1)
    with pytest.raises(ValueError, match=f"block width D={width} is above {th.MAX_WIDTH}"):
        torch.ops.spectral_kernels.hadamard_sums_triton(x, signs, radii, perm, offsets, width, "ieee")
    assert not th.supports(x, width) and th.supports(x, th.MAX_WIDTH)


def test_dense_kernels_address_x_and_t_with_int64_offsets():
    """rows x stride_x and m_offs x stride_t pass 2**31 once N d or M d does: every product of
    index tensors in the dense kernels (the addresses of x, t, G and W) must be int64. Read from
    the TTIR of a compile for sm_90 (no GPU needed; subprocess: no interpreter)."""
    from .test_triton_compile import ROOT

    if "triton" not in sk.available_backends():
        pytest.skip("triton is not installed")
    code = (
        "import json, sys; sys.argv = ['x'];"
        "import benchmarks.triton_resources as tr;"
        "print(json.dumps({k: tr.ttir(k) for k in ('forward', 'weight')}))"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(ROOT)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    for kernel, ir in json.loads(out.stdout.splitlines()[-1]).items():
        # An index tensor times a stride or a size is what passes 2**31; adding a small offset
        # (k < d, m < M) to a pointer tensor formed that way is safe in int32.
        products = re.findall(r"arith\.muli .* : tensor<[\dx]+x(i\d+)>", ir)
        assert len(products) >= 2, (kernel, ir[:2000])  # rows x stride_x and m_offs x stride_t at least
        assert set(products) == {"i64"}, (kernel, products)


@needs_cpu
@pytest.mark.parametrize("shape", [(7, 0, 3), (7, 5, 0), (7, 0, 0)], ids=["M=0", "d=0", "M=d=0"])
def test_cuda_chunk_walk_handles_zero_frequencies_and_zero_width(shape):
    """The cuda op with M = 0 or d = 0 handed cuBLAS a leading dimension of 0 and launched
    0-block grids. Its CPU emulation runs the same walk and checks each GEMM's arguments and
    each grid as cuBLAS and CUDA would, so the zero sizes are seen here."""
    n, m, d = shape
    gen = torch.Generator().manual_seed(3)
    x, t = torch.randn(n, d, generator=gen), torch.randn(m, d, generator=gen)
    perm, offsets = _layout(torch.arange(n) % 2, 2)
    want = reference.ecf_sums_reference(x, t, torch.arange(n) % 2, 2)  # d = 0: every cosine is 1
    ops = torch.ops.spectral_kernels
    got = ops._chunk_walk_forward(x, t, perm, offsets, "ieee", 1024)
    torch.testing.assert_close(got, want)
    grad = torch.randn(2, 2, m, generator=gen)
    dx, dt = ops._chunk_walk_backward(grad, x, t, perm, offsets, "ieee", 1024, True, True)
    assert dx.shape == (n, d) and dt.shape == (m, d)
    assert not dx.any() and not dt.any()  # no frequency, or no coordinate: nothing depends on it
