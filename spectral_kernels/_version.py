"""The version, in one place: pyproject.toml reads it from here (statically, without importing
the package), and spectral_kernels.__version__ falls back to it when no metadata is installed."""

VERSION = "0.1.0"
