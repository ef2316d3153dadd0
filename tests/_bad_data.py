"""Builders of damaged, hostile and awkward datasets on disk, shared by tests/test_datasets.py
(the readers, called directly) and the CLI cases of tests/test_bad_input.py.

CIFAR batches are written as torchvision's python format holds them (a pickled dict, bytes
keys, protocol 2); the hostile ones are built with __reduce__ so that the pickle stream holds
exactly the opcodes an attacker would write by hand, and nothing else.
"""

from __future__ import annotations

import os
import pickle
import socket
import struct
import zlib
from pathlib import Path

import numpy as np

try:  # numpy >= 2 moved the pickle helpers; the stream names whichever module this numpy has
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct

CIFAR = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"], b"labels", 10),
    "cifar100": ("cifar-100-python", ["train", "test"], b"fine_labels", 100),
}


# ----------------------------------------------------------------------------- hostile pickles


class DeclaredArray:
    """Pickles as a direct call numpy.ndarray(shape, dtype): an uninitialised array of any size
    from a few bytes of file."""

    def __init__(self, shape, dtype="u1"):
        self.shape, self.dtype = shape, np.dtype(dtype)

    def __reduce__(self):
        return (np.ndarray, (self.shape, self.dtype))


class ReconstructedArray:
    """Pickles as numpy's own reduction (_reconstruct, then __setstate__) with any shape, dtype
    and raw data: the shape need not match the data, and `rawdata` may be shared between many
    arrays (the pickler then memoizes it, so each further array costs a few bytes of file)."""

    def __init__(self, shape, dtype, rawdata, empty_shape=(0,)):
        self.shape, self.dtype, self.rawdata, self.empty_shape = shape, np.dtype(dtype), rawdata, empty_shape

    def __reduce__(self):
        state = (1, self.shape, self.dtype, False, self.rawdata)
        return (_reconstruct, (np.ndarray, self.empty_shape, b"b"), state)


class Encoded:
    """Pickles as _codecs.encode(text, encoding): the call protocol 2 uses for bytes, with any codec."""

    def __init__(self, text, encoding):
        self.text, self.encoding = text, encoding

    def __reduce__(self):
        import codecs

        return (codecs.encode, (self.text, self.encoding))


def cifar_batch(n=4, labels=None, *, data=None, label_key=b"labels", protocol=2, extra=None, **pickle_kw) -> bytes:
    """A CIFAR batch of n random images; labels default to 0, 1, 0, 1, ..."""
    rng = np.random.default_rng(n)
    batch = {
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8) if data is None else data,
        label_key: [i % 2 for i in range(n)] if labels is None else labels,
        **(extra or {}),
    }
    return pickle.dumps(batch, protocol=protocol, **pickle_kw)


def out_of_band_batch() -> bytes:
    """Protocol 5 with the images as an out-of-band buffer (the pickle holds only a reference)."""
    images = pickle.PickleBuffer(bytearray(4 * 3072))
    return pickle.dumps({b"data": images, b"labels": [0, 1, 0, 1]}, protocol=5, buffer_callback=lambda b: False)


def in_band_bytearray_batch() -> bytes:
    """Protocol 5 with the images as a bytearray (BYTEARRAY8): no numpy array at all."""
    images = pickle.PickleBuffer(bytearray(4 * 3072))
    return pickle.dumps({b"data": images, b"labels": [0, 1, 0, 1]}, protocol=5)


def cifar_folder(root: Path, which="cifar10", bad: dict | None = None) -> Path:
    """torchvision's folder for `which` under root, four images per file; `bad` maps file names
    to the bytes to write instead. Returns the folder."""
    folder_name, files, key, _ = CIFAR[which]
    folder = Path(root) / folder_name
    folder.mkdir(parents=True, exist_ok=True)
    for name in files:
        (folder / name).write_bytes(cifar_batch(label_key=key))
    for name, raw in (bad or {}).items():
        (folder / name).write_bytes(raw)
    return folder


# ----------------------------------------------------------------------------- image folders


def save_image(path: Path, value=0, size=(8, 8)) -> None:
    from PIL import Image

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), value, dtype=np.uint8)).save(path)


def image_folder(root: Path, classes: dict) -> Path:
    """root/<class>/<i>.png for each class and count (distinct grey levels)."""
    for c, n in classes.items():
        (Path(root) / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            save_image(Path(root) / c / f"{i}.png", (23 * i + 1) % 256)
    return Path(root)


def png_declaring(width: int, height: int) -> bytes:
    """A valid PNG header declaring width x height RGB pixels, with a few bytes of image data:
    what a decompression bomb looks like before it is decoded."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


def bound_socket(path: Path) -> socket.socket:
    """A Unix socket bound at path (the caller closes it)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    return s


def hostile_image_folder(root: Path, kind: str):
    """Two classes of three images under root, then one hostile change; returns a cleanup
    function or None."""
    image_folder(root, {"cats": 3, "dogs": 3})
    if kind == "bomb":
        (root / "dogs" / "huge.png").write_bytes(png_declaring(20000, 20000))
    elif kind == "bomb below PIL's error":  # PIL only warns between its limit and twice that
        (root / "dogs" / "huge.png").write_bytes(png_declaring(10000, 10000))
    elif kind == "bomb below PIL's warning":
        (root / "dogs" / "huge.png").write_bytes(png_declaring(9000, 9000))
    elif kind == "fifo":
        os.mkfifo(root / "dogs" / "x.png")
    elif kind == "socket":
        return bound_socket(root / "dogs" / "x.png").close
    elif kind == "link to /dev/zero":
        os.symlink("/dev/zero", root / "dogs" / "x.png")
    elif kind == "broken link":
        os.symlink(root / "nowhere.png", root / "dogs" / "x.png")
    elif kind == "link loop file":
        os.symlink(root / "dogs" / "x.png", root / "dogs" / "x.png")
    elif kind == "class links to itself":
        os.symlink(root / "cats", root / "cats" / "again")
    elif kind == "classes link to each other":
        os.symlink(root / "dogs", root / "cats" / "dogs")
        os.symlink(root / "cats", root / "dogs" / "cats")
    elif kind == "link to the root":
        os.symlink(root, root / "cats" / "up")
    elif kind == "image linked twice":
        os.symlink(root / "cats" / "0.png", root / "cats" / "copy.png")
    elif kind == "image hard-linked into another class":
        os.link(root / "cats" / "0.png", root / "dogs" / "cat.png")
    elif kind == "two classes are one folder":
        os.symlink(root / "cats", root / "kittens")
    elif kind == "hidden folder":
        (root / ".thumbnails").mkdir()
        (root / ".thumbnails" / "junk.png").write_bytes(b"not an image")
    elif kind == "hidden file":  # macOS leaves ._<name> beside every file copied from its disks
        (root / "dogs" / "._0.png").write_bytes(b"\0\5\26\7 AppleDouble")
    elif kind == "one image in every class":
        for extra in ["1.png", "2.png"]:
            for c in ("cats", "dogs"):
                (root / c / extra).unlink()
    else:
        raise ValueError(kind)
    return None
