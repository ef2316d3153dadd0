"""spectral_kernels: fused characteristic-function distribution matching for PyTorch.

See SPEC.md for the math; the public names below are the whole API.
"""

from .functional import csdm, csdm_class_alpha, ecf, mmd, ncfd, sdd
from .kernels import sample_frequencies
from .losses import CSDMLoss, MMDLoss, NCFDLoss, SDDLoss
from .ops import available_backends
from .sampler import FrequencySampler
from .structured import HadamardFrequencies, hadamard_frequencies

__version__ = "0.1.0"

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
