"""spectral_kernels: fused characteristic-function distribution matching for PyTorch.

See docs/SPEC.md for the math; the public names below are the whole API.
"""

from .frequencies import HadamardFrequencies, hadamard_frequencies, sample_frequencies
from .functional import csdm, csdm_class_alpha, ecf, mmd, ncfd, sdd
from .losses import CSDMLoss, MMDLoss, NCFDLoss, SDDLoss
from .ops import available_backends
from .sampler import FrequencySampler


def _installed_version() -> str:
    """The installed distribution's version (a wheel's carries the torch it was built against,
    0.1.0+pt2141cu130); in a source tree without installed metadata, _version.py's."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("spectral_kernels")
    except PackageNotFoundError:
        from ._version import VERSION

        return VERSION


__version__ = _installed_version()

__all__ = [
    "CSDMLoss",
    "FrequencySampler",
    "HadamardFrequencies",
    "MMDLoss",
    "NCFDLoss",
    "SDDLoss",
    "available_backends",
    "csdm",
    "csdm_class_alpha",
    "ecf",
    "hadamard_frequencies",
    "mmd",
    "ncfd",
    "sample_frequencies",
    "sdd",
]
