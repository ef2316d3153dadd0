"""The distillation loop.

A run directory (distill/rundir.py) holds config.json (everything needed to reproduce the
run), checkpoint.pt (written every `checkpoint_every` iterations), metrics.jsonl, and at the
end synthetic.pt ({"images", "labels", "config", "mean", "std"}) and grid.png (a row per
class); every write is atomic and durable (distill/files.py). Every random draw of iteration
i comes from a generator seeded by (seed, i), so a run resumed from its last checkpoint
produces exactly the synthetic set an uninterrupted run would.

distill() = set-up (options, dataset, run directory, state restored from a checkpoint),
then `_step` per iteration, then `_finish` (synthetic set, grid, evaluation). The dataset, the
feature network and the objective are the config's (a bundled dataset, the ConvNet, the
method), or given from Python (`Supplied`, filled and checked by distill/api.py): a lazy
source read a batch per step (distill/sources.py), a network factory, a loss module.

A step: draw a feature network (fresh random, or from the pool: trained weights, or with
pool_interpolate a mix lambda * init + (1 - lambda) * trained), a real batch and one augmentation;
decode the synthetic images (multi-formation), match features with the method's loss, add the
calibration term (cross-entropy of the pool network's trained weights on the augmented decoded
images, times calib_weight), and take an optimiser step; then clamp pixels and step the
learning-rate schedule where the recipe asks for it.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from . import formation
from .augment import siamese_augment
from .config import PYTHON, ConfigError, DistillConfig, first_difference, flag  # noqa: F401  (DistillConfig is re-exported)
from .data import DataError, ImageDataset, run_dataset
from .environment import write_environment
from .errors import DivergedError
from .files import RunFileError, expect, expect_finite_state, expect_tensor, iter_metrics, load_torch_file
from .hardware import Hardware, backward_and_step, process_device
from .manifest import AppendLog, append_row, save_run_file, write_run_file
from .methods import Objective
from .models import ConvNet
from .module_objective import ModuleObjective
from .pictures import write_grid
from .pool import network_pool, pool_network
from .progress import Phase
from .rundir import open_run_dir, write_config
from .sources import class_index, on_device, take


def iteration_seed(seed: int, iteration: int) -> int:
    return (seed * 1_000_003 + iteration * 7_919 + 17) % (2**62)


def initial_synthetic(
    dataset: ImageDataset, ipc: int, seed: int, factor: int = 1, fill: str = "noise"
) -> tuple[torch.Tensor, torch.Tensor]:
    """IPC stored images per class, each tiling factor^2 real images of the class, labels c
    repeated IPC times (the stored layout: see formation.py). A class with fewer real images
    than IPC x factor^2 fills the rest with Gaussian noise (fill="noise") or with its real images
    again (fill="repeat"): each further pass over them in a fresh order, under one draw of the
    differentiable augmentation's geometric part per pass, so that no tile is an exact copy of
    another (a copy would get the original's gradient at every step and stay a copy). Geometric
    only: a cutout or colour draw would bake an occluded or recoloured image into the start."""
    gen = torch.Generator().manual_seed(seed)
    per_class = ipc * factor * factor
    images = []
    for c in range(dataset.num_classes):
        idx = (dataset.train_y == c).nonzero().flatten()
        idx = idx[torch.randperm(idx.numel(), generator=gen)[:per_class]]
        chosen = [dataset.train_x[idx]]
        missing = per_class - idx.numel()
        if missing > 0 and fill == "noise":
            chosen.append(torch.randn((missing, *dataset.image_shape), generator=gen))
        while missing > 0 and fill == "repeat":
            again = idx[torch.randperm(idx.numel(), generator=gen)[:missing]]
            draw = int(torch.randint(2**62, (1,), generator=gen))
            chosen.append(siamese_augment(dataset.train_x[again], draw, strategy=("crop", "flip", "scale", "rotate")))
            missing -= again.numel()
        images.append(formation.encode(torch.cat(chosen), factor))
    labels = torch.arange(dataset.num_classes).repeat_interleave(ipc)
    return torch.cat(images), labels


def class_members(dataset: ImageDataset) -> list[torch.Tensor]:
    """Indices of each class's training images (computed once per run, used every step)."""
    return class_index(dataset.train_y, dataset.num_classes)


def _real_batch(real: tuple, members: list[torch.Tensor], per_class: int, gen: torch.Generator):
    """A batch of (images, labels) from real = (train_x, train_y), drawn on the CPU (members are
    CPU indices), gathered where the labels live: train_x is a tensor (a bundled set, moved
    there once) or a lazy source (distill/sources.py: user data, read per batch)."""
    train_x, train_y = real
    idx = torch.cat([m[torch.randperm(m.numel(), generator=gen)[:per_class]] for m in members])
    return take(train_x, idx, train_y.device), train_y[idx.to(train_y.device)]


@dataclass
class Supplied:
    """What a distillation is given from Python instead of by name (distill/api.py checks each
    before the run starts): the dataset (train_x a lazy source), a network factory
    network(torch.Generator) -> nn.Module mapping images to (N, feature_dim) features, and a
    loss module as the objective (distill/module_objective.py)."""

    dataset: ImageDataset | None = None
    network: object = None
    feature_dim: int | None = None
    loss: object = None


def check_config(config: DistillConfig, supplied: Supplied) -> None:
    """ConfigError unless every option is valid and what the config says came from Python
    (dataset or method "python", a user network) was given: the CLI asks this before anything
    else, so that a config file naming them fails as any other bad option does."""
    config.validate()
    if config.dataset == PYTHON and supplied.dataset is None:
        raise ConfigError(
            f"--dataset {PYTHON} means data given from Python (spectral_kernels.distill.distill); "
            "name a bundled dataset"
        )
    if config.method == PYTHON and supplied.loss is None:
        raise ConfigError(
            f"--method {PYTHON} means a loss module given from Python (spectral_kernels.distill.distill); name a method"
        )
    if supplied.network is not None and config.net_pool > 0:
        raise ConfigError(_POOL_NEEDS_CONVNET)


def network_maker(config: DistillConfig, dataset: ImageDataset, network=None):
    """make(seed) -> the feature network of a step, drawn from `seed` (the ConvNet, or the
    user's network(torch.Generator seeded with it), under torch's global generator seeded with
    it too, so a factory that draws from either gives the same weights on every run);
    make(None) -> one whose weights do not matter (every step loads its own into it)."""
    channels, size = dataset.image_shape[0], dataset.image_shape[1:]

    def make(seed=None):
        if network is None:
            if seed is None:
                return ConvNet(channels, dataset.num_classes, size, width=config.width)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                return ConvNet(channels, dataset.num_classes, size, width=config.width)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0 if seed is None else seed)
            return network(torch.Generator().manual_seed(0 if seed is None else seed))

    return make


