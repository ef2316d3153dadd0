"""Image datasets for distillation, loaded into memory as normalised float tensors.

Names: `digits` (scikit-learn's bundled 8x8 digits), `animals` (28x28 silhouettes of the PyPI
package animal-mnist 0.4, shipped in animal_mnist/), `cifar10`, `cifar100` (torchvision's
python-format archives under --data-root; never downloaded), `imagefolder` (a folder per
class under --data-root), and a `-lt` variant of each: the training set is made long-tailed with
n_c = floor(n_max * imbalance^(-c / (C - 1))) images of class c (fixed seed); test sets stay
balanced. Pickled files are read with a restricted unpickler (safe_pickle.py) that only
rebuilds numeric numpy arrays no larger than the file, so a tampered data file can neither run
code nor claim memory it does not hold; CIFAR batches are then checked for exactly what
torchvision's format holds. Image folders are walked by imagefolder.py into map-style datasets
that decode one image per item (materialised here until the driver reads datasets lazily).
Only regular files are ever opened. Every problem is one DataError naming the file and the value.

Image size: `image_size` (height, width) resizes every image to it; None keeps the data's own
size (an image folder's images must then share one). Channels are the data's own (an image
folder: 1 when every image is grey, else 3).
"""

from __future__ import annotations

import gzip
import math
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .datafiles import read_regular_file
from .errors import DataError
from .imagesize import IMAGE_SIDE_LIMITS, image_size_pair  # noqa: F401  (re-exported)
from .safe_pickle import load_arrays

# animal-mnist 0.4's data files, shipped in the package (animal_mnist/SOURCE.md says why).
ANIMALS_FOLDER = Path(__file__).resolve().parent / "animal_mnist"
BASE_DATASETS = ("digits", "animals", "cifar10", "cifar100", "imagefolder")
DATASETS = BASE_DATASETS + tuple(f"{name}-lt" for name in BASE_DATASETS)
DEFAULT_LT_IMBALANCE = 10.0


@dataclass
class ImageDataset:
    name: str
    # (N, channels, H, W) float32, normalised per channel: a tensor (bundled sets), or a lazy
    # sources.Source (image folders, data given from Python) gathered with sources.take
    train_x: Any
    train_y: torch.Tensor  # (N,) int64
    test_x: Any
    test_y: torch.Tensor
    num_classes: int
    mean: torch.Tensor  # (channels,) to undo the normalisation for display
    std: torch.Tensor
    class_names: tuple[str, ...] = ()  # one per class, for pictures; the class numbers where unknown

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_x.shape[1:])

    @property
    def class_counts(self) -> torch.Tensor:
        return torch.bincount(self.train_y, minlength=self.num_classes)


def _unpickle(raw: bytes):
    return load_arrays(raw)


# What reading a damaged or foreign data file can raise: each becomes a one-line DataError.
_READ_ERRORS = (
    pickle.UnpicklingError,
    EOFError,
    OSError,
    ValueError,
    KeyError,
    TypeError,
    IndexError,
    AttributeError,
    RuntimeError,
)


def _reason(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:240]}" if text else type(error).__name__


def _held_out(y: np.ndarray, test_fraction: float, seed: int) -> np.ndarray:
    """A mask of the images held out for testing: round(test_fraction * n) of each class's n
    images, but at least one and at most n - 1 when n >= 2, so that every class of two or more
    images is in both sets (a class of one image trains)."""
    rng = np.random.default_rng(seed)
    test = np.zeros(len(y), dtype=bool)
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        held_out = min(max(int(round(test_fraction * len(idx))), 1), len(idx) - 1)
        test[idx[:held_out]] = True
    return test


def _stratified_split(x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int):
    test = _held_out(y, test_fraction, seed)
    return x[~test], y[~test], x[test], y[test]


# Class names by label, for pictures. animals: animal-mnist's labels 0-9 are its ten animals in
# alphabetical order (checked by eye on a grid of each label's training images); cifar10: the
# dataset's own label order; cifar100: the class numbers (its names live in a file we do not read).
CLASS_NAMES = {
    "digits": tuple(str(c) for c in range(10)),
    "animals": ("bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra"),
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
}


def _digits():
    try:
        from sklearn.datasets import load_digits  # the data ship inside scikit-learn
    except ImportError:
        raise DataError("the digits dataset needs scikit-learn: pip install scikit-learn") from None

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]  # (1797, 1, 8, 8)
    return _stratified_split(x, digits.target.astype(np.int64), 0.3, seed=0)


