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
from .data import ImageDataset, load_dataset
from .models import ConvNet


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


def evaluate_run(run: str | Path, *, num_eval: int = 3, epochs: int | None = None, dataset: ImageDataset | None = None) -> dict:
    """Evaluate run/synthetic.pt; appends an "eval" row to metrics.jsonl and writes eval.json."""
    run = Path(run)
    saved = torch.load(run / "synthetic.pt")
    cfg = saved["config"]
    if dataset is None:
        dataset = load_dataset(cfg["dataset"], data_root=cfg["data_root"], imbalance=cfg["imbalance"], seed=cfg["seed"])
    epochs = cfg["eval_epochs"] if epochs is None else epochs
    began = time.perf_counter()
    accs = [train_and_test(saved["images"], saved["labels"], dataset, seed=cfg["seed"] * 1000 + k, epochs=epochs, width=cfg["width"]) for k in range(num_eval)]
    result = {
        "event": "eval", "accuracy_mean": statistics.fmean(accs), "accuracy_std": statistics.pstdev(accs) if len(accs) > 1 else 0.0,
        "accuracies": accs, "num_eval": num_eval, "epochs": epochs, "seconds": round(time.perf_counter() - began, 2),
    }
    (run / "eval.json").write_text(json.dumps(result, indent=2) + "\n")
    with open(run / "metrics.jsonl", "a") as f:
        f.write(json.dumps(result) + "\n")
    return result
