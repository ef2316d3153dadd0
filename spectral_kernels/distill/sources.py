"""Lazy image sources: a map-style dataset (or a pair of tensors) read a batch at a time, never
loaded whole. The one home of reading user data for distillation and evaluation.

    source = Source(data)            # checks what it can now; nothing of the images is kept
    batch = source[idx]              # (B, channels, H, W) float32, normalised, read now
    source.labels, source.members    # (N,) int64, and each class's indices (built once)

- Labels: `dataset.targets` when the dataset has it (torchvision's convention), else one pass
  over the items (each item read, checked and dropped). The per-class index is built from them
  once. The classes are range(num_classes): num_classes= when given, else len(dataset.classes)
  when the dataset has that list, else the largest label + 1; every class must hold an item.
- Items are checked when read: a pair (image tensor (channels, H, W) of real numbers, integer
  label: a Python int or a 0-d integer tensor), every image of one shape unless image_size=(H, W)
  resizes them (bilinear, antialiased), finite pixels. Each problem is a TypeError or ValueError
  naming the item's index. With `targets` the images are not read up front, so an image of
  another size is found when it is first gathered.
- Normalisation: per-channel mean and std estimated from MEAN_SAMPLE items drawn with a fixed
  seed (all of them when there are fewer); batches come back as (x - mean) / std. The sample's
  per-channel min and max are the pixel range clamp_pixels keeps synthetic images in (the
  bundled sets: [0, 1]).
- A fingerprint (size, shape, class counts, and a hash of FINGERPRINT_SAMPLE items drawn with a
  fixed seed) tells a resumed run whether it is given the same data.

A pair of tensors (images (N, channels, H, W), labels (N,)) and a TensorDataset of two tensors
are checked in full at once (they are in memory already) and gathered by indexing.
"""

from __future__ import annotations

import hashlib
import json
import numbers

import torch
import torch.nn.functional as F

from .imagesize import image_size_pair

MEAN_SAMPLE = 1024  # items the normalisation's mean and std are estimated from
FINGERPRINT_SAMPLE = 64  # items hashed into the fingerprint
SAMPLE_SEED = 0


