import os

# The Triton interpreter must be chosen before any @triton.jit decorator runs, i.e. before the
# library is imported anywhere in the test session.
os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

import spectral_kernels as sk  # noqa: E402

FUSED_BACKENDS = [name for name in sk.available_backends() if name != "reference"]


@pytest.fixture
def rng():
    """A fresh seeded generator per test: inputs are random but each test is reproducible."""
    return torch.Generator().manual_seed(1234)


def make_pair(rng, n=60, s=24, d=5, num_classes=3, shift=0.4, dtype=torch.float64):
    """Real and synthetic features whose classes all appear on both sides."""
    real = torch.randn(n, d, generator=rng, dtype=dtype)
    syn = torch.randn(s, d, generator=rng, dtype=dtype) + shift
    real_labels = torch.arange(n) % num_classes
    syn_labels = torch.arange(s) % num_classes
    return real, syn, real_labels, syn_labels
