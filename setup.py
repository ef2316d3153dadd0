"""Build spectral_kernels._C, the fused ECF kernels.

The C++ CPU kernels are always built. The CUDA kernels (csrc/cuda/) are added when a CUDA build
of torch and nvcc are both present, as pytorch_scatter and pytorch/extension-cpp decide it;
FORCE_CUDA=1 builds them anyway (and fails clearly without nvcc), FORCE_CPU=1 leaves them out.
GPU architectures: TORCH_CUDA_ARCH_LIST, by default "8.0;9.0" (Ampere and Hopper).

The translation units include ATen headers and torch/library.h, never torch/extension.h: the op
schemas are registered with TORCH_LIBRARY and called through torch.ops, so no pybind11 binding
is needed and each unit compiles in seconds; the .cu unit includes only the CUDA runtime and
csrc/ecf_math.h.
"""

import glob
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CUDA_ARCHS = "8.0;9.0"


def _flag(name: str) -> bool:
    return os.environ.get(name, "0").strip().lower() in ("1", "true", "yes", "on")


def _toolkit_of(nvcc: str) -> str | None:
    """The CUDA toolkit folder nvcc belongs to. nvcc on the PATH may be a wrapper script in
    another folder (here /usr/local/bin/nvcc execs /usr/local/cuda-13.0/bin/nvcc), so ask nvcc
    itself: its dry run prints the folder it runs from."""
    with tempfile.TemporaryDirectory() as tmp:
        source = os.path.join(tmp, "probe.cu")
        open(source, "w").close()
        try:
            out = subprocess.run(
                [nvcc, "--dryrun", "-c", source, "-o", os.path.join(tmp, "probe.o")],
                capture_output=True,
                text=True,
                timeout=60,
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
    match = re.search(r"_HERE_=(\S+)", out.stdout + out.stderr)
    return os.path.dirname(os.path.realpath(match.group(1))) if match else None


def _cuda_home() -> str | None:
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            return os.environ[var]
    nvcc = shutil.which("nvcc")
    return _toolkit_of(nvcc) if nvcc else None


def _want_cuda() -> bool:
    if _flag("FORCE_CPU"):
        return False
    if _flag("FORCE_CUDA"):
        return True
    import torch

    return torch.version.cuda is not None and _cuda_home() is not None


WITH_CUDA = _want_cuda()
if WITH_CUDA:
    home = _cuda_home()
    if home is None:
        sys.exit("setup.py: FORCE_CUDA=1 but no CUDA toolkit was found (set CUDA_HOME or put nvcc on the PATH)")
    # torch.utils.cpp_extension reads both when it is imported: set them first.
    os.environ["CUDA_HOME"] = home
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", DEFAULT_CUDA_ARCHS)

from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension  # noqa: E402


def _nvidia_wheel_dirs(kind: str) -> list[str]:
    """include/ or lib/ folders of the nvidia-* wheels that CUDA builds of torch depend on: the
    cuBLAS (and cuSPARSE, for ATen's CUDA headers) headers and libraries may live there rather
    than in the toolkit."""
    site = sysconfig.get_paths()["purelib"]
    return sorted(d for d in glob.glob(os.path.join(site, "nvidia", "*", kind)) if os.path.isdir(d))


def _cublas_link_args() -> list[str]:
    """Link cuBLAS by the soname torch itself loads (libcublas.so.<major>), from the toolkit or
    from the nvidia wheels."""
    for folder in [os.path.join(os.environ["CUDA_HOME"], "lib64"), *_nvidia_wheel_dirs("lib")]:
        if os.path.exists(os.path.join(folder, "libcublas.so")):
            return [f"-L{folder}", "-lcublas"]
        versioned = sorted(glob.glob(os.path.join(folder, "libcublas.so.*")))
        if versioned:
            return [f"-L{folder}", f"-l:{os.path.basename(versioned[0])}"]
    sys.exit(
        "setup.py: cuBLAS (libcublas.so) not found in the CUDA toolkit or the nvidia wheels; FORCE_CPU=1 skips CUDA"
    )


def extension():
    sources = sorted(glob.glob(os.path.join("csrc", "*.cpp")) + glob.glob(os.path.join("csrc", "cpu", "*.cpp")))
    # -fopenmp: at::parallel_for is an inline `omp parallel` region, so without it the
    # kernels silently run on one thread. The library links libgomp.so.1, which resolves to
    # the copy torch has already loaded (same soname), so there is one OpenMP runtime.
    # -g0 keeps the .so small (debug info makes it ~11 MB).
    cxx = ["-O3", "-g0", "-fopenmp"]
    common = dict(name="spectral_kernels._C", extra_link_args=["-fopenmp"], py_limited_api=False)
    if not WITH_CUDA:
        return CppExtension(sources=sources, extra_compile_args={"cxx": cxx}, **common)
    sources += sorted(
        glob.glob(os.path.join("csrc", "cuda", "*.cpp")) + glob.glob(os.path.join("csrc", "cuda", "*.cu"))
    )
    common["extra_link_args"] = common["extra_link_args"] + _cublas_link_args()
    return CUDAExtension(
        sources=sources,
        include_dirs=_nvidia_wheel_dirs("include"),
        define_macros=[("SPECTRAL_KERNELS_WITH_CUDA", None)],
        extra_compile_args={"cxx": cxx, "nvcc": ["-O3", "-std=c++17", "-Xcompiler", "-g0"]},
        **common,
    )


setup(ext_modules=[extension()], cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)})
