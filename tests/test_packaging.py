"""Installable by anyone: the sdist carries every source and is written without torch; a wheel
built from it installs next to nothing but torch and the declared dependencies and runs the CLI
from outside the repository; the compiled library refuses a torch it was not built against; a
missing dependency stops a run in one line before it does any work."""

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
import torch
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import spectral_kernels
from spectral_kernels import _version, cli
from spectral_kernels.distill import needs
from spectral_kernels.ops import torch_tie

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = Path(spectral_kernels.__file__).resolve().parent
TINY = ["--ipc", "1", "--iterations", "2", "--width", "8", "--batch-real", "4", "--quiet"]


def _env(**extra: str) -> dict:
    """This environment without PYTHONPATH: nothing may come from the source tree."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return {**env, **extra}


def _run(args, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=900, **kwargs)
    assert done.returncode == 0, f"{args} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


# -- the torch tie -------------------------------------------------------------------------------


def test_the_mismatch_message_names_both_builds_and_the_rebuild_command():
    assert torch_tie.mismatch("2.14.1+cu130", "13.0", "2.14.1+cu130", "13.0") is None
    message = torch_tie.mismatch("2.14.1+cu130", "13.0", "2.11.0+cpu", None)
    assert "torch 2.14.1+cu130 (CUDA 13.0)" in message and "torch 2.11.0+cpu (no CUDA)" in message
    assert "pip install --no-build-isolation" in message and "\n" not in message
    # A CPU and a CUDA build of one release differ in ABI: the local label counts.
    assert torch_tie.mismatch("2.14.1+cu130", "13.0", "2.14.1+cu128", "12.8") is not None


def _package_copy(tmp_path: Path, torch_version: str, cuda: str | None) -> Path:
    """The package with its compiled library, and a build record that says `torch_version`."""
    assert list(PACKAGE.glob("_C*.so")), "the extension is not built in the source tree (make install builds it)"
    site = tmp_path / "site"
    shutil.copytree(PACKAGE, site / "spectral_kernels", ignore=shutil.ignore_patterns("__pycache__"))
    (site / "spectral_kernels" / f"{torch_tie.BUILD_INFO_MODULE}.py").write_text(
        f"TORCH_VERSION = {torch_version!r}\nTORCH_CUDA_VERSION = {cuda!r}\nWITH_CUDA_KERNELS = False\n"
    )
    return site


def _import_from(site: Path) -> subprocess.CompletedProcess:
    code = "import spectral_kernels as sk; print(sk.available_backends())"
    return subprocess.run(
        [sys.executable, "-c", code], cwd=site, env=_env(PYTHONPATH=str(site)), capture_output=True, text=True
    )


def test_a_library_built_against_another_torch_is_refused_on_import(tmp_path):
    done = _import_from(_package_copy(tmp_path, "2.0.0+fake", "11.0"))
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("spectral_kernels.ops.torch_tie.TorchMismatchError: ")
    assert "torch 2.0.0+fake (CUDA 11.0)" in last and f"torch {torch.__version__} " in last
    assert "pip install" in last and "undefined symbol" not in done.stderr


def test_a_library_built_against_this_torch_loads(tmp_path):
    done = _import_from(_package_copy(tmp_path, torch.__version__, torch.version.cuda))
    assert done.returncode == 0, done.stderr
    assert "'cpu'" in done.stdout


# -- a missing dependency ------------------------------------------------------------------------


class _Metadata:
    """A stand-in for importlib.metadata.Distribution: a version and, when an installer wrote it,
    an INSTALLER file."""

    def __init__(self, version: str, installer: str | None):
        self.version, self.installer = version, installer

    def read_text(self, name: str):
        return self.installer if name == "INSTALLER" else None


def test_the_version_is_the_installed_one_not_the_build_leftover_in_the_source_tree():
    leftover, installed = _Metadata("0.1.0", None), _Metadata("0.1.0+pt2110cu130", "pip\n")
    assert spectral_kernels._version_of([leftover, installed]) == "0.1.0+pt2110cu130"
    assert spectral_kernels._version_of([installed, leftover]) == "0.1.0+pt2110cu130"
    assert spectral_kernels._version_of([leftover]) == "0.1.0"
    assert spectral_kernels._version_of([]) == _version.VERSION


def test_the_version_is_the_same_from_the_source_tree_and_from_elsewhere(tmp_path):
    # run from the tree's root, sys.path starts with the tree and its spectral_kernels.egg-info
    code = ["-c", "import spectral_kernels; print(spectral_kernels.__version__)"]
    here = _run([sys.executable, *code], cwd=ROOT, env=_env()).stdout.strip()
    elsewhere = _run([sys.executable, *code], cwd=tmp_path, env=_env()).stdout.strip()
    assert here == elsewhere == spectral_kernels.__version__


@pytest.mark.parametrize(
    "dataset,missing,words",
    [("digits", "PIL", ["grid.png", "pip install Pillow"]), ("digits-lt", "sklearn", ["pip install scikit-learn"])],
)
def test_a_missing_package_is_one_line_and_exit_2_before_any_work(
    tmp_path, monkeypatch, capsys, dataset, missing, words
):
    real_find_spec = needs.importlib.util.find_spec
    monkeypatch.setattr(
        needs.importlib.util, "find_spec", lambda name, *a: None if name == missing else real_find_spec(name, *a)
    )
    out = tmp_path / "run"
    assert cli.main(["distill", "--dataset", dataset, *TINY, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and all(w in err for w in words), err
    assert not out.exists()  # refused before the run folder was made


def test_evaluate_without_pillow_is_one_line_before_any_training(tmp_path, monkeypatch, capsys):
    """evaluate redraws grid.png: without Pillow it refuses before training, not with a traceback
    after it."""
    out = tmp_path / "run"
    assert cli.main(["distill", "--dataset", "digits", *TINY, "--num-eval", "0", "--out", str(out)]) == 0
    real_find_spec = needs.importlib.util.find_spec
    monkeypatch.setattr(
        needs.importlib.util, "find_spec", lambda name, *a: None if name == "PIL" else real_find_spec(name, *a)
    )
    capsys.readouterr()
    assert cli.main(["evaluate", str(out), "--num-eval", "1", "--eval-epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install Pillow" in err, err
    assert not (out / "eval.json").exists()


# -- sdist -> wheel -> install -> distil ---------------------------------------------------------


@pytest.fixture(scope="module")
def sdist(tmp_path_factory) -> Path:
    """The sdist, written through the PEP 517 hook (what `python -m build --sdist` calls) with a
    torch that cannot be imported: writing it must not need torch."""
    tmp = tmp_path_factory.mktemp("sdist")
    (tmp / "no_torch" / "torch").mkdir(parents=True)
    (tmp / "no_torch" / "torch" / "__init__.py").write_text("raise ImportError('the sdist build imported torch')\n")
    code = f"from setuptools import build_meta; print(build_meta.build_sdist({str(tmp / 'dist')!r}))"
    (tmp / "dist").mkdir()
    done = _run([sys.executable, "-c", code], cwd=ROOT, env=_env(PYTHONPATH=str(tmp / "no_torch")))
    return tmp / "dist" / done.stdout.strip().splitlines()[-1]


def test_the_sdist_carries_every_source_the_licences_docs_and_tests(sdist):
    with tarfile.open(sdist) as tar:
        names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
        pkg_info = tar.extractfile(f"{sdist.name.removesuffix('.tar.gz')}/PKG-INFO").read().decode()
    wanted = [p.relative_to(ROOT).as_posix() for p in (ROOT / "csrc").rglob("*") if p.suffix in (".h", ".cpp", ".cu")]
    wanted += [p.relative_to(ROOT).as_posix() for p in [*ROOT.glob("docs/*.md"), *ROOT.glob("tests/*.py")]]
    wanted += ["LICENSE", "README.md", "MANIFEST.in", "setup.py", "pyproject.toml", "spectral_kernels/py.typed"]
    assert any(w.startswith("csrc/cuda/") and w.endswith(".cu") for w in wanted)
    assert sorted(set(wanted) - names) == []
    assert not [n for n in names if n.endswith((".so", ".pyc")) or "_build_info" in n]
    assert "License-Expression: MIT" in pkg_info and "Operating System :: POSIX :: Linux" in pkg_info
    assert f"Version: {_version.VERSION}\n" in pkg_info  # no torch label on the sdist
    assert "](docs/" not in pkg_info  # relative links do not resolve on a package index
    assert f"pip install --no-build-isolation {sdist.name}\n" in (ROOT / "README.md").read_text()


def _requirement_closure(requirements: list[str]) -> set[str]:
    """The installed distributions that `requirements` need, transitively (markers evaluated,
    extras followed)."""
    found, todo = set(), [(Requirement(r), "") for r in requirements]
    while todo:
        requirement, extra = todo.pop()
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": extra}):
            continue
        name = canonicalize_name(requirement.name)
        key = (name, tuple(sorted(requirement.extras)))
        if key in found:
            continue
        found.add(key)
        for line in importlib.metadata.distribution(name).requires or []:
            sub = Requirement(line)
            extras = [""] + sorted(requirement.extras)
            if sub.marker is None or any(sub.marker.evaluate({"extra": e}) for e in extras):
                todo.append((Requirement(str(sub).split(";")[0]), ""))
    return {name for name, _ in found}


def _link_distribution(name: str, site: Path) -> None:
    """Make the installed distribution `name` visible in `site` (a venv's site-packages) by
    linking its top-level entries: a venv cannot inherit another venv's packages."""
    dist = importlib.metadata.distribution(name)
    for top in {Path(str(f)).parts[0] for f in dist.files or []}:
        if top != ".." and not (site / top).exists():
            (site / top).symlink_to(Path(str(dist.locate_file(top))))


def test_a_wheel_built_from_the_sdist_installs_and_distils_outside_the_repository(sdist, tmp_path):
    with tarfile.open(sdist) as tar:
        tar.extractall(tmp_path / "src", filter="data")
    (unpacked,) = (tmp_path / "src").iterdir()
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    _run(
        [*pip, "wheel", "--no-build-isolation", "--no-deps", "--no-index", "-w", tmp_path / "wheels", unpacked],
        # The CI venv's bin/ on the PATH: its ninja (torch falls back to a serial build without).
        env=_env(FORCE_CPU="1", MAX_JOBS="2", PATH=f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"),
    )
    (wheel,) = (tmp_path / "wheels").glob("*.whl")
    release = re.match(r"\d+(\.\d+)*", torch.__version__).group(0).replace(".", "")
    label = f"pt{release}{'cu' + torch.version.cuda.replace('.', '') if torch.version.cuda else 'cpu'}"
    assert wheel.name.startswith(f"spectral_kernels-{_version.VERSION}+{label}-")
    with zipfile.ZipFile(wheel) as z:
        metadata = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
        info = z.read(f"spectral_kernels/{torch_tie.BUILD_INFO_MODULE}.py").decode()
    assert f"TORCH_VERSION = {torch.__version__!r}" in info
    declared = [line.split(": ", 1)[1] for line in metadata.splitlines() if line.startswith("Requires-Dist: ")]
    needed = _requirement_closure([r for r in declared if "extra ==" not in r])

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv])
    python = venv / "bin" / "python"
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    for name in needed - {"pillow"}:
        _link_distribution(name, site)
    _run([*pip, "--python", python, "install", "--no-index", "--no-deps", wheel])
    work = tmp_path / "elsewhere"
    work.mkdir()
    cli_script = venv / "bin" / "spectral-distill"

    # Without Pillow (a dependency, so only --no-deps or an uninstall gets here): one line, exit
    # 2, and no run folder, before any training.
    refused = subprocess.run(
        [cli_script, "distill", "--dataset", "digits", *TINY, "--out", "no-pillow"],
        cwd=work,
        env=_env(),
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    assert "pip install Pillow" in refused.stderr and not (work / "no-pillow").exists()

    _link_distribution("pillow", site)
    _run([*pip, "--python", python, "check"])  # every declared dependency is there
    where = _run(
        [python, "-c", "import spectral_kernels as sk; print(sk.__file__, sk.__version__, sk.available_backends())"],
        cwd=work,
        env=_env(),
    )
    assert where.stdout.startswith(str(site)) and f"+{label} " in where.stdout and "'cpu'" in where.stdout
    for dataset in ("digits", "animals-lt"):
        _run(
            [
                cli_script,
                "distill",
                "--dataset",
                dataset,
                *TINY,
                "--num-eval",
                "1",
                "--eval-epochs",
                "1",
                "--out",
                dataset,
            ],
            cwd=work,
            env=_env(),
        )
        assert (work / dataset / "grid.png").stat().st_size > 0 and (work / dataset / "eval.json").exists()
