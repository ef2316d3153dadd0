"""The recipe study: what each ingredient of the published recipe is worth, and what each method
is worth with it, on long-tailed data, with statistics.

    python benchmarks/bench_recipe.py curves      # loss curves of dm, ncfm, csdm with the ncfm preset
    python benchmarks/bench_recipe.py ablation    # animals-lt, imbalance 50, IPC 10: the thin loop,
                                                  # then one ingredient added at a time, for dm, ncfm, csdm
    python benchmarks/bench_recipe.py grid        # every method x imbalance x IPC with the recipe (--groups, --methods)
    python benchmarks/bench_recipe.py alpha       # CSDM alpha_head sweep, and head/tail reversed
    python benchmarks/bench_recipe.py structure   # csdm and ncfm with i.i.d. against structured frequencies
    python benchmarks/bench_recipe.py fill        # short classes padded with noise against augmented copies
    python benchmarks/bench_recipe.py report      # tables (MD) and plots (PNG) from the CSVs and JSON
    ... --quick                                   # tiny settings in a temporary folder: checks the script

Every cell is one `spectral-distill distill` run (in this process, through the CLI's main) whose
row is appended to the stage's CSV under benchmarks/results/ as soon as it finishes; a rerun
skips the cells already there, so a stage can be stopped and continued, and its results
committed as they land. Run directories go to runs/recipe/ (not committed); a cell whose
resolved options a finished run of any stage had is read from that run (finished_twin).

Statistics. Every cell is evaluated on the same NUM_EVAL evaluation seeds (the ConvNets that
are trained on the synthetic set start from the same weights and see the same batches), so two
cells can be compared seed by seed: an ingredient's gain is the mean of the per-seed differences
with a 95% t-interval. Every matching method of a grid cell gets a second distillation seed
once every cell's first seeds are in: where two methods are within 2 points, to tell them apart;
where one stands more than 2 points from the rest, to tell the method from its seed.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from spectral_kernels.cli import main as cli
from spectral_kernels.cli import parse_distill
from spectral_kernels.distill.config import RECIPES, current_names
from spectral_kernels.distill.methods import METHODS
from spectral_kernels.distill.stats import t975

RESULTS = Path(__file__).resolve().parent / "results"
RUNS = DEFAULT_RUNS = Path("runs/recipe")
NUM_EVAL = 5
# t quantiles (0.975) by degrees of freedom, for 95% intervals of small samples.

# Per dataset: ConvNet width, real images per class per step, iterations, evaluation epochs, the
# grid's imbalances and IPCs. Widths and epochs are what a 2-core CPU affords; iterations are
# read off the loss curves (stage `curves`, benchmarks/results/recipe_curves.png).
SETTINGS = {
    "animals-lt": dict(
        width=32, batch_real=32, iterations=300, eval_epochs=100, imbalances=[1, 10, 50, 100, 200], ipcs=[1, 10, 20]
    ),
    "digits-lt": dict(width=64, batch_real=64, iterations=300, eval_epochs=100, imbalances=[1, 10, 50], ipcs=[1, 10]),
}
QUICK = dict(width=8, batch_real=4, iterations=3, eval_epochs=2, imbalances=[1, 10], ipcs=[1])
ABLATION_METHODS = ["dm", "ncfm", "csdm"]
# The ablation adds one ingredient at a time, cumulatively, starting from the thin loop; an
# ingredient that costs accuracy (hurts(), below) is measured and then left out of the steps after it.
POOL = ["--net-pool", "5", "--pool-epochs", "60"]
STEPS = [
    ("thin loop", []),
    ("+ trained network pool", POOL),
    ("+ interpolation to init", ["--pool-interpolate"]),
    ("+ multi-formation (factor 2)", ["--factor", "2"]),
    ("+ calibration term", ["--calib-weight", "1"]),
    (
        "+ AdamW 1e-3, plateau, clamp",
        [
            "--optimizer",
            "adamw",
            "--lr",
            "0.001",
            "--weight-decay",
            "0.0005",
            "--lr-schedule",
            "plateau",
            "--clamp-pixels",
        ],
    ),
    # The published lr is tuned for tens of thousands of steps; at 300 the same optimiser at the
    # thin loop's lr tells the optimiser's worth apart from the lr's.
    (
        "+ AdamW at lr 0.01, clamp",
        ["--optimizer", "adamw", "--lr", "0.01", "--weight-decay", "0.0005", "--lr-schedule", "none", "--clamp-pixels"],
    ),
    ("+ evaluation recipe", ["--eval-optimizer", "adamw", "--eval-schedule", "steps", "--eval-cutmix", "0.5"]),
]
ALPHAS = [0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 0.2]  # 0.2: tail classes weight amplitude (the reversed control)
ALPHAS_SEEDED = [0.5, 0.8, 0.2]  # a second distillation seed: the baseline, the default, the reversed control
# Per dataset: the imbalances swept (IPC 10) and the alphas given a second distillation seed.
# animals-lt at the imbalances the issue names; digits-lt where the grid has csdm below every other
# matching method (imbalance 10), and at 1, where every class is head, so alpha_head is the one
# amplitude weight of every class. Digits cells take about a minute, so every alpha gets two seeds.
ALPHA_SWEEPS = {"animals-lt": ([50, 100], ALPHAS_SEEDED), "digits-lt": ([1, 10], ALPHAS)}
FIELDS = [
    "stage",
    "dataset",
    "imbalance",
    "ipc",
    "method",
    "variant",
    "seed",
    "accuracy_mean",
    "accuracy_std",
    "accuracies",
    "distill_seconds",
    "eval_seconds",
    "flags",
    "device",
]


def device_label() -> str:
    # The instruction set torch dispatches to: float sums differ between AVX2 and AVX-512 kernels,
    # so a cell rerun on another CPU can move by a test image or two (docs/distillation.md).
    isa = torch.backends.cpu.get_cpu_capability()
    return f"{platform.machine()} {isa}, {torch.get_num_threads()} threads, torch {torch.__version__}"


def read_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def append_row(path: Path, row: dict) -> None:
    new = not path.exists()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        if new:
            writer.writeheader()
        writer.writerow(row)


def cell_key(row: dict) -> tuple:
    return tuple(str(row[k]) for k in ("stage", "dataset", "imbalance", "ipc", "method", "variant", "seed"))


def distill_argv(dataset, imbalance, ipc, method, settings, *, num_eval, seed, out) -> list[str]:
    """The `spectral-distill distill` command of one cell (bench_distill.py uses it too)."""
    options = (
        f"--dataset {dataset} --imbalance {imbalance} --ipc {ipc} --method {method} --width {settings['width']} "
        f"--batch-real {settings['batch_real']} --iterations {settings['iterations']} "
        f"--eval-epochs {settings['eval_epochs']} --num-eval {num_eval} --num-freqs 1024 --seed {seed} "
        "--quiet --overwrite"
    )
    return ["distill", *options.split(), "--out", str(out)]


def run_dir(row: dict) -> Path:
    name = f"{row['dataset']}_{row['imbalance']}_{row['ipc']}_{row['method']}_{row['variant']}_{row['seed']}"
    return RUNS / row["stage"] / name.replace(" ", "").replace("+", "p")


def resolved_options(argv: list[str]) -> dict:
    """The options a distill command runs with, presets applied, less where it writes."""
    options = parse_distill(argv).to_dict()
    return {k: v for k, v in options.items() if k not in ("out", "recipe")}


def finished_twin(argv: list[str]) -> dict | None:
    """A finished cell of any stage that ran these very options. The driver is deterministic
    (every random draw comes from the seed and the step), so its result is this cell's: the
    grid's dm, ncfm and csdm cells at imbalance 50 are the ablation's last steps kept."""
    mine = resolved_options(argv)
    for path in sorted(RESULTS.glob("*.csv")) if RUNS == DEFAULT_RUNS else []:
        for row in read_rows(path):
            config = run_dir(row) / "config.json" if "stage" in row and "variant" in row else None
            if config and config.is_file() and (run_dir(row) / "eval.json").is_file():
                theirs = current_names(json.loads(config.read_text()))  # (a run of before: its old names)
                if {k: theirs.get(k) for k in mine} == mine:
                    return row
    return None


def run_cell(stage, dataset, imbalance, ipc, method, variant, flags, settings, csv_path, *, seed=0, num_eval=NUM_EVAL):
    """One distillation + evaluation, unless its row is already in csv_path, or a finished cell
    ran the same options (finished_twin); returns the row."""
    row = dict(stage=stage, dataset=dataset, imbalance=imbalance, ipc=ipc, method=method, variant=variant, seed=seed)
    done = {cell_key(r): r for r in read_rows(csv_path)}
    if cell_key(row) in done:
        return done[cell_key(row)]
    out = run_dir(row)
    argv = distill_argv(dataset, imbalance, ipc, method, settings, num_eval=num_eval, seed=seed, out=out) + flags
    twin = finished_twin(argv)
    if twin is not None:
        print(f"{stage}: {dataset} imb {imbalance} IPC {ipc} {method} {variant}: the run of {run_dir(twin)}")
        copied = ("accuracy_mean", "accuracy_std", "accuracies", "distill_seconds", "eval_seconds", "device")
        row.update({k: twin[k] for k in copied}, flags=" ".join(flags))
        append_row(csv_path, row)
        return row
    print(
        f"[{time.strftime('%H:%M:%S')}] {stage}: {dataset} imb {imbalance} IPC {ipc} {method} {variant} seed {seed}",
        flush=True,
    )
    began = time.perf_counter()
    if cli(argv) != 0:
        raise RuntimeError(f"run failed: {' '.join(argv)}")
    total = time.perf_counter() - began
    result = json.loads((out / "eval.json").read_text())
    row.update(
        accuracy_mean=round(100 * result["accuracy_mean"], 2),
        accuracy_std=None if result["accuracy_std"] is None else round(100 * result["accuracy_std"], 2),
        accuracies=" ".join(f"{100 * a:.2f}" for a in result["accuracies"]),
        distill_seconds=round(total - result["seconds"], 1),
        eval_seconds=result["seconds"],
        flags=" ".join(flags),
        device=device_label(),
    )
    append_row(csv_path, row)
    return row


def accuracies(row: dict) -> list[float]:
    return [float(a) for a in str(row["accuracies"]).split()]


def interval(values: list[float]) -> tuple[float, float]:
    """(mean, half-width of the 95% t-interval)."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, float("nan")
    return mean, t975(len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))


