"""Reading and writing the files of a run directory, so that neither a crash nor a damaged or
hostile file can cost the user anything.

Writes are atomic and durable: the bytes go to a temporary file in the same directory, which
is flushed and fsync'ed, renamed over the target, and then the directory itself is fsync'ed,
so after a power cut a reader finds the old file or the new one, never half of one.

Reads never run code and never trust structure: every torch.load passes weights_only=True
(which TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD cannot override when it is explicit), and every loaded
object is checked (keys, types, shapes, finiteness) before use. Any problem is a RunFileError
naming the file and what is wrong, which the CLI prints on one line.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import warnings
from pathlib import Path

import torch

from .config import ConfigError

TEMP_MARK = ".tmp."  # temporary files are <name>.tmp.<pid>


class RunFileError(ConfigError):
    """A file of a run directory that is missing, damaged or not what it should be."""


def _fsync_directory(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def durable_write(path: Path, write) -> None:
    """Atomically replace `path` with what `write(binary_file)` writes, and make it durable."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}{TEMP_MARK}{os.getpid()}")
    # O_EXCL | O_NOFOLLOW: never write through a link someone left at the temporary name.
    with contextlib.suppress(FileNotFoundError):
        if tmp.is_file() and not tmp.is_symlink():
            tmp.unlink()  # our own leftover: this process id's temporary file of an earlier crash
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_directory(path.parent)


def atomic_save(obj, path: Path) -> None:
    """torch.save, atomically and durably."""
    durable_write(path, lambda f: torch.save(obj, f))


def atomic_write_text(text: str, path: Path) -> None:
    durable_write(path, lambda f: f.write(text.encode()))


def append_line(path: Path, line: str) -> None:
    """Append one line and make it durable (for a log that is only ever appended to)."""
    with open(path, "a") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


def load_torch_file(path: Path, what: str):
    """torch.load(path, weights_only=True) on the CPU; RunFileError if it cannot be read."""
    path = Path(path)
    if not path.is_file():
        raise RunFileError(f"{path}: missing ({what})")
    try:
        with warnings.catch_warnings():  # torch warns about foreign pickle protocols: the error says it all
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated zip, foreign pickle, refused global, I/O error, ...
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise RunFileError(f"{path}: damaged or not a {what} ({reason[:200]})") from None


def read_json(path: Path, what: str):
    path = Path(path)
    if not path.is_file():
        raise RunFileError(f"{path}: missing ({what})")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RunFileError(f"{path}: damaged, not JSON ({error})") from None


def read_metrics(path: Path) -> list[dict]:
    """The rows of metrics.jsonl (none if it does not exist), each checked for its fields."""
    path = Path(path)
    if not path.exists():
        return []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise RunFileError(f"{path}: damaged, not UTF-8 text ({error.reason})") from None
    rows = []
    for number, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise RunFileError(f"{path} line {number}: damaged, not JSON: {line[:60]!r}") from None
        if not isinstance(row, dict):
            raise RunFileError(f"{path} line {number}: expected a JSON object, got {line[:60]!r}")
        if "iteration" in row:
            _expect_number(path, number, row, "iteration", integer=True)
            _expect_number(path, number, row, "loss")
            _expect_number(path, number, row, "seconds")
        elif row.get("event") == "eval":
            for key in ("accuracy_mean", "accuracy_std", "num_eval", "epochs"):
                _expect_number(path, number, row, key, integer=key in ("num_eval", "epochs"))
        rows.append(row)
    return rows


def _expect_number(path, number, row, key, integer=False):
    value = row.get(key)
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok:
        raise RunFileError(f"{path} line {number}: {key!r} must be {'an integer' if integer else 'a number'}, got {value!r}")


def expect(ok: bool, path: Path, message: str) -> None:
    if not ok:
        raise RunFileError(f"{path}: {message}")


def expect_tensor(path: Path, name: str, value, *, shape=None, floating=None, finite=True) -> torch.Tensor:
    """`value` is a tensor of the given shape (None: any) and kind, with finite values."""
    expect(isinstance(value, torch.Tensor), path, f"{name} must be a tensor, got {type(value).__name__}")
    if shape is not None:
        expect(tuple(value.shape) == tuple(shape), path, f"{name} has shape {tuple(value.shape)}, expected {tuple(shape)}")
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
