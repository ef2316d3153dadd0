"""Forward+backward time and extra memory of the ECF discrepancy, every provider side by side.

Workload (one row of the sweep): `real` (N, d) float32 features with 10 classes (no gradient),
`syn` (1000, d) synthetic features (gradient), frequencies t (M, d). Two modes:
  fixed-t    t drawn from a kernel, no gradient (SDD / CSDM training)
  learned-t  t needs a gradient too (NCFM with a learned sampler)

Providers:
  fused         sk.sdd(..., backend="cpu"): the fused C++ kernels
  reference     sk.sdd(..., backend="reference"): the same loss in plain PyTorch (unfused)
  ncfm_code     the public NCFM code's way: per class, t @ x_c^T, cos/sin means, complex norms
  mmd_gaussian  exact pairwise Gaussian MMD^2 (sk.mmd), the kernel the SDD estimates
  mmd_linear    ||mean x - mean y||^2 (DM)
  gemm_floor    torch.mm doing only the products a fused fwd+bwd cannot avoid: x t^T for the
                forward, x t^T again for the backward (a fused backward recomputes instead of
                storing N x M), W t for d syn and W^T x for dt, into preallocated outputs

Each (provider, size) runs in a fresh process: time is the median of repeats after a warm-up;
memory is the peak resident set of the process (VmHWM, reset just before the measured run)
above its resident set once the inputs exist, so it counts every temporary whatever allocator
made it; workers run with a fixed glibc mmap threshold so freed buffers leave the resident set.

    python benchmarks/bench_ops.py                     # the sweep, writes benchmarks/results/ops_cpu.*
    python benchmarks/bench_ops.py --quick             # a tiny sweep to check the script
    python benchmarks/bench_ops.py --device cuda       # GPU providers, writes ops_cuda_<gpu>.*

On CUDA the providers are triton (the fused Triton kernels), cuda (the C++/CUDA kernels of
csrc/cuda, when the library was built with CUDA), reference, mmd_gaussian and gemm_floor
(cuBLAS in the same precision), each in tf32 and in ieee float32, plus triton_libdevice at the
largest N (the same kernels with libdevice's sin/cos, an A/B of the epilogue); time is the
median of triton.testing.do_bench, memory is torch.cuda.max_memory_allocated above the inputs,
and first_s is the wall time of each case's first call (Triton: compile and autotuning
included). The run ends with the figure point as ratios (triton and cuda / floor, reference /
triton in time and memory, cuda's first call / steady).
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
PROVIDERS = ["fused", "reference", "ncfm_code", "mmd_gaussian", "mmd_linear", "gemm_floor"]
NUM_SYN, NUM_CLASSES = 1000, 10
# Exact MMD holds a few (N/C) x (N/C) kernel matrices per class; past this many bytes for one
# of them it would not fit in a 24 GiB machine's memory next to its temporaries.
MMD_MAX_MATRIX_BYTES = 2 * 2**30


def _status_mib(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak_rss() -> None:
    # Linux: writing 5 resets the high-water mark VmHWM to the current resident set.
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def worker(provider: str, n: int, m: int, d: int, mode: str, repeats: int) -> dict:
    import torch

    import spectral_kernels as sk

    torch.manual_seed(0)
    # Warm up libraries (MKL, the extension, autograd) on tiny inputs before measuring memory.
    _run_once(provider, *_make_inputs(torch, provider, 64, 16, 8, mode), sk=sk, torch=torch)
    inputs = _make_inputs(torch, provider, n, m, d, mode)
    _reset_peak_rss()
    base = _status_mib("VmRSS")
    _run_once(provider, *inputs, sk=sk, torch=torch)
    extra = _status_mib("VmHWM") - base
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        _run_once(provider, *inputs, sk=sk, torch=torch)
        times.append(time.perf_counter() - start)
    times.sort()
    q = lambda f: times[min(len(times) - 1, int(f * len(times)))]
    return {"median_s": statistics.median(times), "p20_s": q(0.2), "p80_s": q(0.8), "extra_mib": extra}


def _make_inputs(torch, provider, n, m, d, mode):
    real = torch.randn(n, d)
    real_labels = torch.arange(n) % NUM_CLASSES
    syn = torch.randn(NUM_SYN, d, requires_grad=True)
    syn_labels = torch.arange(NUM_SYN) % NUM_CLASSES
    t = (torch.randn(m, d) / d**0.5).requires_grad_(mode == "learned-t")
    # gemm_floor: outputs allocated and touched here, so that only the products are timed.
    buffers = None
    if provider == "gemm_floor":
        buffers = [
            torch.zeros(n, m),
            torch.zeros(NUM_SYN, m),
            torch.zeros(NUM_SYN, d),
            torch.zeros(m, d),
            torch.zeros(m, d),
        ]
    return real, real_labels, syn, syn_labels, t, buffers


def _ncfm_code_loss(torch, real, real_labels, syn, syn_labels, t):
    """The public NCFM code's computation, per class (its CFLossFunc with alpha = beta = 0.5)."""
    losses = []
    for c in range(NUM_CLASSES):
        feat_tg, feat = real[real_labels == c], syn[syn_labels == c]
        t_x, t_tg = torch.matmul(t, feat.t()), torch.matmul(t, feat_tg.t())
        x_re, x_im = torch.cos(t_x).mean(1), torch.sin(t_x).mean(1)
        tg_re, tg_im = torch.cos(t_tg).mean(1), torch.sin(t_tg).mean(1)
        x_norm = torch.sqrt(x_re * x_re + x_im * x_im)
        tg_norm = torch.sqrt(tg_re * tg_re + tg_im * tg_im)
        amp = (tg_norm - x_norm) ** 2
        pha = (2 * (tg_norm * x_norm - x_re * tg_re - x_im * tg_im)).clamp(min=1e-12)
        losses.append(torch.sqrt(0.5 * amp + 0.5 * pha).mean())
    return torch.stack(losses).mean()