def differences(a: dict, b: dict) -> list[float]:
    """b minus a, evaluation seed by evaluation seed."""
    return [y - x for x, y in zip(accuracies(a), accuracies(b))]


def paired(a: dict, b: dict) -> tuple[float, float]:
    """b minus a, seed by seed: (mean difference, 95% half-width)."""
    return interval(differences(a, b))


# ----------------------------------------------------------------------------- stages


def recipe_flags() -> list[str]:
    """The grid's recipe: the `ncfm` preset with the pool of the ablation."""
    return ["--recipe", "ncfm", *POOL]


def recipe_text() -> str:
    """The grid's recipe for a table's caption: its flags and what the preset sets."""
    preset = ", ".join(f"{k}={v}" for k, v in RECIPES["ncfm"].items())
    return f"{' '.join(recipe_flags())}; the preset sets {preset}"


def stage_curves(args, settings):
    """Long runs without evaluation: the loss against the iteration, to choose iteration counts."""
    dataset, long = "animals-lt", dict(settings["animals-lt"], iterations=args.curve_iterations)
    rows = {}
    for method in ABLATION_METHODS:
        out = RUNS / "curves" / method
        metrics = out / "metrics.jsonl"
        if not (out / "synthetic.pt").exists():
            # An interrupted curve continues from its checkpoint (bit for bit) rather than starting again.
            again = "--resume" if (out / "checkpoint.pt").exists() else "--overwrite"
            argv = [
                "distill",
                "--dataset",
                dataset,
                "--imbalance",
                "50",
                "--ipc",
                "10",
                "--method",
                method,
                "--width",
                str(long["width"]),
                "--batch-real",
                str(long["batch_real"]),
                "--iterations",
                str(long["iterations"]),
                "--num-eval",
                "0",
                "--num-freqs",
                "1024",
                "--quiet",
                again,
                "--out",
                str(out),
                *recipe_flags(),
            ]
            print(f"[{time.strftime('%H:%M:%S')}] curves: {method}", flush=True)
            if cli(argv) != 0:
                raise RuntimeError(f"run failed: {' '.join(argv)}")
        rows[method] = [json.loads(line) for line in metrics.read_text().splitlines() if '"iteration"' in line]
    (args.results / "recipe_curves.json").write_text(
        json.dumps({m: [(r["iteration"], r["loss"]) for r in v] for m, v in rows.items()})
    )
    plot_curves(rows, args.results / "recipe_curves.png")


