"""Build spectral_kernels._C, the fused ECF kernels.

The C++ CPU kernels are always built. The CUDA kernels (csrc/cuda/) are added when a CUDA build
of torch and nvcc are both present, as pytorch_scatter and pytorch/extension-cpp decide it;
FORCE_CUDA=1 builds them anyway (and fails clearly without nvcc), FORCE_CPU=1 leaves them out.
GPU architectures: TORCH_CUDA_ARCH_LIST, by default "8.0;9.0" (Ampere and Hopper).

torch is imported only when the extension is compiled (build_ext below): writing an sdist or
the package metadata needs no torch, so `python -m build --sdist` works in an isolated
environment. The compiled library is tied to the torch it was built against; build_ext writes
spectral_kernels/_build_info_<ABI tag>.py beside it (read by spectral_kernels/ops/torch_tie.py, which
refuses a different torch), and bdist_wheel adds a local version label naming that torch.

The translation units include ATen headers and torch/library.h, never torch/extension.h: the op
schemas are registered with TORCH_LIBRARY and called through torch.ops, so no pybind11 binding
is needed and each unit compiles in seconds; the .cu unit includes only the CUDA runtime and
csrc/ecf_math.h.
"""

import glob
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext as _setuptools_build_ext
from setuptools.command.dist_info import dist_info as _dist_info

try:
    from setuptools.command.bdist_wheel import bdist_wheel as _bdist_wheel  # setuptools >= 70.1
except ImportError:  # older setuptools: the wheel package's command
    from wheel.bdist_wheel import bdist_wheel as _bdist_wheel

ROOT = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CUDA_ARCHS = "8.0;9.0"
# The build record is named after the library's ABI tag (_build_info_cpython_311_x86_64_linux_gnu.py
# for _C.cpython-311-x86_64-linux-gnu.so), as spectral_kernels/ops/torch_tie.py looks for it, so two
# interpreters building one source tree in place (make test-oldest) each keep their own record.
BUILD_INFO = (
    "_build_info_" + re.sub(r"\W", "_", sysconfig.get_config_var("EXT_SUFFIX").removesuffix(".so").strip(".")) + ".py"
)
# Relative links of README.md (into docs/) do not resolve on a package index: the long
# description names those files instead (they ship in the sdist).
RELATIVE_LINK = re.compile(r"\[([^\]]+)\]\((?![a-z]+://)([^)#\s]+)(#[^)\s]*)?\)")


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


def _sources(*patterns: str) -> list[str]:
    return sorted(path for pattern in patterns for path in glob.glob(os.path.join("csrc", pattern)))


def torch_extension(with_cuda: bool):
    """The extension as torch builds it (imports torch; called only by build_ext.run)."""
    if with_cuda:
        home = _cuda_home()
        if home is None:
            sys.exit("setup.py: FORCE_CUDA=1 but no CUDA toolkit was found (set CUDA_HOME or put nvcc on the PATH)")
        # torch.utils.cpp_extension reads both when it is imported: set them first.
        os.environ["CUDA_HOME"] = home
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", DEFAULT_CUDA_ARCHS)
    from torch.utils.cpp_extension import CppExtension, CUDAExtension

    sources = _sources("*.cpp", "cpu/*.cpp")
    # -fopenmp: at::parallel_for is an inline `omp parallel` region, so without it the
    # kernels silently run on one thread. The library links libgomp.so.1, which resolves to
    # the copy torch has already loaded (same soname), so there is one OpenMP runtime.
    # -g0 keeps the .so small (debug info makes it ~11 MB).
    cxx = ["-O3", "-g0", "-fopenmp"]
    common = dict(name="spectral_kernels._C", extra_link_args=["-fopenmp"], py_limited_api=False)
    if not with_cuda:
        return CppExtension(sources=sources, extra_compile_args={"cxx": cxx}, **common)
    common["extra_link_args"] = common["extra_link_args"] + _cublas_link_args()
    return CUDAExtension(
        sources=sources + _sources("cuda/*.cpp", "cuda/*.cu"),
        include_dirs=_nvidia_wheel_dirs("include"),
        define_macros=[("SPECTRAL_KERNELS_WITH_CUDA", None)],
        extra_compile_args={"cxx": cxx, "nvcc": ["-O3", "-std=c++17", "-Xcompiler", "-g0"]},
        **common,
    )


def _torch():
    """torch, for compiling against; without it, what to do (an isolated build, say)."""
    try:
        import torch
    except ImportError:
        sys.exit(
            "setup.py: building spectral_kernels._C needs torch installed in this environment (it is compiled "
            "against that torch): pip install torch, then build with --no-build-isolation"
        )
    return torch


