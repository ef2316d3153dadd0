"""Every fused backend against the float64 reference, on the same cases (SPEC §1, §6)."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import spectral_kernels as sk
from spectral_kernels import ops
from spectral_kernels.classes import class_index
from spectral_kernels.ops.reference import ecf_sums_reference

from . import op_contract
from .conftest import BACKEND_DEVICES, backend_params, max_error, sums_and_grads

RUNNABLE = sorted(BACKEND_DEVICES)  # the fused backends that can run in this process
FUSED = backend_params()  # all of them, the others reported as skipped with their reason

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


def _inputs(rng, n, m, d, sizes, dtype, device="cpu"):
    x = torch.randn(n, d, generator=rng, dtype=torch.float64)
    # Phases up to |<t, x>| ~ 30 exercise argument reduction in sin/cos.
    t = torch.randn(m, d, generator=rng, dtype=torch.float64) * (3.0 / d**0.5)
    if sizes is None:
        labels, num_classes = None, 1
    else:
        labels = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
        labels = labels[torch.randperm(n, generator=rng)]  # classes interleaved, not pre-sorted
        num_classes = len(sizes)
    labels = None if labels is None else labels.to(device)
    index = class_index(labels, n, num_classes, torch.device(device))
    return x.to(device, dtype), t.to(device, dtype), index


@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_fused_sums_and_gradients_match_the_float64_reference(rng, backend, case):
    _, n, m, d, sizes = case
    device = BACKEND_DEVICES[backend]
    chosen = ops.resolve(backend, torch.empty(0, device=device))
    x64, t64, index = _inputs(rng, n, m, d, sizes, torch.float64, device)
    grad = torch.randn(index.num_classes, 2, m, generator=rng, dtype=torch.float64).to(device)
    reference = lambda x, t: ecf_sums_reference(x, t, index.labels, index.num_classes)
    fused = lambda x, t: chosen.ecf_sums(x, t, index)
    truth = sums_and_grads(reference, x64, t64, grad)

    for got, want, name in zip(sums_and_grads(fused, x64, t64, grad), truth, ("sums", "dx", "dt")):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10 * max(1.0, want.abs().max().item()), msg=name)

    # float32: at most twice the error of PyTorch's own float32 computation, plus a floor of a
    # few float32 ulps of the largest value (FlashAttention's rule for reduced precision).
    x32, t32, g32 = x64.float(), t64.float(), grad.float()
    ref32 = sums_and_grads(reference, x32, t32, g32)
    for got, base, want, name in zip(sums_and_grads(fused, x32, t32, g32), ref32, truth, ("sums", "dx", "dt")):
        floor = 8 * torch.finfo(torch.float32).eps * max(1.0, want.abs().max().item())
        assert got.dtype == torch.float32, name
        assert max_error(got, want) <= 2 * max_error(base, want) + floor, name


@pytest.mark.parametrize("backend", FUSED)
def test_float32_ecf_means_within_1e5_of_float64_for_phases_up_to_100(rng, backend):
    """SPEC §6: float32 ECF means within 1e-5 (absolute on values in [-1, 1]) for |<t,x>| <= 100."""
    x = torch.rand(4000, 64, generator=rng, dtype=torch.float64) * 2 - 1
    t = (torch.rand(256, 64, generator=rng, dtype=torch.float64) * 2 - 1) * (100.0 / 64)
    assert (x @ t.T).abs().max() <= 100
    y = torch.arange(4000) % 3
    re64, im64 = sk.ecf(x, t, y, backend="reference")
    device = BACKEND_DEVICES[backend]
    re32, im32 = sk.ecf(x.float().to(device), t.float().to(device), y.to(device), backend=backend)
    assert max_error(re32, re64) <= 1e-5 and max_error(im32, im64) <= 1e-5


@pytest.mark.parametrize("backend", FUSED)
def test_gradcheck_of_the_fused_op_in_float64(rng, backend):
    device = BACKEND_DEVICES[backend]
    chosen = ops.resolve(backend, torch.empty(0, device=device))
    x, t, index = _inputs(rng, 11, 6, 3, [4, 0, 7], torch.float64, device)
    x.requires_grad_(True)
    t.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: chosen.ecf_sums(a, b, index), (x, t))


class _OpRecorder(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls.append((str(func), args))
        return func(*args, **(kwargs or {}))


def _computed_gradients(names_and_args) -> list[set]:
    """Which gradients each recorded backward op call computed: {"x"}, {"t"} or both."""
    calls = []
    for name, args in names_and_args:
        if "ecf_sums_grad_x" in name:
            calls.append({"x"})
        elif "ecf_sums_grad_t" in name:
            calls.append({"t"})
        elif "ecf_sums_triton_backward" in name or "ecf_sums_backward" in name:
            calls.append({g for g, needed in zip(("x", "t"), args[6:8]) if needed})
    return calls


@pytest.mark.parametrize("backend", FUSED)
def test_backward_computes_only_the_gradients_that_are_needed(rng, backend):
    device = BACKEND_DEVICES[backend]
    real, t, index = _inputs(rng, 50, 20, 4, [25, 25], torch.float32, device)
    syn = torch.randn(10, 4, generator=rng).to(device)
    rl, sl = index.labels, (torch.arange(10) % 2).to(device)
    for needs_x, needs_t in [(True, False), (False, True), (True, True)]:
        s = syn.clone().requires_grad_(needs_x)
        f = t.clone().requires_grad_(needs_t)
        loss = sk.ncfd(real, s, f, rl, sl, backend=backend)
        with _OpRecorder() as recorder:
            loss.backward()
        computed = _computed_gradients(recorder.calls)
        # The real features never need dx; with dt needed they contribute dt only.
        expected_syn = {g for g, needed in (("x", needs_x), ("t", needs_t)) if needed}
        merged_per_input = sorted(map(sorted, computed))
        want = sorted(map(sorted, [{"t"}] * needs_t + [expected_syn]))  # one backward op call per input side
        assert merged_per_input == want, (needs_x, needs_t, recorder.calls)


@pytest.mark.parametrize("backend", FUSED)
def test_opcheck_of_the_fused_ops(rng, backend):
    device = BACKEND_DEVICES[backend]
    x, t, index = _inputs(rng, 37, 19, 5, [20, 0, 17], torch.float64, device)
    grad = torch.randn(3, 2, 19, generator=rng, dtype=torch.float64).to(device)
    ops_ = torch.ops.spectral_kernels
    layout = (index.perm, index.offsets)
    if backend in ("cpu", "cuda"):  # the C++ ops, on either device
        torch.library.opcheck(ops_.ecf_sums.default, (x.requires_grad_(True), t.requires_grad_(True), *layout, "ieee"))
        torch.library.opcheck(ops_.ecf_sums_grad_x.default, (grad, x.detach(), t.detach(), *layout, "ieee"))
        torch.library.opcheck(ops_.ecf_sums_grad_t.default, (grad, x.detach(), t.detach(), *layout, "ieee"))
        for need_x, need_t in [(True, True), (False, True), (True, False)]:
            args = (grad, x.detach(), t.detach(), *layout, "ieee", need_x, need_t)
            torch.library.opcheck(ops_.ecf_sums_backward.default, args)
    else:
        torch.library.opcheck(
            ops_.ecf_sums_triton.default, (x.requires_grad_(True), t.requires_grad_(True), *layout, "ieee")
        )
        for need_x, need_t in [(True, True), (False, True), (True, False)]:
            args = (grad, x.detach(), t.detach(), *layout, "ieee", need_x, need_t)
            torch.library.opcheck(ops_.ecf_sums_triton_backward.default, args)


@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("name", ["ncfd", "sdd", "csdm"])
def test_losses_compile_with_fullgraph_on_fused_backends(rng, name, backend):
    torch._dynamo.reset()
    device = BACKEND_DEVICES[backend]
    real = torch.randn(40, 6, generator=rng).to(device)
    syn = torch.randn(12, 6, generator=rng).to(device).requires_grad_(True)
    t = torch.randn(33, 6, generator=rng).to(device)
    rl, sl = (torch.arange(40) % 3).to(device), (torch.arange(12) % 3).to(device)
    fns = {
        "ncfd": lambda a, b, f: sk.ncfd(a, b, f, rl, sl, num_classes=3, backend=backend),
        "sdd": lambda a, b, f: sk.sdd(a, b, rl, sl, t=f, num_classes=3, backend=backend),
        "csdm": lambda a, b, f: sk.csdm(
            a, b, rl, sl, class_counts=[30, 8, 2], t=f, alpha_rule="log-linear", backend=backend
        ),
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


@pytest.mark.parametrize("backend", FUSED)
def test_repeated_runs_are_bitwise_identical(rng, backend):
    device = BACKEND_DEVICES[backend]
    chosen = ops.resolve(backend, torch.empty(0, device=device))
    # Several row tiles per class and several frequency tiles for either backend's tiling
    # (the interpreter runs Triton's 32-wide tiles, hence the smaller case there).
    n, m = (300, 100) if backend == "triton" and device == "cpu" else (1100, 700)
    x, t, index = _inputs(rng, n, m, 33, [n - 200, 150, 50], torch.float32, device)
    grad = torch.randn(3, 2, m, generator=rng).to(device)
    first = sums_and_grads(lambda a, b: chosen.ecf_sums(a, b, index), x, t, grad)
    for _ in range(9):
        again = sums_and_grads(lambda a, b: chosen.ecf_sums(a, b, index), x, t, grad)
        assert all(torch.equal(a, b) for a, b in zip(first, again))


@pytest.mark.skipif("triton" not in RUNNABLE, reason="triton is not available")
def test_deterministic_mode_runs_one_fixed_tile_shape_without_the_autotuner(rng, monkeypatch):
    """Autotuning picks tile shapes by timing, so another process may pick another shape and
    sum in another order; under torch.use_deterministic_algorithms(True) it must not run."""
    from spectral_kernels.ops import triton_ecf as te

    def autotuner_ran(*args, **kwargs):
        raise AssertionError("the autotuner ran")

    for kernel in (te._forward_kernel, te._weight_kernel):
        monkeypatch.setattr(kernel, "run", autotuner_ran)
    # Autotuning on, as by default: the GPU test run sets SPECTRAL_KERNELS_TRITON_AUTOTUNE=0, under
    # which no launch goes through the autotuner and the last check below could never hold.
    monkeypatch.setattr(te, "AUTOTUNE", True)
    device = BACKEND_DEVICES["triton"]
    chosen = ops.resolve("triton", torch.empty(0, device=device))
    x64, t64, index = _inputs(rng, 211, 75, 19, [150, 0, 61], torch.float64, device)
    grad = torch.randn(3, 2, 75, generator=rng, dtype=torch.float64).to(device)
    truth = sums_and_grads(lambda x, t: ecf_sums_reference(x, t, index.labels, index.num_classes), x64, t64, grad)
    fused = lambda x, t: chosen.ecf_sums(x, t, index, precision="ieee")
    was_on, warn_only = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    torch.use_deterministic_algorithms(True)
    try:
        first = sums_and_grads(fused, x64.float(), t64.float(), grad.float())
        again = sums_and_grads(fused, x64.float(), t64.float(), grad.float())
    finally:
        torch.use_deterministic_algorithms(was_on, warn_only=warn_only)
    for ours, repeat, want, name in zip(first, again, truth, ("sums", "dx", "dt")):
        assert torch.equal(ours, repeat), name
        torch.testing.assert_close(
            ours.double(), want, rtol=1e-4, atol=1e-4 * max(1.0, want.abs().max().item()), msg=name
        )
    with pytest.raises(AssertionError, match="the autotuner ran"):  # outside that mode it does
        fused(x64.float(), t64.float())


def test_one_and_two_threads_agree(rng):
    chosen = ops.resolve("cpu", torch.empty(0))
    x, t, index = _inputs(rng, 1300, 900, 40, [1000, 300], torch.float32)
    grad = torch.randn(2, 2, 900, generator=rng)
    before = torch.get_num_threads()
    try:
        results = {}
        for threads in (1, 2):
            torch.set_num_threads(threads)
            results[threads] = sums_and_grads(lambda a, b: chosen.ecf_sums(a, b, index), x, t, grad)
    finally:
        torch.set_num_threads(before)
    for one, two in zip(results[1], results[2]):
        torch.testing.assert_close(one, two, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("backend", backend_params("triton", "cuda"))
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_error_is_at_most_twice_the_reference_in_the_same_precision(rng, backend, dtype):
    device = BACKEND_DEVICES[backend]
    x64, t64, index = _inputs(rng, 300, 96, 24, [200, 100], torch.float64, device)
    chosen = ops.resolve(backend, torch.empty(0, dtype=dtype, device=device))
    x, t = x64.to(dtype), t64.to(dtype)
    # Truth from the same rounded inputs: the test measures the computation, not the rounding.
    truth = ecf_sums_reference(x.double(), t.double(), index.labels, index.num_classes)
    ours = chosen.ecf_sums(x, t, index, precision="ieee")
    theirs = ecf_sums_reference(x, t, index.labels, index.num_classes)
    assert ours.dtype == torch.float32  # accumulated and returned in float32
    assert max_error(ours, truth) <= 2 * max_error(theirs, truth)


def test_auto_picks_the_fused_cpu_backend_for_cpu_tensors():
    assert ops.resolve("auto", torch.empty(2, 2)).name == "cpu"
    assert ops.resolve("auto", torch.empty(2, 2, dtype=torch.float16)).name == "reference"


def _contract_params():
    """(backend, device, case) for every backend, the reference included, and every case of the
    op contract's table that holds for it; a backend that cannot run here is reported as skipped."""
    devices = {"reference": "cpu", **BACKEND_DEVICES}
    params = []
    for row in [pytest.param("reference"), *FUSED]:
        name = row.values[0]
        for case in op_contract.CASES:
            if name in devices and not op_contract.applies(case, ops.get_backend(name), devices[name]):
                continue
            params.append(pytest.param(name, devices.get(name), case, id=f"{name}-{case.id}", marks=row.marks))
    return params