def stage_ablation(args, settings):
    path = args.results / "recipe_ablation.csv"
    s = settings["animals-lt"] if not args.quick else QUICK
    for method in ABLATION_METHODS:
        flags, base = [], None
        for name, extra in STEPS:
            row = run_cell(
                "ablation", "animals-lt", 50, 10 if not args.quick else 1, method, name, flags + extra, s, path
            )
            if base is None or not hurts(base, row):
                flags, base = flags + extra, row
            write_ablation_table(path, args.results / "recipe_ablation.md")


def hurts(base: dict, row: dict) -> bool:
    """True when the step's paired gain over its base has its whole 95% interval below zero."""
    gain, half = paired(base, row)
    return gain + half < 0


def grid_cells(settings) -> list[tuple[str, int, int]]:
    """(dataset, imbalance, ipc) in the order they are run, so that a study cut short has its most
    useful cells: the comparisons the results lean on first (animals-lt at IPC 10, imbalance 50,
    10, 100), then the rest of animals-lt at IPC 10 and at IPC 1, then digits-lt (the fast second
    set: 8x8 images), then the largest cells (IPC 20, twice the images of IPC 10) last."""
    rest = [(d, i, p) for d, s in settings.items() for p in s["ipcs"] for i in s["imbalances"]]
    first = [c for c in (("animals-lt", i, 10) for i in (50, 10, 100)) if c in rest]
    order = {("animals-lt", 10): 0, ("animals-lt", 1): 1, ("digits-lt", 10): 2, ("digits-lt", 1): 3}
    rank = lambda cell: (order.get(cell[:3:2], len(order)), cell[0], cell[2], cell[1])
    return first + sorted((c for c in rest if c not in first), key=rank)


