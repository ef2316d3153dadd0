"""The step breakdown of `bench_distill.py steps`: where a distillation step's time goes, for
eager against each network option (--amp, --compile, both, channels-last), side by side in one
process, and what each option does to pool-training and evaluation epochs and to accuracy.

The cell is one distillation of `spectral-distill distill --recipe ncfm` (animals-lt, imbalance
50, IPC 10, factor 2, 1024 frequencies, bench_recipe.py's animals-lt width and batch).

Step parts. A step is timed by `timed_step`, which makes the calls `loop._step` makes, in its
order, with explicit timers (torch.cuda.synchronize at every boundary where the device is cuda,
so each part's kernels are charged to that part) and the autograd graph cut in three where it
meets a part boundary: the augmented synthetic images and the synthetic features are detached
into leaves, and the backward runs piecewise (loss -> features -> images -> stored images), each
piece through the same graph nodes the whole backward would take. The parts:

    data                  the step's network weights loaded and the real batch drawn
    augmentation          multi-formation decode and the Siamese augmentation, real and synthetic
    network forward       the ConvNet on both batches (under --amp / --compile)
    loss forward          bandwidth, frequencies, the loss (and the loop's one host read of it)
    loss backward         gradient of the loss with respect to the synthetic features
    network backward      ... through the ConvNet to the augmented images
    augmentation backward ... through the augmentation and decode to the stored images
    optimiser             zero_grad, the optimiser step, finiteness check, pixel clamp

Each round times every variant once (in turn, so a slow spell of a shared machine hits all of
them), and also one whole `loop._step` of each: the real code's step time, against which the sum
of the parts shows the cost of the cuts. Medians over the rounds, after warm-up steps (which
include torch.compile's compilation).

The timed runs are set up by the loop's own `_set_up`, with the recipe's network pool taken
from a cache seeded with untrained networks in a temporary folder (training five networks per
variant only to time steps would cost minutes and changes no step's work: the weights' values
do not change what is computed). Channels-last converts the networks' weights (a convolution
with channels-last weights computes channels-last); the CLI has no such flag, so it is timed
here only, not in the epoch or accuracy sections.

Epoch times: `train_convnet` (pool training: the real training set, batches of 128) and
`train_and_test` (evaluation: the decoded synthetic set, then the test pass), each called for
1 + E epochs and timed epoch by epoch at the once-per-epoch weight check (`_epoch_marks`): the
median of epochs 2 .. 1 + E, and the first epoch, which includes compilation.

Accuracy: the cell distilled and evaluated through the CLI under each option with the same
seeds (the pool trained for real, in a temporary cache; --compile takes eager's pool from it
and --compile --amp bf16 that of --amp bf16, as the CLI would: the cache key leaves --compile out).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from bench_recipe import SETTINGS as RECIPE_SETTINGS
from bench_recipe import distill_argv, paired

from spectral_kernels.cli import main as cli
from spectral_kernels.cli import parse_distill
from spectral_kernels.distill import evaluation as evaluate
from spectral_kernels.distill import formation, hardware, loop
from spectral_kernels.distill.augment import siamese_augment
from spectral_kernels.distill.data import run_dataset
from spectral_kernels.distill.hardware import Hardware
from spectral_kernels.distill.models import ConvNet
from spectral_kernels.distill.pool import CACHE_ENV, POOL_BATCH, POOL_GAMMA, POOL_MILESTONES, cache_dir, pool_key
from spectral_kernels.distill.rundir import open_run_dir

_ANIMALS = RECIPE_SETTINGS["animals-lt"]
CELL = dict(
    dataset="animals-lt",
    imbalance=50,
    ipc=10,
    method="ncfm",
    width=_ANIMALS["width"],
    batch_real=_ANIMALS["batch_real"],
    iterations=_ANIMALS["iterations"],
    eval_epochs=_ANIMALS["eval_epochs"],
    num_eval=5,
    extra=[],  # flags after --recipe ncfm
    warmup=5,
    repeats=30,
    epochs=3,  # E of the pool epoch time
    eval_epochs_timed=20,  # E of the evaluation epoch time
)
# Toy sizes: checks the script (tests/test_bench_distill.py), measures nothing.
QUICK = dict(
    CELL,
    dataset="digits-lt",  # 8x8 images: a ConvNet of one block
    imbalance=10,
    width=8,
    batch_real=4,
    iterations=3,
    eval_epochs=2,
    num_eval=2,
    extra=["--net-pool", "2", "--pool-epochs", "1", "--num-freqs", "64"],
    warmup=1,
    repeats=2,
    epochs=1,
    eval_epochs_timed=1,
)
PARTS = (
    "data",
    "augmentation",
    "network forward",
    "loss forward",
    "loss backward",
    "network backward",
    "augmentation backward",
    "optimiser",
)
SUM, STEP = "sum of parts", "step (loop._step)"
FIELDS = [
    "section",
    "variant",
    "part",
    "median_ms",
    "speedup_vs_eager",
    "repeats",
    "accuracy_mean",
    "accuracy_std",
    "accuracies",
    "difference_vs_eager",
    "distill_seconds",
    "eval_seconds",
    "amp",
    "compile",
    "channels_last",
    "dataset",
    "imbalance",
    "ipc",
    "factor",
    "num_freqs",
    "width",
    "batch_real",
    "recipe",
    "flags",
    "device",
    "cpu_isa",
    "cpu_bf16",
    "threads",
    "torch",
]


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str
    amp: str = "off"
    compile: bool = False
    channels_last: bool = False

    @property
    def slug(self) -> str:
        """A folder name: "eager", "amp-bf16", "compile-amp-bf16", "channels-last"."""
        return "-".join(word.strip("-") for word in self.name.split())

    @property
    def flags(self) -> list[str]:
        return (["--amp", self.amp] if self.amp != "off" else []) + (["--compile"] if self.compile else [])


def variants(device: str) -> list[Variant]:
    """Eager first (the reference of every ratio), then each option alone, then amp + compile.
    fp16 only off the CPU (the CLI refuses it there)."""
    amps = ["bf16"] + (["fp16"] if torch.device(device).type != "cpu" else [])
    chosen = [Variant("eager")]
    chosen += [Variant(f"--amp {a}", amp=a) for a in amps]
    chosen += [Variant("--compile", compile=True)]
    chosen += [Variant(f"--compile --amp {a}", amp=a, compile=True) for a in amps]
    chosen += [Variant("channels-last", channels_last=True)]
    return chosen


def cell_argv(cell: dict, variant: Variant, device: str, out: Path, seed: int = 0) -> list[str]:
    """The `spectral-distill distill` command of the cell under `variant`."""
    argv = distill_argv(
        cell["dataset"], cell["imbalance"], cell["ipc"], cell["method"], cell, num_eval=cell["num_eval"], seed=seed,
        out=out,
    )  # fmt: skip
    return [*argv, "--recipe", "ncfm", *cell["extra"], "--device", device, *variant.flags]


def _clock(device: torch.device):
    """perf_counter after the device's queued work is done: a part's time includes its kernels."""
    if device.type == "cuda":
        return lambda: (torch.cuda.synchronize(device), time.perf_counter())[1]
    return time.perf_counter


# -- step parts -----------------------------------------------------------------------------------


def _fake_pool(config, dataset) -> None:
    """The recipe's pool in the (temporary) cache, untrained: `_set_up` loads it instead of
    training one (see the module docstring)."""
    path = cache_dir() / f"{pool_key(config)}.pt"
    if path.is_file() or not config.net_pool:
        return
    make = lambda: ConvNet(dataset.image_shape[0], dataset.num_classes, dataset.image_shape[1:], width=config.width)
    pool = []
    for k in range(config.net_pool):
        torch.manual_seed(1000 + k)
        init, trained = make().state_dict(), make().state_dict()
        pool.append({"init": init, "trained": trained})
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(pool, path)


@contextlib.contextmanager
def _cache(folder: Path):
    """$SPECTRAL_KERNELS_CACHE pointed at `folder` for the duration: nothing reaches the user's cache."""
    old = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = str(folder)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(CACHE_ENV, None)
        else:
            os.environ[CACHE_ENV] = old


