"""One test per way the library or the CLI used to betray a user's trust: deleting files it did
not create, crashing, running code from a file, returning a silent wrong number. Each test
reproduces the original symptom (it fails on the code before the fix). The catalogue of bad
inputs and their one-line errors is tests/test_bad_input.py."""

import gc
import json
import os
import pickle
import signal
import subprocess
import time

import pytest
import torch

import spectral_kernels as sk
from spectral_kernels import ops
from spectral_kernels.classes import class_index
from spectral_kernels.distill.config import DistillConfig
from spectral_kernels.distill.evaluation import evaluate_run
from spectral_kernels.distill.files import RunFileError
from spectral_kernels.distill.loop import distill

from .conftest import CLI_SCRIPT, FAST_CLI, FUSED_BACKENDS, assert_one_line_error, hold_run_lock, run_cli

# ----------------------------------------------------------------------------- data loss


def _user_folder(path):
    path.mkdir()
    (path / "thesis.tex").write_text("years of work")
    (path / "data").mkdir()
    (path / "data" / "results.csv").write_text("1,2,3")
    return sorted(p.relative_to(path) for p in path.rglob("*"))


def test_overwrite_never_empties_a_folder_that_is_not_a_run(tmp_path):
    """Was: --overwrite deleted DIR whatever it held, and --out '' emptied the current folder."""
    before = _user_folder(tmp_path / "mine")
    proc = run_cli("distill", *FAST_CLI, "--out", tmp_path / "mine", "--overwrite")
    assert_one_line_error(proc, "holds no run", "never written into")
    proc = run_cli("distill", *FAST_CLI, "--out", "", "--overwrite", cwd=tmp_path / "mine")
    assert_one_line_error(proc, "--out", "''")
    proc = run_cli("distill", *FAST_CLI, "--out", ".", "--overwrite", cwd=tmp_path / "mine")
    assert_one_line_error(proc, "holds no run")
    assert sorted(p.relative_to(tmp_path / "mine") for p in (tmp_path / "mine").rglob("*")) == before


def test_overwrite_checks_every_option_before_removing_the_old_run(tmp_path):
    """Was: with --overwrite and a data root that was then rejected, the old run was already gone."""
    run = tmp_path / "run"
    assert run_cli("distill", *FAST_CLI, "--out", run).returncode == 0
    files = {p.name: p.read_bytes() for p in run.iterdir()}
    proc = run_cli(
        "distill", *FAST_CLI, "--dataset", "cifar10", "--data-root", tmp_path / "nowhere", "--out", run, "--overwrite"
    )
    assert_one_line_error(proc, "does not exist")
    assert {p.name: p.read_bytes() for p in run.iterdir()} == files


def test_overwrite_replaces_a_run_but_keeps_files_the_run_did_not_write(tmp_path):
    run = tmp_path / "run"
    assert run_cli("distill", *FAST_CLI, "--out", run).returncode == 0
    (run / "notes.txt").write_text("mine")
    old_config = (run / "config.json").read_text()
    assert run_cli("distill", *FAST_CLI, "--seed", "3", "--out", run, "--overwrite").returncode == 0
    assert (run / "notes.txt").read_text() == "mine"
    assert json.loads((run / "config.json").read_text())["seed"] == 3 != json.loads(old_config)["seed"]