def _gemm_floor(torch, real, syn, t, learned, buffers):
    """The matrix products of a fused forward+backward, and nothing else."""
    p_real, p_syn, d_syn, dt_real, dt_syn = buffers
    t, syn = t.detach(), syn.detach()
    torch.mm(real, t.T, out=p_real)  # forward, real
    torch.mm(syn, t.T, out=p_syn)  # forward, syn
    torch.mm(syn, t.T, out=p_syn)  # backward recompute, syn
    torch.mm(p_syn, t, out=d_syn)  # d syn = W t
    if learned:
        torch.mm(real, t.T, out=p_real)  # backward recompute, real
        torch.mm(p_real.T, real, out=dt_real)  # dt from real = W^T x
        torch.mm(p_syn.T, syn, out=dt_syn)  # dt from syn


def _run_once(provider, real, real_labels, syn, syn_labels, t, buffers, *, sk, torch):
    syn.grad = None
    if t.requires_grad:
        t.grad = None
    learned = t.requires_grad
    if provider == "gemm_floor":
        _gemm_floor(torch, real, syn, t, learned, buffers)
        return
    if provider == "fused":
        loss = sk.sdd(real, syn, real_labels, syn_labels, t=t, backend="cpu", num_classes=NUM_CLASSES)
    elif provider == "reference":
        loss = sk.sdd(real, syn, real_labels, syn_labels, t=t, backend="reference", num_classes=NUM_CLASSES)
    elif provider == "ncfm_code":
        loss = _ncfm_code_loss(torch, real, real_labels, syn, syn_labels, t)
    elif provider == "mmd_gaussian":
        loss = sk.mmd(real, syn, real_labels, syn_labels, kernel="gaussian", bandwidth=1.0, num_classes=NUM_CLASSES)
    elif provider == "mmd_linear":
        loss = sk.mmd(real, syn, real_labels, syn_labels, kernel="linear", num_classes=NUM_CLASSES)
    else:
        raise ValueError(f"unknown provider {provider!r}")
    loss.backward()


