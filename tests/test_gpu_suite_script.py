"""benchmarks/gpu_suite.sh without a GPU: its argument handling, and that it refuses at once
(before building or writing anything) when torch sees no GPU or Python has no torch."""

import os
import pathlib
import subprocess
import sys
import time

import pytest
import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_suite.sh"


def _run(*args, tmp_path, python=sys.executable, timeout=120):
    env = {**os.environ, "PYTHON": str(python), "RESULTS_DIR": str(tmp_path / "results")}
    began = time.monotonic()
    out = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=timeout)
    return out, time.monotonic() - began


@pytest.mark.parametrize(
    "args, message",
    [
        (["bogus"], "stage must be smoke, tests, bench or all, got 'bogus'"),
        (["smoke", "--quick"], "stage 'smoke' takes no options, got '--quick'"),
        (["tests", "extra"], "stage 'tests' takes no options, got 'extra'"),
    ],
)
def test_bad_arguments_are_refused_with_status_2_before_python_runs(tmp_path, args, message):
    out, _ = _run(*args, tmp_path=tmp_path, python=tmp_path / "no-such-python")
    assert out.returncode == 2, out
    assert message in out.stderr
    assert not (tmp_path / "results").exists()


def test_help_names_every_stage(tmp_path):
    out, _ = _run("--help", tmp_path=tmp_path, python=tmp_path / "no-such-python")
    assert out.returncode == 0, out
    for stage in ("smoke", "tests", "bench", "all"):
        assert f"gpu_suite.sh {stage}" in out.stderr.replace("[all]", "all")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the script would run")
@pytest.mark.parametrize("stage", ["smoke", "tests", "bench", "all"])
def test_without_a_gpu_every_stage_stops_at_once_with_a_clear_message(tmp_path, stage):
    out, seconds = _run(stage, tmp_path=tmp_path)
    assert out.returncode == 1, out
    assert "sees no CUDA GPU; nothing was built or run" in out.stderr, out.stderr
    assert seconds < 60  # one torch import, no build, no `make install`
    assert not (tmp_path / "results").exists()


def test_a_python_without_torch_is_named(tmp_path):
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\nexit 1\n")
    fake.chmod(0o755)
    out, _ = _run("smoke", tmp_path=tmp_path, python=fake)
    assert out.returncode == 1, out
    assert f"{fake} cannot import torch" in out.stderr
    assert not (tmp_path / "results").exists()


def test_the_smoke_checks_run_here_on_cpu_tensors(monkeypatch):
    """benchmarks/gpu_smoke.py's checks, on the CPU at small sizes (Triton under the
    interpreter), so the script the first GPU run depends on cannot rot unseen. The distillation
    runs on the random stand-in for digits, as on a machine without scikit-learn or Pillow."""
    import spectral_kernels as sk
    from benchmarks import gpu_smoke
    from spectral_kernels.distill import data

    backends = [b for b in ("reference", "cpu", "triton") if sk.ops.runs_on(b, torch.empty(1))]
    for name in backends:
        for structure in ("dense", "sorf"):
            result = gpu_smoke.backend_case(name, "cpu", structure, n=60, m=24, d=8)
            assert result["ok"] and "skipped" not in result, result
    # A backend this process cannot run is reported as skipped with its reason, not as a failure.
    if "cuda" not in sk.available_backends():
        assert gpu_smoke.backend_case("cuda", "cpu", "dense")["skipped"]
    monkeypatch.setattr(data, "_digits", data._digits)  # restored after the stand-in replaces it
    monkeypatch.setitem(sys.modules, "sklearn", None)  # import sklearn now raises ImportError
    monkeypatch.setitem(sys.modules, "PIL", None)  # and Pillow: the GPU image may lack both
    result = gpu_smoke.distill_step("cpu")
    assert result["ok"] and result["dataset"].startswith("digits (random stand-in"), result
    assert "no grid.png: Pillow is not installed" in result["dataset"], result
    assert result["last_metrics"] is not None
