"""Reading and writing the files of a run directory, so that neither a crash nor a damaged or
hostile file can cost the user anything.

Writes are atomic and durable: the bytes go to a temporary file in the same directory, which
is flushed and fsync'ed, renamed over the target, and then the directory itself is fsync'ed,
so after a power cut a reader finds the old file or the new one, never half of one.

Appends never follow a symbolic link (O_NOFOLLOW): a run cannot be made to write outside itself.
A write that fails (a full disk: torch.save reports it as a RuntimeError) is an OSError naming
the file, and leaves no temporary file behind.

Reads never run code and never trust structure: only regular files of a sane size (or, for
metrics.jsonl, of sane lines) are read (a FIFO or /dev/zero in place of metrics.jsonl must not
hang or eat memory), every torch.load passes
weights_only=True (which TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD cannot override when it is explicit),
and every loaded object is checked (keys, types, shapes, dense CPU tensors, finiteness) before
use. Any problem is a RunFileError naming the file and what is wrong, which the CLI prints on
one line.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import re
import stat
import warnings
from pathlib import Path

import torch

from .config import ConfigError

TEMP_MARK = ".tmp."  # temporary files are <name>.tmp.<pid>
# Largest text file read back whole (config.json, manifest.json, --config files): far above any
# real one, far below what would hurt. metrics.jsonl is read a line at a time instead, each line
# at most MAX_LINE_BYTES (a row is under a kilobyte).
MAX_TEXT_BYTES = 64 * 2**20
MAX_LINE_BYTES = 2**20


def is_temporary_of(name: str, base: str) -> bool:
    """Whether `name` is one of our temporary files for `base` (<base>.tmp.<pid>, nothing else)."""
    return re.fullmatch(re.escape(base) + re.escape(TEMP_MARK) + r"\d+", name) is not None


class RunFileError(ConfigError):
    """A file of a run directory that is missing, damaged or not what it should be."""


def _fsync_directory(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def durable_write(path: Path, write, *, before_replace=None) -> None:
    """Atomically replace `path` with what `write(binary_file)` writes, and make it durable.
    `before_replace(temporary_path)` runs once the bytes are durable, just before the rename
    (the run's manifest records them there: see manifest.py). A failed write (a full disk, a
    file-size limit) is an OSError naming `path`, whatever raised it, and leaves no temporary file."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}{TEMP_MARK}{os.getpid()}")
    # O_EXCL | O_NOFOLLOW: never write through a link someone left at the temporary name.
    with contextlib.suppress(FileNotFoundError):
        if tmp.is_file() and not tmp.is_symlink():
            tmp.unlink()  # our own leftover: this process id's temporary file of an earlier crash
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        try:
            with os.fdopen(fd, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            if before_replace is not None:
                before_replace(tmp)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        _fsync_directory(path.parent)
    except OSError as error:
        if error.filename is not None:
            raise
        # A write, flush or fsync: its error names no file (and the temporary name would mislead).
        raise OSError(error.errno, error.strerror or str(error), str(path)) from None


def atomic_save(obj, path: Path, *, before_replace=None) -> None:
    """torch.save, atomically and durably."""
    durable_write(path, lambda f: _torch_save(obj, f), before_replace=before_replace)


def _torch_save(obj, f) -> None:
    try:
        torch.save(obj, f)
    except RuntimeError as error:
        # torch.save reports a failed write of its file (ENOSPC, EFBIG, EIO) as a RuntimeError
        # ("unexpected pos ...") raised while handling the OSError: that OSError is what happened.
        if isinstance(error.__context__, OSError):
            raise error.__context__ from None
        raise


def atomic_write_text(text: str, path: Path, *, before_replace=None) -> None:
    durable_write(path, lambda f: f.write(text.encode()), before_replace=before_replace)


def open_log(path: Path) -> int:
    """A descriptor of `path` for reading and appending, never through a symbolic link."""
    try:
        return os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise RunFileError(f"{path}: a symbolic link; a run's files must be plain files") from None
        raise


def regular_file(path: Path, what: str, max_bytes: int | None = None) -> Path:
    """`path` if it is a regular file (after links) of at most max_bytes, else RunFileError."""
    path = Path(path)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise RunFileError(f"{path}: missing ({what})") from None
    except OSError as error:
        raise RunFileError(f"{path}: cannot be read ({error.strerror})") from None
    if not stat.S_ISREG(info.st_mode):
        raise RunFileError(f"{path}: not a regular file ({what})")
    if max_bytes is not None and info.st_size > max_bytes:
        raise RunFileError(f"{path}: {info.st_size} bytes, more than the {max_bytes} a {what} can hold")
    return path


def read_text(path: Path, what: str) -> str:
    path = regular_file(path, what, MAX_TEXT_BYTES)
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise RunFileError(f"{path}: damaged, not UTF-8 text ({error.reason} at byte {error.start})") from None


def parse_json(text: str, where: str):
    """json.loads, with every way it can fail (malformed, an integer of thousands of digits,
    nesting deep enough to exhaust the recursion limit) as one RunFileError."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as error:
        reason = str(error).splitlines()[0][:160] if str(error) else type(error).__name__
        raise RunFileError(f"{where}: damaged, not JSON ({reason})") from None


def load_torch_file(path: Path, what: str):
    """torch.load(path, weights_only=True) on the CPU; RunFileError if it cannot be read."""
    path = regular_file(path, what)
    try:
        with warnings.catch_warnings():  # torch warns about foreign pickle protocols: the error says it all
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated zip, foreign pickle, refused global, I/O error, ...
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise RunFileError(f"{path}: damaged or not a {what} ({reason[:200]})") from None


def read_json(path: Path, what: str):
    return parse_json(read_text(path, what), str(path))


def iter_metrics(path: Path):
    """The rows of metrics.jsonl (none if it does not exist), one at a time, each checked for
    its fields. Read a line at a time with a cap on the line, not on the file: --iterations
    allows 10^9 rows (some 45 GB), which a total cap would make unreadable (show, --resume)."""
    path = Path(path)
    if not os.path.lexists(path):
        return
    regular_file(path, "metrics log")  # a FIFO or a device must not hang or flood the reader
    with open(path, "rb") as log:
        number = 0
        while raw := log.readline(MAX_LINE_BYTES + 1):
            number += 1
            if len(raw) > MAX_LINE_BYTES:
                raise RunFileError(
                    f"{path} line {number}: more than {MAX_LINE_BYTES} bytes (a row is under a kilobyte)"
                )
            try:
                line = raw.decode("utf-8").rstrip("\n")
            except UnicodeDecodeError as error:
                raise RunFileError(
                    f"{path} line {number}: damaged, not UTF-8 text ({error.reason} at byte {error.start})"
                ) from None
            yield _metrics_row(path, number, line)


def _metrics_row(path: Path, number: int, line: str) -> dict:
    row = parse_json(line, f"{path} line {number}")
    if not isinstance(row, dict):
        raise RunFileError(f"{path} line {number}: expected a JSON object, got {line[:60]!r}")
    if "iteration" in row:
        _expect_number(path, number, row, "iteration", integer=True, low=0)
        _expect_number(path, number, row, "loss")
        _expect_number(path, number, row, "seconds", low=0)
    if row.get("event") == "eval":
        for key in ("accuracy_mean", "accuracy_std"):
            if not (key == "accuracy_std" and row.get(key, 0) is None and row.get("num_eval") == 1):  # no spread
                _expect_number(path, number, row, key, low=0)
        _expect_number(path, number, row, "num_eval", integer=True, low=1)
        _expect_number(path, number, row, "epochs", integer=True, low=0)
    return row


def _expect_number(path, number, row, key, *, integer=False, low=None):
    value = row.get(key)
    ok = isinstance(value, int) if integer else isinstance(value, (int, float)) and math.isfinite(value)
    if isinstance(value, bool) or not ok or (low is not None and value < low):
        kind = "an integer" if integer else "a finite number"
        raise RunFileError(
            f"{path} line {number}: {key!r} must be {kind}{f' >= {low}' if low is not None else ''}, got {value!r}"
        )


def expect(ok: bool, path: Path, message: str) -> None:
    if not ok:
        raise RunFileError(f"{path}: {message}")


def expect_tensor(path: Path, name: str, value, *, shape=None, floating=None, finite=True) -> torch.Tensor:
    """`value` is a dense, contiguous CPU tensor of the given shape (None: any) and kind, with
    finite values (an expanded tensor could claim 2^40 rows in a file of a kilobyte)."""
    expect(isinstance(value, torch.Tensor), path, f"{name} must be a tensor, got {type(value).__name__}")
    expect(value.layout == torch.strided, path, f"{name} must be a dense tensor, got layout {value.layout}")
    expect(value.device.type == "cpu", path, f"{name} must be a CPU tensor, got one on {value.device}")
    expect(
        value.is_contiguous(),
        path,
        f"{name} must be a dense contiguous tensor (as torch.save writes one), "
        f"got a view with strides {value.stride()}",
    )
    if shape is not None:
        expect(
            tuple(value.shape) == tuple(shape), path, f"{name} has shape {tuple(value.shape)}, expected {tuple(shape)}"
        )
    if floating is True:
        expect(value.is_floating_point(), path, f"{name} must be floating point, got {value.dtype}")
    if floating is False:
        expect(value.dtype in (torch.int64, torch.int32), path, f"{name} must hold integers, got {value.dtype}")
    if finite and value.is_floating_point() and value.numel():
        expect(bool(torch.isfinite(value).all()), path, f"{name} holds a non-finite value")
    return value


def expect_finite_state(path: Path, name: str, state) -> None:
    """Every floating tensor in a (nested) state dict is finite."""
    if isinstance(state, torch.Tensor):
        expect_tensor(path, name, state)
    elif isinstance(state, dict):
        for key, value in state.items():
            expect_finite_state(path, f"{name}[{key!r}]", value)
    elif isinstance(state, (list, tuple)):
        for i, value in enumerate(state):
            expect_finite_state(path, f"{name}[{i}]", value)
    elif isinstance(state, float):
        expect(math.isfinite(state), path, f"{name} is {state}")