def run_case(provider, n, m, d, mode, repeats) -> dict | None:
    if provider in ("mmd_gaussian", "mmd_linear") and mode == "learned-t":
        return None  # no frequencies to learn
    class_matrix = (n // NUM_CLASSES) ** 2 * 4
    if provider == "mmd_gaussian" and class_matrix > MMD_MAX_MATRIX_BYTES:
        return {"skipped": f"exact MMD at N={n} needs {class_matrix / 2**30:.1f} GiB per class kernel matrix"}
    cmd = [sys.executable, __file__, "--worker", provider, str(n), str(m), str(d), mode, str(repeats)]
    # A fixed mmap threshold makes glibc return every large free to the OS at once, so the
    # resident set follows live memory instead of keeping freed buffers for reuse.
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072")
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        return {"skipped": f"failed: {out.stderr.strip().splitlines()[-1] if out.stderr.strip() else out.returncode}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", nargs=6, metavar=("PROVIDER", "N", "M", "D", "MODE", "REPEATS"))
    parser.add_argument("--quick", action="store_true", help="tiny sizes, to check the script")
    parser.add_argument("--out", default=None, help="output path without extension")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument(
        "--precisions",
        nargs="+",
        default=["tf32", "ieee"],
        choices=("tf32", "ieee"),
        help="CUDA only: the float32 product precisions to run, in this order",
    )
    parser.add_argument("--providers", nargs="+", default=PROVIDERS, choices=PROVIDERS, help="CPU providers to run")
    parser.add_argument("--merge", action="store_true", help="replace only the rows run now in the existing CSV")
    parser.add_argument("--replot", action="store_true", help="rewrite the .md and .png from the existing CSV")
    args = parser.parse_args()
    if args.device == "cuda" and not args.worker:
        cuda_sweep(args)
        return
    args.out = args.out or str(RESULTS / "ops_cpu")
    if args.replot:
        write_results(_merged(Path(args.out).with_suffix(".csv"), []), Path(args.out))
        return
    if args.worker:
        provider, n, m, d, mode, repeats = args.worker
        print(json.dumps(worker(provider, int(n), int(m), int(d), mode, int(repeats))))
        return

    import torch

    if args.quick:
        sweep = [(n, 256, 64, "fixed-t") for n in (512, 2048)] + [(2048, 256, 64, "learned-t")]
    else:
        sweep = [(n, 4096, 512, "fixed-t") for n in (1024, 4096, 16384, 65536)]
        sweep += [(n, 4096, 512, "learned-t") for n in (4096, 16384, 65536)]
        sweep += [(n, 1024, 512, "fixed-t") for n in (1024, 4096, 16384, 65536)]
        sweep += [(n, 4096, 2048, "fixed-t") for n in (1024, 4096, 16384)]
    processor = platform.processor() or platform.machine()
    device = f"{processor}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"
    rows = []
    for n, m, d, mode in sweep:
        repeats = 5 if n * m * d <= 16384 * 4096 * 512 else 3
        for provider in args.providers:
            result = run_case(provider, n, m, d, mode, repeats)
            if result is None:
                continue
            row = {
                "provider": provider,
                "mode": mode,
                "N": n,
                "S": NUM_SYN,
                "M": m,
                "d": d,
                "C": NUM_CLASSES,
                "device": device,
                **result,
            }
            rows.append(row)
            shown = result.get("skipped") or f"{result['median_s']:.3f} s, +{result['extra_mib']:.1f} MiB"
            print(f"{mode:9} N={n:6} M={m:5} d={d:5} {provider:13} {shown}", flush=True)
    if args.merge:
        rows = _merged(Path(args.out).with_suffix(".csv"), rows)
    write_results(rows, Path(args.out))


def _merged(csv_path: Path, new_rows: list[dict]) -> list[dict]:
    """The rows of an earlier run with the cases just measured replaced."""
    key = lambda r: (r["provider"], r["mode"], int(r["N"]), int(r["M"]), int(r["d"]))
    fresh = {key(r): r for r in new_rows}
    rows = []
    with open(csv_path) as f:
        for row in csv.DictReader(f):
            for field in ("N", "S", "M", "d", "C"):
                row[field] = int(row[field])
            for field in ("median_s", "p20_s", "p80_s", "extra_mib"):
                row[field] = float(row[field]) if row[field] else None
            row = {k: v for k, v in row.items() if v not in ("", None)}
            rows.append(fresh.pop(key(row), row))
    return rows + list(fresh.values())


CUDA_PROVIDERS = ["triton", "cuda", "reference", "mmd_gaussian", "gemm_floor", "triton_libdevice"]
# The GPU figure point: N real rows (+ NUM_SYN synthetic), M frequencies, d features.
CUDA_FIGURE_POINT = (65536, 4096, 2048)
ALL_PROVIDERS = list(dict.fromkeys(PROVIDERS + CUDA_PROVIDERS))  # table and plot order


def cuda_sweep(args) -> None:
    """All CUDA providers in one process: the caching allocator's statistics give memory.

    The figure point runs first, and the results files are rewritten after every case, so a run
    stopped by a time limit keeps everything it measured (the plot is drawn at the end)."""
    import torch
    import triton

    import spectral_kernels as sk

    assert torch.cuda.is_available(), "--device cuda needs a GPU"
    name = torch.cuda.get_device_name()
    slug = "".join(ch if ch.isalnum() else "_" for ch in name).strip("_").lower()
    out = Path(args.out or RESULTS / f"ops_cuda_{slug}")
    if args.quick:
        shapes = [(4096, 1024, 256, "fixed-t"), (4096, 1024, 256, "learned-t")]
        figure = shapes[:1]
    else:
        figure = [(*CUDA_FIGURE_POINT, mode) for mode in ("fixed-t", "learned-t")]
        shapes = [(n, 4096, 2048, mode) for mode in ("fixed-t", "learned-t") for n in (4096, 16384)]
        shapes += [(n, 4096, 512, "fixed-t") for n in (4096, 16384, 65536)]
    # The figure point in every precision first, then the rest of the sweep.
    plan = [(precision, case) for precision in args.precisions for case in figure]
    plan += [(precision, case) for precision in args.precisions for case in shapes if case not in figure]
    largest = max(case[0] for _, case in plan)
    from spectral_kernels.ops.cuda import built_cuda_version

    device = f"{name}, torch {torch.__version__}, triton {triton.__version__}, _C built for CUDA {built_cuda_version()}"
    rows = []
    for precision, (n, m, d, mode) in plan:
        torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
        for provider in CUDA_PROVIDERS:
            if provider == "mmd_gaussian" and mode == "learned-t":
                continue
            if provider == "cuda" and "cuda" not in sk.available_backends():
                print(f"cuda provider skipped: {sk.ops.get_backend('cuda').unavailable_reason()}", flush=True)
                continue
            # The libdevice sin/cos A/B (ops/triton_common.py) only at the largest N of each shape.
            if provider == "triton_libdevice" and n != largest:
                continue
            result = _cuda_case(torch, triton, sk, provider, n, m, d, mode, precision)
            row = {
                "provider": provider,
                "mode": f"{mode} {precision}",
                "N": n,
                "S": NUM_SYN,
                "M": m,
                "d": d,
                "C": NUM_CLASSES,
                "device": device,
                **result,
            }
            rows.append(row)
            shown = result.get("skipped") or f"{result['median_s'] * 1e3:.2f} ms, +{result['extra_mib']:.1f} MiB"
            print(f"{precision} {mode:9} N={n:6} M={m:5} d={d:5} {provider:16} {shown}", flush=True)
            write_results(rows, out, with_plot=False)
    print(figure_summary(rows), flush=True)  # before the plot: whatever befalls it, the ratios are out
    write_results(rows, out)


def figure_summary(rows: list[dict]) -> str:
    """The GPU targets at the figure point (against the cuBLAS floor and the reference), as ratios
    measured in this run."""
    lines = [
        f"Figure point N={CUDA_FIGURE_POINT[0]}+{NUM_SYN}, M={CUDA_FIGURE_POINT[1]}, d={CUDA_FIGURE_POINT[2]}, "
        f"C={NUM_CLASSES} "
        "(targets: triton <= 1.3x floor; reference >= 3x triton's time and >= 50x its extra memory; "
        "cuda <= 1.5x floor, <= 64 MiB extra, first call <= 2x a steady one):"
    ]
    point = [r for r in rows if (r["N"], r["M"], r["d"]) == CUDA_FIGURE_POINT and not r.get("skipped")]
    for mode in sorted({r["mode"] for r in point}):
        got = {r["provider"]: r for r in point if r["mode"] == mode}
        if "triton" not in got:
            continue
        tri = got["triton"]
        parts = [f"triton {tri['median_s'] * 1e3:.2f} ms, +{tri['extra_mib']:.1f} MiB"]
        if "gemm_floor" in got:
            parts.append(f"{tri['median_s'] / got['gemm_floor']['median_s']:.2f}x floor")
        if "reference" in got:
            ref = got["reference"]
            parts.append(
                f"reference {ref['median_s'] / tri['median_s']:.2f}x the time and "
                f"{ref['extra_mib'] / max(tri['extra_mib'], 1e-9):.0f}x the extra memory"
            )
        if "triton_libdevice" in got:
            parts.append(f"libdevice sin/cos {got['triton_libdevice']['median_s'] / tri['median_s']:.2f}x the time")
        if "cuda" in got:
            cu = got["cuda"]
            parts.append(
                f"cuda {cu['median_s'] * 1e3:.2f} ms ({cu['median_s'] / tri['median_s']:.2f}x triton), "
                f"+{cu['extra_mib']:.1f} MiB, first call {cu['first_s'] / cu['median_s']:.2f}x steady"
            )
            if "gemm_floor" in got:
                parts.append(f"cuda {cu['median_s'] / got['gemm_floor']['median_s']:.2f}x floor")
        lines.append(f"  {mode:16} " + "; ".join(parts))
    return "\n".join(lines)


def _cuda_case(torch, triton, sk, provider, n, m, d, mode, precision) -> dict:
    torch.cuda.empty_cache()
    gen = torch.Generator(device="cuda").manual_seed(0)
    real = torch.randn(n, d, device="cuda", generator=gen)
    real_labels = torch.arange(n, device="cuda") % NUM_CLASSES
    syn = torch.randn(NUM_SYN, d, device="cuda", generator=gen, requires_grad=True)
    syn_labels = torch.arange(NUM_SYN, device="cuda") % NUM_CLASSES
    t = (torch.randn(m, d, device="cuda", generator=gen) / d**0.5).requires_grad_(mode == "learned-t")
    buffers = None
    if provider == "gemm_floor":
        buffers = [
            torch.empty(n, m, device="cuda"),
            torch.empty(NUM_SYN, m, device="cuda"),
            torch.empty(NUM_SYN, d, device="cuda"),
            torch.empty(m, d, device="cuda"),
            torch.empty(m, d, device="cuda"),
        ]

    def reset():
        syn.grad = None
        t.grad = None

    def run():
        reset()
        if provider == "gemm_floor":
            return _gemm_floor(torch, real, syn, t, mode == "learned-t", buffers)
        if provider == "mmd_gaussian":
            loss = sk.mmd(
                real, syn, real_labels, syn_labels, kernel="gaussian", num_classes=NUM_CLASSES, check_finite=False
            )
        else:
            backend = "triton" if provider.startswith("triton") else provider
            loss = sk.sdd(
                real,
                syn,
                real_labels,
                syn_labels,
                t=t,
                num_classes=NUM_CLASSES,
                backend=backend,
                check_finite=False,
                precision=precision,  # every backend takes it; CPU arithmetic is always IEEE
            )
        loss.backward()

    # The A/B provider switches the epilogue's sin/cos (read by the op at each call).
    sincos = "libdevice" if provider == "triton_libdevice" else "reduced"
    previous = os.environ.get("SPECTRAL_KERNELS_TRITON_SINCOS")
    os.environ["SPECTRAL_KERNELS_TRITON_SINCOS"] = sincos
    try:
        return _measure_cuda(torch, triton, run, reset)
    finally:
        if previous is None:
            os.environ.pop("SPECTRAL_KERNELS_TRITON_SINCOS")
        else:
            os.environ["SPECTRAL_KERNELS_TRITON_SINCOS"] = previous


def _measure_cuda(torch, triton, run, reset) -> dict:
    """Time and extra memory of run(); reset() drops the gradients a call leaves (run() starts
    with it)."""
    try:
        torch.cuda.synchronize()
        began = time.perf_counter()
        run()  # compile / autotune outside the measurement, but timed: the first call
        torch.cuda.synchronize()
        first = time.perf_counter() - began
        # The first call's gradients are not inputs: left in the base, the measured call would free
        # them before making its own, and its extra memory would leave out the gradient outputs that
        # the table counts (and the CPU sweep does).
        reset()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        run()
        torch.cuda.synchronize()
        extra = (torch.cuda.max_memory_allocated() - base) / 2**20
        ms = triton.testing.do_bench(run, warmup=50, rep=500, return_mode="median")
        ms20, ms80 = triton.testing.do_bench(run, warmup=10, rep=200, quantiles=[0.2, 0.8])
    except torch.cuda.OutOfMemoryError as error:
        return {"skipped": f"out of GPU memory ({str(error).splitlines()[0][:80]})"}
    return {"median_s": ms / 1e3, "p20_s": ms20 / 1e3, "p80_s": ms80 / 1e3, "extra_mib": extra, "first_s": first}


def write_results(rows: list[dict], out: Path, with_plot: bool = True) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    fields = [
        "provider",
        "mode",
        "N",
        "S",
        "M",
        "d",
        "C",
        "median_s",
        "p20_s",
        "p80_s",
        "extra_mib",
        "first_s",
        "skipped",
        "device",
    ]
    with open(out.with_suffix(".csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row.get(k, "") for k in fields})
    out.with_suffix(".md").write_text(markdown_table(rows))
    if not with_plot:
        return
    # matplotlib is an optional extra (pyproject's `bench`), and a GPU machine's image may lack it:
    # the CSV and table above are the results, the plot can be drawn later from the CSV.
    if importlib.util.find_spec("matplotlib") is None:
        print(
            f"bench_ops.py: matplotlib is not installed, so {out.with_suffix('.png')} was not drawn; "
            f"draw it elsewhere with: python benchmarks/bench_ops.py --replot --out {out}",
            file=sys.stderr,
        )
        return
    plot(rows, out.with_suffix(".png"))


def markdown_table(rows: list[dict]) -> str:
    lines = [
        f"Device: {rows[0]['device']}. Time: median forward+backward seconds; memory: peak extra MiB "
        "(including the gradient outputs: dL/dsyn, and dL/dt in learned-t mode).",
        "",
    ]
    groups = sorted({(r["mode"], r["M"], r["d"], r["N"]) for r in rows}, key=lambda g: (g[0], g[1], g[2], g[3]))
    lines.append("| mode | N | M | d | provider | time (s) | × floor | × fused | extra MiB |")
    fused_name = "fused" if any(r["provider"] == "fused" for r in rows) else "triton"
    lines.append("|---|---|---|---|---|---|---|---|---|")
    for mode, m, d, n in groups:
        group = {r["provider"]: r for r in rows if (r["mode"], r["M"], r["d"], r["N"]) == (mode, m, d, n)}
        floor, fused = group.get("gemm_floor", {}).get("median_s"), group.get(fused_name, {}).get("median_s")
        for provider in ALL_PROVIDERS:
            r = group.get(provider)
            if r is None:
                continue
            if "skipped" in r and r["skipped"]:
                lines.append(f"| {mode} | {n} | {m} | {d} | {provider} | skipped: {r['skipped']} | | | |")
                continue
            ratio = lambda base, r=r: f"{r['median_s'] / base:.2f}" if base else ""
            lines.append(
                f"| {mode} | {n} | {m} | {d} | {provider} | {r['median_s']:.4g} | {ratio(floor)} | {ratio(fused)} | "
                f"{r['extra_mib']:.1f} |"
            )
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = sorted({(r["mode"], r["M"], r["d"]) for r in rows})
    # One colour per provider in every panel, so the single legend holds for all of them.
    colours = {p: f"C{i}" for i, p in enumerate(ALL_PROVIDERS)}
    fig, axes = plt.subplots(2, len(series), figsize=(4.2 * len(series), 7), squeeze=False)
    for col, (mode, m, d) in enumerate(series):
        for provider in ALL_PROVIDERS:
            pts = sorted(
                (r["N"], r["median_s"], r["extra_mib"])
                for r in rows
                if (r["mode"], r["M"], r["d"], r["provider"]) == (mode, m, d, provider) and not r.get("skipped")
            )
            if not pts:
                continue
            ns, ts, mems = zip(*pts)
            axes[0][col].plot(ns, ts, marker="o", label=provider, color=colours[provider])
            axes[1][col].plot(ns, [max(v, 0.1) for v in mems], marker="o", label=provider, color=colours[provider])
        axes[0][col].set_title(f"{mode}, M={m}, d={d}")
        for row, label in ((0, "fwd+bwd time (s)"), (1, "extra memory (MiB)")):
            axes[row][col].set_xscale("log", base=2)
            axes[row][col].set_yscale("log")
            axes[row][col].set_xlabel("N (real rows)")
            axes[row][col].set_ylabel(label)
            axes[row][col].grid(True, which="both", alpha=0.3)
    drawn = {}  # every provider once, whichever panels it appears in
    for ax in axes[0]:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            drawn.setdefault(label, handle)
    fig.legend(list(drawn.values()), list(drawn), loc="lower center", ncol=len(drawn), frameon=False)
    fig.suptitle(
        "ECF discrepancy, every provider: median forward+backward time (top) and peak memory above the inputs "
        "(bottom) against N real rows, per mode, M frequencies and feature dimension d"
    )
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(path, dpi=90)


if __name__ == "__main__":
    main()
