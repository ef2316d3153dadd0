"""Mixed precision (SPEC §6): under torch.autocast the losses stay on the fused backend, return
float32 as torch's own losses do, and are at least half as accurate as PyTorch's own unfused
computation under the same autocast; outside autocast, low-precision inputs behave as before."""

import pytest
import torch
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

import spectral_kernels as sk
from spectral_kernels.classes import class_index
from spectral_kernels.ops.autocast import compute_dtype
from spectral_kernels.structured import hadamard_frequencies

from .conftest import max_error

N, S, M, D, C = 512, 64, 256, 16, 4
LOW = [torch.bfloat16, torch.float16]
CPU_FUSED = pytest.mark.skipif("cpu" not in sk.available_backends(), reason="the C++ extension is not built")


class _Recorder(TorchDispatchMode):
    """Every op that runs (forward and backward) and the largest tensor any of them returns."""

    def __init__(self):
        super().__init__()
        self.ops, self.input_dtypes, self.largest = [], [], 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.ops.append(str(func))
        self.input_dtypes.append([a.dtype for a in args if isinstance(a, torch.Tensor)])
        for leaf in pytree.tree_leaves(out):
            if isinstance(leaf, torch.Tensor):
                self.largest = max(self.largest, leaf.numel())
        return out


def _features(dtype, seed=0):
    """bf16/fp16 leaves, as a network's output under autocast would be, classes on both sides."""
    gen = torch.Generator().manual_seed(seed)
    real = torch.randn(N, D, generator=gen).to(dtype)
    syn = (torch.randn(S, D, generator=gen) + 0.3).to(dtype).requires_grad_(True)
    return real, syn, torch.arange(N) % C, torch.arange(S) % C


def _frequencies(seed=1):
    """float32 frequencies with phases up to ~10, like a learned sampler's output."""
    return (torch.randn(M, D, generator=torch.Generator().manual_seed(seed)) * 0.8).requires_grad_(True)


COUNTS = [400, 200, 100, 50]
# name -> loss(real, syn, real_labels, syn_labels, t): every public loss that draws or takes frequencies.
SPECTRAL = {
    "ncfd": lambda r, s, rl, sl, t: sk.ncfd(r, s, t, rl, sl),
    "sdd": lambda r, s, rl, sl, t: sk.sdd(r, s, rl, sl, t=t),
    "sdd_drawn": lambda r, s, rl, sl, t: sk.sdd(r, s, rl, sl, num_freqs=M, generator=torch.Generator().manual_seed(2)),
    "sdd_hadamard": lambda r, s, rl, sl, t: sk.sdd(
        r, s, rl, sl, num_freqs=M, structure="hadamard", generator=torch.Generator().manual_seed(2)
    ),
    "csdm": lambda r, s, rl, sl, t: sk.csdm(r, s, rl, sl, class_counts=COUNTS, t=t),
    "csdm_drawn": lambda r, s, rl, sl, t: sk.csdm(
        r, s, rl, sl, class_counts=COUNTS, num_freqs=M, generator=torch.Generator().manual_seed(2)
    ),
    "NCFDLoss": lambda r, s, rl, sl, t: sk.NCFDLoss()(r, s, t, rl, sl),
    "SDDLoss": lambda r, s, rl, sl, t: sk.SDDLoss(num_freqs=M, generator=torch.Generator().manual_seed(2))(
        r, s, rl, sl
    ),
    "CSDMLoss": lambda r, s, rl, sl, t: sk.CSDMLoss(COUNTS, num_freqs=M)(r, s, rl, sl),
}


# On a GPU `auto` picks Triton (the cuda backend without it): every fused forward op's name.
FUSED_OPS = tuple(
    f"spectral_kernels.{op}." for op in ("ecf_sums", "hadamard_sums", "ecf_sums_triton", "hadamard_sums_triton")
)
NO_GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
DEVICES = ["cpu", pytest.param("cuda", marks=NO_GPU)]


def _on(device, real, syn, rl, sl, t):
    """The same leaves on `device` (syn and t leaves again, so their .grad is there)."""
    leaf = lambda x: x.detach().to(device).requires_grad_(True)
    return real.to(device), leaf(syn), rl.to(device), sl.to(device), leaf(t)


