"""The CUDA kernels compiled for Hopper (sm_90) without a GPU, and their machine code read back:
no GPU is needed to find a kernel that does not build or that spills registers to local memory
(such a kernel would otherwise go unnoticed until a GPU run). The products x t^T, W t and
W^T x are cuBLAS calls whose compute type the host code sets explicitly per call (TF32 tensor
cores for "tf32", IEEE for "ieee"); that they honour it is checked on a GPU (test_gpu.py)."""

import importlib.util
import os
import pathlib
import re
import shutil
import subprocess

import pytest
import torch

from spectral_kernels.ops.cuda import built_cuda_version

ROOT = pathlib.Path(__file__).resolve().parents[1]
NVCC = shutil.which("nvcc")
KERNELS = ("piece_sums_kernel", "class_sums_kernel", "weight_kernel")


def _cuobjdump() -> str | None:
    """cuobjdump from the CUDA toolkit, or the copy triton ships."""
    found = shutil.which("cuobjdump")
    if found:
        return found
    try:
        import triton
    except ImportError:
        return None
    bundled = pathlib.Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    return str(bundled) if bundled.exists() else None


@pytest.fixture(scope="module")
def ptxas_report(tmp_path_factory):
    if NVCC is None:
        pytest.skip("nvcc is not on the PATH")
    from torch.utils.cpp_extension import include_paths

    out = tmp_path_factory.mktemp("cuda") / "ecf_cuda.o"
    cmd = [
        NVCC,
        "-arch=sm_90",
        "-O3",
        "-std=c++17",
        "-Xptxas",
        "-v",
        "-c",
        str(ROOT / "csrc" / "cuda" / "ecf_cuda.cu"),
        "-o",
        str(out),
        *[f"-I{p}" for p in include_paths()],
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout + proc.stderr, out


def _entries(report: str) -> dict[str, str]:
    """Each kernel's 'Function properties' line (stack frame, spill stores, spill loads)."""
    found = {}
    for name, props in re.findall(r"Function properties for (_Z\S+)\n\s*(.*)", report):
        kernel = next((k for k in KERNELS if k in name), None)
        if kernel is not None:
            dtype = "float" if re.search(r"I[f]E", name) else "double"
            found[f"{kernel}<{dtype}>"] = props
    return found


def test_every_cuda_kernel_compiles_for_hopper_without_register_spills(ptxas_report):
    report, _ = ptxas_report
    entries = _entries(report)
    assert sorted(entries) == sorted(f"{k}<{t}>" for k in KERNELS for t in ("float", "double")), report[-3000:]
    for kernel, props in entries.items():
        spills = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", props)
        assert spills and spills.groups() == ("0", "0"), (kernel, props)


def test_the_forward_hot_loop_never_touches_local_memory(ptxas_report):
    """piece_sums_kernel<float> is the loop every forward element goes through: no stack frame
    at all (sincosf's rare slow path lives in weight_kernel's stack frame, never spilled)."""
    report, _ = ptxas_report
    assert _entries(report)["piece_sums_kernel<float>"].startswith("0 bytes stack frame"), report[-3000:]
    tool = _cuobjdump()
    if tool is None:
        pytest.skip("cuobjdump is not available")
    _, obj = ptxas_report
    sass = subprocess.run([tool, "--dump-sass", str(obj)], capture_output=True, text=True, timeout=300).stdout
    body = sass.split("piece_sums_kernelIfE")[1].split("Function :")[0]
    assert "LDL" not in body and "STL" not in body


@pytest.mark.skipif(built_cuda_version() == 0, reason="spectral_kernels._C was built without CUDA")
def test_the_built_library_holds_ampere_and_hopper_code():
    tool = _cuobjdump()
    if tool is None:
        pytest.skip("cuobjdump is not available")
    # The library this interpreter loaded: a tree built in place by two Pythons (make test-oldest)
    # holds a _C*.so for each, and the first one a glob finds may be the other's.
    library = importlib.util.find_spec("spectral_kernels._C").origin
    listing = subprocess.run([tool, "--list-elf", str(library)], capture_output=True, text=True, timeout=300).stdout
    wanted = os.environ.get("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
    for arch in re.findall(r"(\d+)\.(\d+)", wanted):
        assert f"sm_{''.join(arch)}" in listing, listing
    # The runtime it was built against is the one torch uses (same major version).
    assert built_cuda_version() // 1000 == int(torch.version.cuda.split(".")[0])
