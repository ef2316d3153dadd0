"""The pool of feature networks the distillation draws from (NCFM's pretrained model pool).

K ConvNets are trained on the real training set (SGD, lr 0.01, momentum 0.9, weight decay
5e-4, batches of 128, the learning rate x0.2 at 2/3 and 5/6 of the epochs, the Siamese
augmentation and CutMix with probability --eval-cutmix: NCFM's pretraining), and each one's
initial and trained weights are kept.
Each step draws one network k and, with --pool-interpolate, a lambda ~ U(0, 1), and matches
features of the network whose every parameter is lambda * init_k + (1 - lambda) * trained_k:
a continuum from random to trained features. Without it the trained weights are used.

Training the pool is the expensive part, so it is cached across runs: under
$SPECTRAL_KERNELS_CACHE (default ~/.cache/spectral_kernels) a file named by a hash of everything
that determines it (dataset, imbalance, data root, seed, width, K, epochs, CutMix, torch
version, and --amp unless off). A later run on the same data and settings loads it instead of
training; the run directory keeps its own copy (net_pool.pt) for --resume. Every load is
weights_only and checked. It is trained on --device and its weights are kept on the CPU.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from .. import __version__
from .config import DistillConfig
from .data import ImageDataset
from .files import RunFileError, atomic_save, expect, expect_finite_state, load_torch_file
from .hardware import Hardware
from .manifest import save_run_file
from .models import ConvNet
from .progress import Phase, say
from .sources import on_device

CACHE_ENV = "SPECTRAL_KERNELS_CACHE"
# Step schedule of the pool's training: x0.2 at 2/3 and 5/6 of the epochs (NCFM's pretraining).
POOL_MILESTONES, POOL_GAMMA, POOL_BATCH = (2 / 3, 5 / 6), 0.2, 128


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "spectral_kernels") / "pools"


def pool_key(config: DistillConfig) -> str:
    """What determines the pool, hashed: two runs with the same key get the same networks."""
    root = str(Path(config.data_root).resolve()) if config.data_root else None
    parts = dict(
        dataset=config.dataset,
        imbalance=config.imbalance,
        data_root=root,
        seed=config.seed,
        width=config.width,
        net_pool=config.net_pool,
        pool_epochs=config.pool_epochs,
        cutmix=config.eval_cutmix,
        milestones=POOL_MILESTONES,
        gamma=POOL_GAMMA,
        batch=POOL_BATCH,
        torch=torch.__version__,
        library=__version__,
    )
    if config.data_fingerprint is not None:  # data given from Python: its hash names it, not a dataset name
        parts["data_fingerprint"] = config.data_fingerprint
    if config.amp != "off":  # reduced precision trains other networks (device and --compile: float noise only)
        parts["amp"] = config.amp
    # The image size, when given or an image folder's own (None; such pools were trained at 32 x 32
    # before --image-size); absent for the other datasets at their size, so their cached pools stay found.
    if config.image_size is not None or config.dataset.removesuffix("-lt") == "imagefolder":
        parts["image_size"] = config.image_size
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]


def _train_pool(config: DistillConfig, dataset: ImageDataset, seed_of) -> list[dict]:
    """The pool trained on config.device (under --amp and --compile); its weights kept on the CPU,
    where the cache and the run's copy are written from and every step loads them from."""
    from .evaluation import train_convnet

    hardware = Hardware.of(config)
    # Once for all K: a bundled set moves to the device whole, a lazy source is read per batch.
    train_x, train_y = on_device(dataset.train_x, hardware.device), dataset.train_y.to(hardware.device)
    pool = []
    with Phase("pool", config.net_pool * config.pool_epochs, unit="epoch", quiet=config.quiet) as phase:
        for k in range(config.net_pool):
            seed = seed_of(k)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                init = ConvNet(
                    dataset.image_shape[0], dataset.num_classes, dataset.image_shape[1:], width=config.width
                ).state_dict()
            net = train_convnet(
                train_x,
                train_y,
                dataset,
                seed=seed,
                epochs=config.pool_epochs,
                width=config.width,
                optimizer="sgd",
                milestones=POOL_MILESTONES,
                gamma=POOL_GAMMA,
                cutmix_prob=config.eval_cutmix,
                batch_size=POOL_BATCH,
                hardware=hardware,
                what=f"pool network {k}",
                on_epoch=lambda epoch, loss, k=k: phase.advance(
                    network=f"{k + 1}/{config.net_pool}", epoch=f"{epoch + 1}/{config.pool_epochs}", loss=f"{loss:.3g}"
                ),
            )
            trained = {k_: v.detach().cpu() for k_, v in net.state_dict().items()}
            pool.append({"init": {k_: v.clone() for k_, v in init.items()}, "trained": trained})
        phase.summary = (
            f"{config.net_pool} networks x {config.pool_epochs} epochs trained on {hardware.device} "
            f"in {phase.seconds:.1f} s"
        )
    return pool


