"""Every phase of a distillation run on --device, under --amp and --compile (distill/hardware.py).

There is no GPU here, so the phases run on the `meta` device (tensors with shapes and no
values) under a hook on every module call that asserts each parameter, buffer and tensor input
is on the requested device; a phase that leaves its network or a batch on the CPU fails the
assertion at its first forward. Meta tensors hold no values, so the hook stops a phase (raises
_Enough) once it has seen enough calls, before any value is read back.
"""

import collections
import json

import pytest
import torch
from torch._dynamo import register_backend
from torch._dynamo.backends.common import aot_autograd

from spectral_kernels.distill import evaluation as evaluate
from spectral_kernels.distill import hardware, loop, pool
from spectral_kernels.distill.config import ConfigError, DistillConfig
from spectral_kernels.distill.data import load_dataset
from spectral_kernels.distill.hardware import COMPILE_BACKEND_ENV, CompileError, Hardware
from spectral_kernels.distill.methods import Objective
from spectral_kernels.distill.models import ConvNet

META = torch.device("meta")
TINY = dict(dataset="digits", ipc=1, width=4, batch_real=4, num_freqs=16, quiet=True, seed=0)


class _Enough(Exception):
    """The hook saw the calls it was armed for, every one on the requested device."""


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture
def only_on():
    """arm(device, convolutions): from then on every module call must have its parameters,
    buffers and tensor inputs on `device`; the `convolutions`-th Conv2d call raises _Enough."""
    state = {"device": None}

    def hook(module, args):
        if state["device"] is None:
            return
        tensors = [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]
        tensors += [(f"input {i}", a) for i, a in enumerate(args) if isinstance(a, torch.Tensor)]
        for name, tensor in tensors:
            assert tensor.device == state["device"], (
                f"{type(module).__name__} {name} is on {tensor.device}, not {state['device']}"
            )
        if isinstance(module, torch.nn.Conv2d):
            state["seen"] += 1
            if state["seen"] >= state["limit"]:
                raise _Enough

    handle = torch.nn.modules.module.register_module_forward_pre_hook(hook)

    def arm(device, convolutions):
        state.update(device=device, limit=convolutions, seen=0)

    yield arm
    handle.remove()


def test_pool_training_runs_on_the_device(digits, only_on):
    config = DistillConfig(**TINY, net_pool=1, pool_epochs=1, device="meta")
    only_on(META, convolutions=3)  # three training batches
    with pytest.raises(_Enough):
        pool._train_pool(config, digits, seed_of=lambda k: k)


def test_evaluation_trains_and_tests_on_the_device(digits, only_on, tmp_path, monkeypatch):
    run = loop.distill(DistillConfig(**TINY, method="random", num_eval=0, out=str(tmp_path / "run")))
    monkeypatch.setattr(hardware, "device_problem", lambda name, present=True: None)  # meta, for this test
    only_on(META, convolutions=1)
    with pytest.raises(_Enough):  # training, through the run's evaluation with --device meta
        evaluate.evaluate_run(run, dataset=digits, epochs=1, num_eval=1, device="meta")
    only_on(META, convolutions=1)
    with pytest.raises(_Enough):  # testing (no training epochs: straight to the test set)
        evaluate.train_and_test(
            digits.train_x[:20], digits.train_y[:20], digits, seed=0, epochs=0, width=4, hardware=Hardware(META)
        )


@pytest.mark.filterwarnings("ignore:.*copying from a non-meta parameter")  # meta holds no values to load
def test_matching_runs_on_the_device(digits, only_on, tmp_path, monkeypatch):
    """Data, networks (the feature network and the calibration's trained one), the learned
    sampler and the optimiser's parameters on the device, and both forwards of a step there."""
    make = lambda: ConvNet(1, 10, 8, width=4).state_dict()
    monkeypatch.setattr(loop, "network_pool", lambda *a, **k: [{"init": make(), "trained": make()}])
    config = DistillConfig(
        **TINY, method="ncfm", learned_sampler=True, net_pool=1, calib_weight=0.5, device="meta", out=str(tmp_path)
    )
    run = loop._set_up(config, digits, None, 0, 1, resume=False)
    placed = [*run.real, run.syn, run.syn_y, *run.net.parameters(), *run.trained.parameters()]
    placed += [p for group in run.optimizer.param_groups for p in group["params"]]
    assert len(run.optimizer.param_groups[0]["params"]) > 1  # the sampler's parameters are in it
    assert all(t.device == META for t in placed), [t.device for t in placed]
    only_on(META, convolutions=2)  # the real and the synthetic batch's features
    with pytest.raises(_Enough):
        loop._step(run, 0, 0.0)


