"""The run directory: what makes a folder a run, who may use it, and what may be removed.

Rules (each a promise the README makes):
- A folder is a run when it holds a config.json that this project wrote: it carries RUN_FORMAT
  and parses into a DistillConfig. Only a run can be resumed or replaced; a folder holding
  anything else (a config.json of someone else's included) is never written into.
- Replacing a run (--overwrite) removes only the files a run consists of (RUN_FILES and their
  temporary files); anything else the user put there stays.
- One process at a time: a run holds an exclusive flock on <run>/.lock for as long as it
  works in the folder. The OS drops the lock when the holder exits or dies, so a killed run
  never leaves a stale lock; a second process is refused, naming the holder's pid (when the
  holder wrote one and that process is alive: a tool such as flock(1) writes none).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import time
from pathlib import Path

from .config import ConfigError, DistillConfig
from .files import TEMP_MARK, RunFileError, atomic_write_text, is_temporary_of, read_json

LOCK_NAME = ".lock"
# The mark config.json carries, so that a JSON file of someone else's is never taken for a run.
FORMAT_KEY, RUN_FORMAT = "format", "spectral-distill run 1"
# Every file a run writes; --overwrite removes these and nothing else.
RUN_FILES = ("config.json", "checkpoint.pt", "metrics.jsonl", "synthetic.pt", "grid.png", "eval.json", "net_pool.pt")
RUN_FILES += ("environment.json",)  # what produced the run, written when it starts (distill/environment.py)


class RunBusyError(ConfigError):
    """Another process holds the run directory."""


class RunLock:
    """An exclusive, non-blocking flock on <run>/.lock, released by release() or by the OS."""

    def __init__(self, run: Path):
        self.run = Path(run)
        self.path = self.run / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        try:
            # O_NOFOLLOW: a link planted at .lock must not make us write someone else's file.
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as error:
            if error.errno == errno.ELOOP:
                raise ConfigError(f"{self.path} is a symbolic link; a run's lock file must be a plain file") from None
            raise ConfigError(f"cannot create the lock file {self.path}: {error.strerror}") from None
        existing = os.pread(fd, 64, 0).decode(errors="replace")
        if existing and re.fullmatch(r"\d+\n?", existing) is None:  # not a pid we wrote: someone's file
            os.close(fd)
            raise ConfigError(f"{self.path} exists and is not a spectral-distill lock file; nothing was changed")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._holder(fd)
            os.close(fd)
            raise RunBusyError(
                f"{self.run} is in use by another spectral-distill process (pid {holder}); "
                "wait for it to finish, or choose another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    @staticmethod
    def _holder(fd: int) -> str:
        """The pid of the process holding the lock, or "unknown".

        The holder writes its pid just after locking, so an empty file gets a moment. The pid
        named must be alive: a killed run leaves its pid behind, and if some other tool (flock(1),
        a job scheduler) holds the lock now, that stale pid would send the user after the wrong
        process.
        """
        for _ in range(20):
            text = os.pread(fd, 32, 0).decode(errors="replace").strip()
            if text:
                return text if text.isascii() and text.isdigit() and _is_alive(int(text)) else "unknown"
            time.sleep(0.01)
        return "unknown"

    def release(self) -> None:
        if self._fd is not None:
            # Still holding the lock: leave an empty file, not a pid that will soon be stale.
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _is_alive(pid: int) -> bool:
    if pid <= 0:  # 0 and negatives would address process groups
        return False
    try:
        os.kill(pid, 0)  # signal 0: an existence check, nothing is sent
    except PermissionError:
        return True  # exists, belongs to another user
    except (ProcessLookupError, OverflowError):
        return False
    return True


def write_config(run: Path, config: DistillConfig) -> None:
    atomic_write_text(
        json.dumps({FORMAT_KEY: RUN_FORMAT, **config.to_dict()}, indent=2) + "\n", Path(run) / "config.json"
    )


def saved_config(run: Path) -> DistillConfig:
    """The validated config.json of a run; RunFileError if it is missing or not this project's."""
    path = Path(run) / "config.json"
    values = read_json(path, "run configuration")
    if not isinstance(values, dict) or values.get(FORMAT_KEY) != RUN_FORMAT:
        raise RunFileError(f'{path}: not written by spectral-distill (no "{FORMAT_KEY}": "{RUN_FORMAT}")')
    values = {k: v for k, v in values.items() if k != FORMAT_KEY}
    try:
        return DistillConfig.from_dict(values).validate(check_device=False)
    except RunFileError:
        raise
    except ConfigError as error:
        raise RunFileError(f"{path}: not a spectral-distill run configuration ({error})") from None


def _contents(run: Path) -> list[str]:
    return sorted(name for name in os.listdir(run) if name != LOCK_NAME)


def open_run_dir(config: DistillConfig, *, resume: bool, overwrite: bool) -> RunLock:
    """Create or take over config.out for a run and return its held lock.

    Call only after every option has been validated: this is the first step that changes
    anything on disk. Raises ConfigError (the folder is not a run, holds a run and neither
    --resume nor --overwrite was given, is in use, or cannot be written).
    """
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite exclude each other: continue the run, or replace it")
    run = Path(config.out)
    if run.exists() and not run.is_dir():
        raise ConfigError(f"--out {run} exists and is not a directory")
    if run.is_dir():
        _refuse_if_not_a_run(run)  # before the lock file: nothing is written into a stranger's folder
    try:
        run.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"cannot write to --out {run}: {error.strerror or error}") from None
    lock = RunLock(run).acquire()
    try:
        _take_over(run, config, resume=resume, overwrite=overwrite)  # checked again, now that we hold it
    except BaseException:
        lock.release()
        raise
    return lock


def _refuse_if_not_a_run(run: Path) -> None:
    try:
        contents = _contents(run)
    except OSError as error:
        raise ConfigError(f"cannot read --out {run}: {error.strerror or error}") from None
    if contents and "config.json" not in contents:
        raise ConfigError(
            f"--out {run} is not empty and holds no run (no config.json): it is never written into; "
            "choose an empty or new directory"
        )


def _take_over(run: Path, config: DistillConfig, *, resume: bool, overwrite: bool) -> None:
    contents = _contents(run)
    if contents:
        _refuse_if_not_a_run(run)
        try:
            saved = saved_config(run)
        except RunFileError as error:
            raise ConfigError(
                f"--out {run} does not hold a run this tool can recognise ({error}); nothing was changed"
            ) from None
        if resume:
            current, previous = config.to_dict(), saved.to_dict()
            differing = [
                k for k, v in current.items() if k not in DistillConfig.RESUMABLE_CHANGES and previous.get(k) != v
            ]
            if differing:
                raise ConfigError(
                    f"--resume: options differ from the interrupted run's config.json: {', '.join(differing)}"
                )
        elif overwrite:
            remove_run_files(run)
        else:
            raise ConfigError(f"{run} already holds a run; pass --resume to continue it or --overwrite to replace it")
    try:
        probe = run / f".write-test{TEMP_MARK}{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise ConfigError(f"cannot write to --out {run}: {error.strerror or error}") from None


def remove_run_files(run: Path) -> list[str]:
    """Remove the files a run consists of (and their temporary files); returns their names.
    Anything else in the folder is left alone, and so is a run file that is not a plain file."""
    removed = []
    for name in sorted(os.listdir(run)):
        if name in RUN_FILES or any(is_temporary_of(name, base) for base in (*RUN_FILES, ".write-test")):
            path = run / name
            if path.is_file() and not path.is_symlink():
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    removed.append(name)
    return removed
