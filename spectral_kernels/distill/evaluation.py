"""Evaluate a synthetic set: train fresh ConvNets on it and report test accuracy over seeds as
the mean, the sample std (n - 1) and the 95% t-interval of the mean (distill/stats.py), final
epoch only (no picking the best epoch on the test set); each class's accuracy too and, for a
long-tailed training set, the many/medium/few-shot means (SHOT_GROUPS).

Training follows the run's settings: SGD (lr 0.01, momentum 0.9, weight decay 5e-4) or AdamW
(lr 1e-3, weight decay 0.01, NCFM's evaluation), a step schedule ("half": x0.1 at half the
epochs; "steps": x0.5 at each fifth, NCFM's), the Siamese augmentation drawn per batch and,
with probability --eval-cutmix, CutMix (a box of a shuffled batch pasted in, lambda ~ U(0, 1)
as Beta(1, 1), the loss weighted by area). A multi-formation set is decoded first.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from . import formation
from .augment import siamese_augment
from .config import (
    EVAL_SCHEDULES,
    INT_LIMITS,
    PYTHON,
    ConfigError,
    DistillConfig,
    first_difference,
    flag,
    stored_options,
)
from .data import DEFAULT_LT_IMBALANCE, ImageDataset, run_dataset
from .errors import DivergedError
from .files import RunFileError, expect, expect_tensor, load_torch_file
from .hardware import Hardware, backward_and_step, epoch_end
from .manifest import append_row, refuse_files_not_owned, write_run_text
from .models import ConvNet
from .pictures import write_grid
from .progress import Phase
from .rundir import RunLock, saved_config
from .sources import on_device, take
from .stats import summarise

# The long-tail literature's split of classes by their number of training images (Liu et al.,
# OLTR, 2019; used by every ImageNet-LT / CIFAR-LT paper since): many > 100, medium 20-100,
# few < 20. Kept as they are: the bundled sets' largest classes hold 125 (digits-lt) and 800
# (animals-lt) images, so at the imbalances run here each group holds classes (digits-lt at
# imbalance 10: 1 many, 7 medium, 2 few; animals-lt at 50: 5, 4, 1). An empty group is null.
MANY_ABOVE, FEW_BELOW = 100, 20
SHOT_THRESHOLDS = {"many": f"> {MANY_ABOVE}", "medium": f"{FEW_BELOW}-{MANY_ABOVE}", "few": f"< {FEW_BELOW}"}


def cutmix(x: torch.Tensor, labels: torch.Tensor, gen: torch.Generator, prob: float):
    """(images, labels_a, labels_b, lam): with probability `prob`, a random box of a shuffled copy
    of the batch pasted into it, lam the area kept (loss = lam CE(a) + (1 - lam) CE(b))."""
    if prob <= 0 or float(torch.rand((), generator=gen)) >= prob:
        return x, labels, labels, 1.0
    lam = float(torch.rand((), generator=gen))  # Beta(1, 1)
    perm = torch.randperm(x.shape[0], generator=gen).to(x.device)  # drawn on the CPU: the same on every device
    h, w = x.shape[2], x.shape[3]
    cut_h, cut_w = int(h * (1 - lam) ** 0.5), int(w * (1 - lam) ** 0.5)
    cy, cx = int(torch.randint(h, (), generator=gen)), int(torch.randint(w, (), generator=gen))
    y1, y2 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, h)
    x1, x2 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, w)
    mixed = x.clone()
    mixed[:, :, y1:y2, x1:x2] = x[perm, :, y1:y2, x1:x2]
    return mixed, labels, labels[perm], 1.0 - (y2 - y1) * (x2 - x1) / (h * w)


def train_convnet(
    images,
    labels,
    dataset: ImageDataset,
    *,
    seed: int,
    epochs: int,
    width: int,
    optimizer: str = "sgd",
    milestones=(0.5,),
    gamma: float = 0.1,
    cutmix_prob: float = 0.0,
    batch_size: int = 256,
    hardware: Hardware | None = None,
    what: str = "training",
    on_epoch=None,
) -> ConvNet:
    """A fresh ConvNet trained on (images, labels): SGD (lr 0.01, momentum 0.9, wd 5e-4) or AdamW
    (lr 1e-3, wd 0.01), the learning rate times `gamma` at each fraction of the epochs in
    `milestones`, the Siamese augmentation per batch, then CutMix with probability cutmix_prob.
    Network, optimiser, data and augmentation on hardware.device, the forward under its autocast
    and compilation. A loss or weights that become non-finite raise DivergedError naming `what`.
    on_epoch(epoch, mean loss) is called after each epoch (progress bars)."""
    hardware = hardware or Hardware()  # the CPU in float32, eager
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = ConvNet(dataset.image_shape[0], dataset.num_classes, dataset.image_shape[1:], width=width)
    net = net.to(hardware.device)  # before the optimiser, so that its state is made there too
    images, labels = on_device(images, hardware.device), labels.to(hardware.device)  # a lazy source: per batch
    forward, scaler = hardware.compiled(net), hardware.scaler()
    if optimizer == "adamw":
        opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.01)
    else:
        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    steps = sorted({max(1, int(round(f * epochs))) for f in milestones})
    schedule = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=steps, gamma=gamma)
    net.train()
    for epoch in range(epochs):
        seen = torch.zeros((), device=hardware.device)  # the epoch's summed loss, read once at its end
        order = torch.randperm(images.shape[0], generator=gen)
        for start in range(0, images.shape[0], batch_size):
            idx = order[start : start + batch_size]
            x = siamese_augment(take(images, idx, hardware.device), int(torch.randint(2**62, (1,), generator=gen)))
            x, y_a, y_b, lam = cutmix(x, labels[idx.to(hardware.device)], gen, cutmix_prob)
            with hardware.autocast():
                logits = forward(x)
            logits = logits.float()  # the loss in float32 whatever the network computed in
            loss = (
                F.cross_entropy(logits, y_a)
                if lam == 1.0
                else lam * F.cross_entropy(logits, y_a) + (1 - lam) * F.cross_entropy(logits, y_b)
            )
            opt.zero_grad()
            backward_and_step(loss, opt, scaler)
            seen += loss.detach() * idx.numel()  # on the device: no synchronisation per step
        schedule.step()
        # Once per epoch (one synchronisation): a NaN would otherwise train on silently and report
        # chance accuracy. Both are checked: under --amp fp16 the GradScaler skips every step whose
        # gradients are non-finite, so a NaN loss leaves the weights finite (and untrained). Its
        # skips alone are no sign: it also skips the few steps it takes to lower its scale.
        loss_sum, weights_finite = epoch_end(seen, net)
        if not (math.isfinite(loss_sum) and weights_finite):
            which = "the training loss" if not math.isfinite(loss_sum) else "the network's weights"
            precision = f" under --amp {hardware.amp}" if hardware.amp != "off" else ""
            hint = "--amp off may help" if hardware.amp != "off" else "check the images it trains on (--clamp-pixels)"
            raise DivergedError(f"{what}, epoch {epoch}: {which} became non-finite{precision}; {hint}")
        if on_epoch is not None:
            on_epoch(epoch, loss_sum / images.shape[0])
    return net.eval()


def train_and_test(
    images,
    labels,
    dataset: ImageDataset,
    *,
    seed: int,
    epochs: int,
    width: int,
    hardware: Hardware | None = None,
    by_class: bool = False,
    **training,
):
    """Test accuracy of a ConvNet trained by train_convnet(..., **training), tested on
    hardware.device under its autocast and compilation. With by_class, (accuracy, each class's
    accuracy: a list of num_classes, None for a class without test images)."""
    hardware = hardware or Hardware()
    net = train_convnet(images, labels, dataset, seed=seed, epochs=epochs, width=width, hardware=hardware, **training)
    forward = hardware.compiled(net)
    test_x, test_y = on_device(dataset.test_x, hardware.device), dataset.test_y.to(hardware.device)
    correct = torch.zeros(dataset.num_classes, dtype=torch.int64, device=hardware.device)
    with torch.no_grad():
        for start in range(0, test_y.shape[0], 1024):
            idx = torch.arange(start, min(start + 1024, test_y.shape[0]))
            with hardware.autocast():
                logits = forward(take(test_x, idx, hardware.device))
            y = test_y[start : start + 1024]
            correct += torch.bincount(y[logits.argmax(1) == y], minlength=dataset.num_classes)
    correct = correct.cpu()
    accuracy = int(correct.sum()) / test_y.shape[0]
    if not by_class:
        return accuracy
    totals = torch.bincount(dataset.test_y, minlength=dataset.num_classes)
    return accuracy, [int(k) / int(n) if n > 0 else None for k, n in zip(correct, totals)]


def _class_mean(values) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.fmean(present) if present else None


def shot_groups(class_counts) -> dict:
    """{"many", "medium", "few"} -> the classes (by number) of each group, from the training
    set's class sizes."""
    counts = [int(n) for n in class_counts]
    return {
        "many": [c for c, n in enumerate(counts) if n > MANY_ABOVE],
        "medium": [c for c, n in enumerate(counts) if FEW_BELOW <= n <= MANY_ABOVE],
        "few": [c for c, n in enumerate(counts) if n < FEW_BELOW],
    }