def _animals():
    folder = ANIMALS_FOLDER
    try:
        with gzip.open(folder / "animal_data_version_3.gz", "rb") as f:
            images = _unpickle(f.read())
        with gzip.open(folder / "animal_label_version_3.gz", "rb") as f:
            labels = _unpickle(f.read())
        x = (np.asarray(images, dtype=np.float32) / 255.0)[:, None]  # (10000, 1, 28, 28)
        y = np.asarray(labels, dtype=np.int64)
        if x.ndim != 4 or x.shape[0] != y.shape[0]:
            raise ValueError(f"images of shape {x.shape[1:]} and {y.shape[0]} labels")
    except _READ_ERRORS as error:
        raise DataError(
            f"animals: the data files under {folder} are damaged ({_reason(error)}); "
            "reinstall spectral_kernels (pip install --force-reinstall --no-deps spectral_kernels)"
        ) from None
    return _stratified_split(x, y, 0.2, seed=0)


CIFAR_PIXELS = 3 * 32 * 32  # one row of a batch's data: the red, green and blue planes of 32 x 32


def _cifar(root: Path | None, which: str):
    folder_name, train_files, test_files, label_key, num_classes = {
        "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], b"labels", 10),
        "cifar100": ("cifar-100-python", ["train"], ["test"], b"fine_labels", 100),
    }[which]
    if root is None:
        raise DataError(
            f"{which} needs --data-root pointing at a folder that holds {folder_name}/ (torchvision's python format)"
        )
    folder = Path(root) / folder_name
    # lexists: a FIFO or a dangling link in a batch's place is not missing data to download, it
    # is refused by name when read.
    missing = [f for f in train_files + test_files if not os.path.lexists(folder / f)]
    if missing:
        raise DataError(
            f"{which}: {folder} lacks {', '.join(missing)}; get the dataset once with "
            f"torchvision.datasets.{which.upper()}(root='{root}', download=True) "
            "on a machine with network access and copy the folder here (this tool never downloads)"
        )

    def read(files):
        xs, ys = [], []
        for name in files:
            path = folder / name
            raw = read_regular_file(path, which)
            try:
                batch = _unpickle(raw)
            except MemoryError:
                raise DataError(f"{which}: not enough memory to read {path} ({len(raw)} bytes)") from None
            except _READ_ERRORS as error:
                raise DataError(f"{which}: {path} is damaged or not a CIFAR batch ({_reason(error)})") from None
            del raw
            x, y = _cifar_batch(batch, path, which, label_key, num_classes)
            xs.append(x)
            ys.append(y)
        n = sum(len(y) for y in ys)
        try:
            return np.concatenate(xs).astype(np.float32) / 255.0, np.concatenate(ys)
        except MemoryError:  # the files are what they claim, there are just too many images here
            raise DataError(
                f"{which}: not enough memory to load the {n} images of {', '.join(files)} under {folder} "
                f"({n * CIFAR_PIXELS * 4} bytes as float32)"
            ) from None

    return (*read(train_files), *read(test_files))


def _cifar_batch(batch, path: Path, which: str, label_key: bytes, num_classes: int):
    """(images as uint8 (n, 3, 32, 32), labels as int64 (n,)) of one unpickled batch, after
    checking that it holds exactly what torchvision's python format holds."""

    def refuse(what):
        return DataError(f"{which}: {path} is not a CIFAR batch ({what})")

    def kind(value):
        if isinstance(value, np.ndarray):
            return f"a {value.dtype} array of shape {value.shape}"
        return f"a {type(value).__name__}"

    if not isinstance(batch, dict):
        raise refuse(f"{kind(batch)} where a dict of data and labels belongs")
    for key in (b"data", label_key):
        if key not in batch:
            raise refuse(f"no {key!r} among its keys {sorted(batch, key=repr)[:6]}")
    data, labels = batch[b"data"], batch[label_key]
    rows = isinstance(data, np.ndarray) and data.ndim == 2 and data.shape[1] == CIFAR_PIXELS
    if not (rows and data.dtype == np.uint8):
        raise refuse(f"its images are {kind(data)}; they must be a uint8 array of rows of {CIFAR_PIXELS} values")
    if isinstance(labels, np.ndarray):
        if labels.ndim != 1 or labels.dtype.kind not in "iu":
            raise refuse(f"its labels are {kind(labels)}; they must be integers")
        bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
        if bad.size:
            raise refuse(f"label {labels[bad[0]]} at position {bad[0]} is outside [0, {num_classes})")
    elif isinstance(labels, (list, tuple)):
        for i, label in enumerate(labels):
            # bool is an int to Python but no label; a float, even 1.0, means a damaged or foreign file
            if not (type(label) is int or isinstance(label, np.integer)):
                raise refuse(f"label {label!r:.40} at position {i} is not an integer")
            if not 0 <= label < num_classes:
                raise refuse(f"label {label} at position {i} is outside [0, {num_classes})")
    else:
        raise refuse(f"its labels are {kind(labels)}; they must be a list of integers")
    if len(labels) != data.shape[0]:
        raise refuse(f"{data.shape[0]} images but {len(labels)} labels")
    return np.asarray(data).reshape(-1, 3, 32, 32), np.asarray(labels, dtype=np.int64).reshape(-1)


