"""Reading an image folder (a subfolder of images per class), so that no folder can hang the
run, exhaust its memory or silently count an image twice.

The walk finds what torchvision's ImageFolder finds, in the same order (class folders sorted by
name, then each folder's files sorted, folders in the sorted order of their paths; files with
the extensions of IMG_EXTENSIONS, in any case), so an existing split does not move, except:
- hidden entries (names starting with "."), files and folders at any depth, are skipped: a
  ".thumbnails" folder is no class, and the "._x.png" files macOS leaves are no images;
- every folder and image is identified by (st_dev, st_ino) after following links, and one
  reached a second time (a class folder linking to itself or to another class, a link to the
  root, the same image linked or hard-linked twice, also across train/ and test/) is refused
  with both paths named: its images would count twice, or under two classes;
- an image name that is not a regular file (a FIFO, a socket, a device) is refused without
  being opened, and so is a broken link;
- an image with more than MAX_IMAGE_PIXELS pixels is refused from its header, before decoding.

The folders become map-style datasets (ImageFolderDataset) that decode one image per item: only
the headers are read up front (PIL's Image.open does not decode), for each image's size and
colour mode, which fix the dataset's image size and channel count (open_image_folders).
"""

from __future__ import annotations

import os
import re
import stat
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.utils.data
from PIL import Image
from torchvision.transforms import v2

from .datafiles import open_regular_file
from .errors import DataError
from .imagesize import IMAGE_SIDE_LIMITS

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")  # torchvision's
# 8192 x 8192: about 200 MB as RGB while it is decoded, far more than any run's image size (at most
# IMAGE_SIDE_LIMITS[1] a side) needs, and below PIL's own decompression-bomb limit (89 M pixels).
MAX_IMAGE_PIXELS = 8192 * 8192


def _hidden(name: str) -> bool:
    return name.startswith(".")


def _is_dir(entry: os.DirEntry) -> bool:
    """Whether entry is a folder after links; an entry that cannot be followed (a link loop) is
    not, as for os.walk: named as a file, it is refused by name if it has an image's extension."""
    try:
        return entry.is_dir()
    except OSError:
        return False


class _Walk:
    """Finds the images of class folders, remembering every folder and file it has reached."""

    def __init__(self):
        self.seen: dict[tuple[int, int], str] = {}

    def reach(self, path: str, info: os.stat_result) -> None:
        key = (info.st_dev, info.st_ino)
        if key in self.seen:
            raise DataError(
                f"imagefolder: {path} is {self.seen[key]} again (through a symbolic or hard link); "
                "each folder and image must be reachable once, or its images would count twice"
            )
        self.seen[key] = path

    def folder(self, path: str) -> None:
        try:
            info = os.stat(path)
        except OSError as error:
            raise DataError(f"imagefolder: {path} cannot be read ({error.strerror})") from None
        self.reach(path, info)

    def classes(self, root: str) -> list[str]:
        self.folder(root)
        names = []
        for entry in self.entries(root):
            if _is_dir(entry):  # after links, as ImageFolder
                names.append(entry.name)
        names.sort()
        if not names:
            raise DataError(f"imagefolder: {root} holds no class folders (one folder of images per class)")
        for name in names:  # all first, so that a link from one class to another names the class
            self.folder(os.path.join(root, name))
        return names

    @staticmethod
    def entries(folder: str) -> list[os.DirEntry]:
        try:
            with os.scandir(folder) as it:
                return [entry for entry in it if not _hidden(entry.name)]
        except OSError as error:
            raise DataError(f"imagefolder: cannot list {folder} ({error.strerror})") from None

    def images(self, class_folder: str) -> list[str]:
        """The image paths under class_folder, in torchvision's order."""
        found: list[tuple[str, list[str]]] = []
        pending = [class_folder]
        while pending:
            folder = pending.pop()
            files = []
            for entry in self.entries(folder):
                path = os.path.join(folder, entry.name)
                if _is_dir(entry):
                    self.folder(path)
                    pending.append(path)
                elif entry.name.lower().endswith(IMG_EXTENSIONS):
                    files.append(path)
            found.append((folder, sorted(files)))
        found.sort()
        paths = [path for _, files in found for path in files]
        for path in paths:
            try:
                info = os.stat(path)
            except OSError as error:
                broken = isinstance(error, FileNotFoundError) and os.path.islink(path)
                kind = "a broken symbolic link" if broken else error.strerror
                raise DataError(f"imagefolder: {path} cannot be read ({kind})") from None
            if not stat.S_ISREG(info.st_mode):
                open_regular_file(Path(path), "imagefolder").close()  # raises, naming its kind
            self.reach(path, info)
        if not paths:
            raise DataError(
                f"imagefolder: the class folder {class_folder} holds no images ({', '.join(IMG_EXTENSIONS)})"
            )
        return paths


