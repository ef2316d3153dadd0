"""Where and in which precision the networks of a run compute: --device, --amp and --compile,
applied alike to every phase that runs a ConvNet (pool training, matching, evaluation).

- The device: under torchrun (WORLD_SIZE > 1) each process's own, cuda:LOCAL_RANK for `cuda`
  (process_device). The networks, their optimisers, the real data, the augmentation and CutMix all
  live on it; only the random generators stay on the CPU (so a run draws the same numbers on
  every device) and files are written from CPU copies.
- --amp bf16|fp16: the ConvNet's forward (and so its backward) under torch.autocast; the
  features and logits are cast to float32 before any loss, and the augmentation stays float32.
  fp16 scales the loss (GradScaler) against underflowing gradients. A device that cannot
  compute in the dtype is refused: fp16 on the CPU (no float16 arithmetic units to speak of,
  nothing for a scaler to protect), bf16 on a GPU older than sm_80.
- --compile: torch.compile(fullgraph=True) of the network's forward, one compiled program per
  architecture that every network of it runs through with its own weights (_program).
  Compilation happens at the first call, the backward graph's included (torch would otherwise
  compile it lazily at the first .backward(), outside any wrapper: _backward_compiled_with_forward);
  a failure there becomes CompileError (one line naming the first error), before the step that
  called it changed anything.
  $SPECTRAL_KERNELS_COMPILE_BACKEND picks the compiler backend (default inductor; tests use a
  recording or failing one).
- Each phase appends {"event": "phase", "phase": ..., "device": ..., "amp": ..., "compile": ...}
  to metrics.jsonl when it starts (tests/test_device_phases.py checks, with a hook on every
  module call, that each phase's networks and inputs are really there).
"""

from __future__ import annotations

import contextlib
import copy
import os
import types
import warnings
from dataclasses import dataclass

import torch

from .errors import ConfigError

AMP = ("off", "bf16", "fp16")
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
COMPILE_BACKEND_ENV = "SPECTRAL_KERNELS_COMPILE_BACKEND"


class CompileError(ConfigError):
    """torch.compile failed on the network; the run stops before the failing call changed anything."""