def _distributed(device: torch.device):
    """(group, rank, world) under torchrun (WORLD_SIZE > 1), else (None, 0, 1). `device` is this
    process's own (hardware.process_device: cuda:LOCAL_RANK); it is made the current CUDA device
    before the process group starts, since NCCL binds each process's communicator to the device
    current at its first collective, and with cuda:0 everywhere all ranks would share one GPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None, 0, 1
    import torch.distributed as dist

    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.group.WORLD, dist.get_rank(), dist.get_world_size()


@dataclass
class _Run:
    """Everything a step needs, set up once."""

    config: DistillConfig
    dataset: ImageDataset
    path: Path
    device: torch.device
    group: object
    rank: int
    world: int
    syn: torch.Tensor
    syn_y: torch.Tensor
    objective: Objective
    optimizer: torch.optim.Optimizer | None
    iterations: int
    start: int
    members: list
    scheduler: object = None  # ReduceLROnPlateau with lr_schedule="plateau"
    pixel_range: tuple | None = None  # (low, high) per channel, (1, ch, 1, 1) each, with clamp_pixels
    pool: list | None = None
    metrics: object = None  # metrics.jsonl opened for appending (rank 0), made durable at checkpoints
    # Where and how the networks compute (hardware.py): the real training set on the device, one
    # feature network (and with a calibration term one trained network) living there, each
    # step's weights loaded into it, and their forwards, compiled with --compile.
    hardware: Hardware = Hardware()
    real: tuple = ()  # (train_x, train_y) on the device
    net: ConvNet | None = None
    trained: ConvNet | None = None
    embed: object = None
    calibrate: object = None
    scaler: object = None  # GradScaler with --amp fp16
    make: object = None  # network_maker: a step's feature network from its seed
    user_network: bool = False  # features are the network's output (a ConvNet's: its embed)


def distill(
    config: DistillConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    on_iteration=None,
    supplied: Supplied | None = None,
) -> Path:
    """Run (or resume) a distillation; returns the run directory. `on_iteration(i)` is called
    before iteration i (tests use it to interrupt a run). `supplied`: data, network or loss
    given from Python (distill/api.py, which checks them), else the config names them.

    Every option and the dataset are checked before the run directory is touched; the
    directory is then locked for the whole run (a second process on it gets ConfigError).

    Under torchrun each process takes a disjoint shard of every step's real batch and the real
    ECF sums are all-reduced (SPEC §1), so the loss is the single-process loss; the synthetic
    set is replicated, and only rank 0 writes (and locks) the run directory.
    """
    supplied = supplied or Supplied()
    check_config(config, supplied)
    group, rank, world = _distributed(process_device(config.device))
    if group is not None and config.method in ("dm", "mmd"):
        raise ConfigError(
            f"--method {config.method} compares samples pairwise and cannot run data-parallel; use ncfm, sdd or csdm"
        )
    if group is not None and supplied.loss is not None:
        raise ConfigError("a loss module given from Python runs in one process; it cannot run data-parallel")
    try:
        dataset = supplied.dataset or run_dataset(config)
        formation.check_factor(config.factor, dataset.image_shape[1:])
    except DataError:
        raise
    except ValueError as error:
        raise ConfigError(str(error)) from None
    lock = open_run_dir(config, resume=resume, overwrite=overwrite) if rank == 0 else None
    try:
        if group is not None:
            torch.distributed.barrier()
        run = _set_up(config, dataset, group, rank, world, resume=resume, supplied=supplied)
        began = time.perf_counter()
        # A bar of the iterations (loss, it/s, ETA) and a summary line (distill/progress.py), rank 0's.
        phase = Phase(
            "matching",
            run.iterations,
            initial=run.start,
            desc=f"{config.method} on {config.dataset}",
            quiet=config.quiet or rank != 0 or run.start >= run.iterations,
        )
        with phase, AppendLog(run.path / "metrics.jsonl") if rank == 0 else contextlib.nullcontext() as run.metrics:
            for it in range(run.start, run.iterations):
                if on_iteration is not None:
                    on_iteration(it)
                loss = _step(run, it, began)
                phase.advance(loss=f"{loss:.4g}")
            done = run.iterations - run.start
            phase.summary = (
                f"{done} iterations{f' (resumed at {run.start})' if run.start else ''} in {phase.seconds:.1f} s, "
                f"{done / max(phase.seconds, 1e-9):.2f} it/s, last loss {loss:.6g}"
                if done
                else None
            )
        if group is not None:
            torch.distributed.barrier()
        if rank == 0:
            _finish(run)
        return run.path
    finally:
        if lock is not None:
            lock.release()


# Pool training and the calibration term train and use a classifier; a user's network maps
# images to features and has none.
_POOL_NEEDS_CONVNET = (
    "net_pool (and calib_weight, pool_interpolate, which need it) trains a pool of ConvNet classifiers; "
    "with a network of your own it is not available: leave net_pool at 0, or network=None for the ConvNet"
)


def _set_up(
    config: DistillConfig,
    dataset: ImageDataset,
    group,
    rank: int,
    world: int,
    *,
    resume: bool,
    supplied: Supplied | None = None,
) -> _Run:
    supplied = supplied or Supplied()
    path = Path(config.out)
    hardware = Hardware.of(config)
    device = hardware.device
    syn, syn_y = initial_synthetic(dataset, config.ipc, config.seed, config.factor, config.init_fill)
    syn = syn.to(device).requires_grad_(config.method != "random")
    channels, size = dataset.image_shape[0], dataset.image_shape[1:]
    if supplied.network is None:
        feature_dim = ConvNet(channels, dataset.num_classes, size, width=config.width).feature_dim
    else:
        feature_dim = supplied.feature_dim
    if supplied.loss is not None:
        objective = ModuleObjective(supplied.loss, config.num_freqs).to(device)
    else:
        objective = Objective(config, dataset.class_counts, feature_dim, dataset.num_classes, real_group=group)
    for module in objective.maximisers:
        module.to(device)
    params = [syn] + [p for m in objective.maximisers for p in m.parameters()]
    optimizer = _optimizer(config, params) if config.method != "random" else None
    iterations = 0 if config.method == "random" else config.iterations
    run = _Run(
        config,
        dataset,
        path,
        device,
        group,
        rank,
        world,
        syn,
        syn_y.to(device),
        objective,
        optimizer,
        iterations,
        start=0,
        members=class_members(dataset),
        scaler=hardware.scaler(),
        make=network_maker(config, dataset, supplied.network),
        user_network=supplied.network is not None,
    )
    if optimizer is not None and config.lr_schedule == "plateau":
        # NCFM halves the rate after 500 of its 20000 steps without improvement: the same fraction.
        run.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=0.5, patience=max(1, config.iterations // 40)
        )
    if config.clamp_pixels:  # pixels in [0, 1] (a lazy source: its own range), in the normalised space
        low, high = getattr(dataset.train_x, "pixel_range", (torch.zeros(channels), torch.ones(channels)))
        mean, std, low, high = (v.to(device)[None, :, None, None] for v in (dataset.mean, dataset.std, low, high))
        run.pixel_range = ((low - mean) / std, (high - mean) / std)
    checkpoint = path / "checkpoint.pt"
    if resume and checkpoint.is_file() and optimizer is not None:
        run.start = _restore_checkpoint(checkpoint, run)
    if rank == 0:
        write_config(path, config)
        write_environment(path, config)
        # Metrics written after the last checkpoint belong to iterations that will run again. The
        # log is streamed (it may hold 10^9 rows); the old one is read while the new one is written.
        metrics = path / "metrics.jsonl"
        write_run_file(
            metrics,
            lambda f: f.writelines(
                (json.dumps(row) + "\n").encode()
                for row in iter_metrics(metrics)
                if row.get("iteration", -1) < run.start
            ),
        )
    record = (lambda row: append_row(path / "metrics.jsonl", row)) if rank == 0 else (lambda row: None)
    if config.net_pool and run.iterations > run.start:
        run.pool = network_pool(
            config,
            dataset,
            path,
            rank=rank,
            group=group,
            seed_of=lambda k: iteration_seed(config.seed, -1 - k),
            record=record,
        )
    if run.iterations > run.start:
        _place_networks(run, hardware)
        record(hardware.phase("matching"))
    return run


def _place_networks(run: _Run, hardware: Hardware) -> None:
    """The matching phase's networks, data and scaler on hardware.device (the synthetic images
    and the maximisers are already there)."""
    config, dataset = run.config, run.dataset
    run.hardware = hardware
    run.real = (on_device(dataset.train_x, hardware.device), dataset.train_y.to(hardware.device))
    run.net = run.make().to(hardware.device).requires_grad_(False)
    run.embed = hardware.compiled(run.net if run.user_network else run.net.embed)
    if run.pool is not None and config.calib_weight > 0:
        run.trained = run.make().to(hardware.device).requires_grad_(False)
        run.calibrate = hardware.compiled(run.trained)


def _optimizer(config: DistillConfig, params) -> torch.optim.Optimizer:
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)


def _restore_checkpoint(path: Path, run: _Run) -> int:
    """Load checkpoint.pt into the run's images, optimiser and maximisers, after checking that
    it is one of this run's checkpoints; returns the iteration to continue from."""
    state = load_torch_file(path, "checkpoint")
    keys = {"iteration", "images", "optimizer", "maximisers"}  # and "scheduler" (absent before it existed: None)
    expect(
        isinstance(state, dict) and keys <= set(state), path, f"not a checkpoint (expected a dict with {sorted(keys)})"
    )
    from .config import stored_options

    recorded = stored_options(state.get("config"))
    expect(
        isinstance(recorded, dict),
        path,
        "records no options of the run that wrote it (a checkpoint of an older version, or not this run's); "
        "it cannot be checked against this run",
    )
    difference = first_difference(recorded, run.config.to_dict(), ignore=DistillConfig.RESUMABLE_CHANGES)
    if difference is not None:
        name, then, now = difference
        raise RunFileError(
            f"--resume: {path} was written by a run with {flag(name)} {then}, not {now} as this run's options say "
            "(config.json edited?); it is not this run's checkpoint, nothing was changed"
        )
    iteration = state["iteration"]
    expect(
        isinstance(iteration, int) and not isinstance(iteration, bool) and 0 <= iteration <= run.iterations,
        path,
        f"iteration {iteration!r} is outside [0, {run.iterations}] (--iterations)",
    )
    images = expect_tensor(path, "images", state["images"], shape=run.syn.shape, floating=True)
    _check_optimizer_state(path, state["optimizer"], run.optimizer)
    maximisers = state["maximisers"]
    expect(
        isinstance(maximisers, list) and len(maximisers) == len(run.objective.maximisers),
        path,
        f"maximisers must be a list of {len(run.objective.maximisers)} state dicts",
    )
    expect_finite_state(path, "maximisers", maximisers)
    scheduler = state.get("scheduler")
    expect(
        (scheduler is None) == (run.scheduler is None) and (scheduler is None or isinstance(scheduler, dict)),
        path,
        f"scheduler state must be {'a dict' if run.scheduler is not None else 'None'} for --lr-schedule "
        f"{run.config.lr_schedule}",
    )
    try:
        run.optimizer.load_state_dict(state["optimizer"])
        for module, module_state in zip(run.objective.maximisers, maximisers):
            module.load_state_dict(module_state)
        if run.scheduler is not None:
            run.scheduler.load_state_dict(scheduler)
        if run.scaler is not None and isinstance(state.get("scaler"), dict):  # --amp fp16: its loss scale
            run.scaler.load_state_dict(state["scaler"])
    except (ValueError, KeyError, TypeError, RuntimeError) as error:
        raise RunFileError(f"{path}: does not fit this run ({str(error).splitlines()[0][:200]})") from None
    with torch.no_grad():
        run.syn.copy_(images)
    return iteration


