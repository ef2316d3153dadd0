"""The documentation has no dangling pointers: every relative link in README.md and docs/
names a file that exists (and, for a link into a Markdown file, a heading that exists there),
and every "SPEC §N" citation in the code and docs names a section of docs/SPEC.md."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")
CITATION = re.compile(r"SPEC §(\d+(?:\.\d+)?)")
SOURCES = ["spectral_kernels", "csrc", "benchmarks", "tests", "examples", "docs", "README.md", "setup.py", "Makefile"]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # no headings inside code blocks
    return {slug(m.group(1)) for m in re.finditer(r"^#+\s+(.*)$", text, flags=re.M)}


def links(page: Path):
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    for m in LINK.finditer(text):
        yield m.group(1) or m.group(2)


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(ROOT).as_posix() for p in PAGES])
def test_every_relative_link_points_to_a_file_and_heading_that_exist(page):
    dangling = []
    for target in links(page):
        if re.match(r"[a-z]+://|mailto:", target):
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            dangling.append(target)
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            dangling.append(f"{target} (no such heading)")
    assert not dangling, f"{page.name}: {dangling}"


def test_the_docs_exist_and_the_readme_links_each_page():
    readme = ROOT / "README.md"
    linked = {(readme.parent / t.partition("#")[0]).resolve() for t in links(readme) if not re.match(r"[a-z]+://", t)}
    for name in ("SPEC.md", "backends.md", "distillation.md", "benchmarks.md", "api.md"):
        assert (ROOT / "docs" / name).resolve() in linked, f"README does not link docs/{name}"


def test_every_spec_citation_names_a_section_of_docs_spec():
    sections = set(re.findall(r"^##+ (\d+(?:\.\d+)?)\.? ", (ROOT / "docs" / "SPEC.md").read_text(), flags=re.M))
    assert {"1", "2", "3", "4", "4.1", "5", "6", "7"} <= sections
    unknown = []
    for source in SOURCES:
        base = ROOT / source
        files = (
            [base]
            if base.is_file()
            else [p for p in base.rglob("*") if p.suffix in {".py", ".md", ".cpp", ".h", ".cu", ".sh"}]
        )
        for file in files:
            for number in CITATION.findall(file.read_text(errors="replace")):
                if number not in sections:
                    unknown.append(f"{file.relative_to(ROOT)}: SPEC §{number}")
    assert not unknown, unknown


def test_nothing_points_outside_the_repository_for_the_spec():
    for page in PAGES:
        assert "../shared" not in page.read_text(), page


def table_sections(text: str, level: str) -> dict[str, list[str]]:
    """Heading (of `level`, e.g. "###") -> the table rows under it, up to the next heading."""
    sections, name = {}, None
    for line in text.splitlines():
        if re.match(r"^#+\s", line):
            name = line[len(level) :].strip() if line.startswith(level + " ") else None
            if name is not None:
                sections[name] = []
        elif name is not None and line.startswith("|"):
            sections[name].append(line)
    return sections


def test_the_grid_tables_in_the_docs_are_the_committed_results():
    # docs/distillation.md copies the grid's tables; a rerun that lands new cells must bring
    # the copy along, or the page's prose and tables describe results that are no longer there.
    results = table_sections((ROOT / "benchmarks" / "results" / "distill_recipe.md").read_text(), "###")
    docs = table_sections((ROOT / "docs" / "distillation.md").read_text(), "####")
    assert results and all(results.values())
    for name, rows in results.items():
        assert docs.get(name) == rows, f"docs/distillation.md's '{name}' tables differ from distill_recipe.md"


def test_the_alpha_sweep_table_in_the_docs_is_the_committed_one():
    lines = (ROOT / "benchmarks" / "results" / "recipe_alpha.md").read_text().splitlines()
    table = "\n".join(line for line in lines if line.startswith("|"))
    assert table.count("\n") > 10 and table in (ROOT / "docs" / "distillation.md").read_text()