def prepared_run(cell: dict, variant: Variant, device: str, folder: Path):
    """(run, lock): the loop's own set-up of the cell under `variant`, ready for `_step`; never
    checkpoints (iterations and checkpoint_every out of reach), metrics to /dev/null."""
    config = parse_distill(cell_argv(cell, variant, device, folder / variant.slug))
    if config.calib_weight > 0:
        raise ValueError("the step breakdown times the recipe without the calibration term (--calib-weight 0)")
    config = dataclasses.replace(config, iterations=10**6, checkpoint_every=10**6, num_eval=0).validate()
    dataset = run_dataset(config)
    _fake_pool(config, dataset)
    lock = open_run_dir(config, resume=False, overwrite=True)
    run = loop._set_up(config, dataset, None, 0, 1, resume=False)
    run.metrics = open(os.devnull, "w")
    if variant.channels_last:
        for net in (run.net, run.trained):
            if net is not None:
                net.to(memory_format=torch.channels_last)  # load_state_dict copies into these, keeping the format
    return run, lock


def timed_step(run, it: int) -> dict[str, float]:
    """loop._step's work at iteration `it`, split into PARTS (seconds each); see the docstring."""
    config, device = run.config, run.device
    clock = _clock(device)
    times, last = {}, clock()

    def lap(part):
        nonlocal last
        now = clock()
        times[part] = now - last
        last = now

    seed = loop.iteration_seed(config.seed, it)
    gen = torch.Generator().manual_seed(seed)
    loop._networks(run, gen, seed)
    real, real_y = loop._real_batch(run.real, run.members, config.batch_real, gen)
    real, real_y = real.to(device), real_y.to(device)
    aug_seed = int(torch.randint(2**62, (1,), generator=gen))
    lap("data")
    syn = formation.decode(run.syn, config.factor)
    syn_y = formation.decoded_labels(run.syn_y, config.factor)
    real_a = siamese_augment(real, aug_seed)
    syn_a = siamese_augment(syn, aug_seed)
    lap("augmentation")
    syn_in = syn_a.detach().requires_grad_()
    with torch.no_grad(), run.hardware.autocast():
        real_f = run.embed(real_a)
    with run.hardware.autocast():
        syn_f = run.embed(syn_in)
    real_f, syn_f = real_f.float(), syn_f.float()
    if not bool(torch.isfinite(syn_f.detach()).all()):
        raise loop.DivergedError(f"iteration {it}: the synthetic images' features are non-finite")
    lap("network forward")
    syn_leaf = syn_f.detach().requires_grad_()
    loss = run.objective.loss(real_f, real_y, syn_leaf, syn_y, gen)
    value = float(loss.detach())
    if value != value or abs(value) == float("inf"):
        raise loop.DivergedError(f"iteration {it}: the loss is {value}")
    lap("loss forward")
    run.optimizer.zero_grad()
    (loss if run.scaler is None else run.scaler.scale(loss)).backward()
    lap("loss backward")
    syn_f.backward(syn_leaf.grad)
    lap("network backward")
    syn_a.backward(syn_in.grad)
    lap("augmentation backward")

    def maximiser_gradients():
        for module in run.objective.maximisers:
            for p in module.parameters():
                p.grad.neg_()

    # The gradients are in place: backward_and_step's own backward gets a zero (graph-free) loss.
    _step_only(run, maximiser_gradients)
    if not bool(torch.isfinite(run.syn).all()):
        raise loop.DivergedError(f"iteration {it}: the synthetic images became non-finite")
    if run.pixel_range is not None:
        with torch.no_grad():
            run.syn.copy_(torch.maximum(torch.minimum(run.syn, run.pixel_range[1]), run.pixel_range[0]))
    if run.scheduler is not None:
        run.scheduler.step(value)
    lap("optimiser")
    return times


