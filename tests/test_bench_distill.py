"""benchmarks/bench_distill.py: the grid stays the default mode, and `steps --quick` writes the
step breakdown's CSV and Markdown with every part, variant, setting and machine field (their
structure, not their speed), and its split step does exactly what loop._step does."""

import csv
import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from spectral_kernels.distill import hardware

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"


def _load(name):
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))  # bench_distill imports bench_recipe and distill_steps by name
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench():
    return _load("bench_distill")


@pytest.fixture(scope="module")
def steps():
    return _load("distill_steps")


def test_the_grid_is_still_the_default_mode(bench):
    args = bench.parse_args([])
    assert args.mode == "grid" and Path(args.out) == bench.RESULTS / "distill_cpu"
    assert bench.parse_args(["--quick"]).mode == "grid"
    assert Path(bench.parse_args(["steps"]).out) == bench.RESULTS / "distill_step_cpu"
    quick = Path(bench.parse_args(["steps", "--quick"]).out)
    assert bench.RESULTS not in quick.parents  # a check never overwrites the committed results


def test_fp16_is_timed_only_off_the_cpu(steps):
    # The CLI refuses --amp fp16 on the CPU (hardware.amp_problem); a GPU gets it, alone and compiled.
    cpu, cuda = ([v.name for v in steps.variants(d)] for d in ("cpu", "cuda"))
    assert not any("fp16" in name for name in cpu)
    assert cuda == cpu[:2] + ["--amp fp16", "--compile", "--compile --amp bf16", "--compile --amp fp16"] + cpu[-1:]
    assert [v.slug for v in steps.variants("cuda")][-2:] == ["compile-amp-fp16", "channels-last"]


@pytest.fixture(scope="module")
def quick_run(bench, tmp_path_factory):
    # The eager compiler backend: dynamo traces the network as --compile does, without a C compiler.
    mp = pytest.MonkeyPatch()
    mp.setenv("SPECTRAL_KERNELS_COMPILE_BACKEND", "eager")
    out = tmp_path_factory.mktemp("steps") / "distill_step"
    try:
        bench.main(["steps", "--quick", "--out", str(out)])
    finally:
        mp.undo()
    return out


def test_steps_quick_writes_every_part_of_every_variant(steps, quick_run):
    rows = list(csv.DictReader(open(quick_run.with_suffix(".csv"))))
    assert rows and list(rows[0]) == steps.FIELDS
    names = [v.name for v in steps.variants("cpu")]
    assert names[0] == "eager" and {"--amp bf16", "--compile", "--compile --amp bf16", "channels-last"} <= set(names)
    timed = {(r["variant"], r["part"]): r for r in rows if r["section"] == "step"}
    assert set(timed) == {(n, p) for n in names for p in (*steps.PARTS, steps.SUM, steps.STEP)}
    for (name, part), row in timed.items():
        assert float(row["median_ms"]) > 0 and int(row["repeats"]) == steps.QUICK["repeats"]
        assert float(row["speedup_vs_eager"]) == (1.0 if name == "eager" else pytest.approx(
            float(timed["eager", part]["median_ms"]) / float(row["median_ms"]), rel=0.01, abs=0.002))  # fmt: skip
    for row in rows:  # every row says what ran and where
        cell = steps.QUICK
        assert (row["dataset"], float(row["imbalance"]), int(row["ipc"])) == (cell["dataset"], cell["imbalance"], 10)
        assert row["factor"] == "2" and row["recipe"] == "ncfm" and row["num_freqs"] == "64"
        assert row["cpu_isa"] == torch.backends.cpu.get_cpu_capability() and row["torch"] == torch.__version__
        assert row["cpu_bf16"] == str(hardware.cpu_has_bf16())
        assert row["device"] == "cpu"
    cli_variants = [n for n in names if n != "channels-last"]
    epochs = {(r["variant"], r["part"]) for r in rows if r["section"] == "epoch"}
    assert {v for v, _ in epochs} == set(cli_variants)
    assert {p for _, p in epochs} == {"pool epoch", "pool first epoch (with compilation)", "evaluation epoch",
                                      "evaluation first epoch (with compilation)", "evaluation test pass"}  # fmt: skip
    accuracy = [r for r in rows if r["section"] == "accuracy"]
    assert [r["variant"] for r in accuracy] == cli_variants
    for row in accuracy:
        values = [float(a) for a in row["accuracies"].split()]
        assert len(values) == steps.QUICK["num_eval"] and all(0 <= a <= 100 for a in values)
        assert float(row["accuracy_mean"]) == pytest.approx(sum(values) / len(values), abs=0.01)
    assert accuracy[0]["difference_vs_eager"] == "" and all(r["difference_vs_eager"] for r in accuracy[1:])
    assert {r["flags"] for r in accuracy} == {"", "--amp bf16", "--compile", "--amp bf16 --compile"}


def test_steps_quick_markdown_has_the_caption_and_a_column_per_variant(steps, quick_run):
    text = quick_run.with_suffix(".md").read_text()
    assert "python benchmarks/bench_distill.py steps --quick" in text and "--recipe ncfm" in text
    header = next(line for line in text.splitlines() if line.startswith("| part |"))
    assert header.split("|")[2:-1] == [f" {v.name} " for v in steps.variants("cpu")]
    for part in (*steps.PARTS, steps.SUM, steps.STEP, "pool epoch", "evaluation epoch"):
        assert any(line.startswith(f"| {part} |") for line in text.splitlines()), part
    assert "| option | accuracy | difference vs eager |" in text


def test_the_split_step_does_what_loop_step_does(steps, tmp_path, monkeypatch):
    # Two identical runs: one takes the benchmark's timed (cut) step, the other loop._step, at the
    # same iteration; the stored images and the optimiser's moments must agree to float rounding.
    monkeypatch.chdir(tmp_path)
    cell = dict(steps.QUICK)
    eager = steps.Variant("eager")
    with steps._cache(tmp_path / "pools"):
        a, lock_a = steps.prepared_run(cell, eager, "cpu", tmp_path / "a")
        b, lock_b = steps.prepared_run(cell, eager, "cpu", tmp_path / "b")
    try:
        assert torch.equal(a.syn, b.syn)
        before = a.syn.detach().clone()
        parts = steps.timed_step(a, 3)
        steps.loop._step(b, 3, 0.0)
        assert list(parts) == list(steps.PARTS)
        assert not torch.equal(a.syn.detach(), before)  # the step moved the images
        torch.testing.assert_close(a.syn, b.syn, rtol=1e-5, atol=1e-6)
        state_a, state_b = a.optimizer.state[a.syn], b.optimizer.state[b.syn]
        torch.testing.assert_close(state_a["exp_avg"], state_b["exp_avg"], rtol=1e-4, atol=1e-7)
    finally:
        for run, lock in ((a, lock_a), (b, lock_b)):
            run.metrics.close()
            lock.release()
