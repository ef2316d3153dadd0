"""The statistics and bookkeeping of benchmarks/bench_recipe.py: the intervals its tables print
(against scipy's t distribution), the seed-by-seed pairing, the order cells run in, and the
rerun rule (a finished cell is read back, never run again)."""

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
from scipy import stats

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_recipe", ROOT / "benchmarks" / "bench_recipe.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_recipe"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("values", [[51.0, 53.5], [40.1, 42.0, 39.5, 41.2, 43.3], [1.0, 2.0, 4.0, 8.0, 16.0, 32.0]])
def test_interval_is_the_95_percent_t_interval(bench, values):
    mean, half = bench.interval(values)
    low, high = stats.t.interval(0.95, len(values) - 1, loc=stats.tmean(values), scale=stats.sem(values))
    assert mean == pytest.approx((low + high) / 2) and half == pytest.approx((high - low) / 2, rel=1e-3)


def test_one_value_has_no_interval(bench):
    mean, half = bench.interval([57.0])
    assert mean == 57.0 and math.isnan(half)


def test_paired_differences_are_taken_seed_by_seed(bench):
    a = {"accuracies": "50.00 52.00 54.00"}
    b = {"accuracies": "51.00 54.00 57.00"}  # +1, +2, +3
    mean, half = bench.paired(a, b)
    assert mean == pytest.approx(2.0)
    assert half == pytest.approx(stats.t.ppf(0.975, 2) * 1.0 / math.sqrt(3), rel=1e-3)


def test_grid_cells_run_the_headline_comparisons_first_and_each_cell_once(bench):
    cells = bench.grid_cells(bench.SETTINGS)
    assert cells[:3] == [("animals-lt", 50, 10), ("animals-lt", 10, 10), ("animals-lt", 100, 10)]
    assert len(cells) == len(set(cells))
    expected = {(d, i, p) for d, s in bench.SETTINGS.items() for i in s["imbalances"] for p in s["ipcs"]}
    assert set(cells) == expected
    position = {cell: i for i, cell in enumerate(cells)}
    later = lambda a, b: min(position[c] for c in cells if c[::2] == a) > max(position[c] for c in cells if c[::2] == b)
    # animals-lt IPC 10, then IPC 1, then digits-lt (IPC 10, then 1), then animals-lt IPC 20.
    assert later(("animals-lt", 1), ("animals-lt", 10)) and later(("digits-lt", 10), ("animals-lt", 1))
    assert later(("digits-lt", 1), ("digits-lt", 10)) and later(("animals-lt", 20), ("digits-lt", 1))


def test_a_finished_cell_is_read_back_not_run_again(bench, tmp_path, monkeypatch):
    row = dict(stage="grid", dataset="digits-lt", imbalance=10, ipc=1, method="dm", variant="recipe", seed=0,
               accuracy_mean=80.0, accuracy_std=1.0, accuracies="79.00 81.00", distill_seconds=1.0, eval_seconds=1.0,
               flags="", device="test")  # fmt: skip
    path = tmp_path / "cells.csv"
    bench.append_row(path, row)
    monkeypatch.setattr(bench, "cli", lambda argv: pytest.fail(f"ran a finished cell: {argv}"))
    got = bench.run_cell("grid", "digits-lt", 10, 1, "dm", "recipe", [], bench.QUICK, path)
    assert got["accuracies"] == "79.00 81.00"


