# Every target does the whole set-up from nothing into .venv (idempotent), then its job.
# torch, torchvision and triton come from the pip sources configured for this environment; uv and
# poetry would bypass them and download gigabytes, so plain pip it is.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
DEPS_STAMP := $(VENV)/.deps-installed
BUILD_STAMP := $(VENV)/.extension-built
CSRC := $(wildcard csrc/*.h csrc/*.cpp csrc/*/*.h csrc/*/*.cpp csrc/*/*.cu)
SOURCES := setup.py pyproject.toml $(wildcard csrc/*.cpp csrc/*/*.cpp csrc/*/*.cu csrc/*.h csrc/*/*.h)

.PHONY: demo test lint bench install clean

install: $(BUILD_STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)

$(DEPS_STAMP): $(PY) requirements-dev.txt
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

$(BUILD_STAMP): $(DEPS_STAMP) $(SOURCES)
	MAX_JOBS=2 $(PY) -m pip install -q -e . --no-build-isolation
	touch $@

demo: $(BUILD_STAMP)
	$(PY) examples/distill_demo.py

# ruff first: a lint or format failure fails the target before the (longer) build and suite.
test: lint $(BUILD_STAMP)
	$(PY) -m pytest -q tests

lint: $(DEPS_STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy  # the public modules, as pyproject.toml's [tool.mypy] lists them
	$(VENV)/bin/clang-format --dry-run --Werror $(CSRC)  # .clang-format; the PyPI wheel, so no apt in CI

bench: $(BUILD_STAMP)
	$(PY) benchmarks/bench_ops.py

# test-oldest: the whole suite with the oldest versions the project supports, those of the GPU
# machines it may be lent (Python 3.12, torch 2.11.0, triton 3.6.0, torchvision 0.26.0; pinned in
# requirements-oldest.txt, every other line of requirements-dev.txt as there), in a second venv,
# .venv-oldest. Both venvs install this tree in place (pip install -e), so each builds its own
# spectral_kernels/_C against its own torch: the file name carries the Python ABI tag
# (_C.cpython-311-*.so for .venv, _C.cpython-312-*.so here) and pip builds in a temporary folder,
# so neither build overwrites the other's and each interpreter imports only its own. That needs the
# two Pythons to differ: the venv is refused when OLDEST_PYTHON has the ABI tag of PYTHON.
# CI keeps the single .venv; run this where a second torch (several GB with its CUDA wheels) fits.
# `make clean` keeps .venv-oldest (that download) but removes the extensions and, with build/, the
# stamp below, so the next test-oldest builds its extension again.
.PHONY: test-oldest
OLDEST_PYTHON ?= python3.12
OLDEST_VENV := .venv-oldest
OLDEST_PY := $(OLDEST_VENV)/bin/python
OLDEST_DEPS_STAMP := $(OLDEST_VENV)/.deps-installed
OLDEST_BUILD_STAMP := build/oldest-extension-built
ABI_TAG := import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))

$(OLDEST_PY):
	@if [ "$$($(PYTHON) -c '$(ABI_TAG)')" = "$$($(OLDEST_PYTHON) -c '$(ABI_TAG)')" ]; then \
		echo "make test-oldest: OLDEST_PYTHON=$(OLDEST_PYTHON) and PYTHON=$(PYTHON) share an ABI tag, so their" \
			"extensions would overwrite each other in spectral_kernels/; pick another OLDEST_PYTHON" >&2; exit 2; fi
	$(OLDEST_PYTHON) -m venv $(OLDEST_VENV)

$(OLDEST_DEPS_STAMP): $(OLDEST_PY) requirements-oldest.txt requirements-dev.txt
	$(OLDEST_PY) -m pip install -q --upgrade pip
	grep -vE '^(torch|torchvision|triton)==' requirements-dev.txt > $(OLDEST_VENV)/requirements-rest.txt
	$(OLDEST_PY) -m pip install -q -r requirements-oldest.txt -r $(OLDEST_VENV)/requirements-rest.txt
	touch $@

$(OLDEST_BUILD_STAMP): $(OLDEST_DEPS_STAMP) $(SOURCES)
	MAX_JOBS=2 $(OLDEST_PY) -m pip install -q -e . --no-build-isolation
	mkdir -p build && touch $@

test-oldest: $(OLDEST_BUILD_STAMP)
	$(OLDEST_PY) -m pytest -q -rs tests  # -rs: every skip with its reason (the GPU's, and any other)

clean:
	rm -rf build $(VENV) spectral_kernels/*.so *.egg-info
