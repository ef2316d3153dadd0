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
    from importlib.metadata import distributions

    return _version_of(distributions(name="spectral_kernels"))


def _version_of(found) -> str:
    """The version an installer wrote. An editable build also leaves spectral_kernels.egg-info in
    the source tree, with the bare version, and it comes first on sys.path whenever Python runs
    from the tree's root: importlib.metadata.version() would then report the bare version there
    and the labelled one anywhere else. An installer (pip, uv) records itself in the INSTALLER
    file of what it installs (the recording-installed-projects spec); a build's leftover has none."""
    found = list(found)
    for dist in found:
        if dist.read_text("INSTALLER") is not None:
            return dist.version
    if found:
        return found[0].version
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
