"""Bad input raises TypeError or ValueError whose message names the argument (SPEC §6)."""
import pytest
import torch

import spectral_kernels as sk

X = torch.randn(6, 3)
Y = torch.randn(4, 3)
T = torch.randn(5, 3)
XL = torch.tensor([0, 1, 0, 1, 0, 1])
YL = torch.tensor([0, 1, 0, 1])


CASES = [
    # (id, call, exception, words the message must contain)
    ("real not a tensor", lambda: sk.sdd([[1.0]], Y), TypeError, ["real", "list"]),
    ("real integer dtype", lambda: sk.sdd(X.long(), Y), TypeError, ["real", "int64"]),
    ("real 1-D", lambda: sk.sdd(X[0], Y), ValueError, ["real", "2-D", "(3,)"]),
    ("real empty", lambda: sk.sdd(X[:0], Y), ValueError, ["real", "empty"]),
    ("syn empty", lambda: sk.ncfd(X, Y[:0], T), ValueError, ["syn", "empty"]),
    ("mismatched d", lambda: sk.sdd(X, torch.randn(4, 2)), ValueError, ["syn", "d=2", "d=3"]),
    ("mismatched dtype", lambda: sk.sdd(X, Y.double()), TypeError, ["syn", "float64", "float32"]),
    ("mismatched device", lambda: sk.sdd(X, Y.to("meta")), ValueError, ["syn", "meta", "cpu"]),
    ("t wrong d", lambda: sk.ncfd(X, Y, torch.randn(5, 4)), ValueError, ["t", "d=4"]),
    ("t wrong dtype", lambda: sk.ncfd(X, Y, T.double()), TypeError, ["t", "float64"]),
    ("t empty", lambda: sk.ncfd(X, Y, T[:0]), ValueError, ["t", "empty"]),
    ("t not a tensor", lambda: sk.ncfd(X, Y, None), TypeError, ["t", "NoneType"]),
    ("NaN in real", lambda: sk.sdd(torch.where(XL[:, None] == 1, float("nan"), X), Y), ValueError, ["real", "non-finite", "nan"]),
    ("inf in syn", lambda: sk.mmd(X, torch.full_like(Y, float("inf"))), ValueError, ["syn", "non-finite", "inf"]),
    ("inf in t", lambda: sk.ecf(X, torch.full_like(T, float("-inf"))), ValueError, ["t", "non-finite"]),
    ("float labels", lambda: sk.sdd(X, Y, XL.float(), YL), TypeError, ["real_labels", "integer", "float32"]),
    ("bool labels", lambda: sk.sdd(X, Y, XL, YL.bool()), TypeError, ["syn_labels", "torch.bool"]),
    ("negative label", lambda: sk.sdd(X, Y, XL - 1, YL), ValueError, ["real_labels", "negative", "-1"]),
    ("label out of range", lambda: sk.sdd(X, Y, XL, YL + 1, num_classes=2), ValueError, ["syn_labels", "label 2", "num_classes=2"]),
    ("labels wrong length", lambda: sk.sdd(X, Y, XL[:5], YL), ValueError, ["real_labels", "(6,)", "(5,)"]),
    ("labels on one side only", lambda: sk.sdd(X, Y, XL, None), ValueError, ["real_labels", "syn_labels"]),
    ("class on one side only", lambda: sk.sdd(X, Y, XL, torch.zeros(4, dtype=torch.long)), ValueError, ["class 1", "3 real", "0 synthetic"]),
    ("num_classes zero", lambda: sk.sdd(X, Y, XL, YL, num_classes=0), ValueError, ["num_classes", "0"]),
    ("num_classes float", lambda: sk.sdd(X, Y, XL, YL, num_classes=2.0), TypeError, ["num_classes", "2.0"]),
    ("alpha above one", lambda: sk.ncfd(X, Y, T, alpha=1.5), ValueError, ["alpha", "1.5"]),
    ("alpha negative tensor", lambda: sk.ncfd(X, Y, T, XL, YL, alpha=torch.tensor([0.5, -0.1])), ValueError, ["alpha", "-0.1"]),
    ("alpha tensor wrong shape", lambda: sk.ncfd(X, Y, T, XL, YL, alpha=torch.ones(3)), ValueError, ["alpha", "(2,)", "(3,)"]),
    ("eps negative", lambda: sk.ncfd(X, Y, T, eps=-1.0), ValueError, ["eps", "-1.0"]),
    ("bandwidth zero", lambda: sk.sdd(X, Y, bandwidth=0.0), ValueError, ["bandwidth", "0.0"]),
    ("bandwidth negative in list", lambda: sk.mmd(X, Y, bandwidth=[1.0, -2.0]), ValueError, ["bandwidth[1]", "-2.0"]),
    ("bandwidth a string", lambda: sk.mmd(X, Y, bandwidth="wide"), TypeError, ["bandwidth", "wide"]),
    ("nu zero", lambda: sk.sample_frequencies("matern", 4, 3, nu=0.0), ValueError, ["nu", "0.0"]),
    ("unknown kernel", lambda: sk.sdd(X, Y, kernel="rbf"), ValueError, ["kernel", "rbf"]),
    ("linear kernel for sdd", lambda: sk.sdd(X, Y, kernel="linear"), ValueError, ["linear", "mmd"]),
    ("linear kernel for csdm", lambda: sk.csdm(X, Y, XL, YL, class_counts=[3, 3], kernel="linear"), ValueError, ["linear", "mmd"]),
    ("num_freqs zero", lambda: sk.sdd(X, Y, num_freqs=0), ValueError, ["num_freqs", "0"]),
    ("unknown reduction", lambda: sk.sdd(X, Y, reduction="avg"), ValueError, ["reduction", "avg"]),
    ("unknown estimator", lambda: sk.mmd(X, Y, estimator="w"), ValueError, ["estimator", "w"]),
    ("u-statistic one sample", lambda: sk.mmd(X, Y[:1], estimator="u"), ValueError, ["estimator='u'", "1 synthetic"]),
    ("unknown backend", lambda: sk.sdd(X, Y, backend="tpu"), ValueError, ["backend", "tpu"]),
    ("class_counts zero", lambda: sk.csdm(X, Y, XL, YL, class_counts=[4, 0]), ValueError, ["class_counts[1]", "0.0"]),
    ("class_counts wrong length", lambda: sk.csdm(X, Y, XL, YL, class_counts=[4, 2], num_classes=3), ValueError, ["num_classes=3", "2 entries"]),
    ("class_counts not numbers", lambda: sk.csdm_class_alpha("many"), TypeError, ["class_counts", "str"]),
    ("alpha_head above one", lambda: sk.csdm_class_alpha([3, 1], alpha_head=1.2), ValueError, ["alpha_head", "1.2"]),
    ("head mask not bool", lambda: sk.csdm_class_alpha([3, 1], head_classes=torch.tensor([1, 0])), TypeError, ["head_classes", "int64"]),
    ("head mask wrong shape", lambda: sk.csdm_class_alpha([3, 1], head_classes=torch.tensor([True])), ValueError, ["head_classes", "(2,)", "(1,)"]),
    ("unknown alpha rule", lambda: sk.csdm_class_alpha([3, 1], alpha_rule="median"), ValueError, ["alpha_rule", "median"]),
    ("csdm without labels", lambda: sk.csdm(X, Y, None, None, class_counts=[3]), ValueError, ["real_labels", "syn_labels"]),
    ("matern mmd with other nu", lambda: sk.mmd(X, Y, kernel="matern", nu=1.0), ValueError, ["nu=1.0", "0.5, 1.5, 2.5"]),
    ("sampler generator wrong type", lambda: sk.sample_frequencies("gaussian", 4, 3, generator=0), TypeError, ["generator", "int"]),
    ("loss module bad reduction", lambda: sk.SDDLoss(reduction="max"), ValueError, ["reduction", "max"]),
    ("loss module bad kernel", lambda: sk.CSDMLoss([1, 2], kernel="linear"), ValueError, ["linear", "mmd"]),
    ("sampler bad num_freqs", lambda: sk.FrequencySampler(3, num_freqs=-4), ValueError, ["num_freqs", "-4"]),
    ("unknown precision", lambda: sk.sdd(X, Y, precision="fp8"), ValueError, ["precision", "fp8"]),
    ("loss module bad precision", lambda: sk.NCFDLoss(precision="half"), ValueError, ["precision", "half"]),
    ("cpu backend with float16", lambda: sk.sdd(X.half(), Y.half(), backend="cpu"), ValueError, ["backend='cpu'", "float16"]),
]


@pytest.mark.parametrize("call,exception,words", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_raises_an_error_naming_the_argument(call, exception, words):
    with pytest.raises(exception) as info:
        call()
    message = str(info.value)
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"


def test_there_are_at_least_twenty_distinct_cases():
    assert len({c[0] for c in CASES}) >= 20


def test_environment_variable_selects_the_backend(monkeypatch):
    monkeypatch.setenv("SPECTRAL_KERNELS_BACKEND", "nonexistent")
    with pytest.raises(ValueError, match="SPECTRAL_KERNELS_BACKEND"):
        sk.sdd(X, Y)
    # An explicit backend= wins over the environment.
    monkeypatch.setenv("SPECTRAL_KERNELS_BACKEND", "nonexistent")
    sk.sdd(X, Y, backend="reference")


def test_check_finite_false_skips_the_scan():
    bad = X.clone()
    bad[0, 0] = float("nan")
    assert torch.isnan(sk.mmd(bad, Y, kernel="linear", check_finite=False))
