"""Accuracy per second of the spectral estimators of the gaussian MMD^2 (SPEC §4.1).

    python benchmarks/bench_estimators.py            # digits and animals, N = 16384 + 1000, C = 10
    python benchmarks/bench_estimators.py --quick    # tiny sizes: checks the script
    python benchmarks/bench_estimators.py --replot   # the figure again from estimators_cpu.json

What it measures, per feature set. The truth is the exact class-wise MMD^2 (V-statistic, summed
over the C classes) in float64. Each spectral estimator averages a per-frequency term
f(w) = sum_c |P_c(w) - Q_c(w)|^2 over its M frequencies (SPEC §3), so its error at any M can be
read off a pool of frequencies drawn in independent blocks of D = block_width(d) (for ORF and
SORF the rows of one block are dependent, the blocks are not):
    M <= D:          MSE(M) = mean over the pool's blocks of (mean of the block's first M terms - exact)^2
    M = k D + m:     MSE(M) = (k D^2 MSE(D) + m^2 MSE(m)) / M^2       (independent blocks, no bias)
which is what `structure=` draws (the last block is cut to its first rows). Nothing about the
variance is assumed: it is measured on the pool (K blocks, so the RMSE is known to about
1/sqrt(2K)), and the bias (mean over the pool minus exact) is reported with its standard error.
M_1% is the smallest M whose relative RMSE is <= 1%; the time to 1% is the measured median time
of one estimate at M_1% (drawing the frequencies included: ORF's QR factorisations are part of
its cost), side by side in one process. Providers:
    exact            sk.mmd, all pairs per class (float32): no error, O(N^2) per class
    unfused iid      x t^T materialised (N x M), cos/sin, per-class means: what the NCFM code does
    fused iid        sk.sdd(structure="iid"), backend cpu
    fused ORF        sk.sdd(structure="orthogonal")
    fused SORF       sk.sdd(structure="hadamard"): three fast Walsh-Hadamard transforms, no t
Memory: the peak resident memory a fresh process adds during one estimate at M_1% (inputs
excluded), at N = 4096 and at N = 16384 real features: flat in N means the fused forms hold
tiles, not N x M.

Features: the train images (augmented by siamese_augment with a fresh seed per batch of 256 to
reach N), resized to 32 x 32, through a ConvNet (width 128, depth 3, random initialisation:
2048-d), L2-normalised as NCFM does. Synthetic: 100 other images per class with pixel noise
(std 0.25: a synthetic set early in distillation, initialised from real images), unaugmented,
through the same network. Bandwidth: the median distance between real
and synthetic features.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import spectral_kernels as sk
from spectral_kernels.distill.augment import siamese_augment
from spectral_kernels.distill.data import load_dataset
from spectral_kernels.distill.models import ConvNet
from spectral_kernels.structured import block_width

RESULTS = Path(__file__).resolve().parent / "results"
PROVIDERS = ["exact", "unfused iid", "fused iid", "fused ORF", "fused SORF"]
STRUCTURE = {"unfused iid": "iid", "fused iid": "iid", "fused ORF": "orthogonal", "fused SORF": "hadamard"}
TARGET = 0.01  # relative RMSE
LADDER = [64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536]


# ----------------------------------------------------------------------------- features


def features(dataset: str, num_real: int, syn_per_class: int, seed: int = 0):
    """(real, real_labels, syn, syn_labels): 2048-d L2-normalised ConvNet features, float32."""
    data = load_dataset(dataset)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = ConvNet(data.train_x.shape[1], data.num_classes, 32, width=128, depth=3).eval()
    resize = lambda x: F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)

    @torch.no_grad()
    def embed(x):
        return F.normalize(torch.cat([net.embed(resize(x[i : i + 256])) for i in range(0, x.shape[0], 256)]), dim=1)

    pick = torch.randint(0, data.train_x.shape[0], (num_real,), generator=gen)
    images = torch.cat(
        [siamese_augment(data.train_x[pick[i : i + 256]], seed=seed * 100003 + i) for i in range(0, num_real, 256)]
    )
    real, real_labels = embed(images), data.train_y[pick]
    syn_pick = torch.cat(
        [
            torch.nonzero(data.train_y == c).flatten()[
                torch.randint(0, int((data.train_y == c).sum()), (syn_per_class,), generator=gen)
            ]
            for c in range(data.num_classes)
        ]
    )
    noisy = data.train_x[syn_pick] + 0.25 * torch.randn(data.train_x[syn_pick].shape, generator=gen)
    syn, syn_labels = embed(noisy), data.train_y[syn_pick]
    return real.contiguous(), real_labels, syn.contiguous(), syn_labels


def median_bandwidth(real: torch.Tensor, syn: torch.Tensor) -> float:
    sample = real[torch.randperm(real.shape[0], generator=torch.Generator().manual_seed(1))[:2000]]
    return float(torch.cdist(sample.double(), syn.double()).median())


# ----------------------------------------------------------------------------- the estimators


def draw(structure: str, num_freqs: int, dim: int, bandwidth: float, gen: torch.Generator):
    if structure == "hadamard":
        return sk.hadamard_frequencies("gaussian", num_freqs, dim, bandwidth=bandwidth, generator=gen)
    return sk.sample_frequencies("gaussian", num_freqs, dim, bandwidth=bandwidth, generator=gen, structure=structure)


def per_frequency_terms(real, ry, syn, sy, t, num_classes) -> torch.Tensor:
    """(M,) f(w_m) = sum_c |P_c(w_m) - Q_c(w_m)|^2, float64 (the accumulation, not the sums)."""
    pr, pi = sk.ecf(real, t, ry, num_classes, backend="cpu")
    qr, qi = sk.ecf(syn, t, sy, num_classes, backend="cpu")
    return ((pr.double() - qr.double()) ** 2 + (pi.double() - qi.double()) ** 2).sum(0)


def unfused_iid(real, ry, syn, sy, num_freqs, bandwidth, gen, num_classes):
    """The plain PyTorch form: phases N x M in memory, then cos/sin and per-class means."""
    t = sk.sample_frequencies("gaussian", num_freqs, real.shape[1], bandwidth=bandwidth, generator=gen)

    def means(x, y):
        p = x @ t.T
        count = torch.bincount(y, minlength=num_classes).clamp_min(1).to(p.dtype)[:, None]
        zero = p.new_zeros(num_classes, num_freqs)
        return zero.index_add(0, y, torch.cos(p)) / count, zero.index_add(0, y, torch.sin(p)) / count

    (pr, pi), (qr, qi) = means(real, ry), means(syn, sy)
    return ((pr - qr) ** 2 + (pi - qi) ** 2).mean(1).sum()


def estimate(provider, real, ry, syn, sy, num_freqs, bandwidth, gen, num_classes):
    if provider == "exact":
        return sk.mmd(real, syn, ry, sy, bandwidth=bandwidth, num_classes=num_classes, reduction="sum")
    if provider == "unfused iid":
        return unfused_iid(real, ry, syn, sy, num_freqs, bandwidth, gen, num_classes)
    return sk.sdd(
        real,
        syn,
        ry,
        sy,
        bandwidth=bandwidth,
        num_freqs=num_freqs,
        structure=STRUCTURE[provider],
        generator=gen,
        num_classes=num_classes,
        reduction="sum",
        backend="cpu",
    )


def timed(provider, real, ry, syn, sy, num_freqs, bandwidth, num_classes, repeats) -> float:
    """Median seconds of one estimate (a fresh draw each time)."""
    gen = torch.Generator().manual_seed(12345)
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        with torch.no_grad():
            float(estimate(provider, real, ry, syn, sy, num_freqs, bandwidth, gen, num_classes))
        times.append(time.perf_counter() - began)
    return statistics.median(times)


# ----------------------------------------------------------------------------- error from a pool


class ErrorModel:
    """Relative MSE at any M from a pool of per-frequency terms in blocks of D (module docstring)."""

    def __init__(self, terms: torch.Tensor, width: int, exact: float):
        self.width, self.exact = width, exact
        self.blocks = terms.reshape(-1, width) / exact - 1.0  # relative error of each single term
        self.cumulative = self.blocks.cumsum(1)

    def mse_within(self, m: int) -> float:
        return float((self.cumulative[:, m - 1] / m).pow(2).mean())

    def rmse(self, m: int) -> float:
        k, rest = divmod(m, self.width)
        total = k * self.width**2 * self.mse_within(self.width) + (rest**2 * self.mse_within(rest) if rest else 0.0)
        return math.sqrt(total) / m

    def bias(self) -> tuple[float, float]:
        """(mean relative error of a full block, its standard error)."""
        means = self.blocks.mean(1)
        return float(means.mean()), float(means.std() / math.sqrt(means.shape[0]))

    def frequencies_for(self, target: float, limit: int) -> int | None:
        """Smallest M <= limit with rmse(M) <= target (rmse falls with M, up to the pool's noise)."""
        if self.rmse(limit) > target:
            return None
        low, high = 1, limit
        while low < high:
            mid = (low + high) // 2
            if self.rmse(mid) <= target:
                high = mid
            else:
                low = mid + 1
        return low


# ----------------------------------------------------------------------------- memory


def _resident_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def memory_probe(path: str, provider: str, num_real: int, num_freqs: int, bandwidth: float, num_classes: int) -> int:
    """In a fresh process: the bytes the peak RSS grows by during one estimate, over the RSS
    just before it (Linux: writing 5 to /proc/self/clear_refs resets the peak, VmHWM, so the
    transient buffers of loading the inputs are not counted)."""
    data = torch.load(path, weights_only=True)
    real, ry, syn, sy = data["real"][:num_real].clone(), data["ry"][:num_real].clone(), data["syn"], data["sy"]
    del data
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # a tiny call first, so that lazily loaded code and pools are not counted
        float(estimate(provider, real[:64], ry[:64], syn, sy, 64, bandwidth, gen, num_classes))
    Path("/proc/self/clear_refs").write_text("5")
    before = _resident_kib("VmRSS")
    with torch.no_grad():
        float(estimate(provider, real, ry, syn, sy, num_freqs, bandwidth, gen, num_classes))
    return 1024 * (_resident_kib("VmHWM") - before)


def measure_memory(path: Path, provider, num_real, num_freqs, bandwidth, num_classes) -> int:
    args = (str(path), provider, num_real, num_freqs, bandwidth, num_classes)
    code = (
        f"import sys, json; sys.path.insert(0, {str(Path(__file__).parent)!r}); import bench_estimators as b; "
        f"print(json.dumps(b.memory_probe(*{args!r})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- the run


def run_dataset(dataset: str, args, writer_rows: list[dict], curves: dict) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {dataset}: features", flush=True)
    real, ry, syn, sy = features(dataset, args.num_real, args.syn_per_class)
    num_classes, dim = int(ry.max()) + 1, real.shape[1]
    bandwidth = median_bandwidth(real, syn)
    exact = float(
        sk.mmd(real.double(), syn.double(), ry, sy, bandwidth=bandwidth, num_classes=num_classes, reduction="sum")
    )
    width = block_width(dim)
    print(
        f"  N={real.shape[0]} S={syn.shape[0]} d={dim} C={num_classes} sigma={bandwidth:.4f} exact MMD^2={exact:.6g}",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        saved = Path(tmp) / "features.pt"
        torch.save({"real": real, "ry": ry, "syn": syn, "sy": sy}, saved)
        models = {}
        for provider in PROVIDERS:
            row = dict(
                dataset=dataset,
                provider=provider,
                num_real=real.shape[0],
                num_syn=syn.shape[0],
                dim=dim,
                num_classes=num_classes,
                bandwidth=round(bandwidth, 6),
                exact=exact,
                pool_blocks="",
                block=width,
                rmse_at_1024="",
                bias="",
                bias_se="",
                freqs_to_1pct="",
                seconds_to_1pct="",
                memory_small_mb="",
                memory_mb="",
                device=device_label(),
            )
            if provider == "exact":
                m, model = 0, None
                row.update(freqs_to_1pct=0, rmse_at_1024=0.0)
            else:
                structure = STRUCTURE[provider]
                began = time.perf_counter()
                if structure not in models:  # the unfused and fused iid forms share one estimator
                    gen = torch.Generator().manual_seed(2024)
                    terms = torch.cat(
                        [
                            per_frequency_terms(
                                real, ry, syn, sy, draw(structure, width, dim, bandwidth, gen), num_classes
                            )
                            for _ in range(args.pool_blocks)
                        ]
                    )
                    models[structure] = ErrorModel(terms, width, exact)
                model = models[structure]
                bias, bias_se = model.bias()
                m = model.frequencies_for(TARGET, args.pool_blocks * width * 64)
                row.update(
                    pool_blocks=args.pool_blocks,
                    rmse_at_1024=round(model.rmse(min(1024, width * args.pool_blocks)), 5),
                    bias=round(bias, 6),
                    bias_se=round(bias_se, 6),
                    freqs_to_1pct=m,
                )
                print(
                    f"  {provider}: pool {time.perf_counter() - began:.0f} s, rel. RMSE at M=1024 "
                    f"{row['rmse_at_1024']:.4f}, "
                    f"bias {bias:+.5f} +- {bias_se:.5f}, M_1% = {m}",
                    flush=True,
                )
            if m is not None and (provider == "exact" or m <= args.max_timed_freqs):
                row["seconds_to_1pct"] = round(
                    timed(provider, real, ry, syn, sy, m, bandwidth, num_classes, args.repeats), 4
                )
                small = min(args.small_real, real.shape[0])
                row["memory_small_mb"] = round(
                    measure_memory(saved, provider, small, m, bandwidth, num_classes) / 2**20, 1
                )
                row["memory_mb"] = round(
                    measure_memory(saved, provider, real.shape[0], m, bandwidth, num_classes) / 2**20, 1
                )
            print(
                f"  {provider}: {row['seconds_to_1pct']} s to 1%, memory {row['memory_small_mb']} MB "
                f"(N={args.small_real}) "
                f"/ {row['memory_mb']} MB (N={real.shape[0]})",
                flush=True,
            )
            writer_rows.append(row)
            # The curve: relative RMSE against measured seconds along the ladder.
            points = []
            if model is not None:
                for ladder_m in [x for x in LADDER if x <= args.max_curve_freqs]:
                    seconds = timed(provider, real, ry, syn, sy, ladder_m, bandwidth, num_classes, args.curve_repeats)
                    points.append((ladder_m, seconds, model.rmse(ladder_m)))
            elif row["seconds_to_1pct"] != "":
                points.append((0, row["seconds_to_1pct"], 0.0))
            curves.setdefault(dataset, {})[provider] = points


def device_label() -> str:
    processor = platform.processor() or "cpu"
    return f"{platform.machine()} ({processor}), {torch.get_num_threads()} threads, torch {torch.__version__}"


def write_markdown(rows: list[dict], path: Path, command: str) -> None:
    lines = [
        f"Produced by `{command}` on {rows[0]['device']}.",
        "",
        "Time for one estimate of the exact class-wise gaussian MMD^2 (V-statistic, summed over C classes) to 1% "
        "relative RMSE; M_1% read off a pool of independent frequency blocks (benchmarks/bench_estimators.py "
        "docstring); seconds are medians, measured side by side in one process; memory is the peak RSS a fresh "
        "process adds during the estimate.",
        "",
    ]
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        sub = [r for r in rows if r["dataset"] == dataset]
        first = sub[0]
        lines += [
            f"### {dataset}: N = {first['num_real']} real, {first['num_syn']} synthetic, d = {first['dim']}, "
            f"C = {first['num_classes']}, sigma = {first['bandwidth']}",
            "",
            "| provider | rel. RMSE at M = 1024 | bias (± s.e.) | M for 1% | seconds to 1% | vs fused iid | vs "
            "unfused iid "
            "| memory (MB), small N | memory (MB), N |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        seconds = {r["provider"]: r["seconds_to_1pct"] for r in sub}
        for r in sub:
            ratio = lambda other, r=r, seconds=seconds: (
                f"{float(seconds[other]) / float(r['seconds_to_1pct']):.1f}x"
                if seconds.get(other) not in ("", None) and r["seconds_to_1pct"] not in ("", None)
                else ""
            )
            bias = f"{float(r['bias']):+.4f} ± {float(r['bias_se']):.4f}" if r["bias"] != "" else ""
            lines.append(
                f"| {r['provider']} | {r['rmse_at_1024']} | {bias} | "
                f"{r['freqs_to_1pct'] if r['freqs_to_1pct'] != '' else '> pool'} "
                f"| {r['seconds_to_1pct']} | {ratio('fused iid')} | {ratio('unfused iid')} | {r['memory_small_mb']} "
                f"| {r['memory_mb']} |"
            )
        lines.append("")
    lines.append("\"vs X\": X's seconds to 1% divided by this provider's (how many times sooner this one gets there).")
    path.write_text("\n".join(lines) + "\n")


def plot(curves: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(6 * len(curves), 4.5), squeeze=False)
    for ax, (dataset, providers) in zip(axes[0], curves.items()):
        for provider, points in providers.items():
            if not points:
                continue
            if provider == "exact":
                ax.axvline(points[0][1], color="black", linestyle=":", label=f"exact ({points[0][1]:.2g} s, no error)")
                continue
            ax.loglog([p[1] for p in points], [100 * p[2] for p in points], marker="o", label=provider)
        ax.axhline(100 * TARGET, color="grey", linewidth=0.8)
        ax.set_xlabel("seconds per estimate")
        ax.set_ylabel("relative RMSE of MMD^2 (%)")
        ax.set_title(dataset)
        ax.legend(fontsize=8)  # per panel: each names its own exact time
    fig.suptitle(
        "Gaussian class-wise MMD^2 estimated with random frequencies on CPU:\n"
        f"relative RMSE against seconds per estimate, per provider (grey line: the {100 * TARGET:g}% target)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["digits", "animals"])
    parser.add_argument("--num-real", type=int, default=16384)
    parser.add_argument("--syn-per-class", type=int, default=100)
    parser.add_argument("--small-real", type=int, default=4096, help="the smaller N of the memory column")
    parser.add_argument("--pool-blocks", type=int, default=48, help="independent frequency blocks per estimator")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--curve-repeats", type=int, default=3)
    parser.add_argument("--max-timed-freqs", type=int, default=65536, help="largest M_1%% that is timed")
    parser.add_argument("--max-curve-freqs", type=int, default=16384, help="largest M timed for the plot")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--replot", action="store_true", help="redraw estimators_cpu.png from estimators_cpu.json")
    args = parser.parse_args()
    if args.replot:
        plot(json.loads((args.results / "estimators_cpu.json").read_text()), args.results / "estimators_cpu.png")
        return
    if args.quick:
        args.num_real, args.syn_per_class, args.small_real, args.pool_blocks = 512, 8, 256, 4
        args.repeats, args.curve_repeats, args.max_timed_freqs, args.max_curve_freqs = 1, 1, 8192, 1024
        args.results = Path(tempfile.mkdtemp(prefix="bench_estimators_"))
    rows, curves = [], {}
    for dataset in args.datasets:
        run_dataset(dataset, args, rows, curves)
    args.results.mkdir(parents=True, exist_ok=True)
    with open(args.results / "estimators_cpu.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (args.results / "estimators_cpu.json").write_text(json.dumps(curves))
    command = "python benchmarks/bench_estimators.py" + (" --quick" if args.quick else "")
    write_markdown(rows, args.results / "estimators_cpu.md", command)
    plot(curves, args.results / "estimators_cpu.png")
    print(f"wrote {args.results}/estimators_cpu.{{csv,md,png,json}}")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count()))
    main()