def summary(accuracies, per_class_runs, class_counts=None) -> dict:
    """eval.json's figures from each seed's accuracy and per-class accuracies: mean, sample std,
    95% t-interval, per-class means over seeds; with class_counts (a long-tailed training set)
    the shot groups, their thresholds and their mean accuracies."""
    stats = summarise(accuracies)
    per_class = [_class_mean(seeds) for seeds in zip(*per_class_runs)]
    result = {
        "accuracy_mean": stats["mean"],
        "accuracy_std": stats["std"],
        "accuracy_ci95": stats["ci95"],
        "accuracies": list(accuracies),
        "num_eval": len(accuracies),
        "per_class_accuracy": per_class,
    }
    if class_counts is not None:
        groups = shot_groups(class_counts)
        result["shot_thresholds"] = dict(SHOT_THRESHOLDS)
        result["shot_classes"] = groups
        for name, classes in groups.items():
            result[f"{name}_shot_accuracy"] = _class_mean(per_class[c] for c in classes)
    return result


def evaluation_training(config: DistillConfig) -> dict:
    """train_convnet's keyword arguments for evaluating a run made with `config`."""
    milestones, gamma = EVAL_SCHEDULES[config.eval_schedule]
    return dict(optimizer=config.eval_optimizer, milestones=milestones, gamma=gamma, cutmix_prob=config.eval_cutmix)