def test_every_phase_is_recorded_in_the_metrics(tmp_path, monkeypatch):
    monkeypatch.setenv("SPECTRAL_KERNELS_CACHE", str(tmp_path / "cache"))
    config = DistillConfig(**TINY, iterations=2, net_pool=1, pool_epochs=1, num_eval=1, eval_epochs=1, amp="bf16")
    run = loop.distill(DistillConfig(**{**config.to_dict(), "out": str(tmp_path / "run")}))
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    phases = [r for r in rows if r.get("event") == "phase"]
    expected = {"event": "phase", "device": "cpu", "amp": "bf16", "compile": False}
    assert phases == [dict(expected, phase=p) for p in ("pool", "matching", "evaluation")]
    # A second run finds the pool in the cache and says so.
    again = loop.distill(DistillConfig(**{**config.to_dict(), "out": str(tmp_path / "again"), "num_eval": 0}))
    rows = [json.loads(line) for line in (again / "metrics.jsonl").read_text().splitlines()]
    assert rows[0] == {"event": "phase", "phase": "pool", "loaded": "cache"}


# ----------------------------------------------------------------------------- --amp


@pytest.fixture
def dtypes(monkeypatch):
    """Records the dtype of every convolution's output and of every loss's inputs."""
    seen = collections.defaultdict(set)
    handle = torch.nn.modules.module.register_module_forward_hook(
        lambda m, args, out: seen["conv"].add(out.dtype) if isinstance(m, torch.nn.Conv2d) else None
    )
    cross_entropy, objective_loss = torch.nn.functional.cross_entropy, Objective.loss

    def recording_ce(logits, *args, **kwargs):
        seen["cross-entropy"].add(logits.dtype)
        return cross_entropy(logits, *args, **kwargs)

    def recording_loss(self, real_f, real_y, syn_f, *args, **kwargs):
        seen["features"].update({real_f.dtype, syn_f.dtype})
        loss = objective_loss(self, real_f, real_y, syn_f, *args, **kwargs)
        seen["loss"].add(loss.dtype)
        return loss

    monkeypatch.setattr(torch.nn.functional, "cross_entropy", recording_ce)
    monkeypatch.setattr(Objective, "loss", recording_loss)
    yield seen
    handle.remove()


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_amp_runs_every_network_in_low_precision_and_every_loss_in_float32(amp, dtypes, tmp_path, monkeypatch):
    """fp16 is refused on a CPU; allowed here (CPU autocast can do it) to exercise the
    GradScaler path the GPUs take, whose state the checkpoint keeps."""
    monkeypatch.setenv("SPECTRAL_KERNELS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(hardware, "amp_problem", lambda device, amp: None)
    config = DistillConfig(
        **TINY,
        method="csdm",
        iterations=2,
        net_pool=1,
        pool_epochs=1,
        calib_weight=0.5,
        num_eval=1,
        eval_epochs=1,
        amp=amp,
        out=str(tmp_path / "run"),
    )
    run = loop.distill(config)
    low = {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    assert dtypes["conv"] == {low}
    assert dtypes["features"] == dtypes["loss"] == dtypes["cross-entropy"] == {torch.float32}
    scaler = torch.load(run / "checkpoint.pt")["scaler"]
    assert (scaler is not None and scaler["scale"] > 0) == (amp == "fp16")
    assert json.loads((run / "eval.json").read_text())["accuracy_mean"] >= 0


def test_without_amp_every_network_runs_in_float32(dtypes, tmp_path, monkeypatch):
    monkeypatch.setenv("SPECTRAL_KERNELS_CACHE", str(tmp_path / "cache"))
    loop.distill(
        DistillConfig(
            **TINY, iterations=1, net_pool=1, pool_epochs=1, num_eval=1, eval_epochs=1, out=str(tmp_path / "run")
        )
    )
    assert dtypes["conv"] == dtypes["cross-entropy"] == {torch.float32}


@pytest.fixture
def nan_under_autocast():
    """Convolutions return NaN whenever autocast is on (and only then)."""
    handle = torch.nn.modules.module.register_module_forward_hook(
        lambda m, args, out: (
            out * float("nan") if isinstance(m, torch.nn.Conv2d) and torch.is_autocast_enabled("cpu") else None
        )
    )
    yield
    handle.remove()


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_a_nan_under_reduced_precision_stops_every_phase(amp, digits, nan_under_autocast, tmp_path, monkeypatch):
    """fp16 (refused on a CPU, allowed here) takes the GradScaler, which skips every step whose
    gradients are non-finite: the weights stay finite, so the NaN must be caught from the loss."""
    monkeypatch.setenv("SPECTRAL_KERNELS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(hardware, "amp_problem", lambda device, amp: None)
    train = lambda amp: evaluate.train_convnet(
        digits.train_x[:64],
        digits.train_y[:64],
        digits,
        seed=0,
        epochs=1,
        width=4,
        hardware=Hardware(amp=amp),
        what="pool network 0",
    )
    train("off")  # the same training in float32 is fine
    loss_nan = rf"pool network 0, epoch 0: the training loss became non-finite under --amp {amp}; --amp off may help"
    with pytest.raises(loop.DivergedError, match=loss_nan):
        train(amp)
    # Each phase of a run: pool training, matching, evaluation (of a run made in float32).
    config = dict(**TINY, iterations=2, num_eval=0, amp=amp)
    with pytest.raises(loop.DivergedError, match=rf"pool network 0, epoch 0: .*non-finite under --amp {amp}"):
        loop.distill(DistillConfig(**config, net_pool=1, pool_epochs=1, out=str(tmp_path / "pool")))
    with pytest.raises(loop.DivergedError, match="iteration 0: the synthetic images' features are non-finite"):
        loop.distill(DistillConfig(**config, out=str(tmp_path / "matching")))
    run = loop.distill(DistillConfig(**{**config, "amp": "off"}, out=str(tmp_path / "run")))
    with pytest.raises(loop.DivergedError, match=rf"evaluation network 0, epoch 0: .*non-finite under --amp {amp}"):
        evaluate.evaluate_run(run, num_eval=1, epochs=1, amp=amp, quiet=True)


def test_weights_made_non_finite_by_a_finite_loss_stop_training(digits, monkeypatch):
    """A step with a finite loss that leaves NaN weights (here: put there after the step) is
    caught at the epoch's end, named as the weights, with the hint for float32."""
    step = evaluate.backward_and_step

    def poisoning(loss, opt, scaler):
        step(loss, opt, scaler)
        opt.param_groups[0]["params"][0].detach().fill_(float("nan"))

    monkeypatch.setattr(evaluate, "backward_and_step", poisoning)
    with pytest.raises(
        loop.DivergedError,
        match=r"^evaluation network 2, epoch 0: the network's weights became non-finite; check the images it trains",
    ):
        evaluate.train_convnet(
            digits.train_x[:64], digits.train_y[:64], digits, seed=0, epochs=1, width=4, what="evaluation network 2"
        )


# ----------------------------------------------------------------------------- --device


def test_device_checks_name_the_device(monkeypatch):
    check = lambda **kw: DistillConfig(**kw).validate()
    for bad, words in [
        ("tpu", "must be a torch device"),
        ("meta", "holds no values"),
        ("cuda:1", "no CUDA device is available"),
    ]:
        with pytest.raises(ConfigError, match=words):
            check(device=bad)
    # One GPU present (pretended): cuda:1 is beyond it, an old GPU has no bf16, fp16 is no CPU's.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    with pytest.raises(ConfigError, match=r"--device cuda:1: there are 1 CUDA device\(s\), numbered from 0"):
        check(device="cuda:1")
    assert check(device="cuda:0", amp="fp16").device == "cuda:0"
    with pytest.raises(ConfigError, match=r"--amp bf16: device cuda:0 \(sm_75\) cannot compute in bfloat16"):
        check(device="cuda:0", amp="bf16")
    with pytest.raises(ConfigError, match="--amp fp16: device cpu"):
        check(device="cpu", amp="fp16")
    # A CPU without bfloat16 arithmetic (an AVX2 machine, pretended): emulated bf16 is slower than float32.
    monkeypatch.setattr(hardware, "cpu_has_bf16", lambda: False)
    with pytest.raises(ConfigError, match=r"--amp bf16: device cpu, this CPU \(\w+\), has no bfloat16 arithmetic"):
        check(device="cpu", amp="bf16")
    monkeypatch.setattr(hardware, "cpu_has_bf16", lambda: True)
    assert check(device="cpu", amp="bf16").amp == "bf16"
    with pytest.raises(ConfigError, match="--amp must be one of off, bf16, fp16, got 'fp32'"):
        check(amp="fp32")
    # A stored config read back elsewhere: only the name is checked.
    assert DistillConfig(device="cuda:7").validate(check_device=False).device == "cuda:7"


# ----------------------------------------------------------------------------- --compile

RUNS = collections.Counter()


@register_backend(name="spectral_kernels_test_recording")
def _recording_backend(gm, example_inputs):
    def run(*args):
        RUNS["compiled calls"] += 1
        return gm.forward(*args)

    return run


@register_backend(name="spectral_kernels_test_failing")
def _failing_backend(gm, example_inputs):
    raise RuntimeError("forced compiler failure\nwith a second line")


def _forward_as_traced(gm, example_inputs):
    return gm.forward


def _failing_compiler(gm, example_inputs):
    raise RuntimeError("forced backward compiler failure\nwith a second line")


def _failing_at_run(gm, example_inputs):
    def run(*args):
        raise RuntimeError("a backward that fails when it runs, not when it compiles")

    return run


# The forward compiles; the backward graph, which torch compiles lazily at the first .backward()
# unless told otherwise, fails to compile (or, for the last, compiles and fails when it runs).
register_backend(name="spectral_kernels_test_failing_backward")(
    aot_autograd(fw_compiler=_forward_as_traced, bw_compiler=_failing_compiler)
)
register_backend(name="spectral_kernels_test_backward_fails_at_run")(
    aot_autograd(fw_compiler=_forward_as_traced, bw_compiler=_failing_at_run)
)


def test_compile_runs_every_phase_through_the_compiler(tmp_path, monkeypatch):
    """A backend that counts the calls of what it compiled; the count read at each phase's
    record shows every phase called compiled code."""
    # No dynamo reset: earlier tests in the process compiled the same ConvNet under other
    # backends, and each (architecture, backend) has a compiled program of its own (hardware._program).
    monkeypatch.setenv(COMPILE_BACKEND_ENV, "spectral_kernels_test_recording")
    monkeypatch.setenv("SPECTRAL_KERNELS_CACHE", str(tmp_path / "cache"))
    at_phase = []
    phase = Hardware.phase
    monkeypatch.setattr(
        Hardware, "phase", lambda self, name: at_phase.append(RUNS["compiled calls"]) or phase(self, name)
    )
    config = DistillConfig(
        **TINY, iterations=2, net_pool=1, pool_epochs=1, calib_weight=0.5, num_eval=1, eval_epochs=1, compile=True
    )
    run = loop.distill(DistillConfig(**{**config.to_dict(), "out": str(tmp_path / "run")}))
    at_phase.append(RUNS["compiled calls"])
    pool_calls, matching_calls, evaluation_calls = (b - a for a, b in zip(at_phase, at_phase[1:]))
    assert pool_calls >= 10 and matching_calls >= 2 * 3 and evaluation_calls >= 2, at_phase
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(r["compile"] is True for r in rows if r.get("event") == "phase")


@pytest.mark.parametrize(
    "backend, first_error",
    [
        ("spectral_kernels_test_failing", "RuntimeError: forced compiler failure"),
        ("spectral_kernels_test_failing_backward", "RuntimeError: forced backward compiler failure"),
    ],
    ids=["forward", "backward"],
)
def test_a_compiler_failure_is_one_error_and_loses_nothing(tmp_path, monkeypatch, backend, first_error):
    """Interrupted after its checkpoint, resumed with --compile on a failing compiler (failing on
    the forward, or only on the backward of the matching step): a CompileError naming the
    compiler's own first error, the run's files untouched; resumed again without --compile, it
    ends with exactly the images of an uninterrupted run."""
    base = dict(TINY, iterations=4, checkpoint_every=2, num_eval=0)
    whole = loop.distill(DistillConfig(**base, out=str(tmp_path / "whole")))

    def interrupt(iteration):
        if iteration == 3:
            raise KeyboardInterrupt

    cut = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        loop.distill(DistillConfig(**base, out=str(cut)), on_iteration=interrupt)
    before = {p.name: p.read_bytes() for p in cut.iterdir() if p.is_file() and p.name != ".lock"}
    monkeypatch.setenv(COMPILE_BACKEND_ENV, backend)
    with pytest.raises(CompileError) as info:
        loop.distill(DistillConfig(**base, compile=True, out=str(cut)), resume=True)
    message = str(info.value)
    assert "--compile" in message and first_error in message and "--resume" in message
    assert "second line" not in message and "\n" not in message
    after = {p.name: p.read_bytes() for p in cut.iterdir() if p.is_file() and p.name != ".lock"}
    assert after["checkpoint.pt"] == before["checkpoint.pt"]
    monkeypatch.delenv(COMPILE_BACKEND_ENV)
    resumed = loop.distill(DistillConfig(**base, out=str(cut)), resume=True)
    assert torch.equal(torch.load(resumed / "synthetic.pt")["images"], torch.load(whole / "synthetic.pt")["images"])


def test_a_backward_compiler_failure_in_pool_training_and_evaluation_is_one_error(tmp_path, monkeypatch):
    """A compiler that fails only on the backward graph: pool training (a fresh run) and the
    evaluation of a finished run each stop with CompileError naming its first error, before
    anything is written: no pool in the cache, the finished run's files as they were, and the
    evaluation's advice is to evaluate again without --compile (not to --resume a finished run)."""
    monkeypatch.setenv("SPECTRAL_KERNELS_CACHE", str(tmp_path / "cache"))
    done = loop.distill(DistillConfig(**TINY, iterations=1, num_eval=0, out=str(tmp_path / "done")))
    before = {p.name: p.read_bytes() for p in done.iterdir() if p.is_file() and p.name != ".lock"}
    monkeypatch.setenv(COMPILE_BACKEND_ENV, "spectral_kernels_test_failing_backward")
    fresh = DistillConfig(**TINY, iterations=1, net_pool=1, pool_epochs=1, num_eval=0, compile=True)
    with pytest.raises(CompileError, match="RuntimeError: forced backward compiler failure") as info:
        loop.distill(DistillConfig(**{**fresh.to_dict(), "out": str(tmp_path / "pooled")}))
    assert "\n" not in str(info.value) and "second line" not in str(info.value)
    assert not list((tmp_path / "cache" / "pools").glob("*.pt"))  # nothing cached (a missing folder globs nothing)
    assert not (tmp_path / "pooled" / "synthetic.pt").exists()
    with pytest.raises(CompileError, match="RuntimeError: forced backward compiler failure") as info:
        evaluate.evaluate_run(done, num_eval=1, epochs=1, compile=True, quiet=True)
    message = str(info.value)
    assert "--no-compile" in message and "evaluate" in message and "--resume" not in message, message
    after = {p.name: p.read_bytes() for p in done.iterdir() if p.is_file() and p.name != ".lock"}
    # As for a forward failure, only the log moved: metrics.jsonl gained the evaluation's "phase"
    # row (written as the phase starts) and the manifest its new hash; every row before it stays.
    logs = ("metrics.jsonl", "manifest.json")
    assert {k: v for k, v in after.items() if k not in logs} == {k: v for k, v in before.items() if k not in logs}
    assert after["metrics.jsonl"].startswith(before["metrics.jsonl"])
    assert not (done / "eval.json").exists()
    # The evaluation that ends a distillation (random selection: no matching step to fail first)
    # comes after synthetic.pt is saved, so the advice is to evaluate that, not to resume.
    with pytest.raises(CompileError, match="forced backward compiler failure") as info:
        loop.distill(
            DistillConfig(
                **TINY, method="random", num_eval=1, eval_epochs=1, compile=True, out=str(tmp_path / "random")
            )
        )
    assert "the distilled images are saved" in str(info.value) and "--no-compile" in str(info.value)
    assert (tmp_path / "random" / "synthetic.pt").is_file() and not (tmp_path / "random" / "eval.json").exists()


def test_a_backward_that_fails_when_it_runs_is_not_a_compile_error(tmp_path, monkeypatch):
    """Only compiler failures become CompileError: an error raised while the compiled backward
    runs reaches the caller as it was raised."""
    monkeypatch.setenv(COMPILE_BACKEND_ENV, "spectral_kernels_test_backward_fails_at_run")
    net = ConvNet(1, 10, (8, 8), width=4)
    forward = Hardware(compile=True).compiled(net)
    loss = forward(torch.randn(2, 1, 8, 8)).sum()
    with pytest.raises(RuntimeError, match="fails when it runs") as info:
        loss.backward()
    assert not isinstance(info.value, CompileError)


# ----------------------------------------------------------------------------- the CLI


def test_the_cli_passes_the_flags_and_evaluate_and_show_use_them(tmp_path, capsys):
    from spectral_kernels.cli import main, parse_distill

    config = parse_distill(["distill", "--amp", "bf16", "--compile", "--device", "cpu:0"])
    assert (config.amp, config.compile, config.device) == ("bf16", True, "cpu:0")
    assert parse_distill(["distill", "--no-compile"]).compile is False
    run = loop.distill(DistillConfig(**TINY, iterations=1, num_eval=0, out=str(tmp_path / "run")))
    assert main(["evaluate", str(run), "--num-eval", "1", "--eval-epochs", "1", "--amp", "bf16"]) == 0
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["amp"] for r in rows if r.get("event") == "phase"] == ["off", "bf16"]  # matching, then evaluation
    assert json.loads((run / "config.json").read_text())["amp"] == "off"  # the run's own options stay
    capsys.readouterr()
    assert main(["show", str(run)]) == 0
    shown = capsys.readouterr().out
    assert "matching: on cpu, amp off" in shown and "evaluation: on cpu, amp bf16" in shown