def device_problem(name: str, *, present: bool = True) -> str | None:
    """Why `name` cannot be a run's --device (None if it can). present=False checks only that
    it names a device, for a stored config read back on another machine."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        return f"--device must be a torch device (cpu, cuda, cuda:N, mps, ...), got {name!r}"
    if device.type == "meta":
        return "--device meta holds no values: a run needs a device that computes (cpu, cuda, ...)"
    if not present:
        return None
    if device.type == "cpu":
        return _rank_device(name, device)[1]
    what = "CUDA" if device.type == "cuda" else device.type
    backend = getattr(torch, device.type, None)
    if backend is None or not callable(getattr(backend, "is_available", None)):
        return f"--device {name}: this torch has no {what} backend"
    if not backend.is_available():
        return f"--device {name}: no {what} device is available"
    count = _device_count(device)
    if device.index is not None and device.index >= count:
        return f"--device {name}: there are {count} {what} device(s), numbered from 0"
    return _rank_device(name, device)[1]


def _device_count(device: torch.device) -> int:
    backend = getattr(torch, device.type, None)
    return backend.device_count() if callable(getattr(backend, "device_count", None)) else 1


def _rank_device(name: str, device: torch.device, environ=None) -> tuple[torch.device | None, str | None]:
    """(this process's device, None), or (None, why not). Alone (WORLD_SIZE unset or 1) that is
    `device` as named. Under torchrun (WORLD_SIZE > 1) every process of a machine would otherwise
    resolve `cuda` to cuda:0 and share one GPU: each takes the device numbered by its LOCAL_RANK
    instead. An explicit index is refused there, not honoured where it happens to match: every
    process gets the same command line, so it could match in one process at most, and the others
    would fail after the first had joined the process group, leaving it waiting."""
    environ = os.environ if environ is None else environ
    try:
        world = int(environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return None, f"WORLD_SIZE must be a whole number of processes, got {environ.get('WORLD_SIZE')!r}"
    if world <= 1 or device.type in ("cpu", "meta"):  # gloo: every process computes on the CPU
        return device, None
    if device.index is not None:
        return None, (
            f"--device {name} under torchrun (WORLD_SIZE={world}): each process takes the {device.type} device of "
            f"its LOCAL_RANK; pass --device {device.type}"
        )
    try:
        local = int(environ["LOCAL_RANK"])
    except (KeyError, ValueError):
        return None, (
            f"--device {name} with WORLD_SIZE={world} needs LOCAL_RANK (the process's number on its machine, which "
            f"torchrun sets), got {environ.get('LOCAL_RANK')!r}"
        )
    count = _device_count(device)
    if not 0 <= local < count:
        return None, (
            f"--device {name} under torchrun: LOCAL_RANK={local} but this machine has {count} {device.type} "
            "device(s): start at most that many processes per machine (--nproc-per-node)"
        )
    return torch.device(device.type, local), None


def process_device(name: str, environ=None) -> torch.device:
    """The device this process computes on for --device `name`: the device named, or under
    torchrun (WORLD_SIZE > 1 in `environ`, default os.environ) the one of its LOCAL_RANK
    (`cuda` -> cuda:LOCAL_RANK); ConfigError for what _rank_device refuses. Presence is checked
    by device_problem (config validation)."""
    device, problem = _rank_device(name, torch.device(name), environ)
    if problem is not None:
        raise ConfigError(problem)
    return device


def amp_problem(device: torch.device, amp: str) -> str | None:
    """Why `device` cannot run the ConvNet under --amp `amp` (None if it can)."""
    if amp == "off":
        return None
    if device.type == "cpu" and amp == "fp16":
        return f"--amp fp16: device {device} has no float16 arithmetic worth autocasting to; use --amp bf16 or off"
    if device.type == "cpu" and amp == "bf16" and not cpu_has_bf16():
        return (
            f"--amp bf16: device {device}, this CPU ({torch.backends.cpu.get_cpu_capability()}), has no bfloat16 "
            "arithmetic (oneDNN's needs AVX-512 or AMX, or Arm's BF16); emulated it runs slower than float32: "
            "use --amp off"
        )
    if device.type == "cuda" and amp == "bf16":
        major, minor = torch.cuda.get_device_capability(device)
        if major < 8:
            return f"--amp bf16: device {device} (sm_{major}{minor}) cannot compute in bfloat16; use --amp fp16 or off"
    if device.type not in ("cpu", "cuda"):
        if not torch.amp.is_autocast_available(device.type):
            return f"--amp {amp}: device {device} has no autocast"
        # Other backends warn and disable autocast for a dtype they lack: take that as a refusal.
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            try:
                with torch.autocast(device.type, dtype=AMP_DTYPES[amp]):
                    pass
            except (RuntimeError, UserWarning) as error:
                return f"--amp {amp}: device {device} cannot autocast to {AMP_DTYPES[amp]} ({_first_line(error)})"
    return None


def cpu_has_bf16() -> bool:
    """Whether oneDNN computes bfloat16 convolutions and products on this CPU in hardware (AVX-512
    or AMX on x86, BF16 on Arm): elsewhere torch still runs bf16 autocast, emulated, slower than
    float32, which is not what --amp is for. A torch without the query is taken at its word."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return True


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def _first_compiler_error(error: BaseException) -> str:
    """The innermost error torch.compile wrapped (a backend's own exception, not dynamo's
    "backend='...' raised:" envelope), as "Type: first line"."""
    seen = {id(error)}
    while True:
        inner = getattr(error, "inner_exception", None) or error.__cause__
        if inner is None or id(inner) in seen:
            break
        seen.add(id(inner))
        error = inner
    return f"{type(error).__name__}: {_first_line(error)}"


def _compile_errors() -> tuple[type, ...]:
    errors = [torch._dynamo.exc.TorchDynamoException]
    try:
        from torch._inductor.exc import InductorError

        errors.append(InductorError)
    except ImportError:  # older torch: its inductor errors arrive wrapped in BackendCompilerFailed
        pass
    return tuple(errors)


def _backward_compiled_with_forward():
    """The context every compiled call runs in: AOTAutograd compiles the backward graph together
    with the forward, at the call. By default it compiles the backward lazily, inside the first
    .backward() (pool training, evaluation training, the matching step), where a compiler failure
    escapes as whatever the backend raised (a bare RuntimeError from a custom backend) and cannot
    be told apart from an error of the backward's own run; compiled at the call it arrives wrapped
    (BackendCompilerFailed) inside compiled()'s wrapper, before the forward's result is used.
    Nothing extra is compiled: a graph gets a backward only when its output needs a gradient,
    and every such output here is backpropagated."""
    config = torch._functorch.config
    if not hasattr(config, "force_non_lazy_backward_lowering"):  # a private switch (torch 2.11-2.14 have it)
        return contextlib.nullcontext()
    return config.patch(force_non_lazy_backward_lowering=True)


RETRY = "run again without --compile (--resume continues an interrupted run)"


@dataclass(frozen=True)
class Hardware:
    """The device, autocast dtype and compilation of a run's networks; `retry` is the advice a
    CompileError gives (what to run instead: it depends on what was running)."""

    device: torch.device = torch.device("cpu")
    amp: str = "off"
    compile: bool = False
    retry: str = RETRY

    @classmethod
    def of(cls, config) -> Hardware:
        """This process's hardware for `config` (under torchrun: the GPU of its LOCAL_RANK)."""
        return cls(process_device(config.device), config.amp, config.compile)

    def autocast(self):
        """The context the ConvNet's forward runs in (nothing with --amp off)."""
        if self.amp == "off":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=AMP_DTYPES[self.amp])

    def scaler(self):
        """A GradScaler for --amp fp16 (float16 gradients underflow without one), else None."""
        return torch.amp.GradScaler(self.device.type) if self.amp == "fp16" else None

    def compiled(self, fn):
        """fn compiled (fullgraph) with --compile, else fn. A module, or a bound method of one
        (net.embed), runs through the one compiled program of its architecture (_program), with
        its own parameters and buffers as inputs: every fresh network of a run reuses the graphs
        of the first. Compiler failures, at compile() or at the first call, raise CompileError
        naming the first error; the backward graph compiles at that call too
        (_backward_compiled_with_forward), so a failure of the backward's compiler is one as well."""
        if not self.compile:
            return fn
        backend = os.environ.get(COMPILE_BACKEND_ENV) or "inductor"
        errors = _compile_errors()

        def failed(error):
            chosen = (
                f" (backend {backend!r} from ${COMPILE_BACKEND_ENV})" if os.environ.get(COMPILE_BACKEND_ENV) else ""
            )
            return CompileError(
                f"--compile: torch.compile of the ConvNet failed{chosen}: {_first_compiler_error(error)}; "
                f"nothing was lost: {self.retry}"
            )

        module, method = (fn, "forward") if isinstance(fn, torch.nn.Module) else (getattr(fn, "__self__", None), None)
        if isinstance(module, torch.nn.Module) and method is None:
            method = fn.__name__
        try:
            if isinstance(module, torch.nn.Module):
                template, program = _program(module, method, backend)
                state = lambda: {
                    **{f"module.{k}": v for k, v in module.named_parameters()},
                    **{f"module.{k}": v for k, v in module.named_buffers()},
                }
            else:
                compiled = torch.compile(fn, fullgraph=True, backend=backend)
        except errors as error:
            raise failed(error) from None

        def call(*args, **kwargs):
            try:
                with _backward_compiled_with_forward():
                    if not isinstance(module, torch.nn.Module):
                        return compiled(*args, **kwargs)
                    if template.training != module.training:  # dropout/batch-norm modes follow the network's
                        template.train(module.training)
                    return program(state(), args, kwargs)
            except errors as error:
                raise failed(error) from None

        return call

    def phase(self, phase: str) -> dict:
        """The metrics.jsonl row recording where `phase` runs (the device as torch resolves it:
        cuda:0 for cuda)."""
        device = torch.empty(0, device=self.device).device
        return {"event": "phase", "phase": phase, "device": str(device), "amp": self.amp, "compile": self.compile}


