"""One name per concept from the library to the CLI and the config (issue 28, item 5).

The library's `structure` and `alpha_rule` are the CLI's --structure and --alpha-rule and the
config's `structure` and `alpha_rule`; the old names (--frequencies, --head-rule, and
`frequencies` / `head_rule` in files) still work until the next release, with a warning, and a
run folder an earlier version wrote still resumes, evaluates and shows. distill and evaluate
take --num-eval up to the same bound. The config is checked by the library's own checks, and a
recipe applies however a config is built.
"""

import inspect
import json
import re
from pathlib import Path

import pytest
import torch

import spectral_kernels as sk
from spectral_kernels.cli import main, parse_distill
from spectral_kernels.distill.config import INT_LIMITS, RECIPES, RENAMED, ConfigError, DistillConfig
from spectral_kernels.distill.evaluation import evaluate_run
from spectral_kernels.distill.loop import distill
from spectral_kernels.distill.manifest import save_run_file, write_run_text
from spectral_kernels.frequencies import STRUCTURES
from spectral_kernels.functional import ALPHA_RULES
from spectral_kernels.kernels import SPECTRAL_KERNELS

from .conftest import FAST_CLI

X = torch.randn(12, 3, generator=torch.Generator().manual_seed(0))
Y = torch.randn(6, 3, generator=torch.Generator().manual_seed(1))
XL, YL = torch.arange(12) % 2, torch.arange(6) % 2


def _help(capsys, command: str) -> str:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    return capsys.readouterr().out


def _entry(text: str, flag: str) -> str:
    """The help entry of `flag` in a help page, on one line."""
    found = re.search(rf"^  {flag}\b(.*?)(?=^  -|^\S|\Z)", text, flags=re.M | re.S)
    assert found, flag
    return " ".join(found.group(1).split())


def _error(call, *args, **kwargs) -> str | None:
    """The message of the TypeError/ValueError `call(*args, **kwargs)` raises; None if none."""
    try:
        call(*args, **kwargs)
    except (TypeError, ValueError) as error:
        return str(error)
    return None


# ----------------------------------------------------------------------------- names


def test_the_config_and_the_cli_use_the_library_names(capsys):
    # The names are the library's keyword arguments of the same concepts.
    assert "structure" in inspect.signature(sk.sdd).parameters
    assert "alpha_rule" in inspect.signature(sk.csdm).parameters
    options = DistillConfig().to_dict()
    assert {"structure", "alpha_rule"} <= set(options) and not set(RENAMED) & set(options)
    config = parse_distill(["distill", "--structure", "orthogonal", "--alpha-rule", "log-linear"])
    assert (config.structure, config.alpha_rule) == ("orthogonal", "log-linear")
    text = " ".join(_help(capsys, "distill").split())
    assert "--structure {" + ",".join(STRUCTURES) + "}" in text
    assert "--alpha-rule {" + ",".join(ALPHA_RULES) + "}" in text
    for old in RENAMED:  # not offered any more (their new flags' help says what they were)
        assert f"--{old.replace('_', '-')} {{" not in text


def test_the_method_help_says_that_ncfm_computes_the_ncfd_loss(capsys):
    entry = _entry(_help(capsys, "distill"), "--method")
    assert "ncfm" in entry and "ncfd" in entry, entry


def test_num_eval_has_one_upper_bound_and_zero_only_where_it_means_no_evaluation(capsys, tmp_path):
    entries = {command: _entry(_help(capsys, command), "--num-eval") for command in ("distill", "evaluate")}
    ranges = {c: tuple(int(v) for v in re.search(r"(\d+)\.\.(\d+)", e).groups()) for c, e in entries.items()}
    high = INT_LIMITS["num_eval"][1]
    assert ranges == {"distill": (0, high), "evaluate": (1, high)}, entries
    assert "0: no evaluation" in entries["distill"], entries
    # evaluate refuses what distill refuses, before looking at the run (which does not exist here)
    for value in (0, high + 1):
        with pytest.raises(ConfigError, match=rf"--num-eval must be an integer in \[1, {high}\], got {value}"):
            evaluate_run(tmp_path / "nowhere", num_eval=value)
    with pytest.raises(ConfigError, match="config.json"):  # the bound itself passes the range check
        evaluate_run(tmp_path / "nowhere", num_eval=high)
    with pytest.raises(ConfigError, match=r"--num-eval must be an integer in \[0, "):
        DistillConfig(num_eval=high + 1).validate(check_device=False)


