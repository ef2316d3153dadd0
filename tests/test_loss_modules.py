"""The loss modules are the functions (SPEC §7): every option a function takes, a module takes
(at construction, or per call for what changes per call), forwards unchanged, compiles with
fullgraph, and runs data-parallel."""

from __future__ import annotations

import inspect
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import spectral_kernels as sk
from spectral_kernels import functional

from .conftest import make_pair

MODULES = {"ncfd": sk.NCFDLoss, "sdd": sk.SDDLoss, "csdm": sk.CSDMLoss, "mmd": sk.MMDLoss}
# The function each module forwards to (CSDMLoss: the per-class weights are computed once, at
# construction, from csdm's weight options, then forwarded as a tensor).
FORWARDED_TO = {"ncfd": "ncfd", "sdd": "sdd", "csdm": "csdm_with_alpha", "mmd": "mmd"}
CSDM_WEIGHT_OPTIONS = ("class_counts", "alpha_head", "head_classes", "alpha_rule")
# SPEC §7: what a driver changes from call to call; every other option is fixed at construction.
PER_CALL = {"t", "generator", "bandwidth"}


def _parameters(fn) -> dict[str, inspect.Parameter]:
    return dict(inspect.signature(fn).parameters)


def _accepted(module_type) -> dict[str, str]:
    """{name: "construction" | "call"} of what a module takes by name."""
    accepted = {}
    for where, fn in (("construction", module_type.__init__), ("call", module_type.forward)):
        for name, p in _parameters(fn).items():
            # **kwargs would accept any name: the check below would then prove nothing.
            assert p.kind is not inspect.Parameter.VAR_KEYWORD, f"{module_type.__name__}.{fn.__name__} takes **{name}"
            if name != "self":
                accepted[name] = where
    return accepted


@pytest.mark.parametrize("name", sorted(MODULES))
def test_every_option_of_the_function_is_an_option_of_its_module(name):
    """Derived from the signatures: a new option of a function that its module does not take
    fails here, so it cannot be silently dropped."""
    accepted = _accepted(MODULES[name])
    missing = [p for p in _parameters(getattr(sk, name)) if p not in accepted]
    assert not missing, f"{MODULES[name].__name__} does not take {missing}"
    for option in PER_CALL & set(accepted):
        assert option in _parameters(MODULES[name].forward), f"{option} must be a per-call option"


# A value other than the default for every keyword option, so the forwarding test below sees
# each option's own value arrive (a default could arrive by accident).
def _group():
    if not dist.is_initialized():
        dist.init_process_group("gloo", init_method=f"file://{_GROUP_FILE}", rank=0, world_size=1)
    return dist.group.WORLD


_GROUP_FILE = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"sk-loss-modules-{os.getpid()}")
NON_DEFAULT = {
    "num_classes": 3,
    "alpha": 0.3,
    "sqrt": False,
    "eps": 1e-9,
    "reduction": "sum",
    "backend": "reference",
    "precision": "ieee",
    "check_finite": False,
    "real_group": _group,
    "kernel": "matern",
    "bandwidth": 2.5,
    "nu": 2.5,
    "num_freqs": 7,
    "generator": lambda: torch.Generator().manual_seed(3),
    "structure": "orthogonal",
    "estimator": "u",
    "alpha_head": 0.6,
    "head_classes": [True, False, True],
    "alpha_rule": "log-linear",
}


