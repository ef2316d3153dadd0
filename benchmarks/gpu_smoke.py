"""The first contact with a GPU (benchmarks/gpu_suite.sh smoke): in about a minute after the build,
say whether everything that runs on CUDA runs and agrees with the reference, and bring back the
essentials. Prints one line per check and a JSON summary as its last line; exit status 1 if a
check failed (every check still runs).

    python benchmarks/gpu_smoke.py [--device cuda]

Checks: the versions; every available backend (reference, cuda, triton, and the Triton SORF
kernels) on one case against float64 sums and gradients; one distillation step and a 1-epoch
evaluation on the device through the CLI; peak GPU memory. The distillation uses the digits
set; where scikit-learn (which ships it) is not installed, random 8x8 images of its shape stand
in, and the summary says so (speed and placement are checked there, not accuracy).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import sys
import tempfile
import time
import traceback

import torch

# float32 sums of ~N/C cosines and their gradients against float64: far above float32 rounding
# (~1e-6 relative here), far below any indexing or precision bug (errors of order 1).
TOLERANCE = 1e-4


def versions() -> dict:
    import spectral_kernels as sk
    from spectral_kernels.ops.cuda import built_cuda_version

    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    props = torch.cuda.get_device_properties(0)
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "triton": triton_version,
        "cuda_runtime": torch.version.cuda,
        "extension_cuda": built_cuda_version(),
        "gpu": props.name,
        "capability": f"{props.major}.{props.minor}",
        "gpu_memory_gib": round(props.total_memory / 2**30, 1),
        "backends": list(sk.available_backends()),
    }


def _relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    got, want = got.detach().double().cpu(), want.detach()
    return float((got - want).abs().max() / want.abs().max().clamp_min(1.0))


def _sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def backend_case(name: str, device: str, structure: str, n: int = 3000, m: int = 512, d: int = 64) -> dict:
    """One case (N x d features, M frequencies, 10 classes, float32, ieee) against float64 on
    the CPU; a backend that cannot run in this process is reported as skipped, with its reason."""
    import spectral_kernels as sk
    from spectral_kernels.classes import class_index
    from spectral_kernels.ops.reference import ecf_sums_reference
    from spectral_kernels.structured import hadamard_frequencies

    label = f"{name}{' sorf' if structure == 'sorf' else ''}"
    reason = sk.ops.get_backend(name).unavailable_reason()
    if reason is not None:
        return {"check": label, "ok": True, "skipped": reason}
    gen = torch.Generator().manual_seed(0)
    c = 10
    x64 = torch.randn(n, d, generator=gen, dtype=torch.float64) * 0.3
    labels = torch.randint(0, c, (n,), generator=gen)
    if structure == "sorf":
        freqs = hadamard_frequencies("gaussian", m, d, generator=gen)
        t64 = freqs.dense().double()
    else:
        t64 = torch.randn(m, d, generator=gen, dtype=torch.float64)
    x64.requires_grad_(True)
    want = ecf_sums_reference(x64, t64, labels, c)
    weights = torch.randn(want.shape, generator=gen, dtype=torch.float64)
    (want_dx,) = torch.autograd.grad((want * weights).sum(), x64)

    x = x64.detach().float().to(device).requires_grad_(True)
    index = class_index(labels.to(device), n, c, torch.device(device))
    backend = sk.ops.resolve(name, x)
    _sync(device)
    began = time.perf_counter()
    if structure == "sorf":
        got = backend.structured_sums(x, freqs.to(device), index, "ieee")
    else:
        got = backend.ecf_sums(x, t64.float().to(device), index, "ieee")
    (dx,) = torch.autograd.grad((got * weights.float().to(device)).sum(), x)
    _sync(device)
    errors = {"sums": _relative_error(got, want.detach()), "dx": _relative_error(dx, want_dx)}
    return {
        "check": label,
        "ok": all(e <= TOLERANCE for e in errors.values()),
        "relative_error": errors,
        "seconds_incl_compile": round(time.perf_counter() - began, 2),
    }


def _stand_in_digits():
    """Random images of the digits set's shape (1797 of 1 x 8 x 8, 10 classes), split as it is."""
    import numpy as np

    from spectral_kernels.distill import data

    rng = np.random.default_rng(0)
    y = np.arange(1797, dtype=np.int64) % 10
    x = (rng.random((1797, 1, 8, 8)) * (1 + y[:, None, None, None] % 3)).astype(np.float32) / 3
    return data._stratified_split(x, y, 0.3, seed=0)