def load_synthetic(path: Path) -> dict:
    """synthetic.pt, checked: images (K, channels, H, W) finite floats, labels (K,) integers,
    the run's config (validated as a DistillConfig), mean and std (channels,)."""
    saved = load_torch_file(path, "synthetic set")
    keys = {"images", "labels", "config", "mean", "std"}
    expect(
        isinstance(saved, dict) and keys <= set(saved),
        path,
        f"not a synthetic set (expected a dict with {sorted(keys)})",
    )
    images = expect_tensor(path, "images", saved["images"], floating=True)
    expect(
        images.dim() == 4 and images.shape[0] >= 1,
        path,
        f"images must have shape (K, channels, H, W), got {tuple(images.shape)}",
    )
    labels = expect_tensor(path, "labels", saved["labels"], shape=(images.shape[0],), floating=False)
    for name in ("mean", "std"):
        expect_tensor(path, name, saved[name], shape=(images.shape[1],), floating=True)
    try:
        saved["config"] = DistillConfig.from_dict(stored_options(saved["config"])).validate(check_device=False)
    except ConfigError as error:
        raise RunFileError(f"{path}: its config is not a valid run configuration ({error})") from None
    saved["labels"] = labels.long()
    return saved


def _acc(accs: list) -> dict:
    """The accuracies so far, for the bar: the last seed's and the mean."""
    return {"acc": f"{100 * accs[-1]:.1f}%", "mean": f"{100 * sum(accs) / len(accs):.1f}%"} if accs else {}


# Largest |value| accepted in a synthetic set, in the normalised units the images live in (a
# pixel of [0, 1] normalised by a dataset's mean and std lies within a few tens of 0): far above what any
# run that did not diverge holds, far below where a float32 network overflows (1e38 images
# trained a network of NaNs, whose "accuracy" was chance).
MAX_PIXEL = 1e6


