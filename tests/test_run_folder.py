"""A run folder owns exactly the files it wrote (manifest.json), a resumed or evaluated run is
the run it claims to be, and what a run writes or reads back has no limit a valid run can
reach. One-line refusals of bad folders and files are in the catalogue (tests/test_bad_input.py);
these are the promises that need more than a table row."""

import hashlib
import json
import os
import resource
import subprocess

import pytest
import torch

from spectral_kernels.distill import files
from spectral_kernels.distill.config import ConfigError, DistillConfig
from spectral_kernels.distill.loop import distill

from .conftest import CLI_SCRIPT, FAST_CLI, assert_one_line_error

FAST = dict(dataset="digits", ipc=1, iterations=4, width=8, batch_real=4, num_eval=0, quiet=True, checkpoint_every=2)


def _sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _interrupted(out, at=3, **options):
    """A run stopped before iteration `at`, as by Ctrl-C (its metrics rows of the iterations after
    the last checkpoint are on disk but in no manifest entry of their own)."""

    def interrupt(iteration):
        if iteration == at:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        distill(DistillConfig(**{**FAST, **options}, out=str(out)), on_iteration=interrupt)
    return out


def test_the_manifest_names_every_file_the_run_wrote_with_its_hash(tmp_path):
    run = distill(DistillConfig(**{**FAST, "num_eval": 1, "eval_epochs": 1}, out=str(tmp_path / "run")))
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["format"] == "spectral-distill manifest 1"
    written = {
        "config.json",
        "checkpoint.pt",
        "metrics.jsonl",
        "synthetic.pt",
        "grid.png",
        "eval.json",
        "environment.json",
    }
    assert set(manifest["files"]) == written
    for name in written:
        latest = manifest["files"][name][-1]
        assert latest == {"bytes": (run / name).stat().st_size, "sha256": _sha256(run / name)}, name


def test_overwrite_replaces_an_interrupted_run_whose_log_grew_after_its_last_record(tmp_path):
    """metrics.jsonl is appended to between checkpoints; the rows after the last one are the
    run's too (the manifest holds the log's length and hash at each checkpoint, and the log only
    grows), so an interrupted run can still be replaced."""
    run = _interrupted(tmp_path / "run")
    recorded = json.loads((run / "manifest.json").read_text())["files"]["metrics.jsonl"][-1]["bytes"]
    assert (run / "metrics.jsonl").stat().st_size > recorded  # the case this test is about
    (run / "notes.txt").write_text("mine")
    distill(DistillConfig(**{**FAST, "seed": 3}, out=str(run)), overwrite=True)
    assert json.loads((run / "config.json").read_text())["seed"] == 3
    assert (run / "notes.txt").read_text() == "mine"


def test_a_log_whose_recorded_part_was_edited_is_not_the_runs(tmp_path):
    run = _interrupted(tmp_path / "run")
    log = (run / "metrics.jsonl").read_bytes()
    (run / "metrics.jsonl").write_bytes(log.replace(b'"iteration": 0', b'"iteration": 9', 1))
    with pytest.raises(ConfigError, match="metrics.jsonl"):
        distill(DistillConfig(**FAST, out=str(run)), overwrite=True)
    assert (run / "checkpoint.pt").exists()