def image_folder_datasets(root: Path | None, image_size: tuple[int, int] | None):
    """(train, test, class names) of the image folder at root: two ImageFolderDatasets (map-style,
    one image decoded per item) of one size and channel count, from root/train and root/test when
    both exist, else a stratified split of root (_held_out: 20 % of each class)."""
    if root is None:
        raise DataError(
            "imagefolder needs --data-root: a folder with one subfolder of images per class (or train/ and test/ of "
            "those)"
        )
    from .imagefolder import new_walk, open_image_folders

    root = Path(root)
    if not root.is_dir():
        raise DataError(f"imagefolder: --data-root {root} is not a folder")
    walk = new_walk()
    if (root / "train").is_dir() and (root / "test").is_dir():
        walk.folder(str(root))
        train, test = open_image_folders([root / "train", root / "test"], image_size, walk)
        if train.classes != test.classes:
            raise DataError(
                f"imagefolder: {root}/train and {root}/test must hold the same class folders, "
                f"got {list(train.classes[:5])}... and {list(test.classes[:5])}..."
            )
        return train, test, train.classes
    (whole,) = open_image_folders([root], image_size, walk)
    # The split on indices, before any decode: the same images held out as ever.
    test_mask = _held_out(np.asarray(whole.targets, dtype=np.int64), 0.2, seed=0)
    if not test_mask.any():
        raise DataError(
            f"imagefolder: no class under {root} has two images, so none can be held out for testing; "
            "add images, or give train/ and test/ folders"
        )
    return whole.select(np.flatnonzero(~test_mask)), whole.select(np.flatnonzero(test_mask)), whole.classes


def _imagefolder(name: str, root: Path | None, imbalance: float, image_size: tuple[int, int] | None, seed: int):
    """An image folder read lazily: its train and test sets are Sources (distill/sources.py) over
    the folder's map-style datasets, so a step decodes only the images it draws, and nothing holds
    the whole set. Normalised by a fixed sample of the training images (sources.MEAN_SAMPLE)."""
    from .sources import Source

    train, test, classes = image_folder_datasets(root, image_size)
    train_y, test_y = np.asarray(train.targets, dtype=np.int64), np.asarray(test.targets, dtype=np.int64)
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    keep = _long_tail_keep(name, train_y, num_classes, imbalance, seed)
    if keep is not None:
        train = train.select(keep)
    train_x = Source(train, num_classes=num_classes, what=f"{name} training set")
    channels = train_x.image_shape[0]
    train_x.pixel_range = (torch.zeros(channels), torch.ones(channels))  # decoded pixels lie in [0, 1]
    test_x = Source(
        test, num_classes=num_classes, mean=train_x.mean, std=train_x.std, what=f"{name} test set", every_class=False
    )
    names = tuple(str(c) for c in classes[:num_classes]) + tuple(str(c) for c in range(len(classes), num_classes))
    return ImageDataset(
        name, train_x, train_x.labels, test_x, test_x.labels, num_classes, train_x.mean, train_x.std, names
    )


def _long_tail_keep(name: str, train_y: np.ndarray, num_classes: int, imbalance: float, seed: int):
    """The sorted indices of the training images a long-tailed variant keeps (None: all)."""
    if imbalance <= 1.0:
        return None
    counts = np.bincount(train_y, minlength=num_classes)
    keep_counts = long_tail_counts(counts, imbalance)
    if keep_counts.min() < 1:
        c = int(np.flatnonzero(keep_counts < 1)[0])
        raise DataError(
            f"--imbalance {imbalance:g} leaves class {c} of {name} with no training image "
            f"(the largest class has {int(counts.max())}); use --imbalance <= {int(counts.max())}"
        )
    rng = np.random.default_rng(seed)
    keep = np.concatenate([rng.permutation(np.flatnonzero(train_y == c))[:k] for c, k in enumerate(keep_counts)])
    keep.sort()
    return keep


