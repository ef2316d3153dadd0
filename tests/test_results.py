"""What a run reports: eval.json's figures (sample std, t-interval, per-class and shot-group
accuracy), environment.json, `show`, and grid.png's layout for factor 1 and 2."""

import json
import math
import platform
import shlex
import statistics

import numpy as np
import pytest
import torch

from spectral_kernels.distill import formation
from spectral_kernels.distill.data import load_dataset
from spectral_kernels.distill.stats import summarise, t975

from .conftest import CLI_SCRIPT, run_cli

# ----------------------------------------------------------------------------- statistics


def _t_cdf_above_zero(q: float, df: int, steps: int = 20000) -> float:
    """P(0 < T < q) for Student's t, by Simpson's rule on its density (independent of the table)."""
    c = math.gamma((df + 1) / 2) / (math.sqrt(df * math.pi) * math.gamma(df / 2))
    f = lambda x: c * (1 + x * x / df) ** (-(df + 1) / 2)  # noqa: E731
    h = q / steps
    total = f(0) + f(q) + sum((4 if i % 2 else 2) * f(i * h) for i in range(1, steps))
    return total * h / 3


@pytest.mark.parametrize("df", [1, 2, 4, 9, 30, 31, 45, 200])
def test_t_quantiles_leave_two_and_a_half_percent_in_each_tail(df):
    assert _t_cdf_above_zero(t975(df), df) == pytest.approx(0.475, abs=2e-4)


def test_the_summary_is_the_sample_std_and_the_t_interval_of_the_mean():
    values = [0.41, 0.47, 0.38, 0.52, 0.44]
    got = summarise(values)
    assert got["mean"] == pytest.approx(statistics.fmean(values))
    assert got["std"] == pytest.approx(statistics.stdev(values))  # n - 1, not pstdev
    assert got["std"] != pytest.approx(statistics.pstdev(values))
    half = t975(4) * statistics.stdev(values) / math.sqrt(5)
    assert got["ci95"] == pytest.approx([statistics.fmean(values) - half, statistics.fmean(values) + half])
    one = summarise([0.5])
    assert one == {"mean": 0.5, "std": None, "ci95": None}  # no spread measured, not a spread of 0


# ----------------------------------------------------------------------------- a run's reports

RUN_ARGS = (
    "--dataset digits-lt --method random --ipc 2 --width 8 --batch-real 4 --num-eval 3 --eval-epochs 2 --quiet"
).split()


@pytest.fixture(scope="module")
def evaluated_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("results") / "run"
    proc = run_cli("distill", *RUN_ARGS, "--out", run)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return run


def test_eval_json_reports_sample_std_interval_and_per_class_accuracy(evaluated_run):
    result = json.loads((evaluated_run / "eval.json").read_text())
    accs = result["accuracies"]
    assert result["num_eval"] == len(accs) == 3
    assert result["accuracy_mean"] == pytest.approx(statistics.fmean(accs))
    assert result["accuracy_std"] == pytest.approx(statistics.stdev(accs))
    half = t975(2) * statistics.stdev(accs) / math.sqrt(3)
    assert result["accuracy_ci95"] == pytest.approx([result["accuracy_mean"] - half, result["accuracy_mean"] + half])
    dataset = load_dataset("digits-lt")
    per_class = result["per_class_accuracy"]
    assert len(per_class) == dataset.num_classes and all(0 <= a <= 1 for a in per_class)
    # Weighted by the test set's class sizes, the per-class accuracies give back the overall one.
    test_counts = torch.bincount(dataset.test_y, minlength=dataset.num_classes).tolist()
    weighted = sum(a * n for a, n in zip(per_class, test_counts)) / sum(test_counts)
    assert weighted == pytest.approx(result["accuracy_mean"], abs=1e-9)


def test_long_tailed_runs_report_many_medium_and_few_shot_means(evaluated_run):
    result = json.loads((evaluated_run / "eval.json").read_text())
    assert result["shot_thresholds"] == {"many": "> 100", "medium": "20-100", "few": "< 20"}
    counts = load_dataset("digits-lt").class_counts.tolist()  # 125 ... 12 training images
    want = {
        "many": [c for c, n in enumerate(counts) if n > 100],
        "medium": [c for c, n in enumerate(counts) if 20 <= n <= 100],
        "few": [c for c, n in enumerate(counts) if n < 20],
    }
    assert all(want.values()), want  # the bundled digits-lt has classes in every group
    assert result["shot_classes"] == want
    for group, classes in want.items():
        mean = statistics.fmean(result["per_class_accuracy"][c] for c in classes)
        assert result[f"{group}_shot_accuracy"] == pytest.approx(mean)


def test_a_balanced_run_reports_no_shot_groups(tmp_path):
    from spectral_kernels.distill.loop import DistillConfig, distill

    config = dict(dataset="digits", method="random", ipc=1, width=8, num_eval=2, eval_epochs=1, quiet=True)
    run = distill(DistillConfig(out=str(tmp_path / "b"), **config))
    result = json.loads((run / "eval.json").read_text())
    assert len(result["per_class_accuracy"]) == 10
    assert not any(key.endswith("_shot_accuracy") or key.startswith("shot_") for key in result)


