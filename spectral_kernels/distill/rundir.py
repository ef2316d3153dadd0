"""The run directory: what makes a folder a run, who may use it, and what may be removed.

Rules (each a promise the README makes):
- A folder is a run when it holds a config.json that this project wrote: it carries RUN_FORMAT
  and parses into a DistillConfig. Only a run can be resumed or replaced; a folder holding
  anything else (a config.json of someone else's included) is never written into, not even
  the lock file.
- A run owns exactly the files it wrote, as its manifest.json records them (manifest.py).
  Replacing a run (--overwrite) first checks every file of a run's name (RUN_FILES) against the
  manifest and refuses, naming them, if any is not the run's (replaced, edited, added, or the
  folder has no manifest: a run made before manifests existed); then it removes those files,
  their temporary files and the manifest. Anything else the user put there stays.
- --resume reads and checks config.json, checkpoint.pt, metrics.jsonl and net_pool.pt as the
  run's state; the results it would replace (synthetic.pt, grid.png, eval.json) must be the run's.
- One process at a time: a run holds an exclusive flock on <run>/.lock for as long as it
  works in the folder. The OS drops the lock when the holder exits or dies, so a killed run
  never leaves a stale lock; a second process is refused, naming the holder's pid (when the
  holder wrote one and that process is alive: a tool such as flock(1) writes none).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import time
from pathlib import Path

from filelock import Timeout, UnixFileLock

from .config import ConfigError, DistillConfig, stored_options
from .files import TEMP_MARK, RunFileError, is_temporary_of, read_json
from .manifest import MANIFEST_NAME, RUN_FILES, read_manifest, refuse_files_not_owned, remove_recorded, write_run_text

LOCK_NAME = ".lock"
# The mark config.json carries, so that a JSON file of someone else's is never taken for a run.
FORMAT_KEY, RUN_FORMAT = "format", "spectral-distill run 1"
# The files a run writes at its end, which --resume would replace without reading them.
RESULT_FILES = ("synthetic.pt", "grid.png", "eval.json")


class RunBusyError(ConfigError):
    """Another process holds the run directory."""


class _ForeignLockFile(Exception):
    """.lock holds something other than a pid we wrote: it is someone's file."""


class RunLock:
    """An exclusive, non-blocking flock on <run>/.lock, released by release() or by the OS.

    Taken through filelock's UnixFileLock (a torch dependency), which keeps every promise the
    hand-written fcntl code made, given these options: it locks with flock(2) itself (so the OS
    drops the lock when the holder dies, and flock(1) or a scheduler sees it and is seen);
    preserve_lock_file keeps the file (waiters share one inode); fallback_to_soft=False, so a
    filesystem without flock is an error, never a marker file of another kind written into the
    folder; it opens the file with O_NOFOLLOW (a link planted at .lock is refused, not written
    through) and never truncates what is there; and on_acquired hands us the locked descriptor,
    through which we check that the file is ours (empty, or a pid) and write our pid, and through
    which release() leaves it empty. Older filelock versions (before 4.0) lack these options.
    """

    def __init__(self, run: Path):
        self.run = Path(run)
        self.path = self.run / LOCK_NAME
        self._lock: UnixFileLock | None = None
        self._fd: int | None = None  # the descriptor filelock holds the lock on, borrowed

    def _on_acquired(self, fd: int) -> None:
        existing = os.pread(fd, 64, 0).decode(errors="replace")
        if existing and re.fullmatch(r"\d+\n?", existing) is None:  # not a pid we wrote: someone's file
            raise _ForeignLockFile  # filelock then lets the lock go again, and the file is untouched
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def acquire(self) -> RunLock:
        lock = UnixFileLock(
            self.path,
            blocking=False,
            thread_local=False,
            fallback_to_soft=False,
            preserve_lock_file=True,
            on_acquired=self._on_acquired,
        )
        try:
            lock.acquire()
        except _ForeignLockFile:
            raise ConfigError(
                f"{self.path} exists and is not a spectral-distill lock file; nothing was changed"
            ) from None
        except Timeout:
            raise RunBusyError(
                f"{self.run} is in use by another spectral-distill process (pid {self._holder_of(self.path)}); "
                "wait for it to finish, or choose another --out"
            ) from None
        except OSError as error:
            if error.errno == errno.ELOOP:
                raise ConfigError(f"{self.path} is a symbolic link; a run's lock file must be a plain file") from None
            raise ConfigError(f"cannot create the lock file {self.path}: {error.strerror or error}") from None
        self._lock = lock
        return self

    @classmethod
    def _holder_of(cls, path: Path) -> str:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            return "unknown"
        try:
            return cls._holder(fd)
        finally:
            os.close(fd)

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
        if self._lock is not None:
            # Still holding the lock: leave an empty file, not a pid that will soon be stale.
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            self._lock.release()  # unlocks and closes the descriptor
            self._lock = self._fd = None

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
    write_run_text(json.dumps({FORMAT_KEY: RUN_FORMAT, **config.to_dict()}, indent=2) + "\n", Path(run) / "config.json")