def _resized(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(N, C, h, w) images resized to size (bilinear, antialiased when shrinking, as image folders)."""
    resized = torch.nn.functional.interpolate(
        torch.from_numpy(np.ascontiguousarray(x)), size=size, mode="bilinear", antialias=True, align_corners=False
    )
    return resized.numpy()


def long_tail_counts(counts: np.ndarray, imbalance: float) -> np.ndarray:
    """n_c = floor(n_max * imbalance^(-c / (C - 1))), capped by the images class c has."""
    num_classes = len(counts)
    n_max = counts.max()
    target = [
        math.floor(n_max * imbalance ** (-c / (num_classes - 1))) if num_classes > 1 else n_max
        for c in range(num_classes)
    ]
    return np.minimum(np.asarray(target), counts)


def run_dataset(config) -> ImageDataset:
    """The dataset a run's options (a DistillConfig) name, loaded as load_dataset loads it: the one
    place that turns the options into the arguments, for the driver, evaluation and the API."""
    return load_dataset(
        config.dataset,
        data_root=config.data_root,
        imbalance=config.imbalance,
        image_size=config.image_size,
        seed=config.seed,
    )


def load_dataset(
    name: str,
    *,
    data_root: str | Path | None = None,
    imbalance: float | None = None,
    image_size: int | tuple[int, int] | list[int] | None = None,
    seed: int = 0,
) -> ImageDataset:
    """Load `name` (one of DATASETS). `imbalance` >= 1 makes the training set long-tailed
    (default 10 for the -lt names, 1 otherwise). `image_size` (an int: a square, or (height,
    width)) resizes every image; None keeps the data's own size. Raises DataError with what to do
    (TypeError or ValueError for a malformed image_size)."""
    image_size = image_size_pair(image_size)
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    base, long_tailed = name.removesuffix("-lt"), name.endswith("-lt")
    if imbalance is None:
        imbalance = DEFAULT_LT_IMBALANCE if long_tailed else 1.0
    if not (imbalance >= 1.0 and math.isfinite(imbalance)):
        raise DataError(f"--imbalance must be a finite number >= 1 (n_max / n_min), got {imbalance}")
    root = Path(data_root) if data_root is not None else None
    if root is not None and not root.exists():
        raise DataError(f"--data-root {root} does not exist")
    try:
        return _load(name, base, root, imbalance, image_size, seed)
    except MemoryError:  # an honest dataset too large for this machine: not a matter of --ipc
        where = f" from {root}" if root is not None else ""
        raise DataError(f"{name}: not enough memory to load the dataset{where}") from None


def _load(
    name: str, base: str, root: Path | None, imbalance: float, image_size: tuple[int, int] | None, seed: int
) -> ImageDataset:
    class_names = CLASS_NAMES.get(base, ())
    if base == "digits":
        train_x, train_y, test_x, test_y = _digits()
    elif base == "animals":
        train_x, train_y, test_x, test_y = _animals()
    elif base in ("cifar10", "cifar100"):
        train_x, train_y, test_x, test_y = _cifar(root, base)
    else:
        return _imagefolder(name, root, imbalance, image_size, seed)

    num_classes = int(max(train_y.max(), test_y.max())) + 1
    keep = _long_tail_keep(name, train_y, num_classes, imbalance, seed)
    if keep is not None:
        train_x, train_y = train_x[keep], train_y[keep]
    if image_size is not None and tuple(train_x.shape[2:]) != image_size:
        train_x, test_x = _resized(train_x, image_size), _resized(test_x, image_size)

    train_x, test_x = torch.from_numpy(np.ascontiguousarray(train_x)), torch.from_numpy(np.ascontiguousarray(test_x))
    mean = train_x.mean(dim=(0, 2, 3))
    std = train_x.std(dim=(0, 2, 3)).clamp_min(1e-6)
    norm = lambda x: (x - mean[None, :, None, None]) / std[None, :, None, None]
    names = tuple(class_names[:num_classes]) + tuple(str(c) for c in range(len(class_names), num_classes))
    return ImageDataset(
        name,
        norm(train_x),
        torch.from_numpy(train_y),
        norm(test_x),
        torch.from_numpy(test_y),
        num_classes,
        mean,
        std,
        names,
    )