def test_an_ingredient_that_costs_accuracy_is_left_out_of_the_later_steps(bench, tmp_path, monkeypatch):
    # Fake cells: the third step costs 5 points on every seed (whole interval below 0), the
    # others gain 1; the flags each step ran with are recorded.
    steps = [("base", []), ("+ good", ["--good"]), ("+ bad", ["--bad"]), ("+ later", ["--later"])]
    gains = {"base": 0.0, "+ good": 1.0, "+ bad": -4.0, "+ later": 2.0}
    ran = {}

    def fake_cell(stage, dataset, imbalance, ipc, method, variant, flags, settings, csv_path, **_):
        ran[method, variant] = list(flags)
        accuracies = [50 + gains[variant] + seed / 10 for seed in range(5)]
        row = dict(stage=stage, dataset=dataset, imbalance=imbalance, ipc=ipc, method=method, variant=variant,
                   seed=0, accuracy_mean=sum(accuracies) / 5, accuracy_std=0.16,
                   accuracies=" ".join(f"{a:.2f}" for a in accuracies), distill_seconds=0, eval_seconds=0,
                   flags=" ".join(flags), device="test")  # fmt: skip
        bench.append_row(csv_path, row)
        return row

    monkeypatch.setattr(bench, "STEPS", steps)
    monkeypatch.setattr(bench, "run_cell", fake_cell)
    bench.stage_ablation(type("Args", (), dict(results=tmp_path, quick=True))(), bench.SETTINGS)
    for method in bench.ABLATION_METHODS:
        assert ran[method, "+ bad"] == ["--good", "--bad"]
        assert ran[method, "+ later"] == ["--good", "--later"]  # built on the last step kept
    table = (tmp_path / "recipe_ablation.md").read_text()
    bad = next(line for line in table.splitlines() if line.startswith("| + bad | "))
    assert bad.count("(left out)") == len(bench.ABLATION_METHODS) and "(left out)" not in table.split("| + bad")[0]
    assert "| + later | 52.20 ± 0.16 | +1.00 ± 0.00 |" in table  # against "+ good", not "+ bad"