# PIL modes without colour: 1-bit, 8-bit (with or without alpha) and the 16-bit "I;16..." family.
# Every other mode (RGB, RGBA, CMYK, YCbCr, palette "P", ...) counts as colour: a palette image
# may hold colours (its palette is not inspected). 32-bit integer and float pixels (modes I and F)
# are refused: their range is not in the file, and converting them to 8 bits clips at 255.
_GREY_MODES = ("1", "L", "LA", "La")
_UNSCALED_MODES = {"I": "32-bit integer", "F": "32-bit float"}


def _has_colour(mode: str) -> bool:
    return not (mode in _GREY_MODES or mode.startswith("I;16"))


def _pixels(image: Image.Image, channels: int) -> torch.Tensor:
    """The decoded image as a (channels, h, w) tensor: uint8, or float32 in [0, 1] for 16-bit grey
    (convert("L") would clip every value above 255 to white), a grey image's channel repeated for
    RGB; alpha dropped."""
    if image.mode.startswith("I;16"):
        grey = torch.from_numpy(np.asarray(image, dtype=np.float32) / 65535.0)[None]
        return grey.expand(channels, -1, -1).contiguous()
    return v2.functional.to_image(image.convert("RGB" if channels == 3 else "L"))


def _with_image(path: str, use):
    """use(image) of the image at path as PIL opens it (its header read, nothing decoded yet),
    refused from its header if it declares more than MAX_IMAGE_PIXELS; every failure of reading
    or decoding it is one DataError naming the file."""
    too_large = (
        f"more than the {MAX_IMAGE_PIXELS} pixels one image may have (a decompression bomb, or far more "
        f"than the at most {IMAGE_SIDE_LIMITS[1]} pixels a side a run works at)"
    )
    with open_regular_file(Path(path), "imagefolder") as f:
        try:
            with warnings.catch_warnings():
                # PIL warns above its limit and raises above twice that, from the header; both are ours.
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                image = Image.open(f)
                width, height = image.size
                if width * height > MAX_IMAGE_PIXELS:
                    raise DataError(
                        f"imagefolder: {path} is {height} x {width} (height x width) = {width * height} pixels, "
                        f"{too_large}"
                    )
                return use(image)
        except DataError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
            pixels = re.search(r"\((\d+) pixels\)", str(error))
            size = f"{pixels[1]} pixels" if pixels else "an image"
            raise DataError(f"imagefolder: {path} is {size}, {too_large}") from None
        except MemoryError:
            raise DataError(f"imagefolder: not enough memory to decode {path}") from None
        except Exception as error:  # a decoder fed a damaged file can fail in any way (OSError, struct.error, ...)
            text = str(error).strip().splitlines()
            reason = f"{type(error).__name__}: {text[0][:200]}" if text else type(error).__name__
            raise DataError(f"imagefolder: cannot read {path} ({reason})") from None