def saved_config(run: Path) -> DistillConfig:
    """The validated config.json of a run; RunFileError if it is missing or not this project's."""
    path = Path(run) / "config.json"
    values = read_json(path, "run configuration")
    if not isinstance(values, dict) or values.get(FORMAT_KEY) != RUN_FORMAT:
        raise RunFileError(f'{path}: not written by spectral-distill (no "{FORMAT_KEY}": "{RUN_FORMAT}")')
    values = {k: v for k, v in values.items() if k != FORMAT_KEY}
    try:
        return DistillConfig.from_dict(stored_options(values)).validate(check_device=False)
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
        # Before the lock file: nothing is written into a folder that is not a run, or that the
        # run would refuse anyway (a copied config.json beside the user's own results).
        _check_take_over(run, config, resume=resume, overwrite=overwrite, locked=False)
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
    """ConfigError unless `run` is empty (but for the lock file) or holds a run (a config.json
    of this project's): the lock file is written into nothing else."""
    try:
        contents = _contents(run)
    except OSError as error:
        raise ConfigError(f"cannot read --out {run}: {error.strerror or error}") from None
    if not contents:
        return
    if "config.json" not in contents:
        raise ConfigError(
            f"--out {run} is not empty and holds no run (no config.json): it is never written into; "
            "choose an empty or new directory"
        )
    try:
        saved_config(run)
    except RunFileError as error:
        raise ConfigError(
            f"--out {run} does not hold a run this tool can recognise ({error}); nothing was changed"
        ) from None


def _check_take_over(run: Path, config: DistillConfig, *, resume: bool, overwrite: bool, locked: bool) -> bool:
    """Every refusal of taking over `run`, changing nothing; returns whether it holds a run.

    Without the lock, a folder with a manifest gets only the check that it is a run: it may be
    a run at work (which must be refused as in use, first), between recording a file and
    renaming it into place. A run of this version writes its manifest before its first file, so
    a folder without one is no live run, and every refusal can come before the lock file."""
    _refuse_if_not_a_run(run)
    if not _contents(run):
        return False
    if not locked and read_manifest(run) is not None:
        return True
    saved = saved_config(run)
    if resume:
        current, previous = config.to_dict(), saved.to_dict()
        differing = [k for k, v in current.items() if k not in DistillConfig.RESUMABLE_CHANGES and previous.get(k) != v]
        if differing:
            raise ConfigError(
                f"--resume: options differ from the interrupted run's config.json: {', '.join(differing)}"
            )
        # environment.json too: a resumed run rewrites it (distill/environment.py).
        refuse_files_not_owned(run, (*RESULT_FILES, "environment.json"), "--resume")
    elif overwrite:
        refuse_files_not_owned(run, RUN_FILES, "--overwrite")
    else:
        raise ConfigError(f"{run} already holds a run; pass --resume to continue it or --overwrite to replace it")
    return True


def _take_over(run: Path, config: DistillConfig, *, resume: bool, overwrite: bool) -> None:
    if _check_take_over(run, config, resume=resume, overwrite=overwrite, locked=True) and overwrite:
        remove_run_files(run)
    try:
        probe = run / f".write-test{TEMP_MARK}{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise ConfigError(f"cannot write to --out {run}: {error.strerror or error}") from None


def remove_run_files(run: Path) -> list[str]:
    """Remove the files a run consists of (checked first to be the run's own: see
    refuse_files_not_owned), their temporary files, and then the manifest; returns their names.
    Anything else in the folder is left alone, and so is a run file that is not a plain file."""
    removed = []
    for name in sorted(os.listdir(run)):
        temporaries = (*RUN_FILES, MANIFEST_NAME, ".write-test")
        if name in RUN_FILES or any(is_temporary_of(name, base) for base in temporaries):
            path = run / name
            if path.is_file() and not path.is_symlink():
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    removed.append(name)
    remove_recorded(run)  # last: until the files are gone, it is what says they are the run's
    return removed
