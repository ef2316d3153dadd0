"""The package's structure, held against its description: no import cycle between the modules of
spectral_kernels (an import inside a function counts as much as one at the top: it is still a
dependency, only a later one), and docs/architecture.md names every module and no module that
does not exist, so the map of who calls whom cannot drift from the code."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "spectral_kernels"
DOC = ROOT / "docs" / "architecture.md"


def modules(package: Path = PACKAGE) -> dict[str, Path]:
    """{dotted name: file} of every module of the package; a package's __init__.py is the package."""
    found = {}
    for path in sorted(package.rglob("*.py")):
        if path.name.startswith("_build_info"):
            continue  # written by setup.py at build time (git ignores it), not part of the source
        parts = path.relative_to(package.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def defined(path: Path) -> set[str]:
    """The names a module binds at its top level (definitions, assignments, imports)."""
    names = set()
    for node in ast.parse(path.read_text(), filename=str(path)).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(alias.asname or alias.name).partition(".")[0] for alias in node.names}
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {n.id for target in targets for n in ast.walk(target) if isinstance(n, ast.Name)}
    return names


def imports(name: str, path: Path, found: dict[str, Path]) -> set[str]:
    """The package's modules that module `name` imports, anywhere in its body. `from X import n`
    is an import of the submodule X.n when there is one, of X when X defines n, and of nothing
    in the graph otherwise (a compiled submodule: `from .. import _C`). The parent packages
    Python runs first for `import a.b.c` are not counted: each package's __init__ imports its
    own submodules, so those edges would make every package a circle by construction, and
    Python orders them by design (the parent first)."""
    known = set(found)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    edges = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            edges |= {alias.name for alias in node.names if alias.name in known}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            if base not in known:
                continue  # outside the package (torch, triton, ...)
            for alias in node.names:
                if f"{base}.{alias.name}" in known:
                    edges.add(f"{base}.{alias.name}")
                elif alias.name == "*" or alias.name in defined(found[base]):
                    edges.add(base)
    edges.discard(name)
    return edges


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    found = modules(package)
    return {name: imports(name, path, found) for name, path in found.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each as a sorted list."""
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return components


def test_the_graph_reader_sees_imports_at_every_level_and_of_every_form(tmp_path):
    """The checker itself, on a made-up package: a circle closed only by a function-level import
    is found, and `from . import name` goes to the submodule or to the package as it should."""
    pkg = tmp_path / "spectral_kernels"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from .a import f\nVALUE = 1\n")
    (pkg / "a.py").write_text("from . import _C, b\n\ndef f():\n    return b\n")  # _C: compiled, not in the graph
    (pkg / "b.py").write_text("def g():\n    from .a import f\n    return f\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "c.py").write_text("from .. import VALUE\nimport spectral_kernels.b\nimport torch\n")
    graph = import_graph(pkg)
    assert graph == {
        "spectral_kernels": {"spectral_kernels.a"},
        "spectral_kernels.a": {"spectral_kernels.b"},
        "spectral_kernels.b": {"spectral_kernels.a"},
        "spectral_kernels.sub": set(),
        "spectral_kernels.sub.c": {"spectral_kernels", "spectral_kernels.b"},
    }
    assert cycles(graph) == [["spectral_kernels.a", "spectral_kernels.b"]]


def test_the_package_imports_form_no_cycle():
    graph = import_graph()
    # the registry imports its backends inside a function: those imports must count too
    assert len(graph) > 30 and "spectral_kernels.ops.triton_ecf" in graph["spectral_kernels.ops"]
    found = cycles(graph)
    detail = [", ".join(f"{m} -> {sorted(graph[m] & set(component))}" for m in component) for component in found]
    assert not found, "import cycles (module -> what it imports inside the cycle):\n" + "\n".join(detail)


# A module is named in docs/architecture.md as its path under spectral_kernels/ in backticks.
NAMED = re.compile(r"`([\w/]+\.py)`")


def test_the_architecture_doc_names_every_module_and_only_modules_that_exist():
    named = set(NAMED.findall(DOC.read_text()))
    present = {path.relative_to(PACKAGE).as_posix() for path in modules().values()}
    assert not present - named, f"modules docs/architecture.md does not describe: {sorted(present - named)}"
    assert not named - present, f"docs/architecture.md names modules that do not exist: {sorted(named - present)}"