def _step_only(run, between) -> None:
    """The optimiser half of hardware.backward_and_step (through the GradScaler with --amp fp16)."""
    if run.scaler is None:
        between()
        run.optimizer.step()
        return
    between()
    run.scaler.step(run.optimizer)
    run.scaler.update()


def whole_step(run, it: int) -> float:
    """Seconds of one real loop._step."""
    clock = _clock(run.device)
    began = clock()
    loop._step(run, it, began)
    return clock() - began


def step_rows(cell: dict, chosen: list[Variant], device: str, folder: Path) -> list[dict]:
    """Median seconds of every part, of their sum and of loop._step, per variant (interleaved rounds)."""
    runs, locks = {}, []
    with _cache(folder / "fake-pools"):
        for variant in chosen:
            runs[variant], lock = prepared_run(cell, variant, device, folder / "steps")
            locks.append(lock)
    samples = {v: {p: [] for p in (*PARTS, SUM, STEP)} for v in chosen}
    try:
        it = 0
        for round_ in range(cell["warmup"] + cell["repeats"]):
            for variant in chosen:
                parts = timed_step(runs[variant], it)
                total = whole_step(runs[variant], it + 1)
                if round_ >= cell["warmup"]:
                    for part, seconds in parts.items():
                        samples[variant][part].append(seconds)
                    samples[variant][SUM].append(sum(parts.values()))
                    samples[variant][STEP].append(total)
            it += 2
    finally:
        for run in runs.values():
            run.metrics.close()
        for lock in locks:
            lock.release()
    rows = []
    for variant in chosen:
        for part, values in samples[variant].items():
            rows.append(dict(section="step", variant=variant.name, part=part, median=statistics.median(values),
                             repeats=len(values)))  # fmt: skip
    return rows


