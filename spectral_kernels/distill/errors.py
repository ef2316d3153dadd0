"""The driver's own errors, at the bottom of distill/ so that every module can raise them without
importing the module that raises them most (config.py, loop.py): hardware.py raised ConfigError
from config.py, which imports hardware.py, and evaluation.py raised DivergedError from loop.py,
which imports evaluation.py; both were import circles. DataError lives here with them."""

from __future__ import annotations


class ConfigError(ValueError):
    """A bad option value or an unusable run directory or file; the CLI prints it on one line
    and exits with status 2."""


class DivergedError(ConfigError):
    """The loss became NaN or infinite: the run stops, keeping its last checkpoint."""


class DataError(ValueError):
    """A dataset that cannot be loaded, with what to do about it."""