def _start_long_run(run, *extra):
    return subprocess.Popen(
        [
            CLI_SCRIPT,
            "distill",
            *FAST_CLI,
            "--iterations",
            "100000",
            "--checkpoint-every",
            "1",
            "--out",
            str(run),
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(path, proc, timeout=120, poll=0.05):
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(poll)


def test_a_second_process_on_the_same_run_is_refused_naming_the_first(tmp_path):
    """Was: two runs started on one --out both succeeded and left a mix of their files."""
    run = tmp_path / "run"
    first = _start_long_run(run)
    try:
        _wait_for(run / "checkpoint.pt", first)
        for flag in ("--overwrite", "--resume"):
            assert_one_line_error(
                run_cli("distill", *FAST_CLI, "--out", run, flag), "in use by another", f"pid {first.pid}"
            )
        assert first.poll() is None  # undisturbed
    finally:
        first.kill()
        first.wait()


def test_a_killed_run_frees_its_folder_and_resumes_to_the_uninterrupted_result(tmp_path):
    """kill -9 leaves no stale lock (the OS drops a flock with its holder), and --resume gives the
    synthetic set of an uninterrupted run bit for bit."""
    # An iteration here takes a few milliseconds, so the run must be long enough that the kill
    # (at most one poll after the first checkpoint) lands well before the end: with 40
    # iterations a fast CI machine finished the whole run before the signal arrived.
    options = [*FAST_CLI, "--iterations", "600", "--checkpoint-every", "1", "--method", "sdd"]
    assert run_cli("distill", *options, "--out", tmp_path / "whole").returncode == 0
    cut = tmp_path / "cut"
    proc = subprocess.Popen([CLI_SCRIPT, "distill", *options, "--out", str(cut)], stderr=subprocess.PIPE)
    try:
        # Stopped (SIGSTOP) the moment the first checkpoint shows, so a fast machine cannot
        # finish the run between the poll and the kill; the kill then lands on a stopped process.
        _wait_for(cut / "checkpoint.pt", proc, poll=0.002)
        proc.send_signal(signal.SIGSTOP)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not (cut / "synthetic.pt").exists(), "the run finished before the kill: make it longer"
    assert run_cli("distill", *options, "--out", cut, "--resume").returncode == 0
    whole = torch.load(tmp_path / "whole" / "synthetic.pt", weights_only=True)
    resumed = torch.load(cut / "synthetic.pt", weights_only=True)
    assert torch.equal(whole["images"], resumed["images"])


def test_writes_are_fsynced_before_they_replace_a_file(tmp_path, monkeypatch):
    """Checkpoints and results are made durable: the file is fsync'ed before the rename and
    the folder after it, so a power cut leaves the old file or the new one."""
    from spectral_kernels.distill import files

    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(files.os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(files.os, "replace", lambda a, b: (events.append("replace"), real_replace(a, b))[1])
    files.atomic_save({"a": torch.ones(2)}, tmp_path / "x.pt")
    assert events == ["fsync", "replace", "fsync"]
    assert [p.name for p in tmp_path.iterdir()] == ["x.pt"]  # no temporary file left


# ----------------------------------------------------------------------------- crashes


def test_the_cpu_op_refuses_a_perm_that_is_not_a_permutation():
    """Was: a duplicated row was accepted and gave wrong gradients (two threads wrote one row)."""
    x, t = torch.randn(6, 3), torch.randn(4, 3)
    perm, offsets = torch.tensor([0, 1, 2, 3, 4, 4]), torch.tensor([0, 3, 6])
    for call in (
        lambda: torch.ops.spectral_kernels.ecf_sums(x, t, perm, offsets, "ieee"),
        lambda: torch.ops.spectral_kernels.ecf_sums_grad_x(torch.ones(2, 2, 4), x, t, perm, offsets, "ieee"),
    ):
        with pytest.raises(ValueError, match=r"perm must be a permutation.*perm\[4\] = perm\[5\] = 4"):
            call()


def test_the_cpu_op_checks_offsets_before_allocating_by_them():
    """Was: offsets = [0, 10^12, N] built a list of 4 billion tiles (~100 GB) before the check.
    That bug takes minutes or runs out of memory; the bound is loose so that a garbage-collection
    pass or a busy machine cannot fail the test (the collector is off while it is timed)."""
    x, t = torch.randn(6, 3), torch.randn(4, 3)
    gc.disable()
    try:
        began = time.perf_counter()
        with pytest.raises(ValueError, match="offsets must be non-decreasing"):
            torch.ops.spectral_kernels.ecf_sums(x, t, torch.arange(6), torch.tensor([0, 10**12, 6]), "ieee")
        assert time.perf_counter() - began < 10.0
    finally:
        gc.enable()


@pytest.mark.skipif("triton" not in sk.available_backends(), reason="triton is not importable")
def test_the_triton_kernels_stay_in_bounds_whatever_perm_and_offsets_hold():
    """Was: the backward left rows of its row -> class map unset for a perm with a repeated
    entry, read G out of bounds and segfaulted or returned values like -3.8e30. On a GPU the
    values are not checked (a host sync); the kernels must stay in bounds all the same."""
    from spectral_kernels.ops import triton_ecf

    x, t = torch.randn(40, 5), torch.randn(9, 5)
    grad = torch.randn(3, 2, 9)
    bad_layouts = [
        (torch.tensor([0] * 40), torch.tensor([0, 10, 30, 40])),  # every entry the same row
        (torch.arange(40) * 1000 - 7, torch.tensor([0, 10, 30, 40])),  # rows far out of range
        (torch.arange(40), torch.tensor([5, -(10**9), 10**12, 3])),  # offsets anything but a CSR index
    ]
    for perm, offsets in bad_layouts:
        sums = triton_ecf._forward(x, t, perm, offsets, "ieee")
        dx, dt = triton_ecf._backward(grad, x, t, perm, offsets, "ieee", True, True)
        for value in (sums, dx, dt):
            assert bool(torch.isfinite(value).all()) and float(value.abs().max()) < 1e4
        # The op itself (CPU tensors: the interpreter) checks the values and names the problem.
        with pytest.raises(ValueError, match="perm|offsets"):
            torch.ops.spectral_kernels.ecf_sums_triton(x, t, perm, offsets, "ieee")


# ----------------------------------------------------------------------------- code execution


class _RunsCode:
    """Unpickling this runs a shell command: what a crafted checkpoint would carry."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _fast_config(out, **kw):
    return DistillConfig(
        **{
            **dict(
                dataset="digits",
                ipc=1,
                iterations=4,
                width=8,
                batch_real=4,
                num_eval=0,
                quiet=True,
                checkpoint_every=2,
                out=str(out),
            ),
            **kw,
        }
    )


@pytest.mark.parametrize("target", ["checkpoint.pt", "synthetic.pt", "net_pool.pt"])
def test_a_crafted_run_file_cannot_run_code_even_when_torch_is_told_to_trust_files(tmp_path, monkeypatch, target):
    """Was: with TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 (common in research set-ups) torch.load's
    default unpickled anything, and --resume or evaluate ran the file's code."""
    config = _fast_config(tmp_path / "run", net_pool=1, pool_epochs=1)
    run = distill(config)
    if target != "synthetic.pt":  # a run interrupted after its checkpoint of iteration 2

        def interrupt(iteration):
            if iteration == 3:
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            distill(config, overwrite=True, on_iteration=interrupt)
    marker = tmp_path / "pwned"
    with open(run / target, "wb") as f:
        pickle.dump({"iteration": 0, "images": _RunsCode(marker)}, f)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(RunFileError, match=target):
        if target == "synthetic.pt":
            evaluate_run(run, num_eval=1, epochs=1)
        else:
            distill(config, resume=True)
    assert not marker.exists()


# ----------------------------------------------------------------------------- silent wrong numbers


def test_a_nan_frequency_is_an_error_not_a_dropped_term():
    """Was: NCFD quietly dropped a NaN frequency (safe_sqrt(NaN) = 0) and returned a plausible value."""
    real, syn, t = torch.randn(30, 4), torch.randn(12, 4) + 0.3, torch.randn(16, 4)
    t[3, 1] = float("nan")
    for call in (
        lambda **kw: sk.ncfd(real, syn, t, **kw),
        lambda **kw: sk.sdd(real, syn, t=t, **kw),
        lambda **kw: sk.csdm(
            real,
            syn,
            torch.zeros(30, dtype=torch.long),
            torch.zeros(12, dtype=torch.long),
            class_counts=[30],
            t=t,
            **kw,
        ),
    ):
        with pytest.raises(ValueError, match=r"t contains a non-finite value \(nan at index \(3, 1\)\)"):
            call()
        assert torch.isnan(call(check_finite=False))  # unchecked: NaN shows, never a number


def test_nan_features_never_score_a_perfect_match():
    """Was: NaN features with check_finite=False, or under torch.compile (where value checks
    are skipped), gave NCFD = 0, the score of identical sets."""
    real, syn, t = torch.randn(30, 4), torch.randn(12, 4), torch.randn(16, 4)
    syn[0, 0] = float("nan")
    assert torch.isnan(sk.ncfd(real, syn, t, check_finite=False))
    compiled = torch.compile(lambda a, b, c: sk.ncfd(a, b, c), fullgraph=True, backend="aot_eager")
    assert torch.isnan(compiled(real, syn, t))


@pytest.mark.parametrize(
    "kwargs,dtype,words",
    [
        (dict(bandwidth=1e-40), torch.float32, ["bandwidth=1e-40", "largest finite", "4.7e-38"]),
        (dict(bandwidth=1e40), torch.float32, ["bandwidth=1e+40", "round to 0", "8.51e+37"]),
        (dict(bandwidth=1e-4), torch.float16, ["bandwidth=0.0001", "float16"]),
        (dict(kernel="matern", nu=0.005), torch.float32, ["matern", "heavy", "larger nu"]),
        (dict(kernel="laplacian", bandwidth=1e-36), torch.float32, ["laplacian", "Cauchy"]),
    ],
)
def test_frequencies_that_would_not_be_finite_are_refused_with_the_limit(kwargs, dtype, words):
    """Was: valid-looking arguments drew infinite (or all-zero) frequencies, then NaN or a zero loss."""
    kwargs = dict(kwargs)
    kernel = kwargs.pop("kernel", "gaussian")
    with pytest.raises(ValueError) as info:
        sk.sample_frequencies(kernel, 4096, 3, dtype=dtype, generator=torch.Generator().manual_seed(0), **kwargs)
    assert all(w in str(info.value) for w in words), str(info.value)
    real, syn = torch.randn(20, 3, dtype=dtype), torch.randn(8, 3, dtype=dtype)
    with pytest.raises(ValueError):  # and so do the discrepancies that draw them
        sk.sdd(
            real,
            syn,
            kernel=kernel,
            num_freqs=4096,
            generator=torch.Generator().manual_seed(0),
            backend="reference",
            **kwargs,
        )


def test_the_frequency_sampler_refuses_scales_its_dtype_cannot_hold():
    """Was: FrequencySampler(bandwidth tiny) or a large spread gave inf frequencies, then NaN."""
    with pytest.raises(ValueError, match=r"bandwidth=1e-40 and spread=1.0 .* \[-87.34, 85.95\]"):
        sk.FrequencySampler(8, bandwidth=1e-40)
    with pytest.raises(ValueError, match="spread=100"):
        sk.FrequencySampler(8, spread=100.0)
    sampler = sk.FrequencySampler(8, num_freqs=32)
    with torch.no_grad():
        sampler.log_scales[0] = 150.0  # where a too-large learning rate can take it
    with pytest.raises(ValueError, match="learned log-scale of 150.*learning rate"):
        sampler()


@pytest.mark.parametrize("backend", ["reference", *FUSED_BACKENDS])
def test_double_backward_through_the_ops_gives_the_true_second_derivative(backend):
    """Was: differentiating the cpu op's gradient returned zeros (its gradient ops had no
    derivative and autograd treated them as constants)."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(9, 3, dtype=torch.float64, generator=g, requires_grad=True)
    t = torch.randn(5, 3, dtype=torch.float64, generator=g, requires_grad=True)
    index = class_index(torch.tensor([0, 1, 2, 0, 1, 2, 0, 2, 2]), 9, 3, torch.device("cpu"))
    chosen = ops.resolve(backend, x)
    assert torch.autograd.gradgradcheck(lambda a, b: chosen.ecf_sums(a, b, index), (x, t))
    # A Hessian-vector product through a whole loss equals the reference backend's.
    real, syn = torch.randn(20, 3, dtype=torch.float64, generator=g), x
    hvp = []
    for name in ("reference", backend):
        loss = sk.sdd(real, syn, t=t, backend=name)
        (grad,) = torch.autograd.grad(loss, syn, create_graph=True)
        (second,) = torch.autograd.grad((grad * grad).sum(), syn)
        hvp.append(second)
    assert hvp[1].abs().max() > 0
    torch.testing.assert_close(hvp[1], hvp[0], rtol=1e-9, atol=1e-12)


def test_mmd_of_large_finite_float32_inputs_is_right_not_nan():
    """Was: |x|^2 overflowed float32 for finite inputs near 1e20, and mmd returned NaN."""
    g = torch.Generator().manual_seed(0)
    real = torch.randn(40, 6, generator=g) * 1e20
    syn = torch.randn(25, 6, generator=g) * 1e20 + 3e19
    for kernel in ("gaussian", "laplacian", "cauchy", "matern"):
        got = sk.mmd(real, syn, kernel=kernel, bandwidth=2e20)
        want = sk.mmd(real.double(), syn.double(), kernel=kernel, bandwidth=2e20)
        assert torch.isfinite(got) and abs(float(got) - float(want)) <= 1e-5 * abs(float(want)) + 1e-6, kernel
    # The linear kernel's value scales with |x|^2: at 1e18 it is still representable in float32.
    got = sk.mmd(real / 100, syn / 100, kernel="linear", estimator="u")
    want = sk.mmd(real.double() / 100, syn.double() / 100, kernel="linear", estimator="u")
    assert abs(float(got) - float(want)) <= 1e-4 * abs(float(want)), (got, want)
    # A bandwidth so small that 1 / (2 sigma^2) overflows: k is 1 on the diagonal and 0 off it.
    x = torch.randn(10, 3, generator=g)
    assert float(sk.mmd(x, x + 1.0, bandwidth=1e-30)) == pytest.approx(0.2)


def test_csdm_loss_uses_the_weights_of_a_loaded_state_dict():
    """Was: CSDMLoss.load_state_dict was ignored: forward recomputed the weights from class_counts."""
    g = torch.Generator().manual_seed(1)
    real, syn = torch.randn(60, 4, generator=g), torch.randn(12, 4, generator=g) + 0.5
    real_y, syn_y = torch.arange(60) % 3, torch.arange(12) % 3
    t = torch.randn(64, 4, generator=g)
    trained = sk.CSDMLoss([30, 20, 10], alpha_head=0.9)
    fresh = sk.CSDMLoss([1, 1, 1], alpha_head=0.5)
    assert not torch.allclose(trained(real, syn, real_y, syn_y, t=t), fresh(real, syn, real_y, syn_y, t=t))
    fresh.load_state_dict(trained.state_dict())
    torch.testing.assert_close(fresh(real, syn, real_y, syn_y, t=t), trained(real, syn, real_y, syn_y, t=t))
    bad = trained.state_dict()
    bad["class_alpha"] = torch.tensor([0.5, 1.5, 0.5], dtype=torch.float64)
    fresh.load_state_dict(bad)
    with pytest.raises(ValueError, match="class_alpha must lie in"):
        fresh(real, syn, real_y, syn_y, t=t)


def test_losses_restore_their_frequency_stream_and_show_their_configuration():
    real, syn = torch.randn(30, 4), torch.randn(10, 4)
    loss = sk.SDDLoss(num_freqs=64, generator=torch.Generator().manual_seed(7), bandwidth=2.0)
    loss(real, syn)
    state = loss.state_dict()
    expected = loss(real, syn)
    restored = sk.SDDLoss(num_freqs=64, generator=torch.Generator().manual_seed(99), bandwidth=2.0)
    restored.load_state_dict(state)
    assert torch.equal(restored(real, syn), expected)
    assert "bandwidth=2.0" in repr(loss) and "generator=Generator(cpu)" in repr(loss) and "num_freqs=64" in repr(loss)
    ncfd = sk.NCFDLoss(alpha=torch.tensor([0.2, 0.9]))
    assert "alpha" in ncfd.state_dict() and "alpha=tensor of 2" in repr(ncfd)
    with pytest.raises(ValueError, match="backend"):
        sk.SDDLoss(backend="gpu")


# ----------------------------------------------------------------------------- unclear errors


def test_a_diverging_run_stops_with_one_line_and_keeps_its_checkpoint(tmp_path):
    """A learning rate that blows the images up: one line naming the loss and --lr, exit 2, and
    the checkpoint written before it stays loadable."""
    run = tmp_path / "run"
    proc = run_cli(
        "distill",
        *FAST_CLI,
        "--iterations",
        "50",
        "--checkpoint-every",
        "1",
        "--lr",
        "1e30",
        "--method",
        "mmd",
        "--out",
        run,
    )
    assert_one_line_error(proc, "iteration", "non-finite", "--lr")
    assert not (run / "synthetic.pt").exists()
    if (run / "checkpoint.pt").exists():
        torch.load(run / "checkpoint.pt", weights_only=True)


def test_argparse_errors_are_one_line_too():
    assert_one_line_error(run_cli("distill", "--ipc", "three"), "--ipc", "invalid int value")
    assert_one_line_error(run_cli(), "command")


def test_the_lock_file_is_never_followed_through_a_link(tmp_path):
    run = tmp_path / "run"
    assert run_cli("distill", *FAST_CLI, "--out", run).returncode == 0
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (run / ".lock").unlink()
    (run / ".lock").symlink_to(victim)
    assert_one_line_error(run_cli("distill", *FAST_CLI, "--out", run, "--overwrite"), ".lock", "symbolic link")
    assert victim.read_text() == "precious"


def test_the_lock_is_an_flock_that_other_tools_can_see(tmp_path):
    """The lock is a plain flock: a process that holds it (here: this test) keeps runs out."""
    run = tmp_path / "run"
    assert run_cli("distill", *FAST_CLI, "--out", run).returncode == 0
    fd = hold_run_lock(run)
    try:
        assert_one_line_error(run_cli("distill", *FAST_CLI, "--out", run, "--resume"), f"pid {os.getpid()}")
    finally:
        os.close(fd)
    assert run_cli("distill", *FAST_CLI, "--out", run, "--resume").returncode == 0


def test_a_finished_run_leaves_no_pid_in_its_lock_file(tmp_path):
    """Was: the lock file kept the finished run's pid, which the next refusal could name."""
    run = tmp_path / "run"
    assert run_cli("distill", *FAST_CLI, "--out", run).returncode == 0
    assert (run / ".lock").read_bytes() == b""


def test_a_stale_pid_is_not_named_when_another_tool_holds_the_lock(tmp_path):
    """A killed run leaves its pid in .lock; if flock(1) or a scheduler (which writes no pid)
    holds the lock later, the refusal must not send the user after that dead process."""
    run = tmp_path / "run"
    assert run_cli("distill", *FAST_CLI, "--out", run).returncode == 0
    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid that no process has now
    (run / ".lock").write_text(f"{gone.pid}\n")
    fd = hold_run_lock(run, write_pid=False)
    try:
        err = assert_one_line_error(run_cli("distill", *FAST_CLI, "--out", run, "--resume"), "in use", "pid unknown")
        assert f"pid {gone.pid}" not in err
    finally:
        os.close(fd)
    assert run_cli("distill", *FAST_CLI, "--out", run, "--resume").returncode == 0


def test_the_holder_named_is_a_live_pid_whatever_the_lock_file_holds(tmp_path):
    """What another process wrote into .lock is read, not trusted: "²" passes str.isdigit() but
    not int(), and digits that name no live process are no holder either."""
    from spectral_kernels.distill.rundir import RunLock

    lock = tmp_path / ".lock"
    for text, named in [
        (f"{os.getpid()}\n", str(os.getpid())),
        ("²\n", "unknown"),
        ("0\n", "unknown"),
        ("9" * 40, "unknown"),
        ("-1\n", "unknown"),
        ("my notes", "unknown"),
        ("", "unknown"),
    ]:
        lock.write_text(text)
        fd = os.open(lock, os.O_RDONLY)
        try:
            assert RunLock._holder(fd) == named, text
        finally:
            os.close(fd)


def test_overwrite_removes_the_runs_own_temporaries_but_nothing_that_only_looks_like_one(tmp_path):
    """<name>.tmp.<pid> is ours (a crashed write); <name>.tmp.backup is not."""
    run = tmp_path / "run"
    assert run_cli("distill", *FAST_CLI, "--out", run).returncode == 0
    for name in ("metrics.jsonl.tmp.backup", "grid.png.tmp.old", "notes.txt"):
        (run / name).write_text("mine")
    (run / "checkpoint.pt.tmp.4242").write_text("a crashed write of ours")
    assert run_cli("distill", *FAST_CLI, "--out", run, "--overwrite").returncode == 0
    for name in ("metrics.jsonl.tmp.backup", "grid.png.tmp.old", "notes.txt"):
        assert (run / name).read_text() == "mine", name
    assert not (run / "checkpoint.pt.tmp.4242").exists()


def test_a_run_directory_is_recognised_by_the_mark_in_its_config_json(tmp_path):
    run = tmp_path / "run"
    assert run_cli("distill", *FAST_CLI, "--out", run).returncode == 0
    saved = json.loads((run / "config.json").read_text())
    assert saved["format"] == "spectral-distill run 1"
    del saved["format"]
    (run / "config.json").write_text(json.dumps(saved))  # the same options, without the mark
    assert_one_line_error(run_cli("distill", *FAST_CLI, "--out", run, "--overwrite"), "not written by spectral-distill")
    assert (run / "synthetic.pt").exists()