def _check_optimizer_state(path: Path, state, optimizer: torch.optim.Optimizer) -> None:
    """A saved optimiser state fits this run: the same parameter groups and settings as a fresh
    optimiser of this config (only the learning rate may have been lowered by the schedule), and
    moments that are dense float tensors of their parameters' shapes. load_state_dict checks
    little of this, and a damaged value would otherwise fail later, inside a step."""
    expect(
        isinstance(state, dict)
        and isinstance(state.get("state"), dict)
        and isinstance(state.get("param_groups"), list),
        path,
        "optimizer must be an optimizer state dict",
    )
    fresh = optimizer.state_dict()["param_groups"]
    expect(
        len(state["param_groups"]) == len(fresh),
        path,
        f"optimizer has {len(state['param_groups'])} parameter groups, this run {len(fresh)}",
    )
    for saved, group in zip(state["param_groups"], fresh):
        expect(
            isinstance(saved, dict) and set(saved) == set(group),
            path,
            "optimizer parameter group settings do not fit this run",
        )
        for key, value in group.items():
            if key == "lr":
                lr = saved[key]
                expect(
                    isinstance(lr, float) and math.isfinite(lr) and 0 < lr <= value * (1 + 1e-9),
                    path,
                    f"optimizer learning rate {lr!r} outside (0, {value}]",
                )
            else:
                expect(
                    saved[key] == value, path, f"optimizer setting {key!r} is {saved[key]!r}, this run uses {value!r}"
                )
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for index, moments in state["state"].items():
        expect(
            isinstance(index, int) and 0 <= index < len(params) and isinstance(moments, dict),
            path,
            f"optimizer state for parameter {index!r} does not fit this run",
        )
        for name, value in moments.items():
            if name == "step":
                step = value if isinstance(value, (int, float)) else None
                if isinstance(value, torch.Tensor):
                    expect_tensor(path, f"optimizer state {index}['step']", value, shape=(), floating=True)
                    step = float(value)
                expect(
                    step is not None and step >= 0,
                    path,
                    f"optimizer state {index}['step'] must be a count >= 0, got {value!r}",
                )
            else:
                expect(
                    name in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"),
                    path,
                    f"optimizer state {index} has an unknown entry {name!r}",
                )
                expect_tensor(
                    path, f"optimizer state {index}[{name!r}]", value, shape=params[index].shape, floating=True
                )
                expect(
                    name == "exp_avg" or bool((value >= 0).all()),
                    path,
                    f"optimizer state {index}[{name!r}] must be >= 0",
                )