def stage_grid(args, settings):
    path = args.results / "distill_recipe.csv"
    cells = grid_cells(settings if not args.quick else {d: QUICK for d in settings})[: args.groups]
    methods = args.methods or METHODS
    # First seeds of every cell; then, on a full pass only, a second distillation seed for every
    # matching method (a random subset stays the one-seed baseline): a gap under 2 points needs it
    # to be read at all, and a gap over 2 points on one seed (ncfm at IPC 20, imbalance 100; csdm
    # on digits-lt at IPC 10) to be believed.
    passes = [(methods, 0)]
    if methods == METHODS:
        passes.append(([m for m in METHODS if m != "random"], 1))
    for chosen, seed in passes:
        for dataset, imbalance, ipc in cells:
            s = settings[dataset] if not args.quick else QUICK
            for m in chosen:
                run_cell("grid", dataset, imbalance, ipc, m, "recipe", recipe_flags(), s, path, seed=seed)
            write_grid_table(path, args.results / "distill_recipe.md")


def stage_alpha(args, settings):
    path = args.results / "recipe_alpha.csv"
    for dataset, (imbalances, seeded) in ALPHA_SWEEPS.items():
        imbalances, ipc = (imbalances, 10) if not args.quick else ([10], 1)
        # Every alpha on seed 0, then a second distillation seed for the comparisons the sweep is
        # read for (at least the published default and the reversed direction, each against 0.5);
        # 0.8's is the grid's csdm cell (a twin, where its run is still on disk).
        cells = [(i, a, 0) for i in imbalances for a in ALPHAS] + [(i, a, 1) for i in imbalances for a in seeded]
        for imbalance, alpha, seed in cells:
            flags = recipe_flags() + ["--alpha-head", str(alpha)]
            variant = f"alpha_head={alpha}"
            run_cell("alpha", dataset, imbalance, ipc, "csdm", variant, flags, settings[dataset], path, seed=seed)
        write_alpha_table(path, args.results / "recipe_alpha.md")


def stage_structure(args, settings):
    """Does the lower-variance gradient of structured frequencies distil better? The i.i.d. cell
    is the grid's (the recipe draws i.i.d. frequencies), run here if the grid has not yet; the
    SORF cell differs only in --structure. Same seeds, iterations and M; the matching loss is a
    small part of a step at these sizes, so equal iterations are about equal wall time (the
    table gives the seconds of each)."""
    s = settings["animals-lt"] if not args.quick else QUICK
    ipc = 10 if not args.quick else 1
    for method in ("csdm", "ncfm"):
        run_cell(
            "grid", "animals-lt", 50, ipc, method, "recipe", recipe_flags(), s, args.results / "distill_recipe.csv"
        )
        run_cell(
            "structure",
            "animals-lt",
            50,
            ipc,
            method,
            "frequencies=hadamard",  # the committed rows' label (they ran with --frequencies, its old name)
            recipe_flags() + ["--structure", "hadamard"],
            s,
            args.results / "recipe_structure.csv",
        )
    write_structure_table(args.results, args.results / "recipe_structure.md")