@CPU_FUSED
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("name", sorted(SPECTRAL))
def test_under_autocast_the_fused_op_runs_never_the_n_by_m_path_and_the_loss_is_float32(name, dtype, device):
    real, syn, rl, sl, t = _on(device, *_features(dtype), _frequencies())
    recorder = _Recorder()
    with torch.autocast(device, dtype=dtype), recorder:
        loss = SPECTRAL[name](real, syn, rl, sl, t)
        loss.backward()
    fused = [op for op in recorder.ops if op.startswith(FUSED_OPS)]
    assert fused, f"no fused op ran: {sorted(set(recorder.ops))}"
    # The reference path builds the (N, M) phase matrix; the fused one nothing larger than an input.
    assert recorder.largest < N * M, f"an op returned {recorder.largest} elements (N x M = {N * M})"
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert syn.grad is not None and syn.grad.dtype == dtype and bool(torch.isfinite(syn.grad).all())
    if name in ("ncfd", "sdd", "csdm", "NCFDLoss"):  # the float32 frequencies get a float32 gradient
        assert t.grad is not None and t.grad.dtype == torch.float32


@CPU_FUSED
@pytest.mark.parametrize("dtype", LOW)
def test_ncfd_takes_float32_frequencies_with_low_precision_features_under_autocast(dtype):
    real, syn, rl, sl = _features(dtype)
    with torch.autocast("cpu", dtype=dtype):
        value = sk.ncfd(real, syn, _frequencies(), rl, sl)
    assert value.dtype == torch.float32
    # Outside autocast the dtypes must still match, as before.
    with pytest.raises(TypeError, match="t has dtype torch.float32 but real has dtype"):
        sk.ncfd(real, syn, _frequencies(), rl, sl)


def _plain_ecf(x, t, labels):
    """Per-class ECF means as one writes them without this library (the public NCFM code):
    x t^T, cos and sin, a per-class mean, every op in whatever dtype autocast gives it."""
    phase = x @ t.T
    onehot = torch.nn.functional.one_hot(labels, C).to(phase.dtype).T  # (C, N)
    counts = onehot.sum(1, keepdim=True)
    return (onehot @ torch.cos(phase)) / counts, (onehot @ torch.sin(phase)) / counts


def _plain_terms(real, syn, rl, sl, t):
    re_p, im_p = _plain_ecf(real, t, rl)
    re_q, im_q = _plain_ecf(syn, t, sl)
    abs_p, abs_q = torch.sqrt(re_p**2 + im_p**2), torch.sqrt(re_q**2 + im_q**2)
    return (abs_p - abs_q) ** 2, 2 * (abs_p * abs_q - re_p * re_q - im_p * im_q)


# CSDM's weights for COUNTS by hand: the median count of 400, 200, 100, 50 is 150, so the first two
# classes are head (alpha_head 0.8) and the others tail (0.2).
PLAIN_ALPHA = torch.tensor([0.8, 0.8, 0.2, 0.2])


def _plain_ncfd(r, s, rl, sl, t):
    amplitude, phase = _plain_terms(r, s, rl, sl, t)
    return torch.sqrt(0.5 * amplitude + 0.5 * phase.clamp_min(1e-12)).mean()


def _plain_sdd(r, s, rl, sl, t):
    amplitude, phase = _plain_terms(r, s, rl, sl, t)
    return (amplitude + phase).mean()


def _plain_csdm(r, s, rl, sl, t):
    amplitude, phase = _plain_terms(r, s, rl, sl, t)
    alpha = PLAIN_ALPHA.to(amplitude)[:, None]  # its dtype and device
    return (alpha * amplitude + (1 - alpha) * phase).mean()


# name -> (the library's loss, the same loss written out in plain torch), both (real, syn, rl, sl, t) -> scalar.
PLAIN = {
    "ncfd": (lambda r, s, rl, sl, t: sk.ncfd(r, s, t, rl, sl), _plain_ncfd),
    "sdd": (lambda r, s, rl, sl, t: sk.sdd(r, s, rl, sl, t=t), _plain_sdd),
    "csdm": (lambda r, s, rl, sl, t: sk.csdm(r, s, rl, sl, class_counts=COUNTS, t=t), _plain_csdm),
}


@CPU_FUSED
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("name", sorted(PLAIN))
def test_autocast_error_is_at_most_twice_that_of_plain_pytorch_under_the_same_autocast(name, dtype, device):
    ours_fn, plain_fn = PLAIN[name]
    real, syn, rl, sl, t = _on(device, *_features(dtype, seed=5), _frequencies(seed=6))

    def value_and_grad(fn, r, s, t_, autocast):
        s = s.detach().requires_grad_(True)
        with torch.autocast(device, dtype=dtype, enabled=autocast):
            value = fn(r, s, rl, sl, t_)
        value.backward()
        return value.detach(), s.grad

    # Truth: float64 on the same (already rounded) inputs: the test measures the computation.
    truth = value_and_grad(ours_fn, real.double(), syn.double(), t.detach().double(), autocast=False)
    plain_truth = value_and_grad(plain_fn, real.double(), syn.double(), t.detach().double(), autocast=False)
    torch.testing.assert_close(plain_truth[0], truth[0], rtol=1e-10, atol=1e-12)  # the plain formula is the loss
    ours = value_and_grad(ours_fn, real, syn, t.detach(), autocast=True)
    theirs = value_and_grad(plain_fn, real, syn, t.detach(), autocast=True)
    assert ours[0].dtype == torch.float32 and ours[1].dtype == dtype
    for got, base, want, what in zip(ours, theirs, truth, ("value", "gradient")):
        assert max_error(got, want) <= 2 * max_error(base, want), what


