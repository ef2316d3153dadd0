"""Every fused backend against the float64 reference, on the same cases (SPEC §1, §6)."""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import spectral_kernels as sk
from spectral_kernels import ops
from spectral_kernels.classes import class_index
from spectral_kernels.ops.reference import ecf_sums_reference

from .conftest import FUSED_BACKENDS

pytestmark = pytest.mark.skipif(not FUSED_BACKENDS, reason="no fused backend is built")

# (id, N, M, d, class sizes or None for unlabelled): sizes off the 256 tiles, single rows,
# single frequencies, d = 1 and 2048, one and many classes, empty classes, long tails.
CASES = [
    ("single_row", 1, 1, 1, None),
    ("off_tile", 257, 300, 7, [100, 57, 100]),
    ("one_frequency", 130, 1, 9, [65, 65]),
    ("d1", 90, 40, 1, [30, 60]),
    ("d2048", 40, 513, 2048, [10, 10, 20]),
    ("many_classes_some_empty", 300, 64, 5, [8] * 30 + [0, 0, 60, 0, 0, 0, 0]),
    ("long_tail", 5050, 37, 16, [5000, 50]),
    ("unlabelled", 600, 129, 12, None),
]


def _inputs(rng, n, m, d, sizes, dtype):
    x = torch.randn(n, d, generator=rng, dtype=torch.float64)
    # Phases up to |<t, x>| ~ 30 exercise argument reduction in sin/cos.
    t = torch.randn(m, d, generator=rng, dtype=torch.float64) * (3.0 / d**0.5)
    if sizes is None:
        labels, num_classes = None, 1
    else:
        labels = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
        labels = labels[torch.randperm(n, generator=rng)]  # classes interleaved, not pre-sorted
        num_classes = len(sizes)
    index = class_index(labels, n, num_classes, x.device)
    return x.to(dtype), t.to(dtype), index


def _sums_and_grads(fn, x, t, grad):
    x, t = x.detach().requires_grad_(True), t.detach().requires_grad_(True)
    sums = fn(x, t)
    sums.backward(grad)
    return sums.detach(), x.grad, t.grad


def _max_error(a, b):
    return (a.double() - b.double()).abs().max().item()


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_fused_sums_and_gradients_match_the_float64_reference(rng, backend, case):
    _, n, m, d, sizes = case
    chosen = ops.resolve(backend, torch.empty(0))
    x64, t64, index = _inputs(rng, n, m, d, sizes, torch.float64)
    grad = torch.randn(index.num_classes, 2, m, generator=rng, dtype=torch.float64)
    reference = lambda x, t: ecf_sums_reference(x, t, index.labels, index.num_classes)
    fused = lambda x, t: chosen.ecf_sums(x, t, index)
    truth = _sums_and_grads(reference, x64, t64, grad)

    for got, want, name in zip(_sums_and_grads(fused, x64, t64, grad), truth, ("sums", "dx", "dt")):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10 * max(1.0, want.abs().max().item()), msg=name)

    # float32: at most twice the error of PyTorch's own float32 computation, plus a floor of a
    # few float32 ulps of the largest value (FlashAttention's rule for reduced precision).
    x32, t32, g32 = x64.float(), t64.float(), grad.float()
    ref32 = _sums_and_grads(reference, x32, t32, g32)
    for got, base, want, name in zip(_sums_and_grads(fused, x32, t32, g32), ref32, truth, ("sums", "dx", "dt")):
        floor = 8 * torch.finfo(torch.float32).eps * max(1.0, want.abs().max().item())
        assert got.dtype == torch.float32, name
        assert _max_error(got, want) <= 2 * _max_error(base, want) + floor, name


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
def test_float32_ecf_means_within_1e5_of_float64_for_phases_up_to_100(rng, backend):
    """SPEC §6: float32 ECF means within 1e-5 (absolute on values in [-1, 1]) for |<t,x>| <= 100."""
    x = torch.rand(4000, 64, generator=rng, dtype=torch.float64) * 2 - 1
    t = (torch.rand(256, 64, generator=rng, dtype=torch.float64) * 2 - 1) * (100.0 / 64)
    assert (x @ t.T).abs().max() <= 100
    y = torch.arange(4000) % 3
    re64, im64 = sk.ecf(x, t, y, backend="reference")
    re32, im32 = sk.ecf(x.float(), t.float(), y, backend=backend)
    assert _max_error(re32, re64) <= 1e-5 and _max_error(im32, im64) <= 1e-5


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
def test_gradcheck_of_the_fused_op_in_float64(rng, backend):
    chosen = ops.resolve(backend, torch.empty(0))
    x, t, index = _inputs(rng, 11, 6, 3, [4, 0, 7], torch.float64)
    x.requires_grad_(True)
    t.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: chosen.ecf_sums(a, b, index), (x, t))


