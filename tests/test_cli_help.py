"""`spectral-distill --help` a newcomer can read (issue 25, item 4): options in named groups,
the allowed values of every named option shown, each default once, the optimiser named as the
code uses it, and --version. The parser is built in-process (no subprocess, no run)."""

import re

import pytest

import spectral_kernels
from spectral_kernels.cli import _parser, main
from spectral_kernels.distill.config import OPTIMIZERS
from spectral_kernels.distill.methods import METHODS


def _help(capsys, *argv) -> str:
    with pytest.raises(SystemExit) as done:
        main([*argv, "--help"])
    assert done.value.code == 0
    return capsys.readouterr().out


def _entries(text: str) -> dict:
    """{"--flag": its help text on one line} from an argparse help page."""
    entries, current = {}, None
    for line in text.splitlines():
        found = re.match(r"^  (-[-\w]+)", line)
        if found:
            current = found.group(1)
            entries[current] = line
        elif current and line.startswith("    "):
            entries[current] += " " + line.strip()
        else:
            current = None
    return {flag: " ".join(words.split()) for flag, words in entries.items()}


def test_distill_help_groups_the_options_and_shows_the_choices(capsys):
    text = _help(capsys, "distill")
    for group in ("data:", "method:", "recipe:", "optimisation:", "evaluation:", "run:"):
        assert f"\n{group}\n" in text, group
    assert "{" + ",".join(METHODS) + "}" in text  # e.g. {random,dm,mmd,ncfm,sdd,csdm}
    entries = _entries(text)
    for flag in ("--dataset", "--method", "--kernel", "--optimizer", "--eval-optimizer", "--recipe", "--amp"):
        assert re.search(rf"{flag} \{{[\w,-]+\}}", entries[flag]), entries[flag]
    # every option of the parser appears in one of the named groups, none left under "options:"
    listed = text.split("\noptions:\n", 1)[1].split("\n\n", 1)[0]
    assert set(_entries(listed)) == {"-h"}, listed


@pytest.mark.parametrize("command", ["distill", "evaluate"])
def test_each_default_is_printed_once(capsys, command):
    for flag, words in _entries(_help(capsys, command)).items():
        assert words.lower().count("default") <= 1, (flag, words)


def test_the_learning_rate_names_the_optimisers_the_code_uses(capsys):
    words = _entries(_help(capsys, "distill"))["--lr"].lower()
    assert all(name in re.findall(r"\w+", words) for name in OPTIMIZERS), words  # adam and adamw, not "Adam"


def test_version_prints_the_library_version(capsys):
    with pytest.raises(SystemExit) as done:
        _parser().parse_args(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"spectral-distill {spectral_kernels.__version__}"