def torch_tag() -> str:
    """The local version label of a wheel built against the installed torch, as pytorch_scatter
    writes it: pt2141cu130 for torch 2.14.1 with CUDA 13.0, pt2141cpu for a CPU-only torch."""
    torch = _torch()

    release = re.match(r"\d+(\.\d+)*", torch.__version__).group(0).replace(".", "")
    cuda = "cu" + torch.version.cuda.replace(".", "") if torch.version.cuda else "cpu"
    return f"pt{release}{cuda}"


def _write_build_info(folders: set[str], with_cuda: bool) -> None:
    torch = _torch()

    info = (
        '"""Written by setup.py when spectral_kernels._C was compiled: the torch it was compiled against."""\n\n'
        f"TORCH_VERSION = {torch.__version__!r}\n"
        f"TORCH_CUDA_VERSION = {torch.version.cuda!r}\n"
        f"WITH_CUDA_KERNELS = {with_cuda!r}\n"
    )
    for folder in folders:
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, BUILD_INFO), "w") as f:
            f.write(info)


class build_ext(_setuptools_build_ext):
    """Builds spectral_kernels._C with torch's BuildExtension, importing torch only here.

    setup() must already know that the distribution has an extension (for the platform wheel
    tag, and so that build_ext runs at all), but torch's command class and extension objects
    exist only once torch is imported, and sdist and egg_info instantiate and finalize this
    command too. So setup() gets a placeholder Extension of the same name, and run() fills it
    with torch's extension settings and hands this command object to torch's BuildExtension
    (a build_ext subclass of the same layout) before building. Then _build_info_<ABI tag>.py records the
    torch (and CUDA) the library was compiled against, beside it."""

    def run(self):
        _torch()
        with_cuda = _want_cuda()
        # First: it sets CUDA_HOME, which torch.utils.cpp_extension reads when it is imported.
        extension = torch_extension(with_cuda)
        from torch.utils.cpp_extension import BuildExtension, is_ninja_available

        # Filled in place, not replaced: finalize_options has set setuptools' private fields on it.
        vars(self.extensions[0]).update(vars(extension))
        inplace = self.inplace
        self.__class__ = BuildExtension
        # What BuildExtension.__init__ and finalize_options set, with ninja as before.
        self.no_python_abi_suffix = False
        self.use_ninja = is_ninja_available()
        self.force = self.force or self.use_ninja
        BuildExtension.run(self)
        folders = {os.path.join(self.build_lib, "spectral_kernels")}
        if inplace:  # also `pip install -e`: the library is copied into the source tree
            folders.add(self.get_finalized_command("build_py").get_package_dir("spectral_kernels"))
        _write_build_info(folders, with_cuda)


def _label_version(distribution, *, required: bool) -> None:
    """Add the torch label to the version (0.1.0+pt2141cu130): a wheel's library runs only under
    that torch, and pip and people can then tell the wheels apart. The sdist keeps the bare
    version (and never imports torch). Without torch the metadata of a wheel-to-be is left
    bare too, unless `required` (bdist_wheel, which compiles against torch anyway)."""
    metadata = distribution.metadata
    if "+" in metadata.version:
        return
    if not required and importlib.util.find_spec("torch") is None:
        return
    metadata.version = f"{metadata.version}+{torch_tag()}"


class bdist_wheel(_bdist_wheel):
    def finalize_options(self):
        _label_version(self.distribution, required=True)
        super().finalize_options()


class dist_info(_dist_info):
    """pip asks for a wheel's metadata (prepare_metadata_for_build_wheel, dist_info) before it
    builds the wheel, and refuses a wheel whose version differs from it: label both."""

    def finalize_options(self):
        _label_version(self.distribution, required=False)
        super().finalize_options()


def _long_description() -> str:
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()

    def plain(match: re.Match) -> str:
        text, target = match.group(1), match.group(2)
        return f"`{target}`" if text == target else f"{text} (`{target}` in the source distribution)"

    return RELATIVE_LINK.sub(plain, readme)


setup(
    # The real sources, flags and libraries are decided in build_ext.run, once torch is importable.
    ext_modules=[Extension("spectral_kernels._C", sources=_sources("*.cpp", "cpu/*.cpp", "cuda/*.cpp", "cuda/*.cu"))],
    cmdclass={"build_ext": build_ext, "bdist_wheel": bdist_wheel, "dist_info": dist_info},
    long_description=_long_description(),
    long_description_content_type="text/markdown",
)