def distill_step(device: str) -> dict:
    """One csdm step (IPC 1, a pool of one briefly trained network) and a 1-epoch evaluation,
    through the CLI in this process (so the peak memory below includes them)."""
    from spectral_kernels import cli
    from spectral_kernels.distill import data, loop, needs
    from spectral_kernels.distill import evaluation as evaluate

    # The GPU image has torch but maybe neither scikit-learn (digits ships inside it) nor Pillow
    # (grid.png): stand in for what is missing, restore it afterwards, and say so in the result.
    saved = (data._digits, needs.ALWAYS, dict(needs.BY_DATASET), loop.write_grid, evaluate.write_grid)
    dataset = "digits"
    if importlib.util.find_spec("sklearn") is None:
        data._digits = _stand_in_digits
        needs.BY_DATASET["digits"] = ()
        dataset = "digits (random stand-in: scikit-learn is not installed)"
    if importlib.util.find_spec("PIL") is None:
        needs.ALWAYS = ()
        loop.write_grid = evaluate.write_grid = lambda *args, **kwargs: None
        dataset += " (no grid.png: Pillow is not installed)"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            argv = ["distill", "--dataset", "digits", "--method", "csdm", "--ipc", "1", "--iterations", "1"]
            argv += ["--net-pool", "1", "--pool-epochs", "1", "--num-eval", "1", "--eval-epochs", "1"]
            argv += ["--device", device, "--quiet", "--out", f"{tmp}/run"]
            began = time.perf_counter()
            status = cli.main(argv)
            seconds = time.perf_counter() - began
            metrics = []
            if status == 0:
                from pathlib import Path

                metrics = [json.loads(line) for line in Path(tmp, "run", "metrics.jsonl").read_text().splitlines()]
    finally:
        data._digits, needs.ALWAYS, needs.BY_DATASET, loop.write_grid, evaluate.write_grid = saved
    return {
        "check": "distill step + 1-epoch evaluation",
        "ok": status == 0,
        "dataset": dataset,
        "exit_status": status,
        "seconds": round(seconds, 1),
        "last_metrics": metrics[-1] if metrics else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="a CUDA device (default cuda)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("gpu_smoke.py: torch sees no CUDA GPU", file=sys.stderr)
        return 2
    summary = {"versions": versions(), "checks": []}
    print("versions:", json.dumps(summary["versions"]), flush=True)
    torch.cuda.reset_peak_memory_stats()
    cases = [(name, "dense") for name in ("reference", "cuda", "triton")] + [("triton", "sorf")]
    jobs = [lambda n=n, s=s: backend_case(n, args.device, s) for n, s in cases]
    jobs.append(lambda: distill_step(args.device))
    for label, job in zip([f"{n} {s}" for n, s in cases] + ["distill"], jobs):
        try:
            result = job()
        except Exception as error:  # report and go on: the other checks still say something
            result = {"check": label, "ok": False, "error": f"{type(error).__name__}: {error}"}
            traceback.print_exc()
        summary["checks"].append(result)
        verdict = "SKIP " if "skipped" in result else ("PASS " if result["ok"] else "FAIL ")
        print(verdict + json.dumps(result), flush=True)
    summary["peak_memory_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    summary["ok"] = all(r["ok"] for r in summary["checks"])
    print(json.dumps(summary), flush=True)
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