def stage_fill(args, settings):
    """Noise against augmented copies in the tiles a short class cannot fill with real images,
    at the two imbalances where several classes are short (random shows the start itself)."""
    s = settings["animals-lt"] if not args.quick else QUICK
    ipc = 10 if not args.quick else 1
    flags, grid, fill = recipe_flags(), args.results / "distill_recipe.csv", args.results / "recipe_fill.csv"
    for imbalance in (50, 100) if not args.quick else (10,):
        for method in ("random", "dm", "ncfm", "csdm"):
            run_cell("grid", "animals-lt", imbalance, ipc, method, "recipe", flags, s, grid)
            repeat = flags + ["--init-fill", "repeat"]
            run_cell("fill", "animals-lt", imbalance, ipc, method, "init_fill=repeat", repeat, s, fill)
    write_fill_table(args.results, args.results / "recipe_fill.md")


# ----------------------------------------------------------------------------- tables and plots


def _fmt(mean, half):
    return f"{mean:+.2f} ± {half:.2f}" if not math.isnan(half) else f"{mean:+.2f}"


def devices(rows: list[dict]) -> str:
    """The machines a table's cells ran on, for its caption: one, or each with its count."""
    count = {}
    for r in rows:
        count[r["device"]] = count.get(r["device"], 0) + 1
    if len(count) == 1:
        return f"Device: {next(iter(count))}."
    return "Devices: " + "; ".join(f"{d} ({n} cell{'s' * (n > 1)})" for d, n in count.items()) + "."


def write_ablation_table(csv_path: Path, md_path: Path) -> None:
    rows = read_rows(csv_path)
    if not rows:
        return
    lines = [
        "Ablation on animals-lt (imbalance 50, IPC 10): the thin loop, then one ingredient added at a time "
        f"(cumulative). Accuracy (%) mean ± sample std over {NUM_EVAL} evaluation seeds; gain = the step's accuracy "
        "minus the step it builds on, seed by seed, mean ± 95% t-interval. "
        f"{devices(rows)}",
        "",
        "| step | " + " | ".join(f"{m} accuracy | {m} gain" for m in ABLATION_METHODS) + " |",
        "|---|" + "---|---|" * len(ABLATION_METHODS),
    ]
    by = {(r["method"], r["variant"]): r for r in rows if r["seed"] == "0"}
    table = {name: [] for name, _ in STEPS}
    for m in ABLATION_METHODS:
        base = None  # the last step kept, as stage_ablation walks the chain
        for name, _ in STEPS:
            row = by.get((m, name))
            if row is None:
                table[name] += ["", ""]
                continue
            left_out = base is not None and hurts(base, row)
            gain = _fmt(*paired(base, row)) + (" (left out)" if left_out else "") if base else "—"
            # The sample std of the seeds' accuracies (the CSV's accuracy_std of early rows is eval.json's
            # population std of the time).
            spread = statistics.stdev(accuracies(row))
            table[name] += [f"{float(row['accuracy_mean']):.2f} ± {spread:.2f}", gain]
            if not left_out:
                base = row
    lines += [f"| {name} | " + " | ".join(cells) + " |" for name, cells in table.items()]
    lines += [
        "",
        "A step marked (left out) lowered accuracy with its whole interval below zero; the steps after it "
        "build on the last step kept, and its gain is measured against that step too.",
    ]
    md_path.write_text("\n".join(lines) + "\n")


def grid_summary(rows: list[dict]) -> dict:
    """(dataset, imbalance, ipc, method) -> (mean, 95% half-width, n) over every seed's evaluations."""
    groups = {}
    for r in rows:
        groups.setdefault((r["dataset"], int(r["imbalance"]), int(r["ipc"]), r["method"]), []).extend(accuracies(r))
    return {k: (*interval(v), len(v)) for k, v in groups.items()}


