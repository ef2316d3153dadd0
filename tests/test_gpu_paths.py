"""Code that only runs on a GPU machine, run here on the CPU where a stand-in is honest: the
plumbing around the device (what is planned, written and printed), not the device's numbers.
Every minute of a lent GPU lost to a Python mistake in such code is a minute not measured."""

import csv
import sys
import types

import torch

import spectral_kernels as sk
from spectral_kernels.ops.precision import cuda_matmul_precision


def test_the_cuda_benchmark_writes_its_results_and_ratios_without_matplotlib(tmp_path, monkeypatch, capsys):
    """bench_ops.py --device cuda end to end with each case's measurement stood in for (the
    timing and memory of a case need the GPU; planning the sweep, writing the CSV and table after
    every case and printing the figure point's ratios do not). A GPU machine may not have
    matplotlib (an optional extra): the final write must not then fail after the whole sweep ran,
    nor lose the ratios that the run is for."""
    from benchmarks import bench_ops

    measured = []

    def fake_case(torch_, triton_, sk, provider, n, m, d, mode, precision):
        measured.append((provider, n, m, d, mode, precision))
        steady = {"gemm_floor": 1e-3, "triton": 1.2e-3, "cuda": 1.4e-3, "reference": 5e-3}.get(provider, 2e-3)
        return {"median_s": steady, "p20_s": steady, "p80_s": steady, "extra_mib": 10.0, "first_s": 2 * steady}

    monkeypatch.setattr(bench_ops, "_cuda_case", fake_case)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now fails, as where it is missing
    args = types.SimpleNamespace(out=str(tmp_path / "ops_cuda_h100"), quick=False, precisions=["tf32", "ieee"])
    with cuda_matmul_precision("ieee", torch.device("cuda")):  # the sweep sets torch's TF32 flag per precision
        bench_ops.cuda_sweep(args)
    out = capsys.readouterr()
    assert measured[0][1:4] == bench_ops.CUDA_FIGURE_POINT  # the figure point first
    with open(tmp_path / "ops_cuda_h100.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(measured) and rows[0]["device"].startswith("NVIDIA H100 80GB HBM3, torch ")
    assert (tmp_path / "ops_cuda_h100.md").exists() and not (tmp_path / "ops_cuda_h100.png").exists()
    assert "matplotlib is not installed" in out.err
    summary = out.out[out.out.index("Figure point") :]
    assert "fixed-t tf32" in summary and "1.20x floor" in summary, summary


def test_the_gpu_smoke_main_reports_every_check_and_a_summary(monkeypatch, capsys):
    """gpu_smoke.py's main(), the first thing a lent GPU runs, with the device queries stood in
    for: the versions, one line per check and the JSON summary (test_gpu_suite_script runs the
    checks themselves on the CPU). Small cases: the interpreter runs the Triton kernels here."""
    import json

    from benchmarks import gpu_smoke

    props = types.SimpleNamespace(name="NVIDIA H100 80GB HBM3", major=9, minor=0, total_memory=80 * 2**30)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=None: props)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: 3 * 2**20)
    # With the GPU pretended, a _C built with CUDA (as CI's, where nvcc is found) would offer the
    # cuda backend, whose kernels cannot take these CPU tensors: it reports itself unavailable.
    cuda = sk.ops.get_backend("cuda")
    monkeypatch.setattr(cuda, "unavailable_reason", lambda: "stood in for: CPU tensors")
    case = gpu_smoke.backend_case
    monkeypatch.setattr(gpu_smoke, "backend_case", lambda name, device, s: case(name, device, s, n=60, m=24, d=8))
    monkeypatch.setattr(gpu_smoke, "distill_step", lambda device: {"check": "distill", "ok": True})
    monkeypatch.setattr(sys, "argv", ["gpu_smoke.py", "--device", "cpu"])
    status = gpu_smoke.main()
    lines = capsys.readouterr().out.splitlines()
    summary = json.loads(lines[-1])
    assert status == 0 and summary["ok"], lines
    assert summary["versions"]["gpu"] == "NVIDIA H100 80GB HBM3" and summary["versions"]["capability"] == "9.0"
    assert [c["check"] for c in summary["checks"]] == ["reference", "cuda", "triton", "triton sorf", "distill"]
    assert summary["checks"][1]["skipped"] == "stood in for: CPU tensors"
    assert summary["peak_memory_mib"] == 3.0


def test_the_cuda_benchmarks_extra_memory_counts_the_gradient_outputs():
    """bench_ops._measure_cuda against a simulated caching allocator (the GPU's statistics are
    what it reads): a call that frees the previous call's gradients, holds `temp` bytes of
    temporaries and leaves `grads` bytes of new gradients. Its extra memory must count both, as
    the table says and the CPU sweep measures; with the first call's gradients left in the base,
    the measured call freed them before making its own and `grads` went uncounted."""
    from benchmarks import bench_ops

    inputs, temp, grads = 100 * 2**20, 30 * 2**20, 8 * 2**20
    state = {"live": inputs, "peak": inputs, "has_grads": False}

    def allocate(nbytes):
        state["live"] += nbytes
        state["peak"] = max(state["peak"], state["live"])

    def reset():  # syn.grad = None, t.grad = None
        if state["has_grads"]:
            state["live"] -= grads
        state["has_grads"] = False

    def run():
        reset()
        allocate(temp)
        allocate(grads)
        state["live"] -= temp
        state["has_grads"] = True

    def reset_peak():
        state["peak"] = state["live"]

    cuda = types.SimpleNamespace(
        synchronize=lambda: None,
        memory_allocated=lambda: state["live"],
        max_memory_allocated=lambda: state["peak"],
        reset_peak_memory_stats=reset_peak,
        OutOfMemoryError=MemoryError,
    )
    fake_torch = types.SimpleNamespace(cuda=cuda)
    bench = lambda fn, warmup, rep, quantiles=None, return_mode="mean": [1.0, 1.0] if quantiles else 1.0
    fake_triton = types.SimpleNamespace(testing=types.SimpleNamespace(do_bench=bench))
    result = bench_ops._measure_cuda(fake_torch, fake_triton, run, reset)
    assert result["extra_mib"] == (temp + grads) / 2**20, result
