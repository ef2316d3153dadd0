"""What a run wrote: <run>/manifest.json lists each file the run wrote with its length and
SHA-256, so that --overwrite (and --resume, evaluate, where they would replace a file) can tell
the run's files from a user's, whatever the names.

    {"format": "spectral-distill manifest 1",
     "files": {"checkpoint.pt": [{"bytes": 10333, "sha256": "..."}, {"bytes": ..., ...}], ...}}

A file is written to a temporary file, made durable, and its hash is added to the manifest
(itself written atomically) before the rename; the entry keeps the previous version's hash too,
so a crash just before or just after the rename leaves a file the manifest still vouches for.

metrics.jsonl is only ever appended to, a row per step: its entry is recorded at every
checkpoint (the length and hash of the log so far, replacing the version before, of which it
is an extension), and a log that starts with a recorded version is the run's (the rows after
it are the run's steps since its last checkpoint: they are not checked). Any other file is the
run's only if its length and hash equal a recorded version.

A folder without manifest.json (a run made before runs recorded their files, or a config.json
copied next to one's own files) owns nothing: nothing in it is removed or replaced.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import stat
from pathlib import Path

from .config import ConfigError
from .files import RunFileError, atomic_save, atomic_write_text, durable_write, open_log, read_json

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "spectral-distill manifest 1"
# Every file a run writes, besides the manifest.
RUN_FILES = ("config.json", "checkpoint.pt", "metrics.jsonl", "synthetic.pt", "grid.png", "eval.json", "net_pool.pt")
RUN_FILES += ("environment.json",)  # what produced the run, written when it starts (distill/environment.py)
APPEND_ONLY = ("metrics.jsonl",)
_CHUNK = 2**20
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _digest(fd: int, length: int | None = None) -> str:
    """SHA-256 of the first `length` bytes (None: all) of the file open at `fd`."""
    digest, offset = hashlib.sha256(), 0
    while length is None or offset < length:
        chunk = os.pread(fd, _CHUNK if length is None else min(_CHUNK, length - offset), offset)
        if not chunk:
            break
        digest.update(chunk)
        offset += len(chunk)
    return digest.hexdigest()


def read_manifest(run: Path) -> dict[str, list[tuple[int, str]]] | None:
    """{name: [(bytes, sha256), ...]} of the run's manifest.json; None if there is none.
    RunFileError if it is damaged or not this project's."""
    path = Path(run) / MANIFEST_NAME
    if not os.path.lexists(path):
        return None
    values = read_json(path, "run manifest")
    if not isinstance(values, dict) or values.get("format") != MANIFEST_FORMAT:
        raise RunFileError(f'{path}: not written by spectral-distill (no "format": "{MANIFEST_FORMAT}")')
    files = values.get("files")
    if not isinstance(files, dict):
        raise RunFileError(f"{path}: damaged (no mapping of files)")
    manifest = {}
    for name, versions in files.items():
        if name not in RUN_FILES:
            raise RunFileError(f"{path}: damaged (names {name!r}, which is not a file a run writes)")
        ok = isinstance(versions, list) and 1 <= len(versions) <= 2
        for version in versions if ok else ():
            ok = ok and isinstance(version, dict) and set(version) == {"bytes", "sha256"}
            ok = ok and type(version["bytes"]) is int and version["bytes"] >= 0
            ok = ok and isinstance(version["sha256"], str) and _SHA256.fullmatch(version["sha256"]) is not None
        if not ok:
            raise RunFileError(f"{path}: damaged (the entry of {name} is not a list of versions with bytes and sha256)")
        manifest[name] = [(v["bytes"], v["sha256"]) for v in versions]
    return manifest


def _write_manifest(run: Path, manifest: dict) -> None:
    files = {name: [{"bytes": n, "sha256": h} for n, h in versions] for name, versions in manifest.items()}
    atomic_write_text(json.dumps({"format": MANIFEST_FORMAT, "files": files}, indent=1) + "\n", run / MANIFEST_NAME)