def write_grid_table(csv_path: Path, md_path: Path) -> None:
    rows = read_rows(csv_path)
    if not rows:
        return
    summary = grid_summary(rows)
    lines = [
        f"Results grid with the recipe ({recipe_text()}). Test accuracy (%), mean ± 95% t-interval over "
        f"{NUM_EVAL} evaluation seeds (x2 distillation seeds for every matching method; n in brackets). "
        f"{devices(rows)}",
        "",
    ]
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        for ipc in sorted({p for (d, _, p, _) in summary if d == dataset}):
            lines += grid_section(rows, summary, dataset, ipc)
    md_path.write_text("\n".join(lines))
    plot_grid(rows, md_path.with_suffix(".png"))


def grid_section(rows: list[dict], summary: dict, dataset: str, ipc: int) -> list[str]:
    """One dataset at one IPC: each method's accuracy by imbalance, then csdm minus each method."""
    imbalances = sorted({i for (d, i, p, _) in summary if (d, p) == (dataset, ipc)})
    header = " | ".join(f"imb {i}" for i in imbalances)
    lines = [f"### {dataset}, IPC {ipc}", "", f"| method | {header} |", "|---|" + "---|" * len(imbalances)]
    for m in METHODS:
        got = [summary.get((dataset, i, ipc, m)) for i in imbalances]
        lines.append(f"| {m} | " + " | ".join(f"{g[0]:.2f} ± {g[1]:.2f} ({g[2]})" if g else "" for g in got) + " |")
    lines += [
        "",
        "csdm minus each method, paired (the same distillation seed and evaluation seed on both sides): "
        "mean ± 95% t-interval (n pairs).",
        "",
        f"| csdm minus | {header} |",
        "|---|" + "---|" * len(imbalances),
    ]
    for m in METHODS:
        if m != "csdm":
            cells = [paired_with_csdm(rows, (dataset, i, ipc), m) for i in imbalances]
            lines.append(f"| {m} | " + " | ".join(f"{_fmt(*c[:2])} ({c[2]})" if c else "" for c in cells) + " |")
    return lines + [""]


def paired_with_csdm(rows: list[dict], cell: tuple, other: str) -> tuple | None:
    """csdm minus `other` in one (dataset, imbalance, ipc) cell, seed by seed over every
    distillation seed both ran: (mean, 95% half-width, n pairs), or None."""
    return paired_in_cell(rows, cell, "csdm", other)


def paired_in_cell(rows: list[dict], cell: tuple, method: str, base: str) -> tuple | None:
    """`method` minus `base` in one (dataset, imbalance, ipc) cell, seed by seed over every
    distillation seed both ran: (mean, 95% half-width, n pairs), or None."""
    here = {(r["method"], r["seed"]): r for r in rows if (r["dataset"], int(r["imbalance"]), int(r["ipc"])) == cell}
    diffs = []
    for (name, seed), row in sorted(here.items()):
        if name == method and (base, seed) in here:
            diffs += differences(here[base, seed], row)
    return (*interval(diffs), len(diffs)) if diffs else None


def write_alpha_table(csv_path: Path, md_path: Path) -> None:
    rows = read_rows(csv_path)
    if not rows:
        return
    lines = [
        "CSDM alpha_head sweep at IPC 10 with the recipe: head classes weight amplitude by "
        "alpha_head, tail classes by 1 - alpha_head (alpha_head = 0.2 reverses the direction: tail classes weight "
        "amplitude). Accuracy (%) mean ± 95% t-interval over every evaluation of every distillation seed (n in "
        "brackets); difference to alpha_head = 0.5 (SDD / 2) paired: the same distillation and evaluation seed on "
        f"both sides. With every class count equal (imbalance 1) every class is head. {devices(rows)}",
        "",
        "| dataset | imbalance | alpha_head | accuracy | vs 0.5 |",
        "|---|---|---|---|---|",
    ]
    by = {}
    for r in rows:
        by.setdefault((r["dataset"], r["imbalance"], r["variant"]), {})[r["seed"]] = r
    for (dataset, imbalance, variant), seeds in by.items():
        values = [a for r in seeds.values() for a in accuracies(r)]
        mean, half = interval(values)
        base = by.get((dataset, imbalance, "alpha_head=0.5"), {})
        diffs = [d for seed, r in seeds.items() if seed in base for d in differences(base[seed], r)]
        versus = f"{_fmt(*interval(diffs))} ({len(diffs)})" if diffs and variant != "alpha_head=0.5" else "—"
        alpha = variant.split("=")[1]
        lines.append(f"| {dataset} | {imbalance} | {alpha} | {mean:.2f} ± {half:.2f} ({len(values)}) | {versus} |")
    md_path.write_text("\n".join(lines) + "\n")