# -- epochs -------------------------------------------------------------------------------------


@contextlib.contextmanager
def _epoch_marks(clock, marks: list):
    """train_convnet reads its loss and checks its weights once at the end of every epoch
    (evaluate.epoch_end, a device synchronisation): wrapped here to append clock() there, so the
    real training loop is timed epoch by epoch without a change to it."""
    original = evaluate.epoch_end

    def marked(loss_sum, net):
        read = original(loss_sum, net)
        marks.append(clock())
        return read

    evaluate.epoch_end = marked
    try:
        yield
    finally:
        evaluate.epoch_end = original


def epoch_rows(cell: dict, chosen: list[Variant], device: str) -> list[dict]:
    """Pool-training and evaluation epoch seconds per variant: the median of epochs 2 .. 1 + E,
    the first epoch (with compilation) and, for evaluation, the test pass after the last epoch."""
    config = parse_distill(cell_argv(cell, chosen[0], device, Path(tempfile.gettempdir()) / "unused"))
    dataset = run_dataset(config)
    syn, syn_y = loop.initial_synthetic(dataset, config.ipc, config.seed, config.factor, config.init_fill)
    syn, syn_y = formation.decode(syn, config.factor), formation.decoded_labels(syn_y, config.factor)
    clock = _clock(torch.device(device))

    def pool(hardware, epochs):
        evaluate.train_convnet(dataset.train_x, dataset.train_y, dataset, seed=1, epochs=epochs, width=config.width,
                               optimizer="sgd", milestones=POOL_MILESTONES, gamma=POOL_GAMMA,
                               cutmix_prob=config.eval_cutmix, batch_size=POOL_BATCH, hardware=hardware)  # fmt: skip

    def evaluation(hardware, epochs):
        evaluate.train_and_test(syn, syn_y, dataset, seed=1, epochs=epochs, width=config.width, hardware=hardware,
                                **evaluate.evaluation_training(config))  # fmt: skip

    rows = []
    for phase, fn, epochs in (("pool", pool, cell["epochs"]), ("evaluation", evaluation, cell["eval_epochs_timed"])):
        for variant in chosen:
            if variant.channels_last:
                continue  # not a CLI option: train_convnet has no such setting
            hardware = Hardware(torch.device(device), variant.amp, variant.compile)
            marks = [clock()]
            with _epoch_marks(clock, marks):
                fn(hardware, 1 + epochs)
            ended = clock()
            if len(marks) != 2 + epochs:
                raise RuntimeError(f"{phase}: expected {1 + epochs} epoch marks, got {len(marks) - 1}")
            laps = [b - a for a, b in zip(marks, marks[1:])]
            row = dict(section="epoch", variant=variant.name)
            rows.append(dict(row, part=f"{phase} epoch", median=statistics.median(laps[1:]), repeats=epochs))
            rows.append(dict(row, part=f"{phase} first epoch (with compilation)", median=laps[0], repeats=1))
            if phase == "evaluation":
                rows.append(dict(row, part="evaluation test pass", median=ended - marks[-1], repeats=1))
    return rows


