"""Opening the files of a dataset so that none can hang or exhaust a run: regular files only
(after links), checked again on the open descriptor. Below data.py and imagefolder.py, which
both read through it (imagefolder.py took these from data.py, which imports it: a circle)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .errors import DataError


def open_regular_file(path: Path, what: str):
    """`path` opened for reading in binary if it is a regular file (after links); DataError
    otherwise. A FIFO, a socket or a device is never opened (opening a FIFO blocks until a writer
    comes, reading /dev/zero never ends); the type is checked again on the open descriptor
    (opened without blocking), in case the file was swapped between the two looks."""
    path = Path(path)
    info = _stat(path, what)
    if not stat.S_ISREG(info.st_mode):
        raise DataError(f"{what}: {path} is not a regular file ({_file_kind(info.st_mode)})")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as error:
        raise DataError(f"{what}: {path} cannot be read ({error.strerror})") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise DataError(f"{what}: {path} is not a regular file ({_file_kind(mode)})")
    return os.fdopen(fd, "rb")


def read_regular_file(path: Path, what: str) -> bytes:
    """The bytes of `path`, under open_regular_file's rules."""
    with open_regular_file(path, what) as f:
        try:
            return f.read()
        except MemoryError:
            size = os.fstat(f.fileno()).st_size
            raise DataError(f"{what}: not enough memory to read {path} ({size} bytes)") from None
        except OSError as error:
            raise DataError(f"{what}: {path} cannot be read ({error.strerror})") from None


def _stat(path: Path, what: str) -> os.stat_result:
    try:
        return os.stat(path)
    except FileNotFoundError:
        kind = "a broken symbolic link" if os.path.islink(path) else "missing"
        raise DataError(f"{what}: {path} cannot be read ({kind})") from None
    except OSError as error:
        raise DataError(f"{what}: {path} cannot be read ({error.strerror})") from None


def _file_kind(mode: int) -> str:
    for test, kind in [
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISDIR, "a folder"),
    ]:
        if test(mode):
            return kind
    return f"file type {stat.S_IFMT(mode):o}"