@pytest.fixture
def process_group():
    yield
    if dist.is_initialized():
        dist.destroy_process_group()
    if os.path.exists(_GROUP_FILE):  # the file store may have removed it itself
        os.remove(_GROUP_FILE)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_a_module_forwards_every_option_with_its_value(name, monkeypatch, process_group, rng):
    fn_params = _parameters(getattr(sk, name))
    # The options: keyword-only parameters but t (a tensor, given per call) and class_counts
    # (CSDMLoss's positional argument).
    keyword = [
        p for p, v in fn_params.items() if v.kind is inspect.Parameter.KEYWORD_ONLY and p not in ("t", "class_counts")
    ]
    assert set(keyword) <= set(NON_DEFAULT), "give every option a test value"
    values = {p: (NON_DEFAULT[p]() if callable(NON_DEFAULT[p]) else NON_DEFAULT[p]) for p in keyword}
    construction = {p: values[p] for p in keyword if p in _parameters(MODULES[name].__init__)}
    if name == "mmd":
        construction["kernel"] = "laplacian"  # the exact mmd has closed forms for few Matérn nu
    counts = [5.0, 2.0, 9.0]
    module = MODULES[name](counts, **construction) if name == "csdm" else MODULES[name](**construction)
    seen = {}

    def recorder(*args, **kwargs):
        seen.update(kwargs, args=args)
        return torch.zeros(())

    monkeypatch.setattr(functional, FORWARDED_TO[name], recorder)
    real, syn, rl, sl = make_pair(rng)
    t = torch.randn(4, real.shape[1], dtype=real.dtype, generator=rng)
    module(real, syn, t, rl, sl) if name == "ncfd" else module(real, syn, rl, sl)
    for option in keyword:
        if option in CSDM_WEIGHT_OPTIONS:
            continue
        assert option in seen, f"{type(module).__name__} did not pass {option}"
        assert seen[option] == construction[option], (option, seen[option], construction[option])
    if name == "csdm":
        expected = sk.csdm_class_alpha(counts, **{p: construction[p] for p in CSDM_WEIGHT_OPTIONS[1:]})
        torch.testing.assert_close(seen["args"][4], expected)


@pytest.mark.parametrize("name", ["sdd", "csdm"])
def test_per_call_generator_and_bandwidth_give_the_functions_value(name, rng):
    """A driver builds one module and calls it with each iteration's generator and bandwidth."""
    real, syn, rl, sl = make_pair(rng)
    options = dict(num_freqs=64, kernel="gaussian", structure="hadamard")
    weights = dict(class_counts=[20, 20, 20], alpha_head=0.7) if name == "csdm" else {}
    if name == "csdm":
        module = sk.CSDMLoss(weights["class_counts"], alpha_head=0.7, generator=torch.Generator(), **options)
    else:
        module = sk.SDDLoss(generator=torch.Generator(), **options)
    before = module.generator.get_state()
    for seed, bandwidth in [(0, 0.7), (1, [1.0, 3.0])]:
        got = module(real, syn, rl, sl, generator=torch.Generator().manual_seed(seed), bandwidth=bandwidth)
        want = getattr(sk, name)(
            real, syn, rl, sl, generator=torch.Generator().manual_seed(seed), bandwidth=bandwidth, **weights, **options
        )
        assert torch.equal(got, want), (seed, got, want)
    assert torch.equal(module.generator.get_state(), before), "a per-call generator leaves the module's own alone"


def test_mmd_loss_takes_a_per_call_bandwidth(rng):
    real, syn, rl, sl = make_pair(rng)
    module = sk.MMDLoss(bandwidth=1.0)
    assert torch.equal(module(real, syn, rl, sl, bandwidth=0.4), sk.mmd(real, syn, rl, sl, bandwidth=0.4))
    assert module.bandwidth == 1.0


# --------------------------------------------------------------------------- torch.compile


def _compile_case(name, backend, rng):
    """(module, args) with frequencies given, so eager and compiled see the same ones."""
    real = torch.randn(40, 6, generator=rng)
    syn = torch.randn(12, 6, generator=rng)
    rl, sl = torch.arange(40) % 3, torch.arange(12) % 3
    t = torch.randn(33, 6, generator=rng)
    if name == "ncfd":
        return sk.NCFDLoss(num_classes=3, backend=backend), (real, syn, t, rl, sl)
    if name == "sdd":
        return sk.SDDLoss(num_classes=3, backend=backend), (real, syn, rl, sl, t)
    return sk.CSDMLoss([30, 8, 2], num_classes=3, alpha_rule="log-linear", backend=backend), (real, syn, rl, sl, t)


