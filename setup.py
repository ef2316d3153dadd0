"""Build spectral_kernels._C, the fused ECF kernels.

C++ CPU kernels are always built. The translation units include only ATen headers and
torch/library.h (not torch/extension.h): the op schemas are registered with TORCH_LIBRARY and
called through torch.ops, so no pybind11 binding is needed and each unit compiles in seconds.
"""
import glob
import os

from setuptools import setup
from torch.utils.cpp_extension import BuildExtension, CppExtension

ROOT = os.path.dirname(os.path.abspath(__file__))


def cpu_extension():
    sources = sorted(glob.glob(os.path.join("csrc", "*.cpp")) + glob.glob(os.path.join("csrc", "cpu", "*.cpp")))
    return CppExtension(
        name="spectral_kernels._C",
        sources=sources,
        # -fopenmp: at::parallel_for is an inline `omp parallel` region, so without it the
        # kernels silently run on one thread. The library links libgomp.so.1, which resolves to
        # the copy torch has already loaded (same soname), so there is one OpenMP runtime.
        # -g0 keeps the .so small (debug info makes it ~11 MB).
        extra_compile_args={"cxx": ["-O3", "-g0", "-fopenmp"]},
        extra_link_args=["-fopenmp"],
        # Python's limited API is not needed: the module has no Python bindings at all.
        py_limited_api=False,
    )


setup(
    ext_modules=[cpu_extension()],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