def test_environment_json_records_versions_instruction_set_device_and_command(evaluated_run):
    import triton

    import spectral_kernels

    env = json.loads((evaluated_run / "environment.json").read_text())
    assert env["spectral_kernels"] == spectral_kernels.__version__
    assert env["torch"] == torch.__version__ and env["triton"] == triton.__version__
    assert env["cuda"] == torch.version.cuda
    assert env["torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    flags = ""
    if platform.machine() in ("x86_64", "AMD64"):
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    want = "avx512f" if "avx512f" in flags else "avx2" if "avx2" in flags else "default"
    assert env["cpu_kernels"] == want
    assert env["device"] == "cpu" and env["device_name"]
    assert shlex.split(env["command_line"])[:2] == [CLI_SCRIPT, "distill"]
    assert "--num-eval" in env["command_line"]


def test_show_prints_the_interval_per_class_and_shot_accuracy(evaluated_run):
    proc = run_cli("show", evaluated_run)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((evaluated_run / "eval.json").read_text())
    out = proc.stdout
    low, high = (100 * v for v in result["accuracy_ci95"])
    assert f"sample std {100 * result['accuracy_std']:.2f}" in out
    assert f"95% interval [{low:.2f}, {high:.2f}]" in out and "3 seeds" in out
    assert "per class: " + " ".join(f"{100 * a:.1f}" for a in result["per_class_accuracy"]) in out
    assert f"many-shot (> 100 training images): {100 * result['many_shot_accuracy']:.2f}" in out
    assert "few-shot (< 20 training images)" in out
    assert "environment: " in out and torch.__version__ in out


# ----------------------------------------------------------------------------- grid.png


def _grid_geometry(grid, rows, per_row, cell, group):
    """(title height, label width) of a grid with `rows` rows of `per_row` cells of `cell`
    pixels, an extra GROUP_GAP after every `group` cells."""
    from spectral_kernels.distill.pictures import PAD

    title_h = grid.shape[0] - rows * (cell + PAD) - PAD
    label_w = grid.shape[1] - per_row * (cell + PAD) - PAD - _gap(per_row - 1, group)
    return title_h, label_w


def _gap(col, group):
    from spectral_kernels.distill.pictures import GROUP_GAP

    return (col // group) * GROUP_GAP if group > 1 else 0  # groups of one are not set apart


@pytest.mark.parametrize("factor", [1, 2])
def test_grid_png_shows_the_decoded_images_under_a_title(tmp_path, factor):
    from PIL import Image

    from spectral_kernels.distill.loop import DistillConfig, distill
    from spectral_kernels.distill.pictures import MIN_CELL, PAD

    config = dict(dataset="digits", method="random", ipc=2, width=8, num_eval=0, quiet=True, factor=factor)
    run = distill(DistillConfig(out=str(tmp_path / "g"), **config))
    saved = torch.load(run / "synthetic.pt")
    grid = np.asarray(Image.open(run / "grid.png").convert("RGB"))
    per_class = 2 * factor * factor  # every decoded image: factor^2 per stored one
    scale = MIN_CELL // 8
    cell = 8 * scale
    title_h, label_w = _grid_geometry(grid, 10, per_class, cell, factor * factor)
    assert title_h > 0 and (grid[:title_h] < 128).any(), "no title drawn"
    assert 0 < label_w < grid.shape[1] // 2
    dataset = load_dataset("digits")
    shown = formation.decode(saved["images"], factor) * dataset.std + dataset.mean
    want_pixels = (shown.clamp(0, 1) * 255).round().to(torch.uint8)
    labels = formation.decoded_labels(saved["labels"], factor)
    for c in (0, 9):
        top = title_h + PAD + c * (cell + PAD)
        for col, i in enumerate(torch.nonzero(labels == c).flatten().tolist()):
            left = label_w + PAD + col * (cell + PAD) + _gap(col, factor * factor)
            got = grid[top : top + cell, left : left + cell, 0].astype(int)
            want = want_pixels[i, 0].int().repeat_interleave(scale, 0).repeat_interleave(scale, 1).numpy()
            assert np.array_equal(got, want), (factor, c, col)


def test_grid_png_is_redrawn_with_the_accuracy_after_evaluation(tmp_path):
    from PIL import Image

    from spectral_kernels.distill.evaluation import evaluate_run
    from spectral_kernels.distill.loop import DistillConfig, distill

    config = dict(dataset="digits", method="random", ipc=1, width=8, num_eval=0, quiet=True)
    run = distill(DistillConfig(out=str(tmp_path / "r"), **config))
    before = np.asarray(Image.open(run / "grid.png").convert("RGB"))
    evaluate_run(run, num_eval=2, epochs=1)
    after = np.asarray(Image.open(run / "grid.png").convert("RGB"))
    from spectral_kernels.distill.pictures import MIN_CELL, PAD

    assert after.shape[0] > before.shape[0] and after.shape[1] >= before.shape[1]  # a title line more
    rows = 10 * (MIN_CELL + PAD)  # the images and class names, unchanged below the title
    assert np.array_equal(after[-rows:, : before.shape[1]], before[-rows:])


def test_one_evaluation_seed_reports_no_spread_and_show_still_reads_it(tmp_path, capsys):
    from spectral_kernels.cli import main as cli
    from spectral_kernels.distill.evaluation import evaluate_run
    from spectral_kernels.distill.files import iter_metrics
    from spectral_kernels.distill.loop import DistillConfig, distill

    config = dict(dataset="digits", method="random", ipc=1, width=8, num_eval=0, quiet=True)
    run = distill(DistillConfig(out=str(tmp_path / "one"), **config))
    result = evaluate_run(run, num_eval=1, epochs=1)
    assert result["accuracy_std"] is None and result["accuracy_ci95"] is None  # not 0: nothing was measured
    assert json.loads((run / "eval.json").read_text())["accuracy_std"] is None
    assert list(iter_metrics(run / "metrics.jsonl"))[-1]["accuracy_std"] is None
    assert cli(["show", str(run)]) == 0
    assert f"evaluation: {100 * result['accuracy_mean']:.2f} % mean over 1 seed (1 epochs)" in capsys.readouterr().out