def _kind(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    return f"{value!r:.60} (a {type(value).__name__})"


def _is_real_tensor(x) -> bool:
    return isinstance(x, torch.Tensor) and x.dtype != torch.bool and not x.is_complex()


def _label_value(label, where: str) -> int:
    """An integer label: a Python int (not a bool) or a 0-d integer tensor or numpy integer."""
    if isinstance(label, torch.Tensor):
        if label.dim() == 0 and not label.is_floating_point() and not label.is_complex() and label.dtype != torch.bool:
            return int(label)
    elif isinstance(label, numbers.Integral) and not isinstance(label, bool):
        return int(label)
    raise TypeError(f"{where}: the label is {_kind(label)}; it must be an int")


class Source:
    """Images read per batch from `data` (a map-style Dataset yielding (image tensor, int label),
    or a pair of tensors (images, labels)). `mean`/`std` given: use those (a test set normalised
    by its training set's statistics); else estimated. every_class: refuse a class without items
    (a training set; a test set may lack a class). Every check before anything else runs."""

    def __init__(
        self, data, *, num_classes=None, image_size=None, mean=None, std=None, what: str = "data", every_class=True
    ):
        self.what = what
        self.image_size = _image_size(image_size)
        self.images = None  # the tensor of a tensor pair
        self.dataset = None
        pair = _tensor_pair(data)
        if pair is not None:
            self._check_pair(*pair)
        else:
            self._index_dataset(data)
        n = self.labels.shape[0]
        if n == 0:
            raise ValueError(f"{what} holds no items")
        self.num_classes = self._classes(num_classes, data)
        bad = ((self.labels < 0) | (self.labels >= self.num_classes)).nonzero().flatten()
        if bad.numel():
            i = int(bad[0])
            raise ValueError(
                f"{what}: item {i} has label {int(self.labels[i])}, outside the {self.num_classes} classes "
                f"[0, {self.num_classes})"
            )
        self.counts = torch.bincount(self.labels, minlength=self.num_classes)
        empty = (self.counts == 0).nonzero().flatten()
        if every_class and empty.numel():
            raise ValueError(
                f"{what}: class {int(empty[0])} of {self.num_classes} has no item; every class needs images to match "
                "(num_classes= says how many classes there are)"
            )
        self.members = class_index(self.labels, self.num_classes)
        names = getattr(data, "classes", None)
        ok = isinstance(names, (list, tuple)) and len(names) == self.num_classes
        self.class_names = tuple(str(c) for c in names) if ok else tuple(str(c) for c in range(self.num_classes))
        if mean is None:
            self.mean, self.std, self.pixel_range = self._statistics()
        else:
            self.mean, self.std = mean.float().cpu(), std.float().cpu()
            self.pixel_range = None
            if self.mean.shape != (self.image_shape[0],):
                raise ValueError(
                    f"{what}: images of {self.image_shape[0]} channels, but the statistics they are normalised "
                    f"by have {self.mean.shape[0]}"
                )

    # ---------------------------------------------------------------- set-up

    def _check_pair(self, images, labels) -> None:
        what = self.what
        if not _is_real_tensor(images) or images.dim() != 4:
            raise TypeError(f"{what}: images must be a tensor (N, channels, H, W) of real numbers, got {_kind(images)}")
        if not isinstance(labels, torch.Tensor) or labels.dim() != 1 or labels.is_floating_point():
            raise TypeError(f"{what}: labels must be a 1-D tensor of integers, got {_kind(labels)}")
        if labels.dtype == torch.bool or labels.is_complex():
            raise TypeError(f"{what}: labels must be a 1-D tensor of integers, got {_kind(labels)}")
        if images.shape[0] != labels.shape[0]:
            raise ValueError(
                f"{what}: {images.shape[0]} images but {labels.shape[0]} labels (tensors of mismatched length)"
            )
        if images.is_floating_point():
            finite = torch.isfinite(images.flatten(1)).all(1)
            if not bool(finite.all()):
                raise ValueError(f"{what}: item {int((~finite).nonzero()[0])} holds a non-finite pixel")
        self.images = images.detach().cpu()
        self.labels = labels.detach().cpu().long()
        shape = tuple(images.shape[1:])
        self.image_shape = (shape[0], *self.image_size) if self.image_size else shape

    def _index_dataset(self, data) -> None:
        what = self.what
        if not (hasattr(data, "__getitem__") and hasattr(data, "__len__")) or isinstance(data, (str, bytes, dict)):
            raise TypeError(
                f"{what} must be a map-style torch.utils.data.Dataset (with __len__ and __getitem__) yielding "
                f"(image tensor, int label), or a pair (images, labels) of tensors; got {_kind(data)}"
            )
        self.dataset = data
        n = len(data)
        self.image_shape = None
        targets = getattr(data, "targets", None)
        if targets is not None:
            self.labels = _targets(targets, n, what)
            if n:
                self.image_shape = self._image(0, data[0]).shape  # the first item sets the shape
            return
        labels = []
        for i in range(n):  # one pass: each item read, checked and dropped
            item = data[i]
            image = self._image(i, item)
            if self.image_shape is None:
                self.image_shape = tuple(image.shape)
            labels.append(_label_value(item[1], f"{what}: item {i}"))
        self.labels = torch.tensor(labels, dtype=torch.int64)

    def _classes(self, num_classes, data) -> int:
        if num_classes is not None:
            if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
                raise TypeError(f"num_classes must be an int >= 1, got {_kind(num_classes)}")
            return num_classes
        if isinstance(getattr(data, "classes", None), (list, tuple)) and len(data.classes) > 0:
            return len(data.classes)
        return max(int(self.labels.max()), 0) + 1

    def _statistics(self):
        """Per-channel mean, std and (min, max) of MEAN_SAMPLE items drawn with a fixed seed: the
        normalisation, and the pixel range clamp_pixels keeps synthetic images in."""
        n = len(self)
        idx = torch.randperm(n, generator=torch.Generator().manual_seed(SAMPLE_SEED))[:MEAN_SAMPLE].sort().values
        x = self.raw(idx)
        std = torch.nan_to_num(x.std(dim=(0, 2, 3)), nan=1.0).clamp_min(1e-6)  # one pixel: no spread
        return x.mean(dim=(0, 2, 3)), std, (x.amin(dim=(0, 2, 3)), x.amax(dim=(0, 2, 3)))

    # ---------------------------------------------------------------- reading

    def _image(self, i: int, item) -> torch.Tensor:
        """Item i's image, checked (and resized to image_size), as float32 (channels, H, W)."""
        what = self.what
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise TypeError(f"{what}: item {i} is {_kind(item)}; items must be (image tensor, int label)")
        image, label = item
        if not _is_real_tensor(image):
            raise TypeError(f"{what}: item {i}'s image is {_kind(image)}; it must be a tensor of real numbers")
        _label_value(label, f"{what}: item {i}")
        if image.dim() != 3:
            raise ValueError(f"{what}: item {i}'s image has shape {tuple(image.shape)}; it must be (channels, H, W)")
        image = image.detach().cpu().float()
        if self.image_size is not None and tuple(image.shape[1:]) != self.image_size:
            image = F.interpolate(image[None], size=self.image_size, mode="bilinear", antialias=True)[0]
        shape = getattr(self, "image_shape", None)
        if shape is not None and tuple(image.shape) != tuple(shape):
            hint = (
                "pass image_size=(H, W) to resize them"
                if self.image_size is None
                else "its channel count differs (image_size resizes H and W only)"
            )
            raise ValueError(
                f"{what}: item {i}'s image has shape {tuple(image.shape)}, item 0's {tuple(shape)}: "
                f"images of mixed sizes; {hint}"
            )
        if not bool(torch.isfinite(image).all()):
            raise ValueError(f"{what}: item {i} holds a non-finite pixel")
        return image

    def raw(self, idx) -> torch.Tensor:
        """The images of the items `idx` (a 1-D index tensor, a list or a slice) as they are,
        float32 (B, channels, H, W), read and checked now."""
        idx = _indices(idx, len(self))
        if self.images is not None:
            x = self.images[idx].float()
            if self.image_size is not None and tuple(x.shape[2:]) != self.image_size:
                x = F.interpolate(x, size=self.image_size, mode="bilinear", antialias=True)
            return x
        if idx.numel() == 0:
            return torch.empty(0, *self.image_shape)
        return torch.stack([self._image(i, self.dataset[i]) for i in idx.tolist()])

    def __getitem__(self, idx) -> torch.Tensor:
        """The normalised images of the items `idx`: (B, channels, H, W) float32 on the CPU."""
        x = self.raw(idx)
        return (x - self.mean[None, :, None, None]) / self.std[None, :, None, None]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def shape(self) -> torch.Size:
        """(N, channels, H, W), as a tensor of the whole set would have."""
        return torch.Size((len(self), *self.image_shape))

    device = torch.device("cpu")

    def fingerprint(self) -> str:
        """A hash of what identifies the data: size, image shape, class counts and the raw values
        of FINGERPRINT_SAMPLE items drawn with a fixed seed (with their labels)."""
        n = len(self)
        idx = torch.randperm(n, generator=torch.Generator().manual_seed(SAMPLE_SEED + 1))[:FINGERPRINT_SAMPLE]
        idx = idx.sort().values
        digest = hashlib.sha256()
        digest.update(
            json.dumps(
                {"n": n, "shape": list(self.image_shape), "counts": self.counts.tolist(), "items": idx.tolist()}
            ).encode()
        )
        digest.update(self.raw(idx).contiguous().numpy().tobytes())
        digest.update(self.labels[idx].numpy().tobytes())
        return digest.hexdigest()[:32]


def _image_size(size):
    return image_size_pair(size, name="image_size")


def _tensor_pair(data):
    """(images, labels) if `data` is a pair of tensors or a TensorDataset of two, else None."""
    if isinstance(data, torch.utils.data.TensorDataset) and len(data.tensors) == 2:
        return data.tensors
    if isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        return data[0], data[1]
    return None


def _targets(targets, n: int, what: str) -> torch.Tensor:
    """dataset.targets as an int64 tensor of n labels."""
    if isinstance(targets, torch.Tensor):
        if targets.dim() != 1 or targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
            raise TypeError(f"{what}.targets must be integers, one per item, got {_kind(targets)}")
        labels = targets.detach().cpu().long()
    else:
        labels = torch.tensor([_label_value(t, f"{what}: item {i}") for i, t in enumerate(targets)], dtype=torch.int64)
    if labels.shape[0] != n:
        raise ValueError(f"{what}: {n} items but {labels.shape[0]} targets (of mismatched length)")
    return labels


def _indices(idx, n: int) -> torch.Tensor:
    if isinstance(idx, slice):
        return torch.arange(n)[idx]
    idx = torch.as_tensor(idx, dtype=torch.int64).cpu().reshape(-1)
    return idx


def class_index(labels: torch.Tensor, num_classes: int) -> list[torch.Tensor]:
    """Each class's item indices (CPU), in item order: built once per run, used every step."""
    labels = labels.cpu()
    return [(labels == c).nonzero().flatten() for c in range(num_classes)]


def on_device(x, device):
    """A tensor of images moved to `device` once (the bundled sets, in memory); a Source stays
    where it is and is read per batch."""
    return x.to(device) if isinstance(x, torch.Tensor) else x


def take(x, idx: torch.Tensor, device) -> torch.Tensor:
    """The images `idx` (CPU indices) of x (a tensor, on any device, or a Source) on `device`."""
    if isinstance(x, torch.Tensor):
        return x[idx.to(x.device)].to(device)
    return x[idx.cpu()].to(device)
