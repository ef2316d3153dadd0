"""Where and in which precision the networks of a run compute: --device, --amp and --compile,
applied alike to every phase that runs a ConvNet (pool training, matching, evaluation).

- The device: the networks, their optimisers, the real data, the augmentation and CutMix all
  live on it; only the random generators stay on the CPU (so a run draws the same numbers on
  every device) and files are written from CPU copies.
- --amp bf16|fp16: the ConvNet's forward (and so its backward) under torch.autocast; the
  features and logits are cast to float32 before any loss, and the augmentation stays float32.
  fp16 scales the loss (GradScaler) against underflowing gradients. A device that cannot
  compute in the dtype is refused: fp16 on the CPU (no float16 arithmetic units to speak of,
  nothing for a scaler to protect), bf16 on a GPU older than sm_80.
- --compile: torch.compile(fullgraph=True) of the network's forward. Compilation happens at
  the first call; a failure there becomes CompileError (one line naming the first error).
  $SPECTRAL_KERNELS_COMPILE_BACKEND picks the compiler backend (default inductor; tests use a
  recording or failing one).
- Each phase appends {"event": "phase", "phase": ..., "device": ..., "amp": ..., "compile": ...}
  to metrics.jsonl when it starts (tests/test_device_phases.py checks, with a hook on every
  module call, that each phase's networks and inputs are really there).
"""

from __future__ import annotations

import contextlib
import os
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
    if not present or device.type == "cpu":
        return None
    what = "CUDA" if device.type == "cuda" else device.type
    backend = getattr(torch, device.type, None)
    if backend is None or not callable(getattr(backend, "is_available", None)):
        return f"--device {name}: this torch has no {what} backend"
    if not backend.is_available():
        return f"--device {name}: no {what} device is available"
    count = backend.device_count() if callable(getattr(backend, "device_count", None)) else 1
    if device.index is not None and device.index >= count:
        return f"--device {name}: there are {count} {what} device(s), numbered from 0"
    return None


def amp_problem(device: torch.device, amp: str) -> str | None:
    """Why `device` cannot run the ConvNet under --amp `amp` (None if it can)."""
    if amp == "off":
        return None
    if device.type == "cpu" and amp == "fp16":
        return f"--amp fp16: device {device} has no float16 arithmetic worth autocasting to; use --amp bf16 or off"
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


@dataclass(frozen=True)
class Hardware:
    """The device, autocast dtype and compilation of a run's networks."""

    device: torch.device = torch.device("cpu")
    amp: str = "off"
    compile: bool = False

    @classmethod
    def of(cls, config) -> Hardware:
        return cls(torch.device(config.device), config.amp, config.compile)

    def autocast(self):
        """The context the ConvNet's forward runs in (nothing with --amp off)."""
        if self.amp == "off":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=AMP_DTYPES[self.amp])

    def scaler(self):
        """A GradScaler for --amp fp16 (float16 gradients underflow without one), else None."""
        return torch.amp.GradScaler(self.device.type) if self.amp == "fp16" else None

    def compiled(self, fn):
        """fn compiled (fullgraph) with --compile, else fn. Compiler failures, at compile() or at
        the first call, raise CompileError naming the first error."""
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
                "nothing was lost: run again without --compile (--resume continues an interrupted run)"
            )

        try:
            compiled = torch.compile(fn, fullgraph=True, backend=backend)
        except errors as error:
            raise failed(error) from None

        def call(*args, **kwargs):
            try:
                return compiled(*args, **kwargs)
            except errors as error:
                raise failed(error) from None

        return call

    def phase(self, phase: str) -> dict:
        """The metrics.jsonl row recording where `phase` runs (the device as torch resolves it:
        cuda:0 for cuda)."""
        device = torch.empty(0, device=self.device).device
        return {"event": "phase", "phase": phase, "device": str(device), "amp": self.amp, "compile": self.compile}


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


def weights_finite(net: torch.nn.Module) -> bool:
    """Every parameter of net finite (one device synchronisation)."""
    return bool(torch.stack([torch.isfinite(p.detach()).all() for p in net.parameters()]).all())
