"""The README's Quickstart is what CI runs, and its example code runs as printed."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def test_quickstart_is_exactly_make_demo_and_make_test():
    quickstart = README.split("## Quickstart", 1)[1]
    first_block = re.search(r"```\n(.*?)```", quickstart, flags=re.S).group(1)
    assert first_block.split("\n")[:-1] == ["make demo", "make test"]


def test_ci_runs_the_readme_test_command_and_nothing_else():
    commands = [
        line.strip()
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.startswith("#") and not line.startswith(("set ", "cd "))
    ]
    assert commands == ["make test"]


def test_the_first_example_runs_and_prints_what_the_readme_shows(capsys):
    example = _blocks("python")[0]
    after = README.split(example, 1)[1]  # the block's closing fence, then the output block
    shown = after.split("```")[2].strip()
    exec(compile(example, "README example", "exec"), {})
    assert capsys.readouterr().out.strip() == shown


def test_the_training_step_example_of_the_api_page_runs():
    api = (ROOT / "docs" / "api.md").read_text()
    example = re.findall(r"```python\n(.*?)```", api, flags=re.S)[0]
    assert "loss.backward()" in example
    exec(compile(example, "docs/api.md example", "exec"), {})