def write_structure_table(results: Path, md_path: Path) -> None:
    write_versus_grid(
        results / "recipe_structure.csv",
        results,
        md_path,
        "i.i.d. against structured (SORF, --structure hadamard) frequencies on animals-lt, IPC {ipc}, with the "
        "recipe ({recipe}), 1024 frequencies, the same seeds and iterations.",
        ("structure", "iid", "hadamard"),
    )


def write_fill_table(results: Path, md_path: Path) -> None:
    write_versus_grid(
        results / "recipe_fill.csv",
        results,
        md_path,
        "What fills the tiles of a class with fewer real images than IPC x factor^2 (on animals-lt at IPC {ipc} "
        "with factor 2: the last 3 classes at imbalance 50, the last 4 at 100): Gaussian noise (the recipe, "
        "{recipe}) against the class's images again, each copy geometrically augmented (--init-fill repeat); "
        "the same seeds and iterations.",
        ("fill", "noise", "repeat"),
    )


def write_versus_grid(csv_path: Path, results: Path, md_path: Path, caption: str, names: tuple) -> None:
    """A one-option variant against the grid cell it differs from, seed by seed."""
    variants = read_rows(csv_path)
    if not variants:
        return
    grid = {
        (r["imbalance"], r["ipc"], r["method"], r["seed"]): r
        for r in read_rows(results / "distill_recipe.csv")
        if r["dataset"] == "animals-lt"
    }
    column, base_name, variant_name = names
    lines = [
        caption.format(ipc=variants[0]["ipc"], recipe=recipe_text())
        + f" Accuracy (%) mean ± 95% t-interval over {NUM_EVAL} evaluation seeds; difference to {base_name} seed "
        f"by seed. {devices(variants)}",
        "",
        f"| imbalance | method | {column} | accuracy | vs {base_name} | distillation seconds |",
        "|---|---|---|---|---|---|",
    ]
    for r in variants:
        base = grid.get((r["imbalance"], r["ipc"], r["method"], r["seed"]))
        for row, name, versus in ((base, base_name, "—"), (r, variant_name, _fmt(*paired(base, r)) if base else "")):
            if row is not None:
                mean, half = interval(accuracies(row))
                lines.append(
                    f"| {r['imbalance']} | {r['method']} | {name} | {mean:.2f} ± {half:.2f} | {versus} "
                    f"| {row['distill_seconds']} |"
                )
    md_path.write_text("\n".join(lines) + "\n")


# The grid's figure compares the matching methods with DM, the baseline they all extend, seed by
# seed: a random subset sits 5 to 20 points below and would flatten the differences (it is in
# the table).
COMPARED = [m for m in METHODS if m not in ("random", "dm")]


