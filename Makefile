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

clean:
	rm -rf build $(VENV) spectral_kernels/*.so *.egg-info