class ImageFolderDataset(torch.utils.data.Dataset):
    """The images of one folder of class folders as a map-style dataset: item i is (image, label),
    the image a float32 tensor (channels, height, width) in [0, 1], decoded from its file only
    when the item is asked for. `targets` holds every label, so a per-class index costs no decode.

    Made by open_image_folders, which fixes the size and channel count for all of a dataset's
    folders. With resize (an --image-size was given) every image is resized to image_shape;
    without, every image already has that size (its header said so), and a file that has since
    changed size is refused rather than stacked with the others at another size."""

    def __init__(self, samples: list[tuple[str, int]], classes, size: tuple[int, int], channels: int, resize: bool):
        self.samples = samples
        self.targets = [label for _, label in samples]
        self.classes = tuple(classes)
        self.image_shape = (channels, *size)
        self.resize = resize

    def __len__(self) -> int:
        return len(self.samples)

    def select(self, indices) -> ImageFolderDataset:
        """The dataset of the items at indices, in that order (a split), at the same size and channels."""
        chosen = [self.samples[int(i)] for i in indices]
        return ImageFolderDataset(chosen, self.classes, self.image_shape[1:], self.image_shape[0], self.resize)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        channels, height, width = self.image_shape
        image = _with_image(path, lambda im: _pixels(im, channels))
        if tuple(image.shape[1:]) != (height, width):
            if not self.resize:
                raise DataError(
                    f"imagefolder: {path} is now {image.shape[1]} x {image.shape[2]} (height x width), not the "
                    f"{height} x {width} its header said when the folder was read; was it replaced?"
                )
            image = v2.functional.resize(image, [height, width], antialias=True)  # on uint8 (8-bit files), as ever
        return v2.functional.to_dtype(image, torch.float32, scale=True), label  # (float32 stays as it is)


def open_image_folders(folders, image_size: tuple[int, int] | None, walk: _Walk | None = None):
    """One ImageFolderDataset per folder of class folders (train/ and test/, or a single one), all
    of one size and channel count, decoding nothing: every image's header is read once, for its
    pixel count, size and mode.

    Size: image_size (height, width) when given, every image then resized to it; else the size
    all images share, and DataError naming two images of different sizes if they do not.
    Channels: 3 when any image has colour (grey images then repeat their channel), else 1."""
    walk = walk or _Walk()
    found = []
    for folder in folders:
        root = str(folder)
        classes = walk.classes(root)
        samples = [
            (path, label) for label, name in enumerate(classes) for path in walk.images(os.path.join(root, name))
        ]
        found.append((samples, classes))
    first, colour = None, False  # first: (path, (height, width)) of the first image
    for samples, _ in found:
        for path, _ in samples:
            (width, height), mode = _with_image(path, lambda image: (image.size, image.mode))
            if mode in _UNSCALED_MODES:
                raise DataError(
                    f"imagefolder: {path} holds {_UNSCALED_MODES[mode]} pixels (PIL mode {mode}), whose range the "
                    "file does not state; save it with 8 or 16 bits a channel"
                )
            colour = colour or _has_colour(mode)
            if first is None:
                first = (path, (height, width))
            elif image_size is None and (height, width) != first[1]:
                raise DataError(
                    f"imagefolder: the images differ in size (height x width): {first[0]} is "
                    f"{first[1][0]} x {first[1][1]}, {path} is {height} x {width}; "
                    "give --image-size H [W] to resize every image to one size"
                )
    if image_size is None:
        low, high = IMAGE_SIDE_LIMITS
        height, width = first[1]
        if not (low <= height <= high and low <= width <= high):
            raise DataError(
                f"imagefolder: the images are {height} x {width} (height x width, e.g. {first[0]}); a run works at "
                f"{low} to {high} pixels a side: give --image-size H [W] to resize them"
            )
    size = tuple(image_size) if image_size is not None else first[1]
    channels = 3 if colour else 1
    return [ImageFolderDataset(samples, classes, size, channels, image_size is not None) for samples, classes in found]


def new_walk() -> _Walk:
    """One walk for several folders (train/ and test/): an image in both is refused."""
    return _Walk()
