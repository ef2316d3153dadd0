"""The Python API of distillation (docs/api.md): distill(data, ...) -> DistillResult, and
evaluate(run or result, test_data). The CLI runs the same driver (distill/loop.py) on a
DistillConfig; this layer turns Python objects into one, checks them, and reads the result back.

- data: a bundled dataset's name (as --dataset), a map-style torch.utils.data.Dataset yielding
  (image tensor (channels, H, W), int label), or a pair of tensors (images (N, channels, H, W),
  labels (N,)). User data is read lazily, a batch per step (distill/sources.py). The run records
  dataset "python" and a fingerprint of the data.
- network: None (the DM ConvNet sized from the images) or a callable network(torch.Generator)
  -> nn.Module mapping a batch of images to features (N, d); each step draws a fresh one from
  its own seed. Pool training and the calibration term need a classifier: with a network of
  one's own they are refused (net_pool=0).
- loss (or method=<module>): a loss module as the objective (distill/module_objective.py); the run
  records method "python" and the module's class and configuration.
- Every check (options, data, the network and the loss on a first batch) runs before anything
  is written; refusals are TypeError or ValueError (ConfigError and DataError are ValueErrors).
- out=None runs in a temporary folder that is removed afterwards; out=PATH writes the run
  folder the CLI writes (spectral-distill show works on it; evaluate needs the test data, so
  from Python), and resume=True continues it (refused when the data differ).
- The result's images are in the data's own value scale (what the dataset yields, the
  normalisation undone); .normalised gives them as the driver stores them (synthetic.pt).
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from . import formation
from .config import PYTHON, ConfigError, DistillConfig
from .data import DATASETS, ImageDataset, run_dataset
from .evaluation import check_counts, evaluate_images, evaluate_run, load_synthetic
from .hardware import Hardware, process_device
from .loop import Supplied, class_members, iteration_seed, network_maker
from .loop import distill as run_distillation
from .module_objective import ModuleObjective, check_loss_module, describe
from .rundir import saved_config
from .sources import Source, take

# The options distill() takes as keywords: the run's options (DistillConfig, the CLI's flags)
# but those it names itself or sets from the objects it is given.
_SET_HERE = ("dataset", "method", "ipc", "iterations", "seed", "out", "data_fingerprint", "network", "loss")
_FIELDS = [field.name for field in dataclasses.fields(DistillConfig)]
OPTIONS = tuple(option for option in _FIELDS if option not in _SET_HERE)
PROBE_PER_CLASS = 2  # images per class in the first batch the network and the loss are checked on


@dataclass
class DistillResult:
    """A distilled set: `images` (C * ipc, channels, H, W) in the data's own value scale (the
    normalisation undone), `labels` (C * ipc,) (ipc of each class, in class order), the
    normalisation's `mean` and `std` (channels,), the run's `config`, its folder `run` (None
    when out=None) and `evaluation` (eval.json's figures, when the run evaluated itself).
    With factor > 1 each stored image holds factor x factor images: decoded() gives those."""

    images: torch.Tensor
    labels: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    config: DistillConfig
    run: Path | None = None
    evaluation: dict | None = None

    @property
    def normalised(self) -> torch.Tensor:
        """The images as the driver stores them (synthetic.pt): (x - mean) / std per channel."""
        return (self.images - self.mean[None, :, None, None]) / self.std[None, :, None, None]

    def decoded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(images, labels) the networks train on: the stored images decoded (multi-formation)."""
        factor = self.config.factor
        return formation.decode(self.images, factor), formation.decoded_labels(self.labels, factor)


def _kind(value) -> str:
    return f"{value!r:.60} (a {type(value).__name__})"


def _objects(method, loss, network):
    """(method name, loss module or None) after checking method, loss and network."""
    if method is not None and not isinstance(method, str):  # method=<a loss module>
        if loss is not None:
            raise ValueError("method and loss: give a loss module as one of them, not both")
        method, loss = None, method
    if loss is not None:
        check_loss_module(loss)
        if method is not None:
            raise ValueError(f"method={method!r} and loss: a loss module is the objective; leave method out")
        method = PYTHON
    if network is not None:
        if isinstance(network, nn.Module):
            raise TypeError(
                f"network must be a factory: a callable taking a torch.Generator and returning an nn.Module, got the "
                f"module {type(network).__name__} itself (each step draws a fresh network: pass "
                "lambda generator: MyNet(...))"
            )
        if not callable(network):
            raise TypeError(
                f"network must be a callable taking a torch.Generator and returning an nn.Module, got {_kind(network)}"
            )
    return method or "csdm", loss


def _network_name(network) -> str:
    module = getattr(network, "__module__", None) or type(network).__module__
    name = getattr(network, "__qualname__", None) or type(network).__qualname__
    return f"python:{module}.{name}"


def _user_dataset(source: Source) -> ImageDataset:
    shape = source.image_shape
    return ImageDataset(
        PYTHON,
        source,
        source.labels,
        torch.empty(0, *shape),
        torch.empty(0, dtype=torch.int64),
        source.num_classes,
        source.mean,
        source.std,
        source.class_names,
    )


def _probe(config: DistillConfig, dataset: ImageDataset, network, loss) -> int | None:
    """Check the network (and the loss module) on a first batch of PROBE_PER_CLASS images per
    class, on the run's device, before anything is written; returns the network's feature size."""
    device = process_device(config.device)
    idx = torch.cat([m[:PROBE_PER_CLASS] for m in class_members(dataset)])
    x, y = take(dataset.train_x, idx, device), dataset.train_y[idx].to(device)
    seed = iteration_seed(config.seed, 0)
    net = network_maker(config, dataset, network)(seed)
    if network is not None and not isinstance(net, nn.Module):
        raise TypeError(f"network must return an nn.Module; network(generator) returned {_kind(net)}")
    net = net.to(device)
    with torch.no_grad():
        features = net(x) if network is not None else net.embed(x)
    if network is not None:
        if not isinstance(features, torch.Tensor):
            raise TypeError(f"network: its module must return a tensor of features, it returned {_kind(features)}")
        if features.dim() != 2 or features.shape[0] != x.shape[0]:
            raise ValueError(
                f"network: on a first batch of {x.shape[0]} images of shape {tuple(x.shape[1:])} it returned shape "
                f"{tuple(features.shape)}; it must return features (N, d), one row per image"
            )
        if not features.is_floating_point() or not bool(torch.isfinite(features).all()):
            raise ValueError(
                f"network: its output on a first batch of {x.shape[0]} images is not finite floating features "
                f"({features.dtype}, {int((~torch.isfinite(features.float())).sum())} non-finite values)"
            )
    if loss is not None:
        with torch.no_grad():
            value = ModuleObjective(loss, config.num_freqs).loss(
                features.float(), y, features.float(), y, torch.Generator().manual_seed(seed)
            )
        if not bool(torch.isfinite(value)):
            raise ValueError(f"loss: the loss module returned {float(value)} on a first batch")
    return int(features.shape[1])


def distill(
    data,
    *,
    method=None,
    ipc: int = 10,
    iterations: int = 200,
    network=None,
    out=None,
    seed: int = 0,
    loss=None,
    num_classes: int | None = None,
    image_size=None,
    resume: bool = False,
    overwrite: bool = False,
    **options,
) -> DistillResult | None:
    """Distil `data` into `ipc` synthetic images per class; returns a DistillResult (None on the
    processes of rank > 0 under torchrun: rank 0 writes and returns the run).

    method: a method name (random, dm, mmd, ncfm, sdd, csdm; default csdm) or a loss module
    (same as loss=). network: None (the ConvNet) or network(torch.Generator) -> nn.Module giving
    (N, d) features. out: the run folder to write (None: a temporary one, removed). num_classes:
    the classes are range(num_classes) (default: len(data.classes), else the largest label + 1).
    image_size: (H, W) or a side to resize every image to (needed when they differ; a bundled set
    too). options: the run's
    options by their DistillConfig names (width, batch_real, lr, num_freqs, kernel, factor,
    recipe, device, quiet, num_eval for a bundled dataset, ...). The run does not evaluate
    unless num_eval > 0 is given (bundled datasets; user data: evaluate(result, test_data)).
    Raises TypeError or ValueError, naming the argument (or the item), before writing anything.
    """
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise TypeError(f"distill() got unknown option(s) {', '.join(unknown)}; the options are {', '.join(OPTIONS)}")
    method, loss = _objects(method, loss, network)
    if out is None and (resume or overwrite):
        raise ValueError(
            f"{'resume' if resume else 'overwrite'}=True needs out=, the run folder to continue or replace"
        )
    if isinstance(data, str):
        if data not in DATASETS:
            raise ValueError(f"data: unknown dataset {data!r}; choose one of {', '.join(DATASETS)}")
        if num_classes is not None:
            raise ValueError(f"num_classes applies to data given from Python, not to the bundled dataset {data!r}")
        source = None
    else:
        source = Source(data, num_classes=num_classes, image_size=image_size)
        if options.get("num_eval", 0):
            raise ValueError(
                f"num_eval={options['num_eval']}: data given from Python come without a test set; evaluate with "
                "spectral_kernels.distill.evaluate(result, test_data)"
            )
    values = dict(
        dataset=data if source is None else PYTHON,
        method=method,
        ipc=ipc,
        iterations=iterations,
        seed=seed,
        out=str(out) if out is not None else "(temporary)",
        num_eval=0,
        data_fingerprint=None if source is None else source.fingerprint(),
        network="convnet" if network is None else _network_name(network),
        loss=None if loss is None else describe(loss),
        image_size=image_size,  # applied by Source to data given from Python, by load_dataset to a bundled set
    )
    config = DistillConfig.from_dict({**values, **options}).validate()
    if network is not None and config.net_pool > 0:
        from .loop import _POOL_NEEDS_CONVNET

        raise ValueError(_POOL_NEEDS_CONVNET)
    if source is None:
        dataset = run_dataset(config)
    else:
        dataset = _user_dataset(source)
    try:
        formation.check_factor(config.factor, dataset.image_shape[1:])
    except ValueError as error:  # a bad option (--factor, --image-size), as the driver reports it
        raise ConfigError(str(error)) from None
    feature_dim = _probe(config, dataset, network, loss) if network is not None or loss is not None else None
    if resume and source is not None and (Path(out) / "config.json").is_file():
        before = saved_config(Path(out)).data_fingerprint
        if before != config.data_fingerprint:
            raise ValueError(
                f"data: not the data the run in {out} distilled (fingerprint {before} there, {config.data_fingerprint} "
                "here); resume needs the same data"
            )
    supplied = Supplied(dataset=dataset, network=network, feature_dim=feature_dim, loss=loss)
    if out is not None:
        path = run_distillation(config, resume=resume, overwrite=overwrite, supplied=supplied)
        if int(os.environ.get("RANK", "0")) != 0:
            return None  # under torchrun only rank 0 writes the run folder, so only it has a result
        return _result(path, path)
    with tempfile.TemporaryDirectory(prefix="spectral-distill-") as folder:
        config = dataclasses.replace(config, out=str(Path(folder) / "run"))
        return _result(run_distillation(config, supplied=supplied), None)


def _result(path: Path, run: Path | None) -> DistillResult:
    saved = load_synthetic(path / "synthetic.pt")
    mean, std = saved["mean"].float(), saved["std"].float()
    images = saved["images"].float() * std[None, :, None, None] + mean[None, :, None, None]
    evaluation = None
    if (path / "eval.json").is_file():
        evaluation = json.loads((path / "eval.json").read_text())
    return DistillResult(images, saved["labels"], mean, std, saved["config"], run, evaluation)


def _test_dataset(test_data, images: torch.Tensor, labels: torch.Tensor, mean, std, image_size) -> ImageDataset:
    """The test set of user data, normalised by the training set's statistics, its images
    resized to the synthetic images' size (or image_size)."""
    shape = tuple(images.shape[1:])
    num_classes = int(labels.max()) + 1
    source = Source(
        test_data,
        num_classes=num_classes,
        image_size=image_size or shape[1:],
        mean=mean,
        std=std,
        what="test_data",
        every_class=False,
    )
    if tuple(source.image_shape) != shape:
        raise ValueError(f"test_data: images of shape {tuple(source.image_shape)}, the synthetic ones {shape}")
    return ImageDataset(
        PYTHON,
        torch.empty(0, *shape),
        torch.empty(0, dtype=torch.int64),
        source,
        source.labels,
        num_classes,
        mean,
        std,
        source.class_names,
    )


def evaluate(
    run,
    test_data=None,
    *,
    num_eval: int = 3,
    epochs: int | None = None,
    device: str | None = None,
    amp: str | None = None,
    compile: bool | None = None,
    image_size=None,
    quiet: bool = False,
) -> dict:
    """Train num_eval ConvNets on a distilled set and test them; returns the accuracy summary
    eval.json holds (accuracy_mean, accuracy_std (n - 1), accuracy_ci95, accuracies, num_eval,
    per_class_accuracy, ...).

    run: a run folder (then eval.json, metrics.jsonl and grid.png there are written, as
    `spectral-distill evaluate` does) or a DistillResult (nothing is written). test_data: the
    test set of data given from Python (a Dataset or a pair of tensors, as distill() takes; its
    images are resized to the synthetic images' size unless image_size= says otherwise); a
    bundled dataset is tested on its own test set. epochs, device, amp, compile: default the run's.
    """
    check_counts(num_eval, epochs)
    if isinstance(run, DistillResult):
        config, images, labels, mean, std = run.config, run.normalised, run.labels, run.mean, run.std
    elif isinstance(run, (str, Path)):
        config = saved_config(Path(run))
        if not (Path(run) / "synthetic.pt").is_file():
            raise ValueError(f"run: {run} holds no synthetic.pt (not a finished run)")
        saved = load_synthetic(Path(run) / "synthetic.pt")
        images, labels, mean, std = saved["images"].float(), saved["labels"], saved["mean"], saved["std"]
    else:
        raise TypeError(f"run must be a run folder (a path) or a DistillResult, got {_kind(run)}")
    if config.dataset == PYTHON:
        if test_data is None:
            raise ValueError("test_data: the run distilled data given from Python; pass their test set")
        dataset = _test_dataset(test_data, images, labels, mean.float(), std.float(), image_size)
    else:
        if test_data is not None:
            raise ValueError(f"test_data: the run distilled the bundled dataset {config.dataset}, tested on its own")
        dataset = None
    if not isinstance(run, DistillResult):
        return evaluate_run(
            run, num_eval=num_eval, epochs=epochs, dataset=dataset, device=device, amp=amp, compile=compile, quiet=quiet
        )
    if dataset is None:
        dataset = run_dataset(config)
    chosen = dict(device=device, amp=amp, compile=compile)
    config = dataclasses.replace(config, **{k: v for k, v in chosen.items() if v is not None}).validate()
    return evaluate_images(
        images,
        labels,
        config,
        dataset,
        num_eval=num_eval,
        epochs=epochs,
        hardware=Hardware.of(config),
        quiet=quiet,
        record=lambda row: None,
    )