class _OpRecorder(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.names = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(str(func))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("backend", ["cpu"])
def test_backward_computes_only_the_gradients_that_are_needed(rng, backend):
    real, t, index = _inputs(rng, 50, 20, 4, [25, 25], torch.float32)
    syn = torch.randn(10, 4, generator=rng)
    rl, sl = index.labels, torch.arange(10) % 2
    for needs_x, needs_t, expected in [(True, False, {"grad_x"}), (False, True, {"grad_t"}), (True, True, {"grad_x", "grad_t"})]:
        s = syn.clone().requires_grad_(needs_x)
        f = t.clone().requires_grad_(needs_t)
        loss = sk.ncfd(real, s, f, rl, sl, backend=backend)
        with _OpRecorder() as recorder:
            loss.backward()
        called = {name.split("ecf_sums_")[1].split(".")[0] for name in recorder.names if "ecf_sums_grad" in name}
        assert called == expected, (needs_x, needs_t, recorder.names)
    # The real features need no gradient: their ECF sums must never ask for grad_x.
    s = syn.clone().requires_grad_(True)
    with _OpRecorder() as recorder:
        sk.ncfd(real, s, t, rl, sl, backend=backend).backward()
    assert sum("ecf_sums_grad_x" in name for name in recorder.names) == 1


def test_opcheck_of_the_cpu_ops(rng):
    x, t, index = _inputs(rng, 37, 19, 5, [20, 0, 17], torch.float64)
    grad = torch.randn(3, 2, 19, generator=rng, dtype=torch.float64)
    ops_ = torch.ops.spectral_kernels
    args = (x.requires_grad_(True), t.requires_grad_(True), index.perm, index.offsets)
    torch.library.opcheck(ops_.ecf_sums.default, args)
    torch.library.opcheck(ops_.ecf_sums_grad_x.default, (grad, x.detach(), t.detach(), index.perm, index.offsets))
    torch.library.opcheck(ops_.ecf_sums_grad_t.default, (grad, x.detach(), t.detach(), index.perm, index.offsets))


@pytest.mark.parametrize("name", ["ncfd", "sdd", "csdm"])
def test_losses_compile_with_fullgraph_on_the_cpu_backend(rng, name):
    torch._dynamo.reset()
    real = torch.randn(40, 6, generator=rng)
    syn = torch.randn(12, 6, generator=rng).requires_grad_(True)
    t = torch.randn(33, 6, generator=rng)
    rl, sl = torch.arange(40) % 3, torch.arange(12) % 3
    fns = {
        "ncfd": lambda a, b, f: sk.ncfd(a, b, f, rl, sl, num_classes=3, backend="cpu"),
        "sdd": lambda a, b, f: sk.sdd(a, b, rl, sl, t=f, num_classes=3, backend="cpu"),
        "csdm": lambda a, b, f: sk.csdm(a, b, rl, sl, class_counts=[30, 8, 2], t=f, alpha_rule="log-linear", backend="cpu"),
    }
    eager = fns[name](real, syn, t)
    (eager_grad,) = torch.autograd.grad(eager, syn)
    compiled = torch.compile(fns[name], fullgraph=True, backend="aot_eager")
    got = compiled(real, syn, t)
    (got_grad,) = torch.autograd.grad(got, syn)
    torch.testing.assert_close(got, eager)
    torch.testing.assert_close(got_grad, eager_grad)


def test_ncfd_compiles_with_inductor(rng):
    torch._dynamo.reset()
    real, t = torch.randn(64, 8, generator=rng), torch.randn(40, 8, generator=rng)
    syn = torch.randn(16, 8, generator=rng).requires_grad_(True)
    rl, sl = torch.arange(64) % 2, torch.arange(16) % 2
    fn = lambda a, b, f: sk.ncfd(a, b, f, rl, sl, num_classes=2, backend="cpu")
    compiled = torch.compile(fn, fullgraph=True)
    torch.testing.assert_close(compiled(real, syn, t), fn(real, syn, t))


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
def test_repeated_runs_are_bitwise_identical(rng, backend):
    chosen = ops.resolve(backend, torch.empty(0))
    x, t, index = _inputs(rng, 1100, 700, 33, [900, 150, 50], torch.float32)
    grad = torch.randn(3, 2, 700, generator=rng)
    first = _sums_and_grads(lambda a, b: chosen.ecf_sums(a, b, index), x, t, grad)
    for _ in range(9):
        again = _sums_and_grads(lambda a, b: chosen.ecf_sums(a, b, index), x, t, grad)
        assert all(torch.equal(a, b) for a, b in zip(first, again))


def test_one_and_two_threads_agree(rng):
    chosen = ops.resolve("cpu", torch.empty(0))
    x, t, index = _inputs(rng, 1300, 900, 40, [1000, 300], torch.float32)
    grad = torch.randn(2, 2, 900, generator=rng)
    before = torch.get_num_threads()
    try:
        results = {}
        for threads in (1, 2):
            torch.set_num_threads(threads)
            results[threads] = _sums_and_grads(lambda a, b: chosen.ecf_sums(a, b, index), x, t, grad)
    finally:
        torch.set_num_threads(before)
    for one, two in zip(results[1], results[2]):
        torch.testing.assert_close(one, two, rtol=1e-6, atol=1e-5)


def test_auto_picks_the_fused_cpu_backend_for_cpu_tensors():
    assert ops.resolve("auto", torch.empty(2, 2)).name == "cpu"
    assert ops.resolve("auto", torch.empty(2, 2, dtype=torch.float16)).name == "reference"


def test_cpu_op_rejects_bad_layouts_with_clear_errors(rng):
    x, t, index = _inputs(rng, 10, 4, 3, [5, 5], torch.float32)
    op = torch.ops.spectral_kernels.ecf_sums
    with pytest.raises(ValueError, match="offsets must start at 0 and end at N=10"):
        op(x, t, index.perm, torch.tensor([0, 5, 9]))
    with pytest.raises(ValueError, match="non-decreasing"):
        op(x, t, index.perm, torch.tensor([0, 6, 5, 10]))
    with pytest.raises(TypeError, match="float32 or float64"):
        op(x.half(), t.half(), index.perm, index.offsets)
    with pytest.raises(ValueError, match="x has d=3 but t has d=2"):
        op(x, t[:, :2], index.perm, index.offsets)
