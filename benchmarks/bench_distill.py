"""The distillation results grid: every method on digits-lt and animals-lt, several imbalance
factors and IPCs, test accuracy over evaluation seeds, wall time per method.

    python benchmarks/bench_distill.py                 # writes benchmarks/results/distill_cpu.{csv,md}
    python benchmarks/bench_distill.py --quick         # one tiny cell per method, to check the script
    python benchmarks/bench_distill.py --report        # the .md again from the CSV, nothing run
    python benchmarks/bench_distill.py steps           # a step's parts, epochs and accuracy, eager against
                                                       # --amp / --compile / channels-last (distill_steps.py):
                                                       # benchmarks/results/distill_step_<device>.{csv,md}
    python benchmarks/bench_distill.py steps --quick   # the same, tiny, into a temporary folder

Rows are appended to the CSV as each run finishes (an interrupted grid keeps what it ran; a
rerun skips the cells already in the CSV), and the Markdown table is rewritten after each.
The settings of every cell are recorded in the CSV next to its result.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from bench_recipe import distill_argv  # this folder is on sys.path when the script runs

from spectral_kernels.cli import main as cli
from spectral_kernels.distill.methods import METHODS

RESULTS = Path(__file__).resolve().parent / "results"
# Chosen so the whole grid fits in about an hour on a 2-core CPU.
SETTINGS = {
    "digits-lt": dict(imbalances=[1, 10, 50], ipcs=[1, 10], width=128, batch_real=64, iterations=200, eval_epochs=200),
    "animals-lt": dict(
        imbalances=[1, 10, 50, 100], ipcs=[1, 10], width=64, batch_real=32, iterations=150, eval_epochs=150
    ),
}
NUM_EVAL = 3
FIELDS = [
    "dataset",
    "imbalance",
    "ipc",
    "method",
    "accuracy_mean",
    "accuracy_std",
    "accuracies",
    "distill_seconds",
    "eval_seconds",
    "width",
    "batch_real",
    "iterations",
    "eval_epochs",
    "num_eval",
    "num_freqs",
    "device",
]


def run_cell(dataset, imbalance, ipc, method, settings, workdir: Path, device: str) -> dict:
    out = workdir / f"{dataset}_{imbalance}_{ipc}_{method}"
    argv = distill_argv(dataset, imbalance, ipc, method, settings, num_eval=NUM_EVAL, seed=0, out=out)
    began = time.perf_counter()
    if cli(argv) != 0:
        raise RuntimeError(f"run failed: {' '.join(argv)}")
    total = time.perf_counter() - began
    result = json.loads((out / "eval.json").read_text())
    return {
        "dataset": dataset,
        "imbalance": imbalance,
        "ipc": ipc,
        "method": method,
        "accuracy_mean": round(100 * result["accuracy_mean"], 2),
        "accuracy_std": None if result["accuracy_std"] is None else round(100 * result["accuracy_std"], 2),
        "accuracies": " ".join(f"{100 * a:.2f}" for a in result["accuracies"]),
        "distill_seconds": round(total - result["seconds"], 1),
        "eval_seconds": result["seconds"],
        "width": settings["width"],
        "batch_real": settings["batch_real"],
        "iterations": settings["iterations"],
        "eval_epochs": settings["eval_epochs"],
        "num_eval": NUM_EVAL,
        "num_freqs": 1024,
        "device": device,
    }


def sample_std(row: dict) -> float:
    """The sample std (n - 1) of a cell's accuracies; the committed CSV's accuracy_std column holds
    the population std eval.json reported when it was made."""
    return statistics.stdev(float(a) for a in str(row["accuracies"]).split())


def markdown(rows: list[dict]) -> str:
    lines = [
        f"Device: {rows[0]['device']}. Test accuracy (%) mean ± sample std over {NUM_EVAL} evaluation seeds "
        "(final epoch); distillation wall time in seconds. Settings per dataset in the CSV.",
        "",
    ]
    for dataset in SETTINGS:
        cells = [r for r in rows if r["dataset"] == dataset]
        if not cells:
            continue
        s = SETTINGS[dataset]
        lines.append(
            f"### {dataset} (width {s['width']}, {s['batch_real']} real images per class per step, "
            f"{s['iterations']} iterations, {s['eval_epochs']} evaluation epochs)"
        )
        lines.append("")
        columns = sorted({(int(r["imbalance"]), int(r["ipc"])) for r in cells})
        lines.append("| method | " + " | ".join(f"imb {i}, IPC {p}" for i, p in columns) + " | mean distill s |")
        lines.append("|---|" + "---|" * len(columns) + "---|")
        for method in METHODS:
            mine = {(int(r["imbalance"]), int(r["ipc"])): r for r in cells if r["method"] == method}
            if not mine:
                continue
            shown = [f"{mine[c]['accuracy_mean']} ± {sample_std(mine[c]):.2f}" if c in mine else "" for c in columns]
            seconds = sum(float(r["distill_seconds"]) for r in mine.values()) / len(mine)
            lines.append(f"| {method} | " + " | ".join(shown) + f" | {seconds:.1f} |")
        lines.append("")
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", nargs="?", choices=["grid", "steps"], default="grid")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=None, help="path stem of the CSV and MD (default under benchmarks/results)")
    parser.add_argument("--datasets", nargs="+", default=list(SETTINGS), help="grid only")
    parser.add_argument("--device", default="cpu", help="steps only: the device every phase runs on")
    parser.add_argument(
        "--report", action="store_true", help="grid only: rewrite the .md from the existing CSV, run nothing"
    )
    args = parser.parse_args(argv)
    if args.out is None and args.mode == "grid":
        args.out = str(RESULTS / "distill_cpu")
    elif args.out is None and args.quick:  # a quick check never overwrites the committed results
        args.out = str(Path(tempfile.mkdtemp(prefix="bench-distill-steps-")) / "distill_step")
    elif args.out is None:
        args.out = str(RESULTS / f"distill_step_{torch.device(args.device).type}")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.report:
        path = Path(args.out)
        path.with_suffix(".md").write_text(markdown(list(csv.DictReader(open(path.with_suffix(".csv"))))))
        return
    if args.mode == "steps":
        from distill_steps import run_steps  # this folder is on sys.path when the script runs

        command = "python benchmarks/bench_distill.py " + " ".join(sys.argv[1:] if argv is None else argv)
        run_steps(Path(args.out), quick=args.quick, device=args.device, command=command.strip())
        return
    if args.quick:
        for s in SETTINGS.values():
            s.update(imbalances=[10], ipcs=[1], iterations=3, eval_epochs=2, width=16)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    csv_path = out.with_suffix(".csv")
    rows = list(csv.DictReader(open(csv_path))) if csv_path.exists() else []
    done = {(r["dataset"], int(r["imbalance"]), int(r["ipc"]), r["method"]) for r in rows}
    device = (
        f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    with tempfile.TemporaryDirectory() as workdir:
        for dataset in args.datasets:
            s = SETTINGS[dataset]
            for imbalance in s["imbalances"]:
                for ipc in s["ipcs"]:
                    for method in METHODS:
                        if (dataset, imbalance, ipc, method) in done:
                            continue
                        row = run_cell(dataset, imbalance, ipc, method, s, Path(workdir), device)
                        rows.append(row)
                        new_file = not csv_path.exists()
                        with open(csv_path, "a", newline="") as f:
                            writer = csv.DictWriter(f, fieldnames=FIELDS)
                            if new_file:
                                writer.writeheader()
                            writer.writerow(row)
                        out.with_suffix(".md").write_text(markdown(rows))
                        print(
                            f"{dataset} imb {imbalance} ipc {ipc} {method:7} {row['accuracy_mean']:6.2f} ± "
                            f"{row['accuracy_std']:.2f} "
                            f"({row['distill_seconds']} s distill, {row['eval_seconds']} s eval)",
                            flush=True,
                        )


if __name__ == "__main__":
    main()
