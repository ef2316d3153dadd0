"""The installed packages a distillation needs, checked before it does any work.

Pillow and scikit-learn are dependencies of the package, torchvision an extra; an environment
can still lack them (installed with --no-deps, or uninstalled since). Without this check a run
would train to the end and then die on grid.png with a traceback; with it, the CLI refuses in
one line that names the command to run.
"""

from __future__ import annotations

import importlib.util

from .config import ConfigError

# import name, what to install, why the run needs it
ALWAYS = (("PIL", "pip install Pillow", "every run writes grid.png with Pillow"),)
BY_DATASET = {
    "digits": (("sklearn", "pip install scikit-learn", "the digits dataset ships inside scikit-learn"),),
    "imagefolder": (
        (
            "torchvision",
            "pip install 'spectral_kernels[vision]' (torchvision, the build that matches your torch)",
            "--dataset imagefolder reads images with torchvision",
        ),
    ),
}


def check_installed(dataset: str) -> None:
    """ConfigError naming the first package `dataset`'s run needs that is not installed."""
    for module, install, why in ALWAYS + BY_DATASET.get(dataset.removesuffix("-lt"), ()):
        if importlib.util.find_spec(module) is None:
            raise ConfigError(f"{why}, and {module} is not installed: {install}")