# -- accuracy -----------------------------------------------------------------------------------


def accuracy_rows(cell: dict, chosen: list[Variant], device: str, folder: Path) -> list[dict]:
    """The cell distilled and evaluated through the CLI under each variant, same seeds."""
    rows = []
    with _cache(folder / "pools"):  # a real pool per --amp, trained here, never the user's cache
        for variant in chosen:
            if variant.channels_last:
                continue
            out = folder / "accuracy" / variant.slug
            argv = cell_argv(cell, variant, device, out)
            began = time.perf_counter()
            if cli(argv) != 0:
                raise RuntimeError(f"run failed: spectral-distill {' '.join(argv)}")
            total = time.perf_counter() - began
            result = json.loads((out / "eval.json").read_text())
            rows.append(
                dict(
                    section="accuracy",
                    variant=variant.name,
                    part="test accuracy (%)",
                    accuracy_mean=round(100 * result["accuracy_mean"], 2),
                    accuracy_std=None if result["accuracy_std"] is None else round(100 * result["accuracy_std"], 2),
                    accuracies=" ".join(f"{100 * a:.2f}" for a in result["accuracies"]),
                    distill_seconds=round(total - result["seconds"], 1),
                    eval_seconds=result["seconds"],
                    repeats=len(result["accuracies"]),
                )
            )
    eager = rows[0]
    for row in rows[1:]:
        mean, half = paired(eager, row)
        row["difference_vs_eager"] = f"{mean:+.2f} ± {half:.2f}" if half == half else f"{mean:+.2f}"
    return rows


# -- the results files ----------------------------------------------------------------------------


def _bf16(row: dict) -> str:
    """ ", bfloat16 arithmetic" or ", no bfloat16 arithmetic"; nothing for rows written before the column."""
    if row.get("cpu_bf16") in (None, ""):
        return ""
    return ", bfloat16 arithmetic" if str(row["cpu_bf16"]) == "True" else ", no bfloat16 arithmetic"


def finish_rows(rows: list[dict], cell: dict, chosen: list[Variant], device: str) -> list[dict]:
    """Timings in ms with their ratio to eager's same part; every row with its settings and machine."""
    config = parse_distill(cell_argv(cell, chosen[0], device, Path(tempfile.gettempdir()) / "unused"))
    by_name = {v.name: v for v in chosen}
    eager = {(r["section"], r["part"]): r["median"] for r in rows if r["variant"] == "eager" and "median" in r}
    machine = dict(
        device=str(torch.empty(0, device=device).device),
        cpu_isa=torch.backends.cpu.get_cpu_capability(),
        cpu_bf16=hardware.cpu_has_bf16(),  # what --amp bf16's speed on a CPU depends on
        threads=torch.get_num_threads(),
        torch=torch.__version__,
    )
    settings = dict(
        dataset=config.dataset, imbalance=config.imbalance, ipc=config.ipc, factor=config.factor,
        num_freqs=config.num_freqs, width=config.width, batch_real=config.batch_real, recipe=config.recipe,
    )  # fmt: skip
    done = []
    for row in rows:
        variant = by_name[row["variant"]]
        row = dict(row)
        median = row.pop("median", None)
        if median is not None:
            row["median_ms"] = round(1000 * median, 3)
            base = eager.get((row["section"], row["part"]))
            row["speedup_vs_eager"] = round(base / median, 3) if base and median > 0 else ""
        row.update(amp=variant.amp, compile=variant.compile, channels_last=variant.channels_last)
        row.update(flags=" ".join(variant.flags), **settings, **machine)
        done.append({field: row.get(field, "") for field in FIELDS})
    return done