def check_synthetic(path: Path, saved: dict, config: DistillConfig, dataset: ImageDataset) -> None:
    """A loaded synthetic set is the one the run (`config`, its config.json) made from `dataset`:
    the options it records are the run's, its labels are IPC per class in class order, its images
    have the dataset's shape (which the factor divides) and plausible values, and its mean and
    std are the dataset's. RunFileError naming the first thing that is not."""
    cfg = saved["config"]
    difference = first_difference(cfg.to_dict(), config.to_dict(), ignore=DistillConfig.RESUMABLE_CHANGES)
    if difference is not None:
        name, then, now = difference
        raise RunFileError(
            f"{path}: made by a run with {flag(name)} {then}, but {path.parent / 'config.json'} says "
            f"{flag(name)} {now}; the set is not this run's"
        )
    images, labels = saved["images"], saved["labels"]
    expect(
        images.shape[0] == dataset.num_classes * cfg.ipc,
        path,
        f"{images.shape[0]} images, but the run's {dataset.num_classes} classes x IPC {cfg.ipc} make "
        f"{dataset.num_classes * cfg.ipc}",
    )
    expect(
        tuple(images.shape[1:]) == dataset.image_shape,
        path,
        f"images of shape {tuple(images.shape[1:])} do not match the dataset's {dataset.image_shape}",
    )
    try:
        formation.check_factor(cfg.factor, images.shape[-2:])
    except ValueError as error:
        raise RunFileError(f"{path}: {error}") from None
    expect(
        int(labels.min()) >= 0 and int(labels.max()) < dataset.num_classes,
        path,
        f"labels must lie in [0, {dataset.num_classes}), got {int(labels.min())}..{int(labels.max())}",
    )
    expected = torch.arange(dataset.num_classes).repeat_interleave(cfg.ipc)
    expect(
        torch.equal(labels, expected),
        path,
        f"labels must be IPC {cfg.ipc} images of each class in class order (0 x{cfg.ipc}, 1 x{cfg.ipc}, ...), "
        f"got {labels[:12].tolist()}{'...' if labels.numel() > 12 else ''}",
    )
    peak = images.flatten()[images.abs().argmax()].item()
    expect(
        abs(peak) <= MAX_PIXEL,
        path,
        f"images hold {peak:.3g}, beyond the +-{MAX_PIXEL:g} (normalised units) any run that did not diverge holds",
    )
    for name in ("mean", "std"):
        expect(
            torch.allclose(saved[name].double(), getattr(dataset, name).double(), rtol=1e-4, atol=1e-6),
            path,
            f"{name} {saved[name].tolist()} is not the dataset's {getattr(dataset, name).tolist()}",
        )


def evaluate_run(
    run: str | Path,
    *,
    num_eval: int = 3,
    epochs: int | None = None,
    dataset: ImageDataset | None = None,
    locked: bool = False,
    device: str | None = None,
    amp: str | None = None,
    compile: bool | None = None,
    quiet: bool = False,
) -> dict:
    """Evaluate run/synthetic.pt; appends an "eval" row to metrics.jsonl and writes eval.json.
    device, amp and compile default to the run's own (its config); a "phase" row before the
    "eval" row records where the networks ran. Unless quiet, a bar shows the seed, epoch and
    accuracies so far, and a summary line follows (distill/progress.py).

    Holds the run's lock while it works (unless the caller, the distillation itself, holds it:
    locked=True). Raises RunFileError for a missing or damaged synthetic.pt, ConfigError for
    a run in use or bad arguments, DataError if the run's dataset cannot be loaded here.
    """
    run = Path(run)
    check_counts(num_eval, epochs)
    if not locked:
        # only a run directory is locked and written into
        if saved_config(run).dataset == PYTHON and dataset is None:
            raise ConfigError(
                f"{run} distilled data given from Python, which cannot be reloaded from the run folder; evaluate it "
                f"from Python: spectral_kernels.distill.evaluate({str(run)!r}, test_data)"
            )
        if not (run / "synthetic.pt").is_file():
            raise RunFileError(f"{run} holds no synthetic.pt (not a finished run)")
    lock = None if locked else RunLock(run).acquire()
    try:
        refuse_files_not_owned(run, ("eval.json", "metrics.jsonl", "grid.png"), "evaluate")  # the files it writes
        saved = load_synthetic(run / "synthetic.pt")
        cfg = saved["config"]
        chosen = dict(device=device, amp=amp, compile=compile)
        cfg = dataclasses.replace(cfg, **{k: v for k, v in chosen.items() if v is not None}).validate()
        # A CompileError here comes after the run finished (synthetic.pt is saved): --resume has
        # nothing to continue; what helps is evaluating again without compiling.
        again = f"spectral-distill evaluate {run} --no-compile"
        retry = (
            f"the distilled images are saved: evaluate them without --compile ({again})"
            if locked
            else f"evaluate again without --compile ({again})"
        )
        hardware = dataclasses.replace(Hardware.of(cfg), retry=retry)
        if dataset is None:
            dataset = run_dataset(cfg)
        check_synthetic(run / "synthetic.pt", saved, saved_config(run), dataset)
        result = evaluate_images(
            saved["images"],
            saved["labels"],
            cfg,
            dataset,
            num_eval=num_eval,
            epochs=epochs,
            hardware=hardware,
            quiet=quiet,
            record=lambda row: append_row(run / "metrics.jsonl", row),
        )
        write_run_text(json.dumps(result, indent=2) + "\n", run / "eval.json")
        append_row(run / "metrics.jsonl", result)
        write_grid(run, saved["images"], saved["labels"], dataset, cfg, result)  # the title gains the accuracy
        return result
    finally:
        if lock is not None:
            lock.release()