def check_pool(path: Path, pool, config: DistillConfig, dataset: ImageDataset) -> list[dict]:
    """A loaded pool: a list of net_pool entries {"init", "trained"} that fit this run's ConvNet."""
    expect(
        isinstance(pool, list) and len(pool) == config.net_pool,
        path,
        f"expected a list of {config.net_pool} networks (each with init and trained weights)",
    )
    net = ConvNet(dataset.image_shape[0], dataset.num_classes, dataset.image_shape[1:], width=config.width)
    dtypes = {name: value.dtype for name, value in net.state_dict().items()}
    for k, entry in enumerate(pool):
        expect(
            isinstance(entry, dict) and set(entry) == {"init", "trained"},
            path,
            f"network {k} must hold 'init' and 'trained' weights",
        )
        for part in ("init", "trained"):
            expect_finite_state(path, f"network {k} {part}", entry[part])
            # load_state_dict casts whatever it gets: integer weights (a well-formed file of the
            # wrong kind) would silently become a network of rounded, mostly zero, weights.
            for name, value in entry[part].items() if isinstance(entry[part], dict) else ():
                if isinstance(value, torch.Tensor) and name in dtypes and value.dtype != dtypes[name]:
                    raise RunFileError(
                        f"{path}: network {k} {part} {name!r} holds {value.dtype}, the run's network {dtypes[name]}"
                    )
            try:
                net.load_state_dict(entry[part])
            except (RuntimeError, TypeError, AttributeError, KeyError) as error:
                raise RunFileError(
                    f"{path}: network {k} does not fit this run ({str(error).splitlines()[0][:200]})"
                ) from None
    return pool


def network_pool(
    config: DistillConfig, dataset: ImageDataset, run: Path, *, rank: int, group, seed_of, record=lambda row: None
) -> list[dict]:
    """The run's pool: its own copy (run/net_pool.pt) if it has one, else the cache, else trained
    now (rank 0) and written to both; the other processes wait and load the run's copy.
    record(row) gets the metrics row of a pool trained or taken from the cache now."""
    path = run / "net_pool.pt"
    if rank == 0 and not path.is_file():
        cached = cache_dir() / f"{pool_key(config)}.pt"
        if cached.is_file():
            pool = check_pool(cached, load_torch_file(cached, "cached network pool"), config, dataset)
            record({"event": "phase", "phase": "pool", "loaded": "cache"})
            say("pool", f"{config.net_pool} networks loaded from the cache ({cached})", quiet=config.quiet)
        else:
            record(Hardware.of(config).phase("pool"))
            pool = _train_pool(config, dataset, seed_of)
            cached.parent.mkdir(parents=True, exist_ok=True)
            atomic_save(pool, cached)
        save_run_file(pool, path)
    if group is not None:
        torch.distributed.barrier()
    return check_pool(path, load_torch_file(path, "network pool"), config, dataset)


def pool_network(entry: dict, lam: float | None, net: ConvNet) -> ConvNet:
    """`net` with parameters lam * init + (1 - lam) * trained (the trained weights for lam=None)."""
    if lam is None:
        net.load_state_dict(entry["trained"])
        return net
    mixed = {
        name: lam * entry["init"][name] + (1.0 - lam) * entry["trained"][name]
        if entry["trained"][name].is_floating_point()
        else entry["trained"][name]
        for name in entry["trained"]
    }
    net.load_state_dict(mixed)
    return net
