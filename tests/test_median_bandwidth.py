"""The median bandwidth of spectral-distill (distill/methods.py, SPEC §4.2): the median distance
over a fixed-size random subsample of pairs of the real features, exact when all pairs fit."""

import pytest
import torch
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

from spectral_kernels.distill.data import DataError, load_dataset
from spectral_kernels.distill.methods import MEDIAN_PAIRS, median_bandwidth
from spectral_kernels.distill.models import ConvNet


def _all_pairs_median(x: torch.Tensor) -> float:
    """The median over every pair, in float64 (torch's median: the lower middle value)."""
    return float(torch.nn.functional.pdist(x.double()).median())


def test_all_pairs_when_they_fit_in_the_subsample_and_no_draw_then():
    n = 128  # 8128 pairs <= MEDIAN_PAIRS
    assert n * (n - 1) // 2 <= MEDIAN_PAIRS
    x = torch.randn(n, 40, generator=torch.Generator().manual_seed(0)) * 3 + 5
    gen = torch.Generator().manual_seed(1)
    before = gen.get_state()
    assert median_bandwidth(x, gen) == pytest.approx(_all_pairs_median(x), rel=1e-6)
    assert torch.equal(gen.get_state(), before)  # the caller's stream is untouched


def test_one_row_has_no_pair_and_gives_one():
    assert median_bandwidth(torch.randn(1, 4), torch.Generator()) == 1.0


class _Largest(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for leaf in pytree.tree_leaves(out):
            if isinstance(leaf, torch.Tensor):
                self.largest = max(self.largest, leaf.numel())
        return out


def test_the_work_is_a_fixed_number_of_pairs_whatever_n():
    d = 2
    gen = torch.Generator().manual_seed(0)
    for n in (1000, 4000):
        x = torch.randn(n, d, generator=gen)
        mode = _Largest()
        with mode:
            median_bandwidth(x, torch.Generator().manual_seed(1))
        # The rows gathered (n x d) and the blocks' distance matrices (both triangles of about
        # MEDIAN_PAIRS pairs: under 4x that); never all pairs of a subsample (512 x 512 before).
        assert mode.largest <= max(n * d, 4 * MEDIAN_PAIRS), (n, mode.largest)


def test_deterministic_given_the_generator_and_low_precision_features_are_measured_in_float32():
    x = torch.randn(900, 16, generator=torch.Generator().manual_seed(2))
    first = median_bandwidth(x, torch.Generator().manual_seed(3))
    assert median_bandwidth(x, torch.Generator().manual_seed(3)) == first
    low = median_bandwidth(x.bfloat16(), torch.Generator().manual_seed(3))
    assert low == pytest.approx(median_bandwidth(x.bfloat16().float(), torch.Generator().manual_seed(3)), rel=1e-6)


def _real_features(name: str, per_class: int = 64, width: int = 32) -> torch.Tensor:
    """A real batch as spectral-distill draws one (per_class images of every class) through a
    freshly initialised ConvNet (seeded): the features the bandwidth is taken of."""
    try:
        data = load_dataset(name)
    except DataError as error:
        pytest.skip(str(error))
    rows = torch.cat([torch.nonzero(data.train_y == c).flatten()[:per_class] for c in range(data.num_classes)])
    images = data.train_x[rows]
    torch.manual_seed(0)
    net = ConvNet(images.shape[1], data.num_classes, images.shape[2], width=width)
    with torch.no_grad():
        return net.embed(images)


@pytest.mark.parametrize("name", ["digits", "animals-lt"])
def test_within_one_percent_of_the_median_over_all_pairs_on_the_bundled_sets(name):
    features = _real_features(name)
    assert features.shape[0] * (features.shape[0] - 1) // 2 > 20 * MEDIAN_PAIRS  # really a subsample
    full = _all_pairs_median(features)
    for seed in range(10):
        got = median_bandwidth(features, torch.Generator().manual_seed(seed))
        assert got == pytest.approx(full, rel=0.01), (seed, got, full)