def check_counts(num_eval, epochs) -> None:
    """ConfigError unless num_eval and epochs (None: the run's) are integers within the
    distillation's limits (INT_LIMITS), but at least 1 seed: 0 means "no evaluation" only there."""
    for name, value in (("num_eval", num_eval), ("eval_epochs", epochs)):
        low, high = max(1, INT_LIMITS[name][0]), INT_LIMITS[name][1]
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high):
            raise ConfigError(f"{flag(name)} must be an integer in [{low}, {high}], got {value!r}")


def evaluate_images(
    images, labels, cfg: DistillConfig, dataset: ImageDataset, *, num_eval, epochs, hardware, quiet, record
) -> dict:
    """The "eval" row of stored synthetic `images` (normalised, encoded) and `labels` of a run
    made with `cfg`: num_eval ConvNets trained on them and tested on dataset's test set, the
    figures of summary(), the epochs and the seconds. record(row) gets the phase row first."""
    epochs = cfg.eval_epochs if epochs is None else epochs
    images, labels = formation.decode(images.float(), cfg.factor), formation.decoded_labels(labels, cfg.factor)
    began = time.perf_counter()
    record(hardware.phase("evaluation"))
    runs = []
    with Phase("evaluation", num_eval * epochs, unit="epoch", quiet=quiet) as phase:
        for k in range(num_eval):
            accs = [acc for acc, _ in runs]
            runs.append(
                train_and_test(
                    images,
                    labels,
                    dataset,
                    seed=cfg.seed * 1000 + k,
                    epochs=epochs,
                    width=cfg.width,
                    hardware=hardware,
                    what=f"evaluation network {k}",
                    by_class=True,
                    on_epoch=lambda epoch, loss, k=k, accs=accs: phase.advance(
                        seed=f"{k + 1}/{num_eval}", epoch=f"{epoch + 1}/{epochs}", loss=f"{loss:.3g}", **_acc(accs)
                    ),
                    **evaluation_training(cfg),
                )
            )
            phase.show(seed=f"{k + 1}/{num_eval}", epoch=f"{epochs}/{epochs}", **_acc([acc for acc, _ in runs]))
        phase.summary = f"{num_eval} networks x {epochs} epochs trained and tested in {phase.seconds:.1f} s"
    imbalance = (
        cfg.imbalance if cfg.imbalance is not None else DEFAULT_LT_IMBALANCE if cfg.dataset.endswith("-lt") else 1
    )
    long_tailed = imbalance > 1
    figures = summary(
        [acc for acc, _ in runs],
        [per_class for _, per_class in runs],
        dataset.class_counts.tolist() if long_tailed else None,
    )
    return {"event": "eval", **figures, "epochs": epochs, "seconds": round(time.perf_counter() - began, 2)}