def _plain_mmd(x, y, sigma):
    """Gaussian V-statistic MMD^2 in plain torch: squared distances by the expanded product."""

    def k(a, b):
        d2 = (a * a).sum(1, keepdim=True) + (b * b).sum(1) - 2 * a @ b.T
        return torch.exp(-d2.clamp_min(0) / (2 * sigma**2))

    return k(x, x).mean() + k(y, y).mean() - 2 * k(x, y).mean()


@pytest.mark.parametrize("dtype", LOW)
def test_mmd_under_autocast_returns_float32_at_most_twice_the_error_of_plain_pytorch(dtype):
    real, syn, _, _ = _features(dtype, seed=7)
    sigma = 4.0
    with torch.autocast("cpu", dtype=dtype):
        value = sk.mmd(real, syn, bandwidth=sigma)
    value.backward()
    assert value.dtype == torch.float32 and syn.grad.dtype == dtype

    def grad_of(fn, autocast, wide):
        s = syn.detach().double() if wide else syn.detach()
        s.requires_grad_(True)
        with torch.autocast("cpu", dtype=dtype, enabled=autocast):
            v = fn(real.double() if wide else real, s)
        v.backward()
        return v.detach(), s.grad

    truth = grad_of(lambda r, s: sk.mmd(r, s, bandwidth=sigma), False, True)
    torch.testing.assert_close(grad_of(lambda r, s: _plain_mmd(r, s, sigma), False, True)[0], truth[0])
    ours = grad_of(lambda r, s: sk.mmd(r, s, bandwidth=sigma), True, False)
    theirs = grad_of(lambda r, s: _plain_mmd(r, s, sigma), True, False)
    for got, base, want, what in zip(ours, theirs, truth, ("value", "gradient")):
        assert max_error(got, want) <= 2 * max_error(base, want), what


def test_mmd_products_run_in_float32_under_autocast():
    real, syn, _, _ = _features(torch.bfloat16, seed=8)

    class Dtypes(TorchDispatchMode):
        seen = set()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if str(func).startswith(("aten.mm", "aten.addmm", "aten.bmm")):
                self.seen.update(a.dtype for a in args if isinstance(a, torch.Tensor))
            return func(*args, **(kwargs or {}))

    mode = Dtypes()
    with torch.autocast("cpu", dtype=torch.bfloat16), mode:
        sk.mmd(real, syn, bandwidth=4.0)
    assert mode.seen == {torch.float32}


@pytest.mark.parametrize("name", ["sdd", "mmd"])
def test_outside_autocast_low_precision_inputs_behave_as_before(name):
    real, syn, _, _ = _features(torch.bfloat16)
    value = sk.sdd(real, syn, num_freqs=M) if name == "sdd" else sk.mmd(real, syn)
    assert value.dtype == torch.bfloat16  # computed in the inputs' dtype, as before (SPEC §6)


@CPU_FUSED
@pytest.mark.parametrize("dtype", LOW)
def test_the_cpu_ops_called_directly_under_autocast_take_low_precision_inputs(dtype):
    gen = torch.Generator().manual_seed(9)
    x = torch.randn(40, D, generator=gen).to(dtype).requires_grad_(True)
    t = torch.randn(M, D, generator=gen).to(dtype)
    index = class_index(torch.arange(40) % 3, 40, 3, x.device)
    with torch.autocast("cpu", dtype=dtype):
        sums = torch.ops.spectral_kernels.ecf_sums(x, t, index.perm, index.offsets, "ieee")
        draws = hadamard_frequencies("gaussian", M, D, generator=gen, dtype=torch.float32)
        sorf = torch.ops.spectral_kernels.hadamard_sums(
            x, draws.signs, draws.radii, index.perm, index.offsets, draws.num_freqs
        )
    assert sums.dtype == sorf.dtype == torch.float32
    want = torch.ops.spectral_kernels.ecf_sums(x.double(), t.double(), index.perm, index.offsets, "ieee")
    torch.testing.assert_close(sums.double(), want, rtol=0, atol=1e-4)
    (sums.sum() + sorf.sum()).backward()
    assert x.grad.dtype == dtype
    with pytest.raises(TypeError, match="float32 or float64"):  # outside autocast: refused, as before
        torch.ops.spectral_kernels.ecf_sums(x.detach(), t, index.perm, index.offsets, "ieee")