def markdown(rows: list[dict], command: str) -> str:
    first = rows[0]
    steps = next((r["repeats"] for r in rows if r["section"] == "step"), 0)
    names = list(dict.fromkeys(r["variant"] for r in rows))
    lines = [
        f"Distillation step breakdown: `spectral-distill distill --recipe ncfm` on {first['dataset']} (imbalance "
        f"{first['imbalance']}), IPC {first['ipc']}, factor {first['factor']}, {first['num_freqs']} frequencies, "
        f"width {first['width']}, {first['batch_real']} real images per class per step. Device {first['device']} "
        f"({first['cpu_isa']}{_bf16(first)}, {first['threads']} threads), torch {first['torch']}. Median "
        f"milliseconds over {steps} steps after warm-up, every variant timed in turn "
        "in each round of one run; in brackets the speed-up over eager's same part (> 1: faster). Parts are timed "
        "with explicit timers (device synchronised at each boundary) around loop._step's calls, the autograd graph "
        "cut at the augmented images and the features; the last row is the real loop._step, uncut. Channels-last "
        "(the networks' weights converted) is timed here only: the CLI has no such flag. "
        f"Command: `{command}`.",
        "",
        "| part | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    cells = {(r["section"], r["part"], r["variant"]): r for r in rows}

    def shown(section, part, name):
        row = cells.get((section, part, name))
        if row is None:
            return "n/a"
        ratio = f" ({row['speedup_vs_eager']:.2f}x)" if row["speedup_vs_eager"] != "" and name != "eager" else ""
        return f"{row['median_ms']:.2f}{ratio}"

    for part in (*PARTS, SUM, STEP):
        lines.append(f"| {part} | " + " | ".join(shown("step", part, n) for n in names) + " |")
    epoch_parts = list(dict.fromkeys(r["part"] for r in rows if r["section"] == "epoch"))
    if epoch_parts:
        lines += [
            "",
            "Epoch times, milliseconds: pool training (the real training set, batches of 128) and evaluation (the "
            "decoded synthetic set; the test pass after its last epoch apart), the median over epochs after the "
            "first, which includes torch.compile's compilation. n/a: not a CLI option.",
            "",
            "| epoch | " + " | ".join(names) + " |",
            "|---|" + "---|" * len(names),
        ]
        for part in epoch_parts:
            lines.append(f"| {part} | " + " | ".join(shown("epoch", part, n) for n in names) + " |")
    accuracy = [r for r in rows if r["section"] == "accuracy"]
    if accuracy:
        lines += [
            "",
            f"Test accuracy (%) of the cell distilled and evaluated under each option through the CLI, the same "
            f"distillation seed and {accuracy[0]['repeats']} evaluation seeds for every option: mean ± std, and the "
            "mean per-seed difference from eager with its 95% t-interval (speed is not to be bought with accuracy).",
            "",
            "| option | accuracy | difference vs eager | distill s | eval s |",
            "|---|---|---|---|---|",
        ]
        for r in accuracy:
            lines.append(
                f"| {r['variant']} | {r['accuracy_mean']} ± {r['accuracy_std']} | {r['difference_vs_eager'] or '-'} | "
                f"{r['distill_seconds']} | {r['eval_seconds']} |"
            )
    return "\n".join(lines) + "\n"


def write(rows: list[dict], out: Path, command: str) -> None:
    import csv

    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.with_suffix(".csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    out.with_suffix(".md").write_text(markdown(rows, command))


def run_steps(out: Path, *, quick: bool, device: str, command: str, sections=("step", "epoch", "accuracy")) -> None:
    """The whole breakdown; the files are rewritten after each section (an interrupted run keeps what it measured)."""
    cell = QUICK if quick else CELL
    chosen = variants(device)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-distill-steps-") as tmp:
        folder = Path(tmp)
        for section, measure in (
            ("step", lambda: step_rows(cell, chosen, device, folder)),
            ("epoch", lambda: epoch_rows(cell, chosen, device)),
            ("accuracy", lambda: accuracy_rows(cell, chosen, device, folder)),
        ):
            if section not in sections:
                continue
            began = time.perf_counter()
            rows += finish_rows(measure(), cell, chosen, device)
            write(rows, out, command)
            print(f"{section}: {time.perf_counter() - began:.0f} s", flush=True)
    print(f"results in {out.with_suffix('.csv')} and {out.with_suffix('.md')}")