def _networks(run: _Run, gen: torch.Generator, seed: int) -> bool:
    """Load this step's feature network into run.net and, with a calibration term, the trained
    network it came from into run.trained (returns whether there is one). The weights are made
    on the CPU, as they always were, so that every device draws the same networks."""
    config = run.config
    net = run.make(seed)
    calibrated = False
    if run.pool is not None:
        entry = run.pool[int(torch.randint(len(run.pool), (1,), generator=gen))]
        lam = float(torch.rand((), generator=gen)) if config.pool_interpolate else None
        net = pool_network(entry, lam, net)
        if config.calib_weight > 0:
            run.trained.load_state_dict(entry["trained"])
            calibrated = True
    run.net.load_state_dict(net.state_dict())
    return calibrated


def _step(run: _Run, it: int, began: float) -> float:
    """One iteration; returns its loss (the total, with the calibration term)."""
    config, device = run.config, run.device
    seed = iteration_seed(config.seed, it)
    gen = torch.Generator().manual_seed(seed)
    calibrated = _networks(run, gen, seed)
    real, real_y = _real_batch(run.real, run.members, config.batch_real, gen)
    real, real_y = (
        real[run.rank :: run.world].to(device),
        real_y[run.rank :: run.world].to(device),
    )  # this process's shard
    aug_seed = int(torch.randint(2**62, (1,), generator=gen))
    calib_seed = int(torch.randint(2**62, (1,), generator=gen)) if calibrated else None
    syn = formation.decode(run.syn, config.factor)
    syn_y = formation.decoded_labels(run.syn_y, config.factor)
    with torch.no_grad(), run.hardware.autocast():
        real_f = run.embed(siamese_augment(real, aug_seed))
    with run.hardware.autocast():
        syn_f = run.embed(siamese_augment(syn, aug_seed))
    real_f, syn_f = real_f.float(), syn_f.float()  # the loss in float32 whatever the network computed in
    if not bool(torch.isfinite(syn_f.detach()).all()):  # e.g. images grown so large the network overflows
        raise DivergedError(_diverged(it, "the synthetic images' features are non-finite", config.checkpoint_every))
    try:
        loss = run.objective.loss(real_f, real_y, syn_f, syn_y, gen)
    except ValueError as error:  # a value the options led to (frequencies out of range, a sampler that overflowed)
        raise DivergedError(_diverged(it, str(error), config.checkpoint_every)) from None
    calib = None
    if calibrated:
        with run.hardware.autocast():
            logits = run.calibrate(siamese_augment(syn, calib_seed))
        calib = F.cross_entropy(logits.float(), syn_y)
    total = loss if calib is None else loss + config.calib_weight * calib
    value = float(total.detach())
    if not math.isfinite(value):
        raise DivergedError(_diverged(it, f"the loss is {value}", config.checkpoint_every))
    run.optimizer.zero_grad()

    def maximiser_gradients():
        for module in run.objective.maximisers:  # ascent for the sampler, descent for the images
            for p in module.parameters():
                p.grad.neg_()
                if run.group is not None:  # each process holds its shard's part: average, as DDP does
                    torch.distributed.all_reduce(p.grad, group=run.group)
                    p.grad /= run.world

    backward_and_step(total, run.optimizer, run.scaler, between=maximiser_gradients)
    if not bool(torch.isfinite(run.syn).all()):  # cheap: a few images; caught here, not as a NaN loss later
        raise DivergedError(_diverged(it, "the synthetic images became non-finite", config.checkpoint_every))
    if run.pixel_range is not None:
        with torch.no_grad():
            run.syn.copy_(torch.maximum(torch.minimum(run.syn, run.pixel_range[1]), run.pixel_range[0]))
    if run.scheduler is not None:
        run.scheduler.step(value)
    if run.rank != 0:
        return value
    row = {"iteration": it, "loss": float(loss.detach()), "seconds": round(time.perf_counter() - began, 3)}
    if calib is not None:
        row["calibration"] = float(calib.detach())
    run.metrics.write(json.dumps(row) + "\n")
    if (it + 1) % config.checkpoint_every == 0 or it + 1 == run.iterations:
        run.metrics.record()  # the rows up to a checkpoint are durable with it, and recorded as the run's
        save_run_file(
            {
                "config": config.to_dict(),  # what run this is: --resume refuses a checkpoint of another
                "iteration": it + 1,
                "images": run.syn.detach().cpu(),
                "optimizer": run.optimizer.state_dict(),
                "maximisers": [m.state_dict() for m in run.objective.maximisers],
                "scheduler": None if run.scheduler is None else run.scheduler.state_dict(),
                "scaler": None if run.scaler is None else run.scaler.state_dict(),
            },
            run.path / "checkpoint.pt",
        )
    return value


def _diverged(it: int, what: str, every: int) -> str:
    last = (it // every) * every
    kept = f"keeps its checkpoint of iteration {last}" if last > 0 else "had written no checkpoint yet"
    return f"iteration {it}: {what}; the run stopped (a smaller --lr may help) and {kept}"


def _finish(run: _Run) -> None:
    config, dataset = run.config, run.dataset
    images = run.syn.detach().cpu()
    save_run_file(
        {
            "images": images,
            "labels": run.syn_y.cpu(),
            "config": config.to_dict(),
            "mean": dataset.mean,
            "std": dataset.std,
        },
        run.path / "synthetic.pt",
    )
    write_grid(run.path, images, run.syn_y.cpu(), dataset, config)  # redrawn with the accuracy by evaluate_run
    if config.num_eval > 0:
        from .evaluation import evaluate_run

        evaluate_run(
            run.path,
            num_eval=config.num_eval,
            epochs=config.eval_epochs,
            dataset=dataset,
            locked=True,
            quiet=config.quiet,
        )