def test_bad_input_under_autocast_is_refused_as_outside():
    real, syn, rl, sl = _features(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        # float64 is never cast (autocast leaves it alone too): mixing it with bf16 stays an error.
        with pytest.raises(TypeError, match="syn has dtype torch.bfloat16 but real has dtype torch.float64"):
            sk.sdd(real.double(), syn, rl, sl)
        with pytest.raises(TypeError, match="syn must be a torch.Tensor"):
            sk.ncfd(real, syn.tolist(), _frequencies(), rl, sl)
        with pytest.raises(TypeError, match="real_labels must have an integer dtype"):
            sk.mmd(real, syn, rl.float(), sl)


@CPU_FUSED
def test_the_policy_traces_under_fullgraph_compile_inside_autocast():
    real, syn, rl, sl = _features(torch.bfloat16)
    t = _frequencies().detach()
    loss = torch.compile(
        lambda r, s, t_: sk.sdd(r, s, rl, sl, t=t_, num_classes=C), fullgraph=True, backend="aot_eager"
    )
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, want = loss(real, syn, t), sk.sdd(real, syn, rl, sl, t=t)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want)


def test_the_compute_dtype_is_the_widest_input_kept_low_only_where_a_fused_backend_takes_it():
    cpu = torch.device("cpu")
    bf16, fp16, f32 = torch.bfloat16, torch.float16, torch.float32
    if "cpu" in sk.available_backends():  # the fused cpu kernels take float32/float64 only
        assert compute_dtype([bf16, bf16], "auto", cpu) == f32
        assert compute_dtype([fp16], "cpu", cpu) == f32
    assert compute_dtype([bf16, bf16], "reference", cpu) == bf16  # the reference, named, runs as asked
    assert compute_dtype([bf16, f32], "reference", cpu) == f32  # the widest: promote_types
    assert compute_dtype([bf16, fp16], "reference", cpu) == f32
    assert compute_dtype([bf16], None, cpu) == f32  # no fused kernel at all (mmd)
    assert compute_dtype([torch.float64], "auto", cpu) == torch.float64
    if sk.ops.runs_on("triton", torch.empty(1)):  # through the interpreter: bf16 is native there
        assert compute_dtype([bf16, bf16], "triton", cpu) == bf16


@pytest.mark.skipif(not sk.ops.runs_on("triton", torch.empty(1)), reason="triton cannot run on CPU tensors here")
def test_a_backend_that_takes_bf16_gets_it_under_autocast_and_the_loss_is_float32():
    gen = torch.Generator().manual_seed(10)
    real, syn = torch.randn(40, 8, generator=gen).bfloat16(), torch.randn(24, 8, generator=gen).bfloat16()
    t = torch.randn(16, 8, generator=gen).bfloat16()
    rl, sl = torch.arange(40) % C, torch.arange(24) % C
    recorder = _Recorder()
    with torch.autocast("cpu", dtype=torch.bfloat16), recorder:
        value = sk.sdd(real, syn, rl, sl, t=t, backend="triton")
    calls = [
        dt for op, dt in zip(recorder.ops, recorder.input_dtypes) if op.startswith("spectral_kernels.ecf_sums_tri")
    ]
    assert calls and all(dtypes[:2] == [torch.bfloat16] * 2 for dtypes in calls), calls  # x and t as given
    assert value.dtype == torch.float32
    truth = sk.sdd(real.double(), syn.double(), rl, sl, t=t.double())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        plain = _plain_sdd(real, syn, rl, sl, t)
    assert max_error(value, truth) <= 2 * max_error(plain, truth)


@CPU_FUSED
def test_ecf_under_autocast_runs_the_fused_op_and_returns_float32():
    real, _, rl, _ = _features(torch.bfloat16)
    t = _frequencies().detach()
    recorder = _Recorder()
    with torch.autocast("cpu", dtype=torch.bfloat16), recorder:
        re, im = sk.ecf(real, t, rl)
    assert "spectral_kernels.ecf_sums.default" in recorder.ops and recorder.largest < N * M
    assert re.dtype == im.dtype == torch.float32
    want_re, want_im = sk.ecf(real.double(), t.double(), rl)
    torch.testing.assert_close(re.double(), want_re, rtol=0, atol=1e-5)
    torch.testing.assert_close(im.double(), want_im, rtol=0, atol=1e-5)