def record(run: Path, name: str, length: int, sha256: str, *, keep_previous: bool = True) -> None:
    """Add (length, sha256) as the latest version of run/name, keeping the one before it (for a
    file about to be renamed into place), or alone (for a log that only grew since: any older
    version is a prefix of it, and would vouch for whatever follows that prefix)."""
    run = Path(run)
    manifest = read_manifest(run) or {}
    manifest[name] = [*(manifest.get(name, [])[-1:] if keep_previous else ()), (length, sha256)]
    _write_manifest(run, manifest)


def _recorder(path: Path):
    """The hook durable_write calls with the durable temporary file of `path`, before the rename."""
    path = Path(path)

    def before_replace(tmp: Path) -> None:
        fd = os.open(tmp, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            record(path.parent, path.name, os.fstat(fd).st_size, _digest(fd))
        finally:
            os.close(fd)

    return before_replace


def write_run_file(path: Path, write) -> None:
    """durable_write of a run's file, recorded in its manifest."""
    durable_write(path, write, before_replace=_recorder(path))


def save_run_file(obj, path: Path) -> None:
    """torch.save of a run's file, atomically and durably, recorded in its manifest."""
    atomic_save(obj, path, before_replace=_recorder(path))


def write_run_text(text: str, path: Path) -> None:
    atomic_write_text(text, path, before_replace=_recorder(path))


class AppendLog:
    """A run's log (metrics.jsonl) opened for appending, never through a link, with the length
    and hash of everything in it kept up to date, so that record() costs one fsync and a
    manifest write, not a re-read of a log that may hold 10^9 rows."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._fd = open_log(self.path)
        self._hash, self._length = hashlib.sha256(), 0
        while chunk := os.pread(self._fd, _CHUNK, self._length):
            self._hash.update(chunk)
            self._length += len(chunk)

    def write(self, text: str) -> None:
        data = text.encode()
        view = memoryview(data)
        while view:  # os.write may write less than asked
            view = view[os.write(self._fd, view) :]
        self._hash.update(data)
        self._length += len(data)

    def record(self) -> None:
        """Make what was written durable and record it in the run's manifest."""
        os.fsync(self._fd)
        record(self.path.parent, self.path.name, self._length, self._hash.copy().hexdigest(), keep_previous=False)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> AppendLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _why_not_owned(run: Path, name: str, manifest: dict | None) -> str | None:
    """None if run/name is absent or the run's own (a recorded version); else why not."""
    path = run / name
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(info.st_mode):
        return "a symbolic link"
    if not stat.S_ISREG(info.st_mode):
        return "not a regular file"
    if manifest is None:
        return ""
    versions = manifest.get(name)
    if not versions:
        return "not in the run's manifest"
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        for length, sha256 in versions:
            fits = info.st_size >= length if name in APPEND_ONLY else info.st_size == length
            if fits and _digest(fd, length) == sha256:
                return None
    finally:
        os.close(fd)
    return "changed since the run wrote it"


def refuse_files_not_owned(run: Path, names, flag: str) -> None:
    """ConfigError (one line, naming each file and why) unless every one of `names` present in
    the run is a version the run recorded. Nothing is changed either way."""
    run = Path(run)
    manifest = read_manifest(run)
    problems = [(name, why) for name in names if (why := _why_not_owned(run, name, manifest)) is not None]
    if not problems:
        return
    listed = ", ".join(f"{name} ({why})" if why else name for name, why in problems)
    note = (
        f" (it has no {MANIFEST_NAME}: a run made before runs recorded the files they wrote, or a copied config.json)"
        if manifest is None
        else ""
    )
    raise ConfigError(
        f"{flag}: {listed} in {run} {'is' if len(problems) == 1 else 'are'} not this run's{note}; "
        "nothing was removed or replaced: move them away or choose another --out"
    )


def remove_recorded(run: Path) -> None:
    """Remove the manifest, once the files it recorded are gone (--overwrite)."""
    with contextlib.suppress(FileNotFoundError):
        (Path(run) / MANIFEST_NAME).unlink()


def append_row(path: Path, row: dict) -> None:
    """Append one JSON row to a run's log and record the log in the manifest: for the few rows
    written outside the matching loop's open log (each phase's device, an evaluation)."""
    with AppendLog(path) as log:
        log.write(json.dumps(row) + "\n")
        log.record()