def test_a_run_killed_just_after_a_rename_still_owns_the_file(tmp_path, monkeypatch):
    """The manifest lists a file's new hash before the rename (and keeps the old one), so a crash
    just after the rename, or just before it, leaves a folder --overwrite can still replace."""
    run = distill(DistillConfig(**FAST, out=str(tmp_path / "run")))
    real_replace = os.replace

    def crash_on_the_checkpoint(a, b):
        real_replace(a, b)
        if str(b).endswith("checkpoint.pt"):
            raise KeyboardInterrupt

    monkeypatch.setattr(files.os, "replace", crash_on_the_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        distill(DistillConfig(**{**FAST, "seed": 1}, out=str(run)), overwrite=True)
    monkeypatch.setattr(files.os, "replace", real_replace)
    assert not [p.name for p in run.iterdir() if files.TEMP_MARK in p.name]
    distill(DistillConfig(**{**FAST, "seed": 2}, out=str(run)), overwrite=True)
    assert json.loads((run / "config.json").read_text())["seed"] == 2


def test_a_checkpoint_records_the_options_of_its_run(tmp_path):
    run = _interrupted(tmp_path / "run")
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    assert state["config"] == DistillConfig(**FAST, out=str(run)).to_dict()


def test_a_full_disk_while_saving_is_one_line_and_leaves_no_temporary_file(tmp_path):
    """torch.save reports a failed write as a RuntimeError, not an OSError; the CLI must still
    print one line (exit 2) naming the file, and the atomic write must leave nothing behind.
    RLIMIT_FSIZE makes every write past the limit fail with EFBIG (Python ignores SIGXFSZ)."""
    run = tmp_path / "run"
    limit = 4096  # above config.json, the manifest and the log's rows; below any checkpoint.pt

    def small_disk():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = subprocess.run(
        [CLI_SCRIPT, "distill", *FAST_CLI, "--out", str(run)],
        preexec_fn=small_disk,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert_one_line_error(proc, "checkpoint.pt", "File too large")
    assert not [p.name for p in run.iterdir() if files.TEMP_MARK in p.name]
    assert (run / "config.json").exists() and not (run / "checkpoint.pt").exists()


def test_a_log_beyond_64_mib_is_read_back_whole(tmp_path, capsys):
    """--iterations allows 10^9 rows (~45 bytes each): the log is read one line at a time, with a
    cap on a line, not on the file (which stopped show and --resume at about 1.15 M iterations)."""
    from spectral_kernels.cli import _show

    run = distill(DistillConfig(**FAST, out=str(tmp_path / "run")))
    rows = 2**26 // 40 + 1000
    with open(run / "metrics.jsonl", "w") as log:
        for start in range(0, rows, 100_000):
            log.write(
                "".join(
                    f'{{"iteration": {i}, "loss": 0.5, "seconds": 1.0}}\n'
                    for i in range(start, min(rows, start + 100_000))
                )
            )
    assert (run / "metrics.jsonl").stat().st_size > files.MAX_TEXT_BYTES
    _show(run)
    assert f"iterations run: {rows}," in capsys.readouterr().out


def test_torch_saves_failed_write_is_the_oserror_naming_the_file(tmp_path, monkeypatch):
    """What torch.save raises when its file cannot be written (RuntimeError "unexpected pos")
    becomes the OSError beneath it, naming the target, so the CLI prints it on one line."""
    import errno

    real_fdopen = os.fdopen

    class FullDisk:
        def __init__(self, f):
            self.f = f

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    monkeypatch.setattr(files.os, "fdopen", lambda fd, mode: FullDisk(real_fdopen(fd, mode)))
    target = tmp_path / "checkpoint.pt"
    with pytest.raises(OSError) as info:
        files.atomic_save({"images": torch.ones(100)}, target)
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(target)
    assert list(tmp_path.iterdir()) == []


def test_evaluate_and_resume_keep_a_user_file_under_the_name_of_one_they_rewrite(tmp_path):
    """evaluate redraws grid.png and a resumed run rewrites environment.json: a user's own file
    under either name is kept and named, as --overwrite keeps it."""
    from spectral_kernels.distill.evaluation import evaluate_run

    run = distill(DistillConfig(**FAST, out=str(tmp_path / "done")))
    (run / "grid.png").write_bytes(b"mine")
    with pytest.raises(ConfigError, match="grid.png"):
        evaluate_run(run, num_eval=1, epochs=1)
    assert (run / "grid.png").read_bytes() == b"mine" and not (run / "eval.json").exists()

    cut = _interrupted(tmp_path / "cut")
    (cut / "environment.json").write_text("mine")
    with pytest.raises(ConfigError, match="environment.json"):
        distill(DistillConfig(**FAST, out=str(cut)), resume=True)
    assert (cut / "environment.json").read_text() == "mine"