@pytest.mark.parametrize("backend, device, case", _contract_params())
def test_every_backends_op_refuses_what_the_op_contract_refuses(backend, device, case):
    """One table (tests/op_contract.py) for every backend's op: the same refusals, before any
    kernel reads memory through the bad input, with messages that name the argument and value."""
    forward, backward = op_contract.backend_ops(ops.get_backend(backend))
    with pytest.raises(case.exception, match=case.pattern):
        case.call(forward, backward, op_contract.inputs(device))


def test_the_op_contract_table_reaches_every_kind_of_check():
    """The table runs value checks, a backward op and a refused dtype on the CPU backends here
    (a filter that dropped them all would make the contract test pass vacuously)."""
    cpu_cases = [c for c in op_contract.CASES if op_contract.applies(c, ops.get_backend("cpu"), "cpu")]
    assert any(c.values for c in cpu_cases) and any(c.backward for c in cpu_cases)
    assert any(c.refused_dtype for c in cpu_cases)
    reference_cases = [c for c in op_contract.CASES if op_contract.applies(c, ops.get_backend("reference"), "cpu")]
    assert any(c.values for c in reference_cases) and not any(c.backward for c in reference_cases)


@pytest.mark.parametrize("config_index", range(6))
@pytest.mark.skipif("triton" not in RUNNABLE, reason="triton is not available")
def test_every_autotune_tile_shape_computes_the_same_sums_and_gradients(rng, monkeypatch, config_index):
    """Autotuning may pick any of the GPU tile shapes, so each must be right on sizes that are
    not multiples of any tile (the interpreter runs them too: it ignores warps and stages)."""
    from spectral_kernels.ops import triton_ecf as te

    configs = te.gpu_configs()
    assert len(configs) == 6  # keep the parametrization in step with the list
    # Through the autotuner even under SPECTRAL_KERNELS_TRITON_AUTOTUNE=0 (the GPU test run), whose
    # untuned launches would otherwise run the first shape whatever the configs below say.
    monkeypatch.setattr(te, "AUTOTUNE", True)
    for kernel in (te._forward_kernel, te._weight_kernel):
        monkeypatch.setattr(kernel, "configs", [configs[config_index]])
        monkeypatch.setattr(kernel, "cache", {})
    device = BACKEND_DEVICES["triton"]
    chosen = ops.resolve("triton", torch.empty(0, device=device))
    x64, t64, index = _inputs(rng, 300, 270, 37, [230, 0, 41, 29], torch.float64, device)
    grad = torch.randn(4, 2, 270, generator=rng, dtype=torch.float64).to(device)
    truth = sums_and_grads(lambda x, t: ecf_sums_reference(x, t, index.labels, index.num_classes), x64, t64, grad)
    got = sums_and_grads(
        lambda x, t: chosen.ecf_sums(x, t, index, precision="ieee"), x64.float(), t64.float(), grad.float()
    )
    for ours, want, name in zip(got, truth, ("sums", "dx", "dt")):
        torch.testing.assert_close(
            ours.double(), want, rtol=1e-4, atol=1e-4 * max(1.0, want.abs().max().item()), msg=name
        )