class _Method(torch.nn.Module):
    """module.<method> as a forward, so that functional_call runs any method (embed, forward)."""

    def __init__(self, module: torch.nn.Module, method: str):
        super().__init__()
        self.module, self.method = module, method

    def forward(self, args, kwargs):
        return getattr(self.module, self.method)(*args, **kwargs)


# (architecture, method, backend) -> (template, compiled program); process-wide, see _program.
_PROGRAMS: dict = {}


def _program(module: torch.nn.Module, method: str, backend: str):
    """The compiled program that runs `method` of any network of module's architecture:
    functional_call of a parameter-free copy (on the meta device) with a network's parameters
    and buffers as inputs, compiled once. dynamo keeps its graphs and counts recompilations per
    code object: compiling each network's own forward put every architecture and compiler
    backend of a process (a sweep over widths; tests use several backends) into the cache of
    ConvNet.forward, and past torch._dynamo.config.recompile_limit (8) compilations a fullgraph
    compile fails (any other runs the network eagerly without saying so). So each program gets a
    code object of its own: architectures and backends never share that limit, and
    a program compiles only for what changes its graph (grad mode, an input that needs a
    gradient or not, autocast, train/eval, dtype, device, and the first few batch sizes, after
    which the batch dimension is dynamic)."""
    state = [(k, tuple(v.shape), v.dtype) for k, v in [*module.named_parameters(), *module.named_buffers()]]
    key = (type(module), repr(module), tuple(state), method, backend)
    if key not in _PROGRAMS:
        template = _Method(copy.deepcopy(module).to("meta"), method)

        def run(state, args, kwargs):
            return torch.func.functional_call(template, state, (args, kwargs))

        run = types.FunctionType(run.__code__.replace(), run.__globals__, run.__name__, None, run.__closure__)
        _PROGRAMS[key] = template, torch.compile(run, fullgraph=True, backend=backend)
    return _PROGRAMS[key]


def backward_and_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler, between=None) -> None:
    """loss.backward() and optimizer.step(), through the GradScaler if there is one (which skips
    the step when a gradient overflowed); between() runs on the gradients in between."""
    if scaler is None:
        loss.backward()
        if between is not None:
            between()
        optimizer.step()
        return
    scaler.scale(loss).backward()
    if between is not None:
        between()
    scaler.step(optimizer)
    scaler.update()


def epoch_end(loss_sum: torch.Tensor, net: torch.nn.Module) -> tuple[float, bool]:
    """An epoch's summed loss (a scalar on the device) read back, and whether every parameter of
    net is finite: both in one device synchronisation."""
    finite = (torch.isfinite(p.detach()).all() for p in net.parameters())
    values = torch.stack([loss_sum.detach().float(), *(f.float() for f in finite)]).tolist()
    return values[0], all(values[1:])
