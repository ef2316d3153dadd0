"""The compiled library spectral_kernels._C runs only under the torch it was compiled against.

C++ code built against one torch calls that torch's internals by their mangled names and struct
layouts; under another torch it fails to load with an undefined symbol, or worse, loads and
misbehaves. setup.py records the torch (and its CUDA) in spectral_kernels/_build_info_<ABI tag>.py when it
compiles the library; this module compares the record with the running torch before the
library is loaded, and refuses with one message that names both and the rebuild command.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sysconfig

import torch

REBUILD = (
    "pip install --no-build-isolation --no-deps --force-reinstall <the spectral_kernels sdist>"
    " (in a source checkout: pip install -e . --no-build-isolation)"
)


# The record of the library this interpreter loads, named after its ABI tag as setup.py names it
# (_build_info_cpython_311_x86_64_linux_gnu for _C.cpython-311-x86_64-linux-gnu.so): two Pythons
# that build one source tree in place (make test-oldest) then each read their own record.
BUILD_INFO_MODULE = "_build_info_" + re.sub(
    r"\W", "_", sysconfig.get_config_var("EXT_SUFFIX").removesuffix(".so").strip(".")
)


class TorchMismatchError(ImportError):
    """The compiled library was built against another torch than the one running."""


def _describe(version: str, cuda: str | None) -> str:
    return f"torch {version} ({f'CUDA {cuda}' if cuda else 'no CUDA'})"


def mismatch(built_torch: str, built_cuda: str | None, torch_version: str, torch_cuda: str | None) -> str | None:
    """Why a library built against (built_torch, built_cuda) cannot run under (torch_version,
    torch_cuda), or None when they are the same build. The whole version strings are compared,
    local labels (+cu130, +cpu) included: CPU and CUDA builds of one release differ in ABI."""
    if (built_torch, built_cuda) == (torch_version, torch_cuda):
        return None
    return (
        f"spectral_kernels: its compiled library was built against {_describe(built_torch, built_cuda)} "
        f"but {_describe(torch_version, torch_cuda)} is installed; rebuild it against this torch: {REBUILD}"
    )


def check() -> None:
    """Raise TorchMismatchError if spectral_kernels/_build_info_<ABI tag>.py records another torch than the
    running one. A library without the record (built before setup.py wrote one) is loaded as
    before."""
    if importlib.util.find_spec("spectral_kernels._C") is None:
        return  # nothing to load (a source tree never built): ops/cpp.py says so
    try:
        info = importlib.import_module(f"spectral_kernels.{BUILD_INFO_MODULE}")
    except ImportError:
        return
    reason = mismatch(info.TORCH_VERSION, info.TORCH_CUDA_VERSION, torch.__version__, torch.version.cuda)
    if reason is not None:
        raise TorchMismatchError(reason)
