"""The distillation loop and its run directory.

A run directory holds config.json (everything needed to reproduce the run), checkpoint.pt
(written atomically every `checkpoint_every` iterations), metrics.jsonl, and at the end
synthetic.pt ({"images", "labels", "config"}) and grid.png (a row per class). Every random
draw of iteration i comes from a generator seeded by (seed, i), so a run resumed from its
last checkpoint produces exactly the synthetic set an uninterrupted run would.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..kernels import SPECTRAL_KERNELS
from .augment import siamese_augment
from .data import DATASETS, ImageDataset, load_dataset
from .methods import HEAD_RULES, METHODS, Objective
from .models import ConvNet


class ConfigError(ValueError):
    """A bad option value; the CLI prints it on one line and exits with status 2."""


class RunExistsError(ConfigError):
    pass


@dataclass
class DistillConfig:
    dataset: str = "digits"
    method: str = "dm"
    ipc: int = 10
    iterations: int = 200
    seed: int = 0
    out: str = "runs/run"
    device: str = "cpu"
    num_eval: int = 3
    imbalance: float | None = None
    data_root: str | None = None
    kernel: str = "gaussian"
    bandwidth: float | None = None  # None: median distance of the real features at each step
    num_freqs: int = 1024
    alpha_head: float = 0.8
    head_rule: str = "binary"
    learned_sampler: bool = False
    width: int = 128
    net_pool: int = 0  # 0: a freshly random ConvNet each step; K: draw from K briefly trained ones
    pool_epochs: int = 2  # training epochs of each pooled network on the real training set
    batch_real: int = 64  # real images per class per step
    lr: float = 0.01  # Adam on the synthetic images (and the NCFM sampler)
    eval_epochs: int = 300
    checkpoint_every: int = 50
    quiet: bool = False

    # Options that may change between an interrupted run and its resumption.
    RESUMABLE_CHANGES = ("num_eval", "eval_epochs", "quiet", "device", "checkpoint_every")

    def validate(self) -> "DistillConfig":
        def check(ok: bool, message: str):
            if not ok:
                raise ConfigError(message)

        check(self.dataset in DATASETS, f"unknown dataset {self.dataset!r}; choose one of {', '.join(DATASETS)}")
        check(self.method in METHODS, f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        check(self.kernel in SPECTRAL_KERNELS, f"unknown kernel {self.kernel!r}; choose one of {', '.join(SPECTRAL_KERNELS)}")
        check(self.head_rule in HEAD_RULES, f"unknown head rule {self.head_rule!r}; choose one of {', '.join(HEAD_RULES)}")
        for name in ("ipc", "width", "batch_real", "num_freqs", "checkpoint_every"):
            check(isinstance(getattr(self, name), int) and getattr(self, name) >= 1, f"--{name.replace('_', '-')} must be an integer >= 1, got {getattr(self, name)!r}")
        for name in ("iterations", "num_eval", "eval_epochs", "net_pool", "pool_epochs"):
            check(isinstance(getattr(self, name), int) and getattr(self, name) >= 0, f"--{name.replace('_', '-')} must be an integer >= 0, got {getattr(self, name)!r}")
        check(self.imbalance is None or self.imbalance >= 1, f"--imbalance must be >= 1 (n_max / n_min), got {self.imbalance}")
        check(self.bandwidth is None or self.bandwidth > 0, f"--bandwidth must be > 0, got {self.bandwidth}")
        check(0.0 <= self.alpha_head <= 1.0, f"--alpha-head must lie in [0, 1], got {self.alpha_head}")
        check(self.lr > 0, f"--lr must be > 0, got {self.lr}")
        check(self.device == "cpu" or self.device.startswith("cuda"), f"--device must be cpu or cuda[:N], got {self.device!r}")
        if self.device.startswith("cuda"):
            check(torch.cuda.is_available(), f"--device {self.device}: no CUDA device is available")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "DistillConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown option(s) {', '.join(unknown)}")
        return cls(**values)


def atomic_save(obj, path: Path) -> None:
    """torch.save to a temporary file, then rename: a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def atomic_write_text(text: str, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def iteration_seed(seed: int, iteration: int) -> int:
    return (seed * 1_000_003 + iteration * 7_919 + 17) % (2**62)


def initial_synthetic(dataset: ImageDataset, ipc: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """IPC real images per class (noise where a class has fewer), labels c repeated IPC times."""
    gen = torch.Generator().manual_seed(seed)
    images = []
    for c in range(dataset.num_classes):
        idx = (dataset.train_y == c).nonzero().flatten()
        idx = idx[torch.randperm(idx.numel(), generator=gen)[:ipc]]
        chosen = dataset.train_x[idx]
        if chosen.shape[0] < ipc:
            noise = torch.randn((ipc - chosen.shape[0], *dataset.image_shape), generator=gen)
            chosen = torch.cat([chosen, noise])
        images.append(chosen)
    labels = torch.arange(dataset.num_classes).repeat_interleave(ipc)
    return torch.cat(images), labels


def class_members(dataset: ImageDataset) -> list[torch.Tensor]:
    """Indices of each class's training images (computed once per run, used every step)."""
    return [(dataset.train_y == c).nonzero().flatten() for c in range(dataset.num_classes)]


def _real_batch(dataset: ImageDataset, members: list[torch.Tensor], per_class: int, gen: torch.Generator):
    idx = torch.cat([m[torch.randperm(m.numel(), generator=gen)[:per_class]] for m in members])
    return dataset.train_x[idx], dataset.train_y[idx]


def prepare_run_dir(config: DistillConfig, *, resume: bool, overwrite: bool) -> Path:
    run = Path(config.out)
    if run.exists() and not run.is_dir():
        raise ConfigError(f"--out {run} exists and is not a directory")
    if run.exists() and any(run.iterdir()):
        if resume:
            if not (run / "config.json").is_file():
                raise ConfigError(f"--resume: {run} holds no config.json, so it is not a run directory")
            saved = json.loads((run / "config.json").read_text())
            differing = [k for k, v in config.to_dict().items() if k not in DistillConfig.RESUMABLE_CHANGES and saved.get(k) != v]
            if differing:
                raise ConfigError(f"--resume: options differ from the interrupted run's config.json: {', '.join(differing)}")
        elif overwrite:
            shutil.rmtree(run)
        else:
            raise RunExistsError(f"{run} already holds a run; pass --resume to continue it or --overwrite to replace it")
    try:
        run.mkdir(parents=True, exist_ok=True)
        probe = run / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise ConfigError(f"cannot write to --out {run}: {error.strerror or error}") from None
    return run


def _distributed(device: torch.device):
    """(group, rank, world) under torchrun (WORLD_SIZE > 1), else (None, 0, 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None, 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.group.WORLD, dist.get_rank(), dist.get_world_size()


def distill(config: DistillConfig, *, resume: bool = False, overwrite: bool = False, on_iteration=None) -> Path:
    """Run (or resume) a distillation; returns the run directory. `on_iteration(i)` is called
    before iteration i (tests use it to interrupt a run).

    Under torchrun each process takes a disjoint shard of every step's real batch and the real
    ECF sums are all-reduced (SPEC §1), so the loss is the single-process loss; the synthetic
    set is replicated, and only rank 0 writes the run directory.
    """
    config.validate()
    group, rank, world = _distributed(torch.device(config.device))
    if group is not None and config.method in ("dm", "mmd"):
        raise ConfigError(f"--method {config.method} compares samples pairwise and cannot run data-parallel; use ncfm, sdd or csdm")
    if rank == 0:
        run = prepare_run_dir(config, resume=resume, overwrite=overwrite)
    if group is not None:
        torch.distributed.barrier()
    run = Path(config.out)
    try:
        dataset = load_dataset(config.dataset, data_root=config.data_root, imbalance=config.imbalance, seed=config.seed)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    if rank == 0:
        atomic_write_text(json.dumps(config.to_dict(), indent=2) + "\n", run / "config.json")
    device = torch.device(config.device)
    syn, syn_y = initial_synthetic(dataset, config.ipc, config.seed)
    syn = syn.to(device).requires_grad_(config.method != "random")
    syn_y = syn_y.to(device)
    channels, size = dataset.image_shape[0], dataset.image_shape[1]
    feature_dim = ConvNet(channels, dataset.num_classes, size, width=config.width).feature_dim
    objective = Objective(config, dataset.class_counts, feature_dim, dataset.num_classes, real_group=group)
    for module in objective.maximisers:
        module.to(device)
    params = [syn] + [p for m in objective.maximisers for p in m.parameters()]
    optimizer = torch.optim.Adam(params, lr=config.lr) if config.method != "random" else None
    iterations = 0 if config.method == "random" else config.iterations

    start, checkpoint_path, metrics_path = 0, run / "checkpoint.pt", run / "metrics.jsonl"
    if resume and checkpoint_path.is_file():
        state = torch.load(checkpoint_path, map_location=device)
        with torch.no_grad():
            syn.copy_(state["images"])
        optimizer.load_state_dict(state["optimizer"])
        for module, module_state in zip(objective.maximisers, state["maximisers"]):
            module.load_state_dict(module_state)
        start = state["iteration"]
    # Metrics written after the last checkpoint belong to iterations that will run again.
    if rank == 0:
        kept = [line for line in (metrics_path.read_text().splitlines() if metrics_path.exists() else []) if json.loads(line).get("iteration", -1) < start]
        atomic_write_text("".join(line + "\n" for line in kept), metrics_path)

    pool = network_pool(config, dataset, run, rank, group) if config.net_pool and iterations > start else None
    members = class_members(dataset)
    progress = _progress(range(start, iterations), config if rank == 0 else dataclasses.replace(config, quiet=True),
                         desc=f"{config.method} on {config.dataset}")
    began = time.perf_counter()
    with open(metrics_path if rank == 0 else os.devnull, "a") as metrics:
        for it in progress:
            if on_iteration is not None:
                on_iteration(it)
            seed = iteration_seed(config.seed, it)
            gen = torch.Generator().manual_seed(seed)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                net = ConvNet(channels, dataset.num_classes, size, width=config.width)
                if pool is not None:
                    net.load_state_dict(pool[int(torch.randint(len(pool), (1,), generator=gen))])
                net = net.to(device)
            net.requires_grad_(False)
            real, real_y = _real_batch(dataset, members, config.batch_real, gen)
            real, real_y = real[rank::world].to(device), real_y[rank::world].to(device)  # this process's shard
            aug_seed = int(torch.randint(2**62, (1,), generator=gen))
            with torch.no_grad():
                real_f = net.embed(siamese_augment(real, aug_seed))
            syn_f = net.embed(siamese_augment(syn, aug_seed))
            loss = objective.loss(real_f, real_y, syn_f, syn_y, gen)
            optimizer.zero_grad()
            loss.backward()
            for module in objective.maximisers:  # ascent for the sampler, descent for the images
                for p in module.parameters():
                    p.grad.neg_()
                    if group is not None:  # each process holds its shard's part: average, as DDP does
                        torch.distributed.all_reduce(p.grad, group=group)
                        p.grad /= world
            optimizer.step()
            metrics.write(json.dumps({"iteration": it, "loss": float(loss.detach()), "seconds": round(time.perf_counter() - began, 3)}) + "\n")
            if rank == 0 and ((it + 1) % config.checkpoint_every == 0 or it + 1 == iterations):
                metrics.flush()
                atomic_save({"iteration": it + 1, "images": syn.detach().cpu(), "optimizer": optimizer.state_dict(),
                             "maximisers": [m.state_dict() for m in objective.maximisers]}, checkpoint_path)

    if group is not None:
        torch.distributed.barrier()
    if rank != 0:
        return run
    images = syn.detach().cpu()
    atomic_save({"images": images, "labels": syn_y.cpu(), "config": config.to_dict(),
                 "mean": dataset.mean, "std": dataset.std}, run / "synthetic.pt")
    save_grid(images, dataset, config.ipc, run / "grid.png")
    if config.num_eval > 0:
        from .evaluate import evaluate_run

        evaluate_run(run, num_eval=config.num_eval, epochs=config.eval_epochs, dataset=dataset)
    return run


def network_pool(config: DistillConfig, dataset: ImageDataset, run: Path, rank: int, group) -> list[dict]:
    """K ConvNets trained for a few epochs on the real data, cached in run/net_pool.pt so a
    resumed run reuses them; rank 0 trains, the other processes wait and load."""
    from .evaluate import train_convnet

    path = run / "net_pool.pt"
    if rank == 0 and not path.is_file():
        pool = [
            train_convnet(dataset.train_x, dataset.train_y, dataset, seed=iteration_seed(config.seed, -1 - k),
                          epochs=config.pool_epochs, width=config.width).state_dict()
            for k in range(config.net_pool)
        ]
        atomic_save(pool, path)
    if group is not None:
        torch.distributed.barrier()
    return torch.load(path)


def save_grid(images: torch.Tensor, dataset: ImageDataset, ipc: int, path: Path) -> None:
    from torchvision.utils import save_image

    shown = (images * dataset.std[None, :, None, None] + dataset.mean[None, :, None, None]).clamp(0, 1)
    tmp = path.with_name(path.name + ".tmp.png")
    save_image(shown, tmp, nrow=ipc, padding=1, pad_value=1.0)
    os.replace(tmp, path)


def _progress(iterable, config: DistillConfig, desc: str):
    if config.quiet:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, desc=desc, leave=False, dynamic_ncols=True)
