import os
import subprocess
import sys
import tempfile

import pytest
import torch

# Without a GPU the Triton kernels run in Triton's interpreter on CPU tensors. It must be chosen
# before any @triton.jit decorator runs, i.e. before spectral_kernels is imported; with a GPU
# the same tests run the compiled kernels on CPU-built inputs moved to CUDA (tests/test_gpu.py).
HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")
# The network-pool cache (distill/pool.py) goes to a fresh folder per test session, not ~/.cache.
os.environ.setdefault("SPECTRAL_KERNELS_CACHE", tempfile.mkdtemp(prefix="spectral-kernels-cache-"))
# Tests that switch on torch.use_deterministic_algorithms call cuBLAS, which torch then
# refuses unless cuBLAS is given a fixed workspace (read before the first cuBLAS handle).
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import spectral_kernels as sk  # noqa: E402

# Backends that run on CPU tensors in this process (triton only through the interpreter).
FUSED_BACKENDS = [
    name for name in sk.available_backends() if name != "reference" and sk.ops.runs_on(name, torch.empty(1))
]


def _fused_backends():
    """Every registered backend that computes the sums itself: {name: (device its kernel tests
    use, None)} when it can run here, {name: (None, why not)} when it cannot. With a GPU,
    triton's kernel tests run the compiled kernels on CUDA tensors instead of the interpreter."""
    found = {}
    for name in sk.ops.backend_names():
        if name in ("auto", "reference"):
            continue
        device = "cuda" if name == "cuda" or (name == "triton" and HAS_CUDA) else "cpu"
        reason = sk.ops.get_backend(name).unavailable_reason()
        if reason is None and not sk.ops.runs_on(name, torch.empty(1, device=device)):
            reason = sk.ops.get_backend(name).unsupported_reason(torch.empty(1, device=device))
        found[name] = (None, reason) if reason else (device, None)
    return found


_FUSED = _fused_backends()
# Runnable fused backends and the device of their kernel tests.
BACKEND_DEVICES = {name: device for name, (device, _) in _FUSED.items() if device is not None}


def backend_params(*names):
    """pytest parameters for the fused backends (all, or those named): one that cannot run in
    this process is reported as skipped with its reason, never silently left out."""
    return [
        pytest.param(
            name, marks=pytest.mark.skip(reason=f"backend {name!r} cannot run here: {reason}") if reason else ()
        )
        for name, (_, reason) in sorted(_FUSED.items())
        if not names or name in names
    ]


@pytest.fixture
def rng():
    """A fresh seeded generator per test: inputs are random but each test is reproducible."""
    return torch.Generator().manual_seed(1234)


def make_pair(rng, n=60, s=24, d=5, num_classes=3, shift=0.4, dtype=torch.float64):
    """Real and synthetic features whose classes all appear on both sides."""
    real = torch.randn(n, d, generator=rng, dtype=dtype)
    syn = torch.randn(s, d, generator=rng, dtype=dtype) + shift
    real_labels = torch.arange(n) % num_classes
    syn_labels = torch.arange(s) % num_classes
    return real, syn, real_labels, syn_labels


def sums_and_grads(fn, x, t, grad):
    """fn(x, t) -> sums, then its gradients for upstream `grad`: (sums, dx, dt)."""
    x, t = x.detach().requires_grad_(True), t.detach().requires_grad_(True)
    sums = fn(x, t)
    sums.backward(grad)
    return sums.detach(), x.grad, t.grad


def max_error(a, b) -> float:
    return (a.double().cpu() - b.double().cpu()).abs().max().item()


# The console script of this environment: CLI tests run it as a user would, in a subprocess.
CLI_SCRIPT = os.path.join(os.path.dirname(sys.executable), "spectral-distill")
# Options of a distillation that takes a second or two.
FAST_CLI = "--dataset digits --ipc 1 --iterations 2 --width 8 --batch-real 4 --num-eval 0 --quiet".split()


def run_cli(*args, cwd=None, env=None, timeout=600) -> subprocess.CompletedProcess:
    """Run `spectral-distill args...` and return the finished process (text output)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [CLI_SCRIPT, *map(str, args)], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout
    )


def hold_run_lock(run, *, write_pid: bool = True) -> int:
    """Take <run>/.lock's flock in this process, as a running distillation does, and return the
    descriptor (close it to release). With write_pid the file then holds exactly this pid (the
    file is truncated first: a pid left by an earlier run may be longer); without it the file is
    left as it is, as flock(1) or a scheduler would."""
    import fcntl

    fd = os.open(os.path.join(run, ".lock"), os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    if write_pid:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def assert_one_line_error(proc: subprocess.CompletedProcess, *words, status: int = 2) -> str:
    """The CLI failed with `status`, printed exactly one line on stderr (no traceback) holding
    every word; returns that line."""
    err = proc.stderr.strip()
    assert proc.returncode == status, (proc.returncode, proc.stderr[-2000:])
    assert len(err.splitlines()) == 1 and "Traceback" not in err, proc.stderr[-2000:]
    for word in words:
        assert word in err, f"{word!r} not in {err!r}"
    return err