def _value_and_grad(fn, args):
    syn = args[1].detach().clone().requires_grad_(True)
    value = fn(args[0], syn, *args[2:])
    (grad,) = torch.autograd.grad(value, syn)
    return value.detach(), grad


@pytest.mark.parametrize("backend", ["reference", "cpu"])
@pytest.mark.parametrize("name", ["ncfd", "sdd", "csdm"])
def test_modules_compile_with_fullgraph_forward_and_backward(name, backend, rng):
    torch._dynamo.reset()  # an earlier compile's cache must not decide what runs here
    module, args = _compile_case(name, backend, rng)
    eager = _value_and_grad(module, args)
    compiled = _value_and_grad(torch.compile(module, fullgraph=True, backend="aot_eager"), args)
    torch.testing.assert_close(compiled[0], eager[0])
    torch.testing.assert_close(compiled[1], eager[1])


@pytest.mark.parametrize("name", ["sdd", "csdm"])
def test_modules_that_draw_compile_with_fullgraph(name, rng):
    """The issue's case: SDDLoss(num_classes=C) compiled as it is, drawing its own frequencies.
    aot_eager draws through torch's global generator, as eager does, so one seed gives one value."""
    torch._dynamo.reset()
    module = sk.SDDLoss(num_classes=3, num_freqs=64) if name == "sdd" else sk.CSDMLoss([4, 4, 4], num_freqs=64)
    real, syn, rl, sl = make_pair(rng, dtype=torch.float32)
    torch.manual_seed(5)
    eager = _value_and_grad(module, (real, syn, rl, sl))
    compiled_module = torch.compile(module, fullgraph=True, backend="aot_eager")
    torch.manual_seed(5)
    compiled = _value_and_grad(compiled_module, (real, syn, rl, sl))
    torch.testing.assert_close(compiled[0], eager[0])
    torch.testing.assert_close(compiled[1], eager[1])