# ----------------------------------------------------------------------------- the old names


def test_the_old_flags_still_work_and_each_prints_one_warning_naming_the_new_flag(tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["distill", *FAST_CLI, "--method", "csdm", "--frequencies", "orthogonal", "--head-rule", "log-linear"]
    assert main([*argv, "--out", str(run)]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all("warning" in line for line in err), err
    assert "--frequencies" in err[0] and "use --structure" in err[0], err
    assert "--head-rule" in err[1] and "use --alpha-rule" in err[1], err
    saved = json.loads((run / "config.json").read_text())
    assert (saved["structure"], saved["alpha_rule"]) == ("orthogonal", "log-linear")
    assert not set(RENAMED) & set(saved)


def test_an_old_flag_with_a_bad_value_is_still_one_line(tmp_path, capsys):
    assert main(["distill", *FAST_CLI, "--head-rule", "median", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "--alpha-rule" in err[0] and "'median'" in err[0] and "--head-rule is the old name" in err[0], err
    assert not (tmp_path / "run").exists()


def test_a_config_file_under_the_old_names(tmp_path, capsys):
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"frequencies": "orthogonal", "head_rule": "log-linear"}))
    config = parse_distill(["distill", "--config", str(path)])
    assert (config.structure, config.alpha_rule) == ("orthogonal", "log-linear")
    # a flag wins over the file's value, whichever name either uses
    assert parse_distill(["distill", "--config", str(path), "--structure", "hadamard"]).structure == "hadamard"
    assert parse_distill(["distill", "--config", str(path), "--head-rule", "binary"]).alpha_rule == "binary"
    argv = ["distill", *FAST_CLI, "--iterations", "0", "--config", str(path), "--out", str(tmp_path / "run")]
    assert main(argv) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(str(path) in line and "warning" in line for line in err), err
    assert "frequencies" in err[0] and "use structure" in err[0], err
    path.write_text(json.dumps({"frequencies": "iid", "structure": "iid"}))
    with pytest.raises(ConfigError, match="frequencies is the old name of structure"):
        parse_distill(["distill", "--config", str(path)])


BASE = dict(dataset="digits", method="csdm", ipc=1, iterations=4, width=8, batch_real=4, num_eval=0, quiet=True)
BASE.update(checkpoint_every=2, structure="orthogonal", alpha_rule="log-linear")


def _as_an_earlier_version_wrote_it(run, files):
    """Rewrite the run's files as a version before the renaming wrote them: config.json and the
    options recorded in checkpoint.pt / synthetic.pt under the old names, recorded in the
    manifest as that version recorded every file it wrote."""
    new_to_old = {new: old for old, new in RENAMED.items()}
    old_names = lambda values: {new_to_old.get(k, k): v for k, v in values.items()}
    for name in files:
        path = run / name
        if name == "config.json":
            values = old_names(json.loads(path.read_text()))
            assert set(RENAMED) <= set(values)
            write_run_text(json.dumps(values, indent=2) + "\n", path)
        else:
            state = torch.load(path, weights_only=True)
            state["config"] = old_names(state["config"])
            save_run_file(state, path)


def test_a_run_folder_of_an_earlier_version_resumes_evaluates_and_shows(tmp_path, capsys):
    whole = distill(DistillConfig(**BASE, out=str(tmp_path / "whole")))
    cut = tmp_path / "cut"

    def interrupt(iteration):
        if iteration == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        distill(DistillConfig(**BASE, out=str(cut)), on_iteration=interrupt)
    _as_an_earlier_version_wrote_it(cut, ["config.json", "checkpoint.pt"])
    resumed = distill(DistillConfig(**BASE, out=str(cut)), resume=True)
    same = [torch.load(r / "synthetic.pt", weights_only=True)["images"] for r in (whole, resumed)]
    assert torch.equal(*same)  # resumed to exactly the uninterrupted run's set

    _as_an_earlier_version_wrote_it(whole, ["config.json", "synthetic.pt"])
    capsys.readouterr()
    assert main(["evaluate", str(whole), "--num-eval", "1", "--eval-epochs", "1", "--quiet"]) == 0
    assert main(["show", str(whole)]) == 0
    out = capsys.readouterr().out
    assert "structure: orthogonal" in out and "alpha_rule: log-linear" in out and "evaluation:" in out


# ----------------------------------------------------------------------------- the library's checks


def _config_error(**options) -> str | None:
    try:
        DistillConfig(**options).validate(check_device=False)
    except ConfigError as error:
        return str(error)
    return None


def test_the_bandwidth_limits_are_the_librarys():
    info = torch.finfo(torch.float32)
    low, high = 16 / info.max, 1 / info.tiny  # the library's limits (SPEC §6), derived here from finfo
    for value in (low * 0.9, low * 1.1, 1.0, high * 0.9, high * 1.1, 0.0, -1.0, float("inf"), float("nan")):
        library = _error(sk.sample_frequencies, "gaussian", 8, 3, bandwidth=value, dtype=torch.float32)
        assert (library is None) == (low <= value <= high), (value, library)
        for method in ("sdd", "ncfm"):
            expected = None if library is None else f"--bandwidth: {library}"
            assert _config_error(method=method, bandwidth=value) == expected, (method, value)


def test_the_structure_and_alpha_rule_checks_are_the_librarys():
    for structure in (*STRUCTURES, "sobol"):
        for kernel in SPECTRAL_KERNELS:
            library = _error(sk.sdd, X, Y, kernel=kernel, structure=structure, num_freqs=8)
            expected = None if library is None else f"--structure: {library}"
            assert _config_error(method="sdd", kernel=kernel, structure=structure) == expected, (structure, kernel)
        # ncfm draws Gaussian frequencies whatever --kernel says
        library = _error(sk.sample_frequencies, "gaussian", 8, 3, structure=structure)
        expected = None if library is None else f"--structure: {library}"
        assert _config_error(method="ncfm", kernel="laplacian", structure=structure) == expected, structure
    for rule in (*ALPHA_RULES, "median"):
        library = _error(sk.csdm, X, Y, XL, YL, class_counts=[9, 3], alpha_rule=rule, num_freqs=8)
        expected = None if library is None else f"--alpha-rule: {library}"
        assert _config_error(method="csdm", alpha_rule=rule) == expected, rule


# ----------------------------------------------------------------------------- recipes


@pytest.mark.parametrize(
    "build",
    [
        lambda **o: DistillConfig(**o),
        lambda **o: DistillConfig.from_dict(o),
        lambda **o: parse_distill(["distill", *(f"--{k.replace('_', '-')}={v}" for k, v in o.items())]),
    ],
    ids=["constructor", "from_dict", "cli"],
)
def test_a_recipe_applies_however_the_config_is_built(build):
    for recipe, preset in RECIPES.items():
        config = build(recipe=recipe)
        assert config.recipe == recipe
        for name, value in preset.items():
            assert getattr(config, name) == value, (recipe, name)
    mine = build(recipe="ncfm", factor=1, optimizer="adam")  # explicit values win over the recipe's
    assert (mine.factor, mine.optimizer, mine.net_pool) == (1, "adam", RECIPES["ncfm"]["net_pool"])
    assert build().to_dict() == build(recipe="thin").to_dict()
    # a config built from a config's options is that config (its values now explicit)
    assert DistillConfig(**mine.to_dict()) == mine == DistillConfig.from_dict(mine.to_dict())


# ----------------------------------------------------------------------------- the README (issue 28, item 6)

ROOT = Path(__file__).resolve().parent.parent


def test_the_readme_is_short_and_its_layout_names_every_source_file():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 160
    block = re.search(r"^    csrc/.*?(?=^\S|\Z)", readme, flags=re.M | re.S)
    if block is None:  # the layout may instead be a page of its own
        assert "(docs/architecture.md)" in readme
        return
    sources = [p for p in (ROOT / "csrc").rglob("*") if p.suffix in {".cpp", ".h", ".cu", ".cuh"}]
    sources += [p for p in (ROOT / "spectral_kernels").glob("*.py") if not p.name.startswith("_build_info")]
    assert len(sources) > 20
    missing = [p.name for p in sources if not re.search(rf"(?<![\w.]){re.escape(p.name)}(?!\w)", block.group(0))]
    assert not missing, missing
