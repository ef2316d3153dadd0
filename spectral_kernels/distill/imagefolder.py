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
"""

from __future__ import annotations

import os
import re
import stat
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import v2

from .datafiles import open_regular_file
from .errors import DataError

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")  # torchvision's
# 8192 x 8192: about 200 MB as RGB while it is decoded, far more than any image resized to a
# few dozen pixels needs, and below PIL's own decompression-bomb limit (89 M pixels).
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


def _decode(path: str, image_size: int) -> Image.Image:
    """The image at path as an RGB PIL image, refused from its header if it is too large."""
    too_large = (
        f"more than the {MAX_IMAGE_PIXELS} pixels one image may have (a decompression bomb, or far more "
        f"than the {image_size} x {image_size} it would be resized to)"
    )
    with open_regular_file(Path(path), "imagefolder") as f:
        try:
            with warnings.catch_warnings():
                # PIL warns above its limit and raises above twice that, from the header; both are ours.
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                image = Image.open(f)
                width, height = image.size
                if width * height > MAX_IMAGE_PIXELS:
                    raise DataError(f"imagefolder: {path} is {width} x {height} = {width * height} pixels, {too_large}")
                return image.convert("RGB")
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


def read_image_folder(folder: Path, image_size: int, walk: _Walk | None = None):
    """(images (N, 3, s, s) float32, labels (N,) int64, class names) of one folder of class folders."""
    walk = walk or _Walk()
    root = str(folder)
    classes = walk.classes(root)
    samples = [(path, label) for label, name in enumerate(classes) for path in walk.images(os.path.join(root, name))]
    transform = v2.Compose(
        [v2.ToImage(), v2.Resize((image_size, image_size), antialias=True), v2.ToDtype(torch.float32, scale=True)]
    )
    images = [transform(_decode(path, image_size)) for path, _ in samples]
    labels = np.asarray([label for _, label in samples], dtype=np.int64)
    return torch.stack(images).numpy(), labels, classes


def new_walk() -> _Walk:
    """One walk for several folders (train/ and test/): an image in both is refused."""
    return _Walk()
