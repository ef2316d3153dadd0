"""What `spectral-distill` prints while it works (issue 25, item 3): a tqdm bar on stderr for
every phase (pool training: network, epoch, loss; matching: loss, it/s, ETA; evaluation: seed,
epoch, accuracy), a one-line summary of each phase on stdout, then the result line; --quiet
keeps only the result line, --verbose adds the run's config and metrics (`show`).

Bars are drawn only when stderr is a terminal; SPECTRAL_KERNELS_PROGRESS=1 forces them on (as
here: pytest's stderr is not a terminal), 0 off. The runs are tiny and in-process."""

import json
import re

from spectral_kernels.cli import main
from spectral_kernels.distill.pool import CACHE_ENV
from spectral_kernels.distill.progress import PROGRESS_ENV

TINY = "distill --dataset digits --method dm --ipc 1 --iterations 2 --width 8 --batch-real 4 --seed 11".split()


def _cli(argv, monkeypatch, capsys, tmp_path, *, bars):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))  # the pool is trained here, not loaded
    if bars is None:
        monkeypatch.delenv(PROGRESS_ENV, raising=False)
    else:
        monkeypatch.setenv(PROGRESS_ENV, bars)
    capsys.readouterr()
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert status == 0, err
    return out, err


def _drawn(err: str, *words) -> bool:
    """Some state of a bar (tqdm separates them with \\r) shows every word."""
    return any(all(w in state for w in words) for state in re.split(r"[\r\n]", err))


def test_every_phase_draws_a_bar_and_ends_in_a_summary_line(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    argv = [
        *TINY,
        "--dataset",
        "digits-lt",
        "--net-pool",
        1,
        "--pool-epochs",
        1,
        "--num-eval",
        2,
        "--eval-epochs",
        1,
        "--out",
        run,
    ]
    out, err = _cli(argv, monkeypatch, capsys, tmp_path, bars="1")
    assert _drawn(err, "pool", "network=1/1", "epoch=1/1", "loss=")
    assert _drawn(err, "dm on digits", "2/2", "loss=", "it/s")
    assert _drawn(err, "evaluation", "seed=2/2", "epoch=1/1", "acc=")
    lines = out.splitlines()
    assert [line.split(":")[0] for line in lines[:-1]] == ["pool", "matching", "evaluation"], out
    saved = json.loads((run / "eval.json").read_text())
    result = lines[-1]
    assert str(run) in result and f"{100 * saved['accuracy_mean']:.2f}" in result and "2 seeds" in result, result
    assert "config" not in out  # the config dump is behind --verbose (and `show`)


def test_without_a_terminal_nothing_but_errors_goes_to_stderr(tmp_path, monkeypatch, capsys):
    # so that a failure after a phase has run is still exactly one line on stderr
    out, err = _cli(
        [*TINY, "--num-eval", 1, "--eval-epochs", 1, "--out", tmp_path / "run"],
        monkeypatch,
        capsys,
        tmp_path,
        bars=None,
    )
    assert err == ""
    assert [line.split(":")[0] for line in out.splitlines()[:-1]] == ["matching", "evaluation"], out


def test_quiet_keeps_the_result_line_of_distill_and_evaluate(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    out, err = _cli([*TINY, "--num-eval", 0, "--quiet", "--out", run], monkeypatch, capsys, tmp_path, bars="1")
    assert err == "" and len(out.splitlines()) == 1 and str(run) in out and "not evaluated" in out, (out, err)
    evaluate = ["evaluate", run, "--num-eval", 1, "--eval-epochs", 1]
    out, err = _cli(evaluate, monkeypatch, capsys, tmp_path, bars="1")
    assert _drawn(err, "evaluation", "seed=1/1", "acc=") and "over 1 seed" in out.splitlines()[-1], (out, err)
    out, err = _cli([*evaluate, "--quiet"], monkeypatch, capsys, tmp_path, bars="1")
    assert err == "" and len(out.splitlines()) == 1 and "over 1 seed" in out, (out, err)


def test_verbose_adds_the_config_and_metrics(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    out, _ = _cli([*TINY, "--num-eval", 0, "--verbose", "--out", run], monkeypatch, capsys, tmp_path, bars=None)
    assert "config:" in out and "method: dm" in out and "iterations run: 2" in out, out
    assert str(run) in out.splitlines()[-1] and "not evaluated" in out.splitlines()[-1]