def plot_grid(rows: list[dict], path: Path) -> None:
    """distill_recipe.png: a panel per dataset and IPC, each matching method's paired difference
    to DM (mean and 95% t-interval) against the imbalance, one legend for all panels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = sorted({(r["dataset"], int(r["imbalance"]), int(r["ipc"])) for r in rows})
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    ipcs = sorted({c[2] for c in cells})
    fig, axes = plt.subplots(len(datasets), len(ipcs), figsize=(5 * len(ipcs), 3.4 * len(datasets)), squeeze=False)
    colours = {m: f"C{k}" for k, m in enumerate(METHODS)}
    for row, dataset in enumerate(datasets):
        for col, ipc in enumerate(ipcs):
            ax = axes[row][col]
            imbalances = sorted(c[1] for c in cells if c[0] == dataset and c[2] == ipc)
            if not imbalances:
                ax.axis("off")  # an IPC the grid does not run for this dataset (digits-lt stops at 10)
                continue
            ax.axhline(0, color=colours["dm"], linewidth=1.2, label="dm (zero: each difference is to dm)")
            for k, m in enumerate(COMPARED):
                got = [(i, paired_in_cell(rows, (dataset, i, ipc), m, "dm")) for i in imbalances]
                got = [(i, d) for i, d in got if d is not None]
                if not got:
                    continue
                # Side by side at each imbalance (x log-scaled), so that the intervals do not overlap.
                shift = 1.09 ** (k - (len(COMPARED) - 1) / 2)
                ax.errorbar(
                    [i * shift for i, _ in got],
                    [d[0] for _, d in got],
                    yerr=[0 if math.isnan(d[1]) else d[1] for _, d in got],
                    marker="o",
                    markersize=4,
                    capsize=3,
                    color=colours[m],
                    label=f"{m} minus dm",
                )
            ax.set_xscale("log")
            ax.set_xticks(imbalances, [str(i) for i in imbalances])
            ax.minorticks_off()
            ax.set_title(f"{dataset}, IPC {ipc}")
            ax.set_xlabel("imbalance (n_max / n_min)")
            ax.set_ylabel("accuracy minus dm's (points)")
            ax.grid(alpha=0.3)
    handles, labels = next(ax for r in axes for ax in r if ax.axison).get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), frameon=False)
    fig.suptitle(
        "Test accuracy of each matching method minus DM's, with the recipe (" + ", ".join(datasets) + "): "
        "paired by distillation and evaluation seed, mean and 95% t-interval"
    )
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_curves(rows: dict, path: Path) -> None:
    """recipe_curves.png: each method's matching loss against the iteration (rows: method ->
    [{"iteration", "loss"}])."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(rows), figsize=(4.5 * len(rows), 3.4), squeeze=False)
    for ax, (method, values) in zip(axes[0], rows.items()):
        its = [r["iteration"] for r in values]
        loss = [r["loss"] for r in values]
        window = max(1, len(loss) // 50)
        smooth = [statistics.fmean(loss[max(0, i - window) : i + 1]) for i in range(len(loss))]
        ax.plot(its, loss, alpha=0.25, lw=0.7, color="C0", label="loss at each iteration")
        ax.plot(its, smooth, lw=1.5, color="C1", label=f"running mean over {window + 1} iterations")
        ax.set_title(method)
        ax.set_xlabel("iteration")
        ax.set_ylabel("matching loss")
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2, frameon=False)
    fig.suptitle("Matching loss against iteration with the recipe (animals-lt, imbalance 50, IPC 10)")
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def replot_curves(results: Path) -> None:
    """recipe_curves.png again from recipe_curves.json (method -> [[iteration, loss], ...])."""
    path = results / "recipe_curves.json"
    if path.exists():
        saved = json.loads(path.read_text())
        plot_curves(
            {m: [{"iteration": i, "loss": v} for i, v in pairs] for m, pairs in saved.items()}, path.with_suffix(".png")
        )


def method_list(text: str) -> list[str]:
    """--methods: known names, comma-separated, returned in METHODS order."""
    names = text.split(",")
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
    return [m for m in METHODS if m in names]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=["curves", "ablation", "grid", "alpha", "structure", "fill", "report"])
    parser.add_argument("--quick", action="store_true", help="tiny settings into a temporary folder")
    parser.add_argument("--curve-iterations", type=int, default=1500)
    parser.add_argument(
        "--groups", type=int, default=None, help="grid: only the first N (dataset, imbalance, IPC) cells"
    )
    parser.add_argument(
        "--methods",
        type=method_list,
        default=None,
        help="grid: only these methods (comma-separated), first seeds only; a later full run adds the rest",
    )
    args = parser.parse_args()
    global RUNS, POOL
    if args.quick:
        tmp = Path(tempfile.mkdtemp(prefix="bench-recipe-"))
        RUNS, args.results, args.curve_iterations = tmp / "runs", tmp / "results", 4
        POOL[:] = ["--net-pool", "2", "--pool-epochs", "1"]
        settings = {d: dict(QUICK) for d in SETTINGS}
    else:
        args.results, settings = RESULTS, SETTINGS
    args.results.mkdir(parents=True, exist_ok=True)
    if args.stage == "report":
        write_ablation_table(args.results / "recipe_ablation.csv", args.results / "recipe_ablation.md")
        write_grid_table(args.results / "distill_recipe.csv", args.results / "distill_recipe.md")
        write_alpha_table(args.results / "recipe_alpha.csv", args.results / "recipe_alpha.md")
        write_structure_table(args.results, args.results / "recipe_structure.md")
        write_fill_table(args.results, args.results / "recipe_fill.md")
        replot_curves(args.results)
    else:
        stages = {
            "curves": stage_curves,
            "ablation": stage_ablation,
            "grid": stage_grid,
            "alpha": stage_alpha,
            "structure": stage_structure,
            "fill": stage_fill,
        }
        stages[args.stage](args, settings)
    print(f"results in {args.results}")


if __name__ == "__main__":
    sys.exit(main())
