"""Evaluate a synthetic set: train fresh ConvNets on it (with the same Siamese augmentation
family, drawn per step) and report test accuracy as mean +- std over seeds, final epoch only
(no picking the best epoch on the test set)."""
from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from .augment import siamese_augment
from .config import ConfigError, DistillConfig
from .data import ImageDataset, load_dataset
from .files import RunFileError, append_line, atomic_write_text, expect, expect_tensor, load_torch_file
from .models import ConvNet
from .rundir import RunLock, saved_config


def train_convnet(images, labels, dataset: ImageDataset, *, seed: int, epochs: int, width: int, batch_size: int = 256) -> ConvNet:
    """A fresh ConvNet trained on (images, labels) with SGD and Siamese augmentation; the
    learning rate drops tenfold halfway."""
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = ConvNet(dataset.image_shape[0], dataset.num_classes, dataset.image_shape[1], width=width)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    schedule = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[max(1, epochs // 2)], gamma=0.1)
    net.train()
    for _ in range(epochs):
        order = torch.randperm(images.shape[0], generator=gen)
        for start in range(0, images.shape[0], batch_size):
            idx = order[start : start + batch_size]
            x = siamese_augment(images[idx], int(torch.randint(2**62, (1,), generator=gen)))
            loss = F.cross_entropy(net(x), labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        schedule.step()
    return net.eval()


def train_and_test(images, labels, dataset: ImageDataset, *, seed: int, epochs: int, width: int) -> float:
    net = train_convnet(images, labels, dataset, seed=seed, epochs=epochs, width=width)
    correct = 0
    with torch.no_grad():
        for start in range(0, dataset.test_x.shape[0], 1024):
            logits = net(dataset.test_x[start : start + 1024])
            correct += int((logits.argmax(1) == dataset.test_y[start : start + 1024]).sum())
    return correct / dataset.test_x.shape[0]


def load_synthetic(path: Path) -> dict:
    """synthetic.pt, checked: images (K, channels, H, W) finite floats, labels (K,) integers,
    the run's config (validated as a DistillConfig), mean and std (channels,)."""
    saved = load_torch_file(path, "synthetic set")
    keys = {"images", "labels", "config", "mean", "std"}
    expect(isinstance(saved, dict) and keys <= set(saved), path, f"not a synthetic set (expected a dict with {sorted(keys)})")
    images = expect_tensor(path, "images", saved["images"], floating=True)
    expect(images.dim() == 4 and images.shape[0] >= 1, path, f"images must have shape (K, channels, H, W), got {tuple(images.shape)}")
    labels = expect_tensor(path, "labels", saved["labels"], shape=(images.shape[0],), floating=False)
    for name in ("mean", "std"):
        expect_tensor(path, name, saved[name], shape=(images.shape[1],), floating=True)
    try:
        saved["config"] = DistillConfig.from_dict(saved["config"]).validate(check_device=False)
    except ConfigError as error:
        raise RunFileError(f"{path}: its config is not a valid run configuration ({error})") from None
    saved["labels"] = labels.long()
    return saved


def evaluate_run(run: str | Path, *, num_eval: int = 3, epochs: int | None = None, dataset: ImageDataset | None = None,
                 locked: bool = False) -> dict:
    """Evaluate run/synthetic.pt; appends an "eval" row to metrics.jsonl and writes eval.json.

    Holds the run's lock while it works (unless the caller, the distillation itself, holds it:
    locked=True). Raises RunFileError for a missing or damaged synthetic.pt, ConfigError for
    a run in use or bad arguments, DataError if the run's dataset cannot be loaded here.
    """
    run = Path(run)
    for name, value, low in (("num_eval", num_eval, 1), ("epochs", epochs, 1)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not low <= value <= 1_000_000):
            raise ConfigError(f"--{name.replace('_', '-')} must be an integer in [{low}, 1000000], got {value!r}")
    if not locked:
        saved_config(run)  # only a run directory is locked and written into
        if not (run / "synthetic.pt").is_file():
            raise RunFileError(f"{run} holds no synthetic.pt (not a finished run)")
    lock = None if locked else RunLock(run).acquire()
    try:
        saved = load_synthetic(run / "synthetic.pt")
        cfg = saved["config"]
        if dataset is None:
            dataset = load_dataset(cfg.dataset, data_root=cfg.data_root, imbalance=cfg.imbalance, seed=cfg.seed)
        images, labels = saved["images"].float(), saved["labels"]
        expect(tuple(images.shape[1:]) == dataset.image_shape, run / "synthetic.pt",
               f"images of shape {tuple(images.shape[1:])} do not match the dataset's {dataset.image_shape}")
        expect(int(labels.min()) >= 0 and int(labels.max()) < dataset.num_classes, run / "synthetic.pt",
               f"labels must lie in [0, {dataset.num_classes}), got {int(labels.min())}..{int(labels.max())}")
        epochs = cfg.eval_epochs if epochs is None else epochs
        began = time.perf_counter()
        accs = [train_and_test(images, labels, dataset, seed=cfg.seed * 1000 + k, epochs=epochs, width=cfg.width)
                for k in range(num_eval)]
        result = {
            "event": "eval", "accuracy_mean": statistics.fmean(accs),
            "accuracy_std": statistics.pstdev(accs) if len(accs) > 1 else 0.0,
            "accuracies": accs, "num_eval": num_eval, "epochs": epochs, "seconds": round(time.perf_counter() - began, 2),
        }
        atomic_write_text(json.dumps(result, indent=2) + "\n", run / "eval.json")
        append_line(run / "metrics.jsonl", json.dumps(result))
        return result
    finally:
        if lock is not None:
            lock.release()