@pytest.mark.parametrize(
    ("kernel", "estimator", "labels"),
    [
        ("gaussian", "v", True),
        ("gaussian", "u", True),
        ("linear", "u", True),
        ("linear", "v", False),
        ("laplacian", "v", False),
    ],
)
@pytest.mark.parametrize("reduction", ["none", "mean"])
def test_mmd_loss_compiles_with_fullgraph_forward_and_backward(kernel, estimator, labels, reduction, rng):
    """Under torch.compile mmd weights whole-batch kernel matrices by class masks (class sizes
    are data): the eager per-class loop's values up to rounding. Class 3 is absent from both
    sides (0 in the "none" reduction, and no NaN in the gradients)."""
    torch._dynamo.reset()
    real = torch.randn(40, 6, generator=rng, dtype=torch.float64) * 3.0 + 1.0
    syn = torch.randn(12, 6, generator=rng, dtype=torch.float64) * 3.0
    rl, sl = (torch.arange(40) % 3, torch.arange(12) % 3) if labels else (None, None)
    module = sk.MMDLoss(
        kernel=kernel, estimator=estimator, bandwidth=[2.0, 5.0], num_classes=4 if labels else None, reduction=reduction
    )
    compiled_module = torch.compile(module, fullgraph=True, backend="aot_eager")
    eager = _value_and_grad(lambda r, s: module(r, s, rl, sl).sum(), (real, syn))
    compiled = _value_and_grad(lambda r, s: compiled_module(r, s, rl, sl).sum(), (real, syn))
    torch.testing.assert_close(compiled[0], eager[0], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(compiled[1], eager[1], rtol=1e-10, atol=1e-12)
    if labels and reduction == "none":
        per_class = compiled_module(real, syn, rl, sl)
        torch.testing.assert_close(per_class, module(real, syn, rl, sl), rtol=1e-10, atol=1e-12)
        assert per_class[3] == 0


def test_a_draw_through_a_generator_under_fullgraph_compile_says_what_to_do(rng):
    """dynamo cannot put a torch.Generator in a graph: the loss says so and how to draw instead,
    where dynamo alone fails deep inside the draw ("Failed to convert args/kwargs to proxy")."""
    torch._dynamo.reset()
    real, syn, rl, sl = make_pair(rng, dtype=torch.float32)
    module = sk.SDDLoss(num_classes=3, num_freqs=16, generator=torch.Generator().manual_seed(0))
    with pytest.raises(Exception, match="torch.compile cannot trace a draw through generator=") as raised:
        torch.compile(module, fullgraph=True, backend="aot_eager")(real, syn, rl, sl)
    assert "torch.manual_seed" in str(raised.value) and "pass t=" in str(raised.value)
    # Without fullgraph the call runs eagerly, through the generator, as an uncompiled one does.
    torch._dynamo.reset()
    again = sk.SDDLoss(num_classes=3, num_freqs=16, generator=torch.Generator().manual_seed(0))
    compiled = torch.compile(again, backend="aot_eager")
    torch.testing.assert_close(compiled(real, syn, rl, sl), module(real, syn, rl, sl))


def test_sdd_loss_compiles_with_inductor(rng):
    """The default torch.compile backend, frequencies given (inductor draws its own random numbers)."""
    torch._dynamo.reset()
    module, args = _compile_case("sdd", "cpu", rng)
    eager = _value_and_grad(module, args)
    compiled = _value_and_grad(torch.compile(module, fullgraph=True), args)
    torch.testing.assert_close(compiled[0], eager[0])
    torch.testing.assert_close(compiled[1], eager[1])


# --------------------------------------------------------------------------- data-parallel

WORLD = 2


def _problem():
    gen = torch.Generator().manual_seed(0)
    real = torch.randn(203, 6, generator=gen, dtype=torch.float64)
    syn = torch.randn(12, 6, generator=gen, dtype=torch.float64)
    t = torch.randn(40, 6, generator=gen, dtype=torch.float64)
    return real, torch.arange(203) % 3, syn, torch.arange(12) % 3, t


def _module_losses(real, real_y, syn, syn_y, t, group):
    """Value and gradient (syn) of each spectral module built with real_group=group."""
    modules = {
        "ncfd": (sk.NCFDLoss(num_classes=3, real_group=group), lambda m, s: m(real, s, t, real_y, syn_y)),
        "sdd": (sk.SDDLoss(num_classes=3, real_group=group), lambda m, s: m(real, s, real_y, syn_y, t)),
        "csdm": (sk.CSDMLoss([90, 70, 43], real_group=group), lambda m, s: m(real, s, real_y, syn_y, t)),
    }
    out = {}
    for name, (module, call) in modules.items():
        s = syn.clone().requires_grad_(True)
        value = call(module, s)
        value.backward()
        out[name] = (value.detach(), s.grad)
    return out


def _worker(rank, init_file, result_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    real, real_y, syn, syn_y, t = _problem()
    out = _module_losses(real[rank::WORLD], real_y[rank::WORLD], syn, syn_y, t, dist.group.WORLD)
    torch.save(out, os.path.join(result_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


def test_modules_run_data_parallel_with_real_group(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    single = _module_losses(*_problem(), group=None)
    for rank in range(WORLD):
        out = torch.load(tmp_path / f"rank{rank}.pt")
        for name, (value, grad) in single.items():
            torch.testing.assert_close(out[name][0], value, rtol=1e-12, atol=1e-14)
            torch.testing.assert_close(out[name][1], grad, rtol=1e-10, atol=1e-14)


# --------------------------------------------------------------------------- the distillation driver

DRIVER_CASES = [
    ("dm", {}),
    ("mmd", {}),
    ("mmd", {"bandwidth": 3.0}),
    ("ncfm", {}),
    ("ncfm", {"structure": "hadamard"}),
    ("ncfm", {"structure": "orthogonal", "bandwidth": 2.0}),
    ("ncfm", {"learned_sampler": True}),
    ("sdd", {}),
    ("sdd", {"kernel": "laplacian"}),
    ("sdd", {"structure": "hadamard", "bandwidth": 2.0}),
    ("csdm", {}),
    ("csdm", {"alpha_rule": "log-linear", "structure": "orthogonal", "kernel": "matern"}),
]


def _direct(objective, cfg, counts, real_f, real_y, syn_f, syn_y, gen):
    """Each method's loss from the functions, as docs/distillation.md describes it: the
    bandwidth given or the median distance of the real batch, then the method's discrepancy."""
    from spectral_kernels.distill.methods import median_bandwidth

    def bandwidth():
        return cfg.bandwidth if cfg.bandwidth else median_bandwidth(real_f, gen)

    if cfg.method == "dm":
        return sk.mmd(real_f, syn_f, real_y, syn_y, kernel="linear", num_classes=4)
    if cfg.method == "mmd":
        return sk.mmd(real_f, syn_f, real_y, syn_y, bandwidth=bandwidth(), num_classes=4)
    if cfg.method == "ncfm":
        if cfg.learned_sampler:
            t = objective.sampler(generator=gen)
        else:
            draw = dict(bandwidth=bandwidth(), generator=gen, dtype=real_f.dtype)
            if cfg.structure == "hadamard":
                t = sk.hadamard_frequencies("gaussian", cfg.num_freqs, real_f.shape[1], **draw)
            else:
                t = sk.sample_frequencies("gaussian", cfg.num_freqs, real_f.shape[1], structure=cfg.structure, **draw)
        return sk.ncfd(real_f, syn_f, t, real_y, syn_y, num_classes=4)
    spectral = dict(
        kernel=cfg.kernel, bandwidth=bandwidth(), num_freqs=cfg.num_freqs, generator=gen, structure=cfg.structure
    )
    if cfg.method == "sdd":
        return sk.sdd(real_f, syn_f, real_y, syn_y, num_classes=4, **spectral)
    return sk.csdm(
        real_f,
        syn_f,
        real_y,
        syn_y,
        class_counts=counts,
        alpha_head=cfg.alpha_head,
        alpha_rule=cfg.alpha_rule,
        num_classes=4,
        **spectral,
    )


@pytest.mark.parametrize(("method", "options"), DRIVER_CASES, ids=[f"{m}-{o}" for m, o in DRIVER_CASES])
def test_the_driver_objective_equals_the_functions(method, options, rng):
    """Two iterations of one Objective against direct calls with the same generator: equal
    values, equal gradients, and the same draws taken from the generator."""
    from spectral_kernels.distill.config import DistillConfig
    from spectral_kernels.distill.methods import Objective

    cfg = DistillConfig(method=method, num_freqs=64, alpha_head=0.7, **options)
    counts = torch.tensor([40.0, 20.0, 10.0, 5.0])
    objective = Objective(cfg, counts, 16, 4)
    for seed in (0, 1):
        real_f = torch.randn(48, 16, generator=rng) * 3.0
        real_y = torch.arange(48) % 4
        syn_f = torch.randn(8, 16, generator=rng).requires_grad_(True)
        syn_y = torch.arange(8) % 4
        gen_a, gen_b = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
        got = objective.loss(real_f, real_y, syn_f, syn_y, gen_a)
        want = _direct(objective, cfg, counts, real_f, real_y, syn_f, syn_y, gen_b)
        assert torch.equal(got, want), (got, want)
        assert torch.equal(gen_a.get_state(), gen_b.get_state()), "a different number of draws"
        (got_grad,) = torch.autograd.grad(got, syn_f)
        (want_grad,) = torch.autograd.grad(want, syn_f)
        assert torch.equal(got_grad, want_grad)
