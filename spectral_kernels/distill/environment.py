"""environment.json: what produced a run. The exact bits of a synthetic set depend on the
library, torch, triton and CUDA versions, on the instruction set the CPU kernels run (float
sums differ between AVX-512, AVX2 and generic x86-64 code) and on the device, so each run
records them, with the command line, when it starts (and again when it is resumed)."""

from __future__ import annotations

import json
import platform
import shlex
import sys
from pathlib import Path

import torch

from .manifest import write_run_text


def cpu_kernels() -> str:
    """The copy of the C++ CPU kernels that runs here: csrc/cpu/tiles.h builds them with
    target_clones("avx512f", "avx2", "default"), and the loader picks the first the CPU has;
    this reads the same CPU flags (Linux /proc/cpuinfo), so names the same copy."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return "default"
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return "unknown"
    return next((isa for isa in ("avx512f", "avx2") if isa in flags), "default")


def device_name(device: str) -> str:
    where = torch.device(device)
    if where.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name(where)
    if where.type == "cpu":
        try:
            with open("/proc/cpuinfo") as f:
                model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
        except OSError:
            model = ""
        return model or platform.processor() or platform.machine()
    return str(where)


def environment(config) -> dict:
    import spectral_kernels

    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    return {
        "spectral_kernels": spectral_kernels.__version__,
        "torch": torch.__version__,
        "triton": triton_version,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "cpu_kernels": cpu_kernels(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "device": config.device,
        "device_name": device_name(config.device),
        "platform": platform.platform(),
        "command_line": shlex.join(sys.argv),
    }


def write_environment(run: Path, config) -> None:
    write_run_text(json.dumps(environment(config), indent=2) + "\n", Path(run) / "environment.json")