def test_a_cell_whose_options_a_finished_run_had_is_read_from_that_run(bench, tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(bench, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(bench, "DEFAULT_RUNS", tmp_path / "runs")
    finished = dict(stage="ablation", dataset="digits-lt", imbalance=10, ipc=1, method="dm", variant="+ x", seed=0,
                    accuracy_mean=80.0, accuracy_std=1.0, accuracies="79.00 81.00", distill_seconds=3.0,
                    eval_seconds=1.0, flags="--factor 2", device="test")  # fmt: skip
    bench.append_row(bench.RESULTS / "recipe_ablation.csv", finished)
    run = bench.run_dir(finished)
    run.mkdir(parents=True)
    argv = bench.distill_argv("digits-lt", 10, 1, "dm", bench.QUICK, num_eval=2, seed=0, out=run) + ["--factor", "2"]
    (run / "config.json").write_text(json.dumps({**bench.resolved_options(argv), "out": str(run), "recipe": "thin"}))
    (run / "eval.json").write_text("{}")

    monkeypatch.setattr(bench, "cli", lambda argv: pytest.fail(f"ran a cell a finished run had: {argv}"))
    grid = tmp_path / "grid.csv"
    got = bench.run_cell("grid", "digits-lt", 10, 1, "dm", "recipe", ["--factor", "2"], bench.QUICK, grid, num_eval=2)
    assert (got["accuracies"], got["flags"], got["stage"]) == ("79.00 81.00", "--factor 2", "grid")
    assert bench.read_rows(grid)[0]["accuracies"] == "79.00 81.00"

    class Ran(Exception):
        pass

    def run_it(argv):
        raise Ran(argv)

    monkeypatch.setattr(bench, "cli", run_it)
    with pytest.raises(Ran):  # one option differs: a run of its own
        bench.run_cell("grid", "digits-lt", 10, 1, "dm", "other", ["--factor", "3"], bench.QUICK, grid, num_eval=2)


def test_csdm_is_compared_with_each_method_over_the_seeds_both_ran(bench):
    def row(method, seed, accuracies):
        return dict(
            dataset="animals-lt", imbalance="50", ipc="10", method=method, seed=str(seed), accuracies=accuracies
        )

    rows = [row("csdm", 0, "50 52"), row("csdm", 1, "51 55"), row("dm", 0, "49 50"), row("dm", 1, "50 50"),
            row("random", 0, "40 40"), row("dm", 0, "0 0") | dict(imbalance="10")]  # fmt: skip
    mean, half, n = bench.paired_with_csdm(rows, ("animals-lt", 50, 10), "dm")
    assert n == 4 and mean == pytest.approx((1 + 2 + 1 + 5) / 4)  # the imbalance-10 row is another cell
    assert half == pytest.approx(bench.interval([1, 2, 1, 5])[1])
    assert bench.paired_with_csdm(rows, ("animals-lt", 50, 10), "random")[2] == 2  # random has seed 0 only
    assert bench.paired_with_csdm(rows, ("animals-lt", 50, 10), "sdd") is None


def test_a_variant_is_compared_with_its_own_grid_cell_seed_by_seed(bench, tmp_path):
    def row(stage, imbalance, method, seed, accuracies):
        return dict(stage=stage, dataset="animals-lt", imbalance=imbalance, ipc=10, method=method, variant="v",
                    seed=seed, accuracy_mean=0, accuracy_std=0, accuracies=accuracies, distill_seconds=1.0,
                    eval_seconds=1.0, flags="", device="test")  # fmt: skip

    for r in (row("grid", 50, "dm", 0, "50 52"), row("grid", 100, "dm", 0, "40 40"), row("grid", 50, "dm", 1, "0 0")):
        bench.append_row(tmp_path / "distill_recipe.csv", r)
    bench.append_row(tmp_path / "recipe_fill.csv", row("fill", 100, "dm", 0, "41 43"))
    bench.write_fill_table(tmp_path, tmp_path / "fill.md")
    table = [line for line in (tmp_path / "fill.md").read_text().splitlines() if line.startswith("| 100 ")]
    assert table[0].startswith("| 100 | dm | noise | 40.00 ± 0.00 | — |")
    # +1 and +3 against the imbalance-100 cell of the same seed (not the imbalance-50 one, nor seed 1).
    assert f"| repeat | 42.00 ± {bench.interval([41, 43])[1]:.2f} | {bench._fmt(*bench.interval([1, 3]))} |" in table[1]


def test_the_alpha_table_pools_distillation_seeds_and_pairs_only_seeds_both_ran(bench, tmp_path):
    def row(alpha, seed, accuracies):
        return dict(stage="alpha", dataset="animals-lt", imbalance=50, ipc=10, method="csdm",
                    variant=f"alpha_head={alpha}", seed=seed, accuracy_mean=0, accuracy_std=0,
                    accuracies=accuracies, distill_seconds=0, eval_seconds=0, flags="", device="test")  # fmt: skip

    path = tmp_path / "recipe_alpha.csv"
    for r in [row(0.5, 0, "50 52"), row(0.9, 0, "53 56"), row(0.2, 0, "51 54"), row(0.5, 1, "40 44"),
              row(0.2, 1, "42 47")]:  # fmt: skip
        bench.append_row(path, r)
    bench.append_row(path, row(0.2, 0, "0 0") | dict(dataset="digits-lt"))  # another sweep: no pair with animals
    bench.write_alpha_table(path, tmp_path / "recipe_alpha.md")
    lines = (tmp_path / "recipe_alpha.md").read_text().splitlines()
    line = {tuple(c.strip() for c in ln.split("|")[2:4]): ln for ln in lines if ln.startswith("| animals-lt | 50 |")}
    assert len(line) == 3  # one line per alpha, whatever its number of seeds
    mean, half = bench.interval([50, 52, 40, 44])
    assert f"| {mean:.2f} ± {half:.2f} (4) | — |" in line["50", "0.5"]
    # 0.2 minus 0.5 seed by seed: +1 +2 (distillation seed 0), +2 +3 (seed 1).
    assert f"| {bench._fmt(*bench.interval([1, 2, 2, 3]))} (4) |" in line["50", "0.2"]
    assert f"| {bench._fmt(*bench.interval([3, 4]))} (2) |" in line["50", "0.9"]  # seed 0 only
    assert "| digits-lt | 50 | 0.2 | 0.00 ± 0.00 (2) | — |" in lines  # no 0.5 of its own to pair with


def test_the_grid_gives_every_matching_method_a_second_seed_after_the_first_seeds(bench, tmp_path, monkeypatch):
    # Fake cells far apart (the old rule seeded only methods within 2 points of another): every
    # matching method still gets seed 1, random does not, and no second seed runs before every
    # cell has its first seeds.
    ran = []

    def fake_cell(stage, dataset, imbalance, ipc, method, variant, flags, settings, csv_path, *, seed=0, **_):
        ran.append((dataset, imbalance, ipc, method, seed))
        accuracies = [10.0 * bench.METHODS.index(method) + e for e in range(2)]
        row = dict(stage=stage, dataset=dataset, imbalance=imbalance, ipc=ipc, method=method, variant=variant,
                   seed=seed, accuracy_mean=sum(accuracies) / 2, accuracy_std=0.7,
                   accuracies=" ".join(f"{a:.2f}" for a in accuracies), distill_seconds=0, eval_seconds=0,
                   flags=" ".join(flags), device="test")  # fmt: skip
        bench.append_row(csv_path, row)
        return row

    monkeypatch.setattr(bench, "run_cell", fake_cell)
    monkeypatch.setattr(bench, "plot_grid", lambda summary, path: None)
    args = type("Args", (), dict(results=tmp_path, quick=True, groups=None, methods=None))()
    bench.stage_grid(args, bench.SETTINGS)
    cells = bench.grid_cells({d: bench.QUICK for d in bench.SETTINGS})
    matching = set(bench.METHODS) - {"random"}
    first = [r for r in ran if r[4] == 0]
    second = [r for r in ran if r[4] == 1]
    assert sorted(first) == sorted((*c, m, 0) for c in cells for m in bench.METHODS)
    assert sorted(second) == sorted((*c, m, 1) for c in cells for m in matching)
    assert ran.index(second[0]) == len(first)  # every first seed before any second one

    ran.clear()
    args.methods = ["csdm", "dm"]  # a partial pass runs first seeds only
    bench.stage_grid(args, bench.SETTINGS)
    assert ran and all(seed == 0 and method in ("csdm", "dm") for *_, method, seed in ran)


def test_the_alpha_sweep_runs_each_dataset_with_its_own_second_seeds(bench, tmp_path, monkeypatch):
    ran = []

    def fake_cell(stage, dataset, imbalance, ipc, method, variant, flags, settings, csv_path, *, seed=0, **_):
        ran.append((dataset, imbalance, variant, seed))
        assert flags[-2:] == ["--alpha-head", variant.split("=")[1]] and settings is bench.SETTINGS[dataset]

    monkeypatch.setattr(bench, "run_cell", fake_cell)
    bench.stage_alpha(type("Args", (), dict(results=tmp_path, quick=False))(), bench.SETTINGS)
    for dataset, (imbalances, seeded) in bench.ALPHA_SWEEPS.items():
        for seed, alphas in ((0, bench.ALPHAS), (1, seeded)):
            expected = {(dataset, i, f"alpha_head={a}", seed) for i in imbalances for a in alphas}
            assert {r for r in ran if r[0] == dataset and r[3] == seed} == expected
    assert len(ran) == len(set(ran))


def test_a_caption_names_every_machine_its_cells_ran_on(bench):
    assert bench.devices([{"device": "a"}, {"device": "a"}]) == "Device: a."
    assert bench.devices([{"device": "a"}, {"device": "b"}, {"device": "a"}]) == "Devices: a (2 cells); b (1 cell)."


def test_the_grid_figure_shows_each_method_minus_dm_with_one_legend_and_a_title(bench, tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    saved = []
    monkeypatch.setattr(Figure, "savefig", lambda fig, path, **_: saved.append(fig))

    def row(imbalance, method, seed, accuracies):
        return dict(dataset="animals-lt", imbalance=str(imbalance), ipc="10", method=method, seed=str(seed),
                    accuracies=accuracies)  # fmt: skip

    rows = [row(1, "dm", 0, "50 52 54"), row(1, "csdm", 0, "51 55 56"), row(1, "random", 0, "30 31 32"),
            row(10, "dm", 0, "40 40 40"), row(10, "csdm", 0, "39 41 40"), row(10, "ncfm", 0, "42 43 41")]  # fmt: skip
    bench.plot_grid(rows, tmp_path / "grid.png")
    (fig,) = saved
    assert "minus DM" in fig._suptitle.get_text()
    assert len(fig.legends) == 1 and not any(ax.get_legend() for ax in fig.axes)  # one legend, outside the panels
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "csdm minus dm" in labels and "ncfm minus dm" in labels and not any("random" in t for t in labels)
    (ax,) = [ax for ax in fig.axes if ax.axison]
    csdm = next(c for c in ax.containers if c.get_label() == "csdm minus dm")
    ys = list(csdm.lines[0].get_ydata())
    assert ys == pytest.approx([(1 + 3 + 2) / 3, (-1 + 1 + 0) / 3])  # seed-by-seed differences to dm
