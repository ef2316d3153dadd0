"""The bad-input catalogue: every wrong argument, extreme value and damaged file we know of,
for the library and for the CLI, in one table (CASES), so that its size is visible.

A library case calls a function and expects TypeError or ValueError whose message names the
argument and the value (SPEC §6). A CLI case runs the real console script, in its own folder,
and expects exit status 2 with exactly one line on stderr (no traceback) holding the given
words; `after` then checks what must have survived (a user's files, an old run) or must not
have happened (code run from a crafted file).
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import pickle
import shutil
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

import spectral_kernels as sk
from spectral_kernels.distill.config import DistillConfig
from spectral_kernels.distill.loop import distill

from . import cli_forkserver
from . import lib_sizes as L
from .conftest import FAST_CLI, assert_one_line_error, hold_run_lock, run_cli

_G = torch.Generator().manual_seed(0)
X = torch.randn(6, 3, generator=_G)
Y = torch.randn(4, 3, generator=_G)
T = torch.randn(5, 3, generator=_G)
XL = torch.tensor([0, 1, 0, 1, 0, 1])
YL = torch.tensor([0, 1, 0, 1])


@dataclass
class Lib:
    id: str
    call: Callable
    exception: type
    words: list


@dataclass
class Cli:
    """argv items may hold "{d}", the case's own folder; setup(d) prepares it and may return a
    function to call once the CLI has finished; after(d) checks the folder afterwards."""

    id: str
    argv: list
    words: list
    setup: Callable | None = None
    after: Callable | None = None
    env: dict = field(default_factory=dict)
    status: int = 2
    cwd: str = ""  # the folder, under the case's own, that the CLI runs in
    # A fresh interpreter instead of a child of the fork server: for a case whose environment must
    # reach the interpreter's start (PYTHONPATH), which a forked child has long passed.
    fresh: bool = False


def _with(tensor, index, value):
    tensor = tensor.clone()
    tensor[index] = value
    return tensor


def _op(name, *args, precision="ieee"):
    return lambda: getattr(torch.ops.spectral_kernels, name)(*args, precision)


def _sampler_with(log_scale):
    sampler = sk.FrequencySampler(3, num_freqs=8)
    with torch.no_grad():
        sampler.log_scales.fill_(log_scale)
    return sampler


def _csdm_loss_with_alpha(values):
    loss = sk.CSDMLoss([3, 3])
    loss.class_alpha = torch.tensor(values, dtype=torch.float64)
    return loss


def _set_extra_state_without_generator():
    with_gen = sk.SDDLoss(generator=torch.Generator().manual_seed(0))
    sk.SDDLoss().load_state_dict(with_gen.state_dict())


def _nan_radii():
    t = sk.hadamard_frequencies("gaussian", 8, 3)
    t.radii[0, 1] = float("nan")
    return t


def _generator_state_of_size(size):
    loss = sk.SDDLoss(generator=torch.Generator())
    loss.load_state_dict({"_extra_state": {"generator_state": torch.zeros(size, dtype=torch.uint8)}})


def _triton_op(x, t, perm, offsets, precision="ieee"):
    return lambda: torch.ops.spectral_kernels.ecf_sums_triton(
        x, t, torch.tensor(perm), torch.tensor(offsets), precision
    )


PERM, OFFS = torch.arange(6), torch.tensor([0, 3, 6])
G = torch.ones(2, 2, 5)

LIB_CASES = [
    # (id, call, exception, words the message must contain)
    Lib("real not a tensor", lambda: sk.sdd([[1.0]], Y), TypeError, ["real", "list"]),
    Lib("real integer dtype", lambda: sk.sdd(X.long(), Y), TypeError, ["real", "int64"]),
    Lib("real 1-D", lambda: sk.sdd(X[0], Y), ValueError, ["real", "2-D", "(3,)"]),
    Lib("real empty", lambda: sk.sdd(X[:0], Y), ValueError, ["real", "empty"]),
    Lib("syn empty", lambda: sk.ncfd(X, Y[:0], T), ValueError, ["syn", "empty"]),
    Lib("mismatched d", lambda: sk.sdd(X, torch.randn(4, 2)), ValueError, ["syn", "d=2", "d=3"]),
    Lib("mismatched dtype", lambda: sk.sdd(X, Y.double()), TypeError, ["syn", "float64", "float32"]),
    Lib("mismatched device", lambda: sk.sdd(X, Y.to("meta")), ValueError, ["syn", "meta"]),
    Lib("t wrong d", lambda: sk.ncfd(X, Y, torch.randn(5, 4)), ValueError, ["t", "d=4"]),
    Lib("t wrong dtype", lambda: sk.ncfd(X, Y, T.double()), TypeError, ["t", "float64"]),
    Lib("t empty", lambda: sk.ncfd(X, Y, T[:0]), ValueError, ["t", "empty"]),
    Lib("t not a tensor", lambda: sk.ncfd(X, Y, None), TypeError, ["t", "NoneType"]),
    Lib(
        "NaN in real",
        lambda: sk.sdd(torch.where(XL[:, None] == 1, float("nan"), X), Y),
        ValueError,
        ["real", "non-finite", "nan"],
    ),
    Lib("inf in syn", lambda: sk.mmd(X, torch.full_like(Y, float("inf"))), ValueError, ["syn", "non-finite", "inf"]),
    Lib("inf in t", lambda: sk.ecf(X, torch.full_like(T, float("-inf"))), ValueError, ["t", "non-finite"]),
    Lib("float labels", lambda: sk.sdd(X, Y, XL.float(), YL), TypeError, ["real_labels", "integer", "float32"]),
    Lib("bool labels", lambda: sk.sdd(X, Y, XL, YL.bool()), TypeError, ["syn_labels", "torch.bool"]),
    Lib("negative label", lambda: sk.sdd(X, Y, XL - 1, YL), ValueError, ["real_labels", "negative", "-1"]),
    Lib(
        "label out of range",
        lambda: sk.sdd(X, Y, XL, YL + 1, num_classes=2),
        ValueError,
        ["syn_labels", "label 2", "num_classes=2"],
    ),
    Lib("labels wrong length", lambda: sk.sdd(X, Y, XL[:5], YL), ValueError, ["real_labels", "(6,)", "(5,)"]),
    Lib("labels on one side only", lambda: sk.sdd(X, Y, XL, None), ValueError, ["real_labels", "syn_labels"]),
    Lib(
        "class on one side only",
        lambda: sk.sdd(X, Y, XL, torch.zeros(4, dtype=torch.long)),
        ValueError,
        ["class 1", "3 real", "0 synthetic"],
    ),
    Lib("num_classes zero", lambda: sk.sdd(X, Y, XL, YL, num_classes=0), ValueError, ["num_classes", "0"]),
    Lib("num_classes float", lambda: sk.sdd(X, Y, XL, YL, num_classes=2.0), TypeError, ["num_classes", "2.0"]),
    Lib("alpha above one", lambda: sk.ncfd(X, Y, T, alpha=1.5), ValueError, ["alpha", "1.5"]),
    Lib(
        "alpha negative tensor",
        lambda: sk.ncfd(X, Y, T, XL, YL, alpha=torch.tensor([0.5, -0.1])),
        ValueError,
        ["alpha", "-0.1"],
    ),
    Lib(
        "alpha tensor wrong shape",
        lambda: sk.ncfd(X, Y, T, XL, YL, alpha=torch.ones(3)),
        ValueError,
        ["alpha", "(2,)", "(3,)"],
    ),
    Lib("eps negative", lambda: sk.ncfd(X, Y, T, eps=-1.0), ValueError, ["eps", "-1.0"]),
    Lib("bandwidth zero", lambda: sk.sdd(X, Y, bandwidth=0.0), ValueError, ["bandwidth", "0.0"]),
    Lib(
        "bandwidth negative in list", lambda: sk.mmd(X, Y, bandwidth=[1.0, -2.0]), ValueError, ["bandwidth[1]", "-2.0"]
    ),
    Lib("bandwidth a string", lambda: sk.mmd(X, Y, bandwidth="wide"), TypeError, ["bandwidth", "wide"]),
    Lib("nu zero", lambda: sk.sample_frequencies("matern", 4, 3, nu=0.0), ValueError, ["nu", "0.0"]),
    Lib("unknown kernel", lambda: sk.sdd(X, Y, kernel="rbf"), ValueError, ["kernel", "rbf"]),
    Lib("linear kernel for sdd", lambda: sk.sdd(X, Y, kernel="linear"), ValueError, ["linear", "mmd"]),
    Lib(
        "linear kernel for csdm",
        lambda: sk.csdm(X, Y, XL, YL, class_counts=[3, 3], kernel="linear"),
        ValueError,
        ["linear", "mmd"],
    ),
    Lib("num_freqs zero", lambda: sk.sdd(X, Y, num_freqs=0), ValueError, ["num_freqs", "0"]),
    Lib("unknown reduction", lambda: sk.sdd(X, Y, reduction="avg"), ValueError, ["reduction", "avg"]),
    Lib("unknown estimator", lambda: sk.mmd(X, Y, estimator="w"), ValueError, ["estimator", "w"]),
    Lib(
        "u-statistic one sample", lambda: sk.mmd(X, Y[:1], estimator="u"), ValueError, ["estimator='u'", "1 synthetic"]
    ),
    Lib("unknown backend", lambda: sk.sdd(X, Y, backend="tpu"), ValueError, ["backend", "tpu"]),
    Lib(
        "class_counts zero", lambda: sk.csdm(X, Y, XL, YL, class_counts=[4, 0]), ValueError, ["class_counts[1]", "0.0"]
    ),
    Lib(
        "class_counts wrong length",
        lambda: sk.csdm(X, Y, XL, YL, class_counts=[4, 2], num_classes=3),
        ValueError,
        ["num_classes=3", "2 entries"],
    ),
    Lib("class_counts not numbers", lambda: sk.csdm_class_alpha("many"), TypeError, ["class_counts", "str"]),
    Lib("alpha_head above one", lambda: sk.csdm_class_alpha([3, 1], alpha_head=1.2), ValueError, ["alpha_head", "1.2"]),
    Lib(
        "head mask not bool",
        lambda: sk.csdm_class_alpha([3, 1], head_classes=torch.tensor([1, 0])),
        TypeError,
        ["head_classes", "int64"],
    ),
    Lib(
        "head mask wrong shape",
        lambda: sk.csdm_class_alpha([3, 1], head_classes=torch.tensor([True])),
        ValueError,
        ["head_classes", "(2,)", "(1,)"],
    ),
    Lib(
        "unknown alpha rule",
        lambda: sk.csdm_class_alpha([3, 1], alpha_rule="median"),
        ValueError,
        ["alpha_rule", "median"],
    ),
    Lib(
        "csdm without labels",
        lambda: sk.csdm(X, Y, None, None, class_counts=[3]),
        ValueError,
        ["real_labels", "syn_labels"],
    ),
    Lib(
        "matern mmd with other nu",
        lambda: sk.mmd(X, Y, kernel="matern", nu=1.0),
        ValueError,
        ["nu=1.0", "0.5, 1.5, 2.5"],
    ),
    Lib(
        "sampler generator wrong type",
        lambda: sk.sample_frequencies("gaussian", 4, 3, generator=0),
        TypeError,
        ["generator", "int"],
    ),
    Lib("loss module bad reduction", lambda: sk.SDDLoss(reduction="max"), ValueError, ["reduction", "max"]),
    Lib("loss module bad kernel", lambda: sk.CSDMLoss([1, 2], kernel="linear"), ValueError, ["linear", "mmd"]),
    Lib("sampler bad num_freqs", lambda: sk.FrequencySampler(3, num_freqs=-4), ValueError, ["num_freqs", "-4"]),
    Lib("unknown precision", lambda: sk.sdd(X, Y, precision="fp8"), ValueError, ["precision", "fp8"]),
    Lib("loss module bad precision", lambda: sk.NCFDLoss(precision="half"), ValueError, ["precision", "half"]),
    Lib(
        "cpu backend with float16",
        lambda: sk.sdd(X.half(), Y.half(), backend="cpu"),
        ValueError,
        ["backend='cpu'", "float16"],
    ),
    # frequencies are checked like features
    Lib(
        "NaN in t for ncfd",
        lambda: sk.ncfd(X, Y, _with(T, (2, 1), float("nan"))),
        ValueError,
        ["t", "non-finite", "(2, 1)"],
    ),
    Lib(
        "inf in given t for sdd",
        lambda: sk.sdd(X, Y, t=_with(T, (0, 0), float("inf"))),
        ValueError,
        ["t", "non-finite", "inf"],
    ),
    Lib(
        "NaN in given t for csdm",
        lambda: sk.csdm(X, Y, XL, YL, class_counts=[3, 3], t=_with(T, (4, 2), float("nan"))),
        ValueError,
        ["t", "nan"],
    ),
    Lib("NaN in t for ecf", lambda: sk.ecf(X, _with(T, (1, 1), float("nan"))), ValueError, ["t", "nan"]),
    Lib(
        "phases overflow float32 in ecf",
        lambda: sk.ecf(torch.full((3, 2), 1e20), torch.full((2, 2), 1e20)),
        ValueError,
        ["phases", "overflow", "float32"],
    ),
    Lib(
        "phases overflow float32 in ncfd",
        lambda: sk.ncfd(torch.full((3, 2), 1e20), torch.ones(2, 2), torch.full((2, 2), 1e20)),
        ValueError,
        ["phases", "of real", "overflow"],
    ),
    # frequency laws that do not fit the dtype
    Lib(
        "tiny bandwidth float32",
        lambda: sk.sample_frequencies("gaussian", 8, 3, bandwidth=1e-40),
        ValueError,
        ["bandwidth=1e-40", "largest finite"],
    ),
    Lib(
        "huge bandwidth float32",
        lambda: sk.sample_frequencies("gaussian", 8, 3, bandwidth=1e40),
        ValueError,
        ["bandwidth=1e+40", "round to 0"],
    ),
    Lib(
        "small bandwidth float16",
        lambda: sk.sample_frequencies("gaussian", 8, 3, bandwidth=1e-4, dtype=torch.float16),
        ValueError,
        ["bandwidth=0.0001", "float16"],
    ),
    Lib(
        "tiny bandwidth in a list",
        lambda: sk.sample_frequencies("gaussian", 8, 3, bandwidth=[1.0, 1e-40]),
        ValueError,
        ["bandwidth[1]=1e-40"],
    ),
    Lib(
        "tiny bandwidth through sdd", lambda: sk.sdd(X, Y, bandwidth=1e-40), ValueError, ["bandwidth=1e-40", "float32"]
    ),
    Lib(
        "tiny bandwidth through csdm",
        lambda: sk.csdm(X, Y, XL, YL, class_counts=[3, 3], bandwidth=1e-39),
        ValueError,
        ["bandwidth=1e-39"],
    ),
    Lib(
        "matern nu too small for float32",
        lambda: sk.sample_frequencies("matern", 512, 3, nu=0.005, generator=torch.Generator().manual_seed(0)),
        ValueError,
        ["matern", "nu=0.005", "heavy"],
    ),
    Lib(
        "laplacian draws overflow float32",
        lambda: sk.sample_frequencies(
            "laplacian", 4096, 3, bandwidth=1e-36, generator=torch.Generator().manual_seed(0)
        ),
        ValueError,
        ["laplacian", "Cauchy"],
    ),
    Lib(
        "sample dtype not floating",
        lambda: sk.sample_frequencies("gaussian", 8, 3, dtype=torch.int64),
        TypeError,
        ["dtype", "int64"],
    ),
    Lib("sample dim zero", lambda: sk.sample_frequencies("gaussian", 8, 0), ValueError, ["dim", "0"]),
    Lib("sample num_freqs a float", lambda: sk.sample_frequencies("gaussian", 2.5, 3), TypeError, ["num_freqs", "2.5"]),
    Lib(
        "sample bandwidth inf",
        lambda: sk.sample_frequencies("gaussian", 8, 3, bandwidth=float("inf")),
        ValueError,
        ["bandwidth", "inf"],
    ),
    Lib("nu inf", lambda: sk.sdd(X, Y, kernel="matern", nu=float("inf")), ValueError, ["nu", "inf"]),
    # the learned sampler
    Lib(
        "sampler tiny bandwidth",
        lambda: sk.FrequencySampler(3, bandwidth=1e-40),
        ValueError,
        ["bandwidth=1e-40", "log-scales"],
    ),
    Lib(
        "sampler huge bandwidth",
        lambda: sk.FrequencySampler(3, bandwidth=1e40),
        ValueError,
        ["bandwidth=1e+40", "outside"],
    ),
    Lib("sampler large spread", lambda: sk.FrequencySampler(3, spread=100.0), ValueError, ["spread=100.0"]),
    Lib(
        "sampler infinite spread", lambda: sk.FrequencySampler(3, spread=float("inf")), ValueError, ["spread", "finite"]
    ),
    Lib("sampler negative spread", lambda: sk.FrequencySampler(3, spread=-1.0), ValueError, ["spread", "-1.0"]),
    Lib(
        "sampler learned scale overflows",
        lambda: _sampler_with(150.0)(),
        ValueError,
        ["log-scale of 150", "learning rate"],
    ),
    Lib("sampler learned scale NaN", lambda: _sampler_with(float("nan"))(), ValueError, ["NaN", "learning rate"]),
    Lib(
        "sampler generator wrong type in forward",
        lambda: sk.FrequencySampler(3)(generator=3),
        TypeError,
        ["generator", "int"],
    ),
    Lib("sampler dim a string", lambda: sk.FrequencySampler("3"), TypeError, ["dim", "'3'"]),
    Lib(
        "sampler components zero", lambda: sk.FrequencySampler(3, num_components=0), ValueError, ["num_components", "0"]
    ),
    # the C++ op called directly: its contract is checked before any memory is read through it
    Lib(
        "cpu op perm repeats a row",
        _op("ecf_sums", X, T, torch.tensor([0, 1, 2, 3, 4, 4]), OFFS),
        ValueError,
        ["perm", "permutation", "perm[4] = perm[5] = 4"],
    ),
    Lib(
        "cpu op perm row out of range",
        _op("ecf_sums", X, T, torch.tensor([0, 1, 2, 3, 4, 6]), OFFS),
        ValueError,
        ["perm[5]=6", "[0, N=6)"],
    ),
    Lib(
        "cpu op perm negative row",
        _op("ecf_sums", X, T, torch.tensor([-1, 1, 2, 3, 4, 5]), OFFS),
        ValueError,
        ["perm[0]=-1"],
    ),
    Lib("cpu op perm too short", _op("ecf_sums", X, T, torch.arange(5), OFFS), ValueError, ["perm", "(6,)"]),
    Lib(
        "cpu op offsets absurd",
        _op("ecf_sums", X, T, PERM, torch.tensor([0, 10**12, 6])),
        ValueError,
        ["offsets", "non-decreasing"],
    ),
    Lib(
        "cpu op offsets do not end at N",
        _op("ecf_sums", X, T, PERM, torch.tensor([0, 3, 5])),
        ValueError,
        ["offsets", "end at N=6", "5"],
    ),
    Lib(
        "cpu op offsets do not start at 0",
        _op("ecf_sums", X, T, PERM, torch.tensor([1, 3, 6])),
        ValueError,
        ["offsets", "start at 0"],
    ),
    Lib(
        "cpu op offsets decreasing",
        _op("ecf_sums", X, T, PERM, torch.tensor([0, 4, 2, 6])),
        ValueError,
        ["offsets[2]=2 < offsets[1]=4"],
    ),
    Lib("cpu op offsets too short", _op("ecf_sums", X, T, PERM, torch.tensor([0])), ValueError, ["offsets", "(C+1,)"]),
    Lib("cpu op offsets int32", _op("ecf_sums", X, T, PERM, OFFS.int()), TypeError, ["int64", "Int"]),
    Lib("cpu op x 1-D", _op("ecf_sums", X[0], T, PERM, OFFS), ValueError, ["x must be 2-D"]),
    Lib("cpu op d mismatch", _op("ecf_sums", X, T[:, :2], PERM, OFFS), ValueError, ["x has d=3", "t has d=2"]),
    Lib("cpu op t dtype differs", _op("ecf_sums", X, T.double(), PERM, OFFS), TypeError, ["t has dtype", "Double"]),
    Lib("cpu op float16", _op("ecf_sums", X.half(), T.half(), PERM, OFFS), TypeError, ["float32 or float64", "Half"]),
    Lib(
        "cpu op grad wrong shape",
        _op("ecf_sums_grad_x", torch.ones(2, 2, 4), X, T, PERM, OFFS),
        ValueError,
        ["grad must have shape (2, 2, 5)"],
    ),
    Lib(
        "cpu op precision unknown",
        _op("ecf_sums", X, T, PERM, OFFS, precision="fp8"),
        ValueError,
        ["precision", "'fp8'"],
    ),
    Lib(
        "cpu op grad_t perm repeats",
        _op("ecf_sums_grad_t", G, X, T, torch.tensor([1, 1, 2, 3, 4, 5]), OFFS),
        ValueError,
        ["perm[0] = perm[1] = 1"],
    ),
    # the Triton op called directly (CPU tensors: the interpreter checks values)
    Lib(
        "triton op perm repeats a row",
        _triton_op(X, T, [0, 1, 2, 2, 4, 5], [0, 3, 6]),
        ValueError,
        ["perm", "permutation", "perm[2] = perm[3] = 2"],
    ),
    Lib("triton op perm out of range", _triton_op(X, T, [0, 1, 2, 3, 4, 60], [0, 3, 6]), ValueError, ["perm[5]=60"]),
    Lib(
        "triton op offsets absurd",
        _triton_op(X, T, list(range(6)), [0, 10**12, 6]),
        ValueError,
        ["offsets", "non-decreasing"],
    ),
    Lib("triton op offsets do not end at N", _triton_op(X, T, list(range(6)), [0, 3, 7]), ValueError, ["end at N=6"]),
    Lib(
        "triton op bad precision", _triton_op(X, T, list(range(6)), [0, 3, 6], "fp8"), ValueError, ["precision", "fp8"]
    ),
    Lib(
        "triton op d mismatch",
        _triton_op(X, T[:, :1], list(range(6)), [0, 3, 6]),
        ValueError,
        ["x has d=3", "t has d=1"],
    ),
    Lib(
        "triton op int64 x",
        _triton_op(X.long(), T.long(), list(range(6)), [0, 3, 6]),
        TypeError,
        ["x must be float32", "int64"],
    ),
    Lib(
        "triton backward grad wrong shape",
        lambda: torch.ops.spectral_kernels.ecf_sums_triton_backward(
            torch.ones(3, 2, 5), X, T, PERM, OFFS, "ieee", True, True
        ),
        ValueError,
        ["grad must have shape (2, 2, 5)"],
    ),
    # nn.Module losses check their whole configuration at construction
    Lib("NCFDLoss unknown backend", lambda: sk.NCFDLoss(backend="tpu"), ValueError, ["backend", "tpu"]),
    Lib("NCFDLoss backend not a string", lambda: sk.NCFDLoss(backend=0), TypeError, ["backend", "0"]),
    Lib("NCFDLoss sqrt not a bool", lambda: sk.NCFDLoss(sqrt="yes"), TypeError, ["sqrt", "yes"]),
    Lib(
        "NCFDLoss alpha tensor above one",
        lambda: sk.NCFDLoss(alpha=torch.tensor([0.5, 1.5])),
        ValueError,
        ["alpha", "1.5"],
    ),
    Lib("NCFDLoss alpha tensor 2-D", lambda: sk.NCFDLoss(alpha=torch.ones(2, 2) / 2), ValueError, ["alpha", "(2, 2)"]),
    Lib(
        "NCFDLoss alpha tensor integer", lambda: sk.NCFDLoss(alpha=torch.tensor([0, 1])), ValueError, ["alpha", "int64"]
    ),
    Lib(
        "NCFDLoss alpha tensor vs num_classes",
        lambda: sk.NCFDLoss(alpha=torch.tensor([0.5, 0.5]), num_classes=3),
        ValueError,
        ["alpha has 2 entries", "num_classes=3"],
    ),
    Lib("NCFDLoss alpha a string", lambda: sk.NCFDLoss(alpha="half"), TypeError, ["alpha", "half"]),
    Lib("NCFDLoss eps negative", lambda: sk.NCFDLoss(eps=-1e-3), ValueError, ["eps", "-0.001"]),
    Lib("NCFDLoss num_classes zero", lambda: sk.NCFDLoss(num_classes=0), ValueError, ["num_classes", "0"]),
    Lib("SDDLoss generator an int", lambda: sk.SDDLoss(generator=123), TypeError, ["generator", "int"]),
    Lib("SDDLoss backend unknown", lambda: sk.SDDLoss(backend="gpu"), ValueError, ["backend", "gpu"]),
    Lib(
        "SDDLoss bandwidth list with zero",
        lambda: sk.SDDLoss(bandwidth=[1.0, 0.0]),
        ValueError,
        ["bandwidth[1]", "0.0"],
    ),
    Lib("SDDLoss num_freqs zero", lambda: sk.SDDLoss(num_freqs=0), ValueError, ["num_freqs", "0"]),
    Lib("SDDLoss nu negative", lambda: sk.SDDLoss(nu=-1.0), ValueError, ["nu", "-1.0"]),
    Lib(
        "SDDLoss restoring a generator it lacks",
        _set_extra_state_without_generator,
        ValueError,
        ["generator state", "without a generator"],
    ),
    Lib("CSDMLoss class_counts with a zero", lambda: sk.CSDMLoss([3, 0]), ValueError, ["class_counts[1]", "0.0"]),
    Lib(
        "CSDMLoss num_classes mismatch",
        lambda: sk.CSDMLoss([3, 2], num_classes=3),
        ValueError,
        ["num_classes=3", "2 entries"],
    ),
    Lib("CSDMLoss precision unknown", lambda: sk.CSDMLoss([3, 2], precision="fp16"), ValueError, ["precision", "fp16"]),
    Lib(
        "CSDMLoss loaded alpha out of range",
        lambda: _csdm_loss_with_alpha([0.5, 1.5])(X, Y, XL, YL),
        ValueError,
        ["class_alpha", "1.5"],
    ),
    Lib("CSDMLoss generator a seed", lambda: sk.CSDMLoss([3, 2], generator=0), TypeError, ["generator", "int"]),
    Lib("MMDLoss estimator unknown", lambda: sk.MMDLoss(estimator="x"), ValueError, ["estimator", "'x'"]),
    Lib("MMDLoss kernel unknown", lambda: sk.MMDLoss(kernel="rbf"), ValueError, ["kernel", "rbf"]),
    Lib("MMDLoss bandwidth negative", lambda: sk.MMDLoss(bandwidth=-2.0), ValueError, ["bandwidth", "-2.0"]),
    # more functional arguments
    Lib("reduction None", lambda: sk.sdd(X, Y, reduction=None), ValueError, ["reduction", "None"]),
    Lib("ncfd sqrt not a bool", lambda: sk.ncfd(X, Y, T, sqrt="no"), TypeError, ["sqrt", "no"]),
    Lib("ncfd alpha a string", lambda: sk.ncfd(X, Y, T, alpha="half"), TypeError, ["alpha", "half"]),
    Lib("ecf labels wrong length", lambda: sk.ecf(X, T, XL[:4]), ValueError, ["labels", "(6,)", "(4,)"]),
    Lib("ecf num_classes a bool", lambda: sk.ecf(X, T, XL, num_classes=True), TypeError, ["num_classes", "True"]),
    Lib("ecf precision unknown", lambda: sk.ecf(X, T, precision="bf16"), ValueError, ["precision", "bf16"]),
    Lib("check_finite a string", lambda: sk.sdd(X, Y, check_finite="yes"), TypeError, ["check_finite", "yes"]),
    Lib(
        "csdm head mask of ints",
        lambda: sk.csdm(X, Y, XL, YL, class_counts=[3, 3], head_classes=[1, 0]),
        TypeError,
        ["head_classes", "int64"],
    ),
    Lib(
        "class_counts with NaN",
        lambda: sk.csdm_class_alpha([3.0, float("nan")]),
        ValueError,
        ["class_counts[1]", "nan"],
    ),
    Lib("mmd bandwidth inf", lambda: sk.mmd(X, Y, bandwidth=float("inf")), ValueError, ["bandwidth", "inf"]),
    Lib("mmd labels on one side only", lambda: sk.mmd(X, Y, None, YL), ValueError, ["syn_labels", "real_labels"]),
    Lib(
        "NaN in syn for ncfd",
        lambda: sk.ncfd(X, _with(Y, (3, 2), float("nan")), T),
        ValueError,
        ["syn", "nan", "(3, 2)"],
    ),
    # found by an adversarial pass over the first version of these checks
    Lib(
        "one stray huge label",
        lambda: sk.ncfd(X, Y, T, _with(XL, 5, 10**9), YL),
        ValueError,
        ["label 1000000000", "num_classes"],
    ),
    Lib(
        "num_classes 2**40",
        lambda: sk.sdd(X, Y, XL, YL, num_classes=2**40),
        ValueError,
        ["num_classes=1099511627776", "beyond"],
    ),
    Lib("eps above one", lambda: sk.ncfd(X, Y, T, eps=1e308), ValueError, ["eps", "at most 1"]),
    Lib(
        "bandwidth 10**400", lambda: sk.sdd(X, Y, bandwidth=10**400), ValueError, ["bandwidth", "too large for a float"]
    ),
    Lib("alpha 10**400", lambda: sk.ncfd(X, Y, T, alpha=10**400), ValueError, ["alpha", "too large for a float"]),
    Lib("sparse features", lambda: sk.sdd(X.to_sparse(), Y), TypeError, ["real", "dense"]),
    Lib("sparse frequencies", lambda: sk.ncfd(X, Y, T.to_sparse()), TypeError, ["t", "dense"]),
    Lib("sparse labels", lambda: sk.sdd(X, Y, XL.to_sparse(), YL), TypeError, ["real_labels", "dense"]),
    Lib(
        "meta features",
        lambda: sk.sdd(X.to("meta"), Y.to("meta"), check_finite=False),
        ValueError,
        ["real", "meta device"],
    ),
    Lib(
        "complex alpha tensor",
        lambda: sk.ncfd(X, Y, T, XL, YL, alpha=torch.tensor([0.5, 0.5]) + 0j),
        TypeError,
        ["alpha", "complex"],
    ),
    Lib(
        "integer alpha tensor",
        lambda: sk.ncfd(X, Y, T, XL, YL, alpha=torch.tensor([0, 1])),
        TypeError,
        ["alpha", "int64"],
    ),
    Lib(
        "frequency draw too large",
        lambda: sk.sample_frequencies("gaussian", 2**40, 16),
        ValueError,
        ["num_freqs", "GiB"],
    ),
    Lib(
        "sampler draw too large",
        lambda: sk.FrequencySampler(2**30, num_freqs=64)(),
        ValueError,
        ["num_freqs=64", "GiB"],
    ),
    Lib(
        "cpu op with offsets on meta", _op("ecf_sums", X, T, PERM, OFFS.to("meta")), ValueError, ["one device", "meta"]
    ),
    Lib(
        "cpu op with grad on meta",
        _op("ecf_sums_grad_x", G.to("meta"), X, T, PERM, OFFS),
        ValueError,
        ["one device", "meta"],
    ),
    # structured frequencies
    Lib("structure unknown", lambda: sk.sdd(X, Y, structure="sobol"), ValueError, ["structure", "sobol"]),
    Lib(
        "orthogonal laplacian",
        lambda: sk.sdd(X, Y, kernel="laplacian", structure="orthogonal"),
        ValueError,
        ["not radial", "laplacian"],
    ),
    Lib("hadamard cauchy draw", lambda: sk.hadamard_frequencies("cauchy", 8, 3), ValueError, ["not radial"]),
    Lib("structure with t given", lambda: sk.sdd(X, Y, t=T, structure="hadamard"), ValueError, ["t was given"]),
    Lib(
        "hadamard frequencies of another d",
        lambda: sk.ncfd(X, Y, sk.hadamard_frequencies("gaussian", 8, 4)),
        ValueError,
        ["d=4", "d=3"],
    ),
    Lib(
        "hadamard frequencies of another dtype",
        lambda: sk.ncfd(X, Y, sk.hadamard_frequencies("gaussian", 8, 3, dtype=torch.float64)),
        TypeError,
        ["float64", "float32"],
    ),
    Lib("hadamard NaN radii", lambda: sk.ncfd(X, Y, _nan_radii()), ValueError, ["t.radii", "nan"]),
    Lib(
        "hadamard op width not a power of two",
        _op("hadamard_sums", X, torch.ones(1, 3, 6), torch.ones(1, 6), PERM, OFFS, precision=6),
        ValueError,
        ["power of two", "6"],
    ),
    Lib(
        "hadamard op width below d",
        _op("hadamard_sums", X, torch.ones(1, 3, 2), torch.ones(1, 2), PERM, OFFS, precision=2),
        ValueError,
        ["D=2", "d=3"],
    ),
    Lib(
        "hadamard op num_freqs outside its blocks",
        _op("hadamard_sums", X, torch.ones(2, 3, 4), torch.ones(2, 4), PERM, OFFS, precision=3),
        ValueError,
        ["num_freqs=3", "(4, 8]"],
    ),
    Lib(
        "hadamard op radii of another shape",
        _op("hadamard_sums", X, torch.ones(1, 3, 4), torch.ones(2, 4), PERM, OFFS, precision=4),
        ValueError,
        ["radii", "(1, 4)"],
    ),
    Lib(
        "loss restoring a generator state of another size",
        lambda: _generator_state_of_size(7),
        ValueError,
        ["does not fit this generator"],
    ),
    # -- trust round 3: library values and sizes (SORF contract, size guard, generators)
    # The SORF contract, through every backend: signs exactly +-1, radii finite and > 0, num_freqs an
    # int that fits the blocks, parameters that are tensors and need no gradient.
    Lib(
        "sorf signs 0 reference",
        lambda: sk.sdd(X, Y, t=L.sorf(((0, 0, 1), 0.0)), backend="reference"),
        ValueError,
        ["t.signs", "+1 or -1", "got 0 at index (0, 0, 1)"],
    ),
    Lib(
        "sorf signs 0 cpu",
        lambda: sk.sdd(X, Y, t=L.sorf(((0, 0, 1), 0.0)), backend="cpu"),
        ValueError,
        ["t.signs", "+1 or -1", "got 0 at index (0, 0, 1)"],
    ),
    Lib(
        "triton sorf signs 0",
        lambda: sk.sdd(X, Y, t=L.sorf(((0, 0, 1), 0.0)), backend="triton"),
        ValueError,
        ["t.signs", "+1 or -1", "got 0 at index (0, 0, 1)"],
    ),
    Lib(
        "sorf signs 2 reference",
        lambda: sk.ncfd(X, Y, L.sorf(((1, 2, 3), 2.0)), backend="reference"),
        ValueError,
        ["t.signs", "got 2 at index (1, 2, 3)"],
    ),
    Lib(
        "sorf signs 3.5 cpu",
        lambda: sk.ncfd(X, Y, L.sorf(((1, 0, 0), 3.5)), backend="cpu"),
        ValueError,
        ["t.signs", "got 3.5"],
    ),
    Lib(
        "sorf signs NaN reference",
        lambda: sk.ecf(X, L.sorf(((0, 1, 0), float("nan"))), backend="reference"),
        ValueError,
        ["t.signs", "got nan"],
    ),
    Lib(
        "sorf signs NaN unchecked",
        lambda: sk.ecf(X, L.sorf(((0, 1, 0), float("nan"))), check_finite=False),
        ValueError,
        ["t.signs", "got nan"],
    ),
    Lib(
        "sorf signs all 0 (a perfect match)",
        lambda: sk.sdd(X, Y, t=L.sorf(torch.zeros_like)),
        ValueError,
        ["t.signs", "+1 or -1"],
    ),
    Lib(
        "sorf radii NaN unchecked",
        lambda: sk.sdd(X, Y, t=L.sorf(radii=((0, 1), float("nan"))), check_finite=False),
        ValueError,
        ["t.radii", "finite and > 0", "got nan at index (0, 1)"],
    ),
    Lib(
        "sorf radii inf reference",
        lambda: sk.sdd(X, Y, t=L.sorf(radii=((1, 1), float("inf"))), backend="reference"),
        ValueError,
        ["t.radii", "got inf"],
    ),
    Lib(
        "sorf radii 0 cpu",
        lambda: sk.sdd(X, Y, t=L.sorf(radii=((0, 0), 0.0)), backend="cpu"),
        ValueError,
        ["t.radii", "got 0 at index (0, 0)"],
    ),
    Lib(
        "triton sorf radii negative",
        lambda: sk.sdd(X, Y, t=L.sorf(radii=((0, 2), -1.0)), backend="triton"),
        ValueError,
        ["t.radii", "got -1"],
    ),
    Lib(
        "sorf num_freqs float cpu",
        lambda: sk.sdd(X, Y, t=L.sorf(num_freqs=8.0), backend="cpu"),
        TypeError,
        ["t.num_freqs", "8.0"],
    ),
    Lib(
        "sorf num_freqs float reference",
        lambda: sk.sdd(X, Y, t=L.sorf(num_freqs=8.0), backend="reference"),
        TypeError,
        ["t.num_freqs", "8.0"],
    ),
    Lib("sorf num_freqs a bool", lambda: sk.sdd(X, Y, t=L.sorf(num_freqs=True)), TypeError, ["t.num_freqs", "True"]),
    Lib(
        "sorf num_freqs 0 reference",
        lambda: sk.sdd(X, Y, t=L.sorf(num_freqs=0), backend="reference"),
        ValueError,
        ["t.num_freqs=0", "(4, 8]"],
    ),
    Lib(
        "sorf num_freqs beyond the blocks reference",
        lambda: sk.sdd(X, Y, t=L.sorf(num_freqs=9), backend="reference"),
        ValueError,
        ["t.num_freqs=9", "2 blocks of 4"],
    ),
    Lib(
        "sorf num_freqs negative reference",
        lambda: sk.ncfd(X, Y, L.sorf(num_freqs=-1), backend="reference"),
        ValueError,
        ["t.num_freqs=-1"],
    ),
    Lib(
        "triton sorf num_freqs beyond the blocks",
        lambda: sk.sdd(X, Y, t=L.sorf(num_freqs=17, width=16, blocks=1), backend="triton"),
        ValueError,
        ["t.num_freqs=17", "1 blocks of 16"],
    ),
    Lib("sorf dim a float", lambda: sk.sdd(X, Y, t=L.sorf(dim=3.0)), TypeError, ["t.dim", "3.0"]),
    Lib("sorf signs None", lambda: sk.sdd(X, Y, t=L.sorf(signs=lambda s: None)), TypeError, ["t.signs", "NoneType"]),
    Lib("sorf radii a list", lambda: sk.ncfd(X, Y, L.sorf(radii=lambda r: r.tolist())), TypeError, ["t.radii", "list"]),
    Lib(
        "sorf signs of another shape",
        lambda: sk.sdd(X, Y, t=L.sorf(signs=lambda s: s[:, :2])),
        ValueError,
        ["t.signs", "(B, 3, D)", "(2, 2, 4)"],
    ),
    Lib(
        "sorf radii of another shape",
        lambda: sk.sdd(X, Y, t=L.sorf(radii=lambda r: r[:1]), backend="reference"),
        ValueError,
        ["t.radii", "(2, 4)", "(1, 4)"],
    ),
    Lib(
        "sorf block width below d reference",
        lambda: sk.sdd(torch.randn(6, 5), torch.randn(4, 5), t=L.sorf(dim=5), backend="reference"),
        ValueError,
        ["D=4", "d=5"],
    ),
    Lib(
        "sorf radii requiring grad cpu",
        lambda: sk.sdd(X, Y, t=L.sorf(radii=L.requiring_grad), backend="cpu"),
        ValueError,
        ["t.radii", "requires grad", "detach"],
    ),
    Lib(
        "sorf radii requiring grad reference",
        lambda: sk.sdd(X, Y, t=L.sorf(radii=L.requiring_grad), backend="reference"),
        ValueError,
        ["t.radii", "requires grad"],
    ),
    Lib(
        "sorf signs requiring grad",
        lambda: sk.ncfd(X, Y, L.sorf(signs=L.requiring_grad)),
        ValueError,
        ["t.signs", "requires grad"],
    ),
    # the raw ops: the same contract and messages in C++ (cpu) and in the Triton op
    Lib(
        "hadamard op signs 0",
        L.op("hadamard_sums", L.signs_with((0, 1, 2), 0.0), L.sorf().radii),
        ValueError,
        ["signs", "+1 or -1", "got 0 at index (0, 1, 2)"],
    ),
    Lib(
        "hadamard op signs NaN",
        L.op("hadamard_sums", L.signs_with((1, 0, 0), float("nan")), L.sorf().radii),
        ValueError,
        ["signs", "got nan at index (1, 0, 0)"],
    ),
    Lib(
        "hadamard op radii inf",
        L.op("hadamard_sums", L.sorf().signs, L.radii_with((1, 3), float("inf"))),
        ValueError,
        ["radii", "finite and > 0", "got inf at index (1, 3)"],
    ),
    Lib(
        "hadamard op radii negative",
        L.op("hadamard_sums", L.sorf().signs, L.radii_with((0, 0), -2.0)),
        ValueError,
        ["radii", "got -2 at index (0, 0)"],
    ),
    Lib(
        "hadamard grad op signs 2",
        L.op_grad("hadamard_sums_grad_x", L.signs_with((0, 2, 0), 2.0), L.sorf().radii),
        ValueError,
        ["signs", "got 2 at index (0, 2, 0)"],
    ),
    Lib(
        "hadamard op signs on meta",
        L.op("hadamard_sums", L.sorf().signs.to("meta"), L.sorf().radii),
        ValueError,
        ["one device", "meta"],
    ),
    Lib(
        "hadamard op radii on meta",
        L.op("hadamard_sums", L.sorf().signs, L.sorf().radii.to("meta")),
        ValueError,
        ["one device", "meta"],
    ),
    Lib(
        "hadamard grad op signs on meta",
        L.op_grad("hadamard_sums_grad_x", L.sorf().signs.to("meta"), L.sorf().radii),
        ValueError,
        ["one device", "meta"],
    ),
    Lib(
        "hadamard op num_freqs 2**62 on meta",
        L.op("hadamard_sums", L.sorf().signs.to("meta"), L.sorf().radii.to("meta"), num_freqs=2**62),
        ValueError,
        ["meta"],
    ),
    Lib(
        "triton hadamard op signs 0",
        L.op(
            "hadamard_sums_triton",
            L.signs_with((0, 1, 2), 0.0, width=16, blocks=1),
            L.sorf(width=16, blocks=1).radii,
            precision="ieee",
        ),
        ValueError,
        ["signs", "+1 or -1", "got 0 at index (0, 1, 2)"],
    ),
    Lib(
        "triton hadamard op radii NaN",
        L.op(
            "hadamard_sums_triton",
            L.sorf(width=16, blocks=1).signs,
            L.radii_with((0, 5), float("nan"), width=16, blocks=1),
            precision="ieee",
        ),
        ValueError,
        ["radii", "got nan at index (0, 5)"],
    ),
    Lib(
        "triton hadamard op signs on meta",
        L.op(
            "hadamard_sums_triton",
            L.sorf(width=16, blocks=1).signs.to("meta"),
            L.sorf(width=16, blocks=1).radii,
            precision="ieee",
        ),
        ValueError,
        ["one device", "meta"],
    ),
    # sizes: refused with the argument, the shape and the bytes before anything is allocated
    Lib(
        "ecf num_classes 2**24 with 4096 frequencies",
        lambda: sk.ecf(X, torch.randn(4096, 3), L.PERM % 2, num_classes=2**24),
        ValueError,
        ["num_classes=16777216", "(16777216, 2, 4096)", "549755813888 bytes"],
    ),
    Lib(
        "sdd num_classes 2**24 with 4096 frequencies",
        lambda: sk.sdd(X, Y, XL, YL, num_classes=2**24),
        ValueError,
        ["num_classes=16777216", "549755813888 bytes"],
    ),
    Lib(
        "reference phases of 2**20 x 2**20",
        lambda: sk.ecf(L.huge_rows(2**20), torch.randn(2**20, 3), backend="reference"),
        ValueError,
        ["(3, 1048576, 1048576)", "13194139533312 bytes", "reference"],
    ),
    Lib(
        "mmd of 2**20 rows in one class",
        lambda: sk.mmd(L.huge_rows(2**20), Y),
        ValueError,
        ["mmd: class 0 with 1048576 real and 4 synthetic rows", "(1048580, 1048580)", "bytes"],
    ),
    Lib(
        "dense SORF frequencies too large",
        lambda: L.huge_sorf(2**22, 2**16, 2**38, 40000).dense(),
        ValueError,
        ["(274877906944, 40000)", "bytes"],
    ),
    Lib(
        "frequency draw of exactly 2**32 values",
        lambda: sk.sample_frequencies("gaussian", 2**16, 2**16),
        ValueError,
        ["num_freqs=65536", "dim=65536", "2**32"],
    ),
    Lib(
        "orthogonal draw of exactly 2**32 values",
        lambda: sk.sample_frequencies("gaussian", 2**16, 2**16, structure="orthogonal"),
        ValueError,
        ["num_freqs=65536", "2**32"],
    ),
    Lib(
        "sampler draw of exactly 2**32 values",
        lambda: sk.FrequencySampler(2**16, num_freqs=2**16),
        ValueError,
        ["num_freqs=65536", "dim=65536", "2**32"],
    ),
    Lib(
        "sampler num_components 10**9",
        lambda: sk.FrequencySampler(3, num_components=10**9),
        ValueError,
        ["num_components=1000000000", "num_freqs=4096"],
    ),
    Lib(
        "sampler forward draw of 2**32 values",
        lambda: sk.FrequencySampler(2**16, num_freqs=8)(num_freqs=2**16),
        ValueError,
        ["num_freqs=65536", "2**32"],
    ),
    # generators and tensors on the meta device, and a process group that is not one
    Lib(
        "sampler on meta with a generator",
        lambda: sk.FrequencySampler(3).to("meta")(generator=torch.Generator()),
        ValueError,
        ["FrequencySampler", "meta device"],
    ),
    Lib("sampler on meta", lambda: sk.FrequencySampler(3).to("meta")(), ValueError, ["FrequencySampler", "meta"]),
    Lib(
        "alpha tensor on meta",
        lambda: sk.ncfd(X, Y, T, XL, YL, alpha=torch.tensor([0.5, 0.5], device="meta")),
        ValueError,
        ["alpha", "meta"],
    ),
    Lib(
        "class_counts on meta",
        lambda: sk.csdm(X, Y, XL, YL, class_counts=torch.tensor([3.0, 3.0], device="meta")),
        ValueError,
        ["class_counts", "meta"],
    ),
    Lib(
        "head_classes on meta",
        lambda: sk.csdm_class_alpha([3, 3], head_classes=torch.tensor([True, False], device="meta")),
        ValueError,
        ["head_classes", "meta"],
    ),
    Lib("CSDMLoss on meta", lambda: sk.CSDMLoss([3, 3]).to("meta")(X, Y, XL, YL), ValueError, ["meta"]),
    Lib(
        "real_group an int",
        lambda: sk.ncfd(X, Y, T, XL, YL, num_classes=2, real_group=0),
        TypeError,
        ["real_group", "int"],
    ),
    Lib(
        "real_group a string",
        lambda: sk.sdd(X, Y, XL, YL, num_classes=2, real_group="world"),
        TypeError,
        ["real_group", "'world'"],
    ),
    Lib(
        "ecf num_classes without labels",
        lambda: sk.ecf(X, T, num_classes=3),
        ValueError,
        ["num_classes=3", "without labels"],
    ),
    # -- end of library values and sizes
    # -- trust round 3: run folders, checkpoints and synthetic sets
    # -- end of run folders
    # -- trust round 3: datasets on disk
    # -- end of datasets
    # -- round 4 freq: frequencies home
    # -- end of round 4 freq
    # -- round 4 ops: backend protocol and Triton toolkit
    # -- end of round 4 ops
    # -- round 4 modules: loss modules
    Lib("NCFDLoss real_group a string", lambda: sk.NCFDLoss(real_group="world"), TypeError, ["real_group", "world"]),
    Lib("CSDMLoss real_group an int", lambda: sk.CSDMLoss([3, 2], real_group=0), TypeError, ["real_group", "int"]),
    Lib("SDDLoss check_finite a string", lambda: sk.SDDLoss(check_finite="yes"), TypeError, ["check_finite", "yes"]),
    Lib("MMDLoss check_finite an int", lambda: sk.MMDLoss(check_finite=1), TypeError, ["check_finite", "1"]),
    Lib(
        "SDDLoss per-call generator a seed",
        lambda: sk.SDDLoss(num_freqs=4)(X, Y, generator=3),
        TypeError,
        ["generator", "int"],
    ),
    Lib(
        "CSDMLoss per-call bandwidth zero",
        lambda: sk.CSDMLoss([3, 3], num_freqs=4)(X, Y, XL, YL, bandwidth=0.0),
        ValueError,
        ["bandwidth", "0.0"],
    ),
    Lib(
        "MMDLoss per-call bandwidth negative",
        lambda: sk.MMDLoss()(X, Y, bandwidth=-1.0),
        ValueError,
        ["bandwidth", "-1.0"],
    ),
    # -- end of round 4 modules
    # -- round 4 names: names and config
    Lib(
        "config option under its old and new name",
        lambda: DistillConfig.from_dict({"frequencies": "iid", "structure": "hadamard"}),
        ValueError,
        ["frequencies is the old name of structure", "once"],
    ),
    Lib(
        "config bandwidth float32 cannot hold, by the library's check",
        lambda: DistillConfig(method="sdd", bandwidth=1e-39).validate(check_device=False),
        ValueError,
        ["--bandwidth", "bandwidth=1e-39", "float32"],
    ),
    Lib(
        "config structured frequencies of a kernel not radial, by the library's check",
        lambda: DistillConfig(method="csdm", kernel="cauchy", structure="orthogonal").validate(check_device=False),
        ValueError,
        ["--structure", "structure='orthogonal'", "cauchy"],
    ),
    # -- end of round 4 names
    # -- round 4 api: Python distillation API
    Lib("distill data an int", lambda: sk.distill.distill(3), TypeError, ["data", "map-style", "3"]),
    Lib(
        "distill item a bare tensor",
        lambda: sk.distill.distill([torch.rand(1, 8, 8)] * 4),
        TypeError,
        ["item 0", "(image tensor, int label)"],
    ),
    Lib(
        "distill item label a string",
        lambda: sk.distill.distill([(torch.rand(1, 8, 8), 0), (torch.rand(1, 8, 8), "cat")]),
        TypeError,
        ["item 1", "'cat'", "int"],
    ),
    Lib(
        "distill item label a float",
        lambda: sk.distill.distill([(torch.rand(1, 8, 8), 0), (torch.rand(1, 8, 8), 1.0)]),
        TypeError,
        ["item 1", "1.0", "int"],
    ),
    Lib(
        "distill item image a list",
        lambda: sk.distill.distill([([0.0] * 4, 0)] * 3),
        TypeError,
        ["item 0", "image", "tensor"],
    ),
    Lib(
        "distill item image 2-D",
        lambda: sk.distill.distill([(torch.rand(8, 8), 0)] * 3),
        ValueError,
        ["item 0", "(8, 8)", "(channels, H, W)"],
    ),
    Lib(
        "distill item image non-finite",
        lambda: sk.distill.distill([(torch.rand(1, 8, 8), 0), (torch.full((1, 8, 8), float("nan")), 1)]),
        ValueError,
        ["item 1", "non-finite"],
    ),
    Lib(
        "distill images of mixed sizes",
        lambda: sk.distill.distill([(torch.rand(1, 8, 8), 0), (torch.rand(1, 9, 8), 1)]),
        ValueError,
        ["item 1", "(1, 9, 8)", "mixed sizes", "image_size"],
    ),
    Lib(
        "distill label outside num_classes",
        lambda: sk.distill.distill((torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 5])), num_classes=3),
        ValueError,
        ["item 3", "label 5", "3 classes"],
    ),
    Lib(
        "distill negative label",
        lambda: sk.distill.distill([(torch.rand(1, 8, 8), -1), (torch.rand(1, 8, 8), 0)]),
        ValueError,
        ["item 0", "label -1"],
    ),
    Lib(
        "distill a class without items",
        lambda: sk.distill.distill((torch.rand(6, 1, 8, 8), torch.arange(6) % 3), num_classes=4),
        ValueError,
        ["class 3", "no item"],
    ),
    Lib(
        "distill tensors of mismatched length",
        lambda: sk.distill.distill((torch.rand(6, 1, 8, 8), torch.arange(5) % 3)),
        ValueError,
        ["6 images", "5 labels"],
    ),
    Lib(
        "distill labels floating",
        lambda: sk.distill.distill((torch.rand(6, 1, 8, 8), torch.zeros(6))),
        TypeError,
        ["labels", "integers", "float32"],
    ),
    Lib(
        "distill images 3-D in a pair",
        lambda: sk.distill.distill((torch.rand(6, 8, 8), torch.arange(6) % 3)),
        TypeError,
        ["images", "(N, channels, H, W)", "(6, 8, 8)"],
    ),
    Lib(
        "distill no items",
        lambda: sk.distill.distill((torch.rand(0, 1, 8, 8), torch.zeros(0, dtype=torch.int64))),
        ValueError,
        ["data", "no items"],
    ),
    Lib(
        "distill network not callable",
        lambda: sk.distill.distill((torch.rand(6, 1, 8, 8), torch.arange(6) % 3), network="convnet"),
        TypeError,
        ["network", "callable", "'convnet'"],
    ),
    Lib(
        "distill network a module, not a factory",
        lambda: sk.distill.distill((torch.rand(6, 1, 8, 8), torch.arange(6) % 3), network=torch.nn.Linear(64, 4)),
        TypeError,
        ["network", "factory", "Linear"],
    ),
    Lib(
        "distill network returns no module",
        lambda: sk.distill.distill((torch.rand(6, 1, 8, 8), torch.arange(6) % 3), network=lambda g: "net"),
        TypeError,
        ["network", "nn.Module", "'net'"],
    ),
    Lib(
        "distill network output 4-D",
        lambda: sk.distill.distill(
            (torch.rand(6, 1, 8, 8), torch.arange(6) % 3), network=lambda g: torch.nn.Conv2d(1, 2, 3)
        ),
        ValueError,
        ["network", "(6, 2, 6, 6)", "(N, d)"],
    ),
    Lib(
        "distill network output one row",
        lambda: sk.distill.distill(
            (torch.rand(6, 1, 8, 8), torch.arange(6) % 3), network=lambda g: torch.nn.Flatten(0)
        ),
        ValueError,
        ["network", "(384,)", "(N, d)"],
    ),
    Lib(
        "distill network output non-finite",
        lambda: sk.distill.distill(
            (torch.rand(6, 1, 8, 8), torch.arange(6) % 3),
            network=lambda g: torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Threshold(100.0, float("nan"))),
        ),
        ValueError,
        ["network", "not finite"],
    ),
    Lib(
        "distill loss a string",
        lambda: sk.distill.distill((torch.rand(6, 1, 8, 8), torch.arange(6) % 3), loss="sdd"),
        TypeError,
        ["loss", "'sdd'"],
    ),
    Lib(
        "distill loss and method both",
        lambda: sk.distill.distill((torch.rand(6, 1, 8, 8), torch.arange(6) % 3), method="dm", loss=sk.MMDLoss()),
        ValueError,
        ["method='dm'", "loss"],
    ),
    Lib(
        "distill loss returns a vector",
        lambda: sk.distill.distill(
            (torch.rand(6, 1, 8, 8), torch.arange(6) % 3), loss=lambda real, syn, ry, sy: syn.sum(1)
        ),
        TypeError,
        ["loss", "scalar", "shape (6,)"],
    ),
    Lib(
        "distill loss returns NaN",
        lambda: sk.distill.distill(
            (torch.rand(6, 1, 8, 8), torch.arange(6) % 3), loss=lambda real, syn, ry, sy: syn.sum() * float("nan")
        ),
        ValueError,
        ["loss", "nan", "first batch"],
    ),
    Lib(
        "distill unknown option",
        lambda: sk.distill.distill((torch.rand(6, 1, 8, 8), torch.arange(6) % 3), widht=8),
        TypeError,
        ["unknown option", "widht"],
    ),
    Lib(
        "distill num_eval on user data",
        lambda: sk.distill.distill((torch.rand(6, 1, 8, 8), torch.arange(6) % 3), num_eval=3),
        ValueError,
        ["num_eval=3", "test set", "evaluate"],
    ),
    Lib(
        "distill net_pool with a user network",
        lambda: sk.distill.distill(
            (torch.rand(6, 1, 8, 8), torch.arange(6) % 3), network=lambda g: torch.nn.Flatten(), net_pool=2
        ),
        ValueError,
        ["net_pool", "network"],
    ),
    Lib(
        "distill resume without out",
        lambda: sk.distill.distill((torch.rand(6, 1, 8, 8), torch.arange(6) % 3), resume=True),
        ValueError,
        ["resume", "out="],
    ),
    Lib("distill unknown dataset", lambda: sk.distill.distill("digitz"), ValueError, ["unknown dataset", "'digitz'"]),
    Lib(
        "distill num_classes of a bundled dataset",
        lambda: sk.distill.distill("digits", num_classes=8),
        ValueError,
        ["num_classes", "'digits'"],
    ),
    Lib(
        "distill image_size zero",
        lambda: sk.distill.distill((torch.rand(6, 1, 8, 8), torch.arange(6) % 3), image_size=(0, 8)),
        ValueError,
        ["image_size", "[0, 8]", "[2, 1024]"],
    ),
    Lib(
        "distill num_classes a string",
        lambda: sk.distill.distill((torch.rand(6, 1, 8, 8), torch.arange(6) % 3), num_classes="3"),
        TypeError,
        ["num_classes", "'3'"],
    ),
    Lib(
        "distill ipc zero",
        lambda: sk.distill.distill((torch.rand(6, 1, 8, 8), torch.arange(6) % 3), ipc=0),
        ValueError,
        ["--ipc", "got 0"],
    ),
    Lib("evaluate run an int", lambda: sk.distill.evaluate(42), TypeError, ["run", "42", "DistillResult"]),
    Lib(
        "evaluate num_eval zero",
        lambda: sk.distill.evaluate("nowhere", num_eval=0),
        ValueError,
        ["--num-eval", "got 0"],
    ),
    # -- end of round 4 api
    # -- round 4 imgsize: image size and lazy image folders
    Lib("config image_size zero", lambda: DistillConfig(image_size=0).validate(), ValueError, ["--image-size", "[0]"]),
    Lib(
        "config image_size of three sides",
        lambda: DistillConfig(image_size=[8, 8, 8]).validate(),
        ValueError,
        ["--image-size", "one or two", "3"],
    ),
    Lib(
        "config image_size above 1024",
        lambda: DistillConfig(image_size=[20, 2000]).validate(),
        ValueError,
        ["--image-size", "2000", "1024"],
    ),
    Lib(
        "config image_size a string",
        lambda: DistillConfig(image_size="32").validate(),
        ValueError,
        ["--image-size", "'32'"],
    ),
    Lib(
        "config image_size a bool",
        lambda: DistillConfig(image_size=True).validate(),
        ValueError,
        ["--image-size", "True"],
    ),
    Lib(
        "config image_size a float side",
        lambda: DistillConfig(image_size=[8.0, 8]).validate(),
        ValueError,
        ["--image-size", "8.0"],
    ),
    Lib("config image_size empty", lambda: DistillConfig(image_size=[]).validate(), ValueError, ["--image-size", "0"]),
    Lib(
        "config factor not dividing image_size",
        lambda: DistillConfig(image_size=[20, 27], factor=2).validate(),
        ValueError,
        ["--factor 2", "20 x 27", "--image-size"],
    ),
    # -- end of round 4 imgsize
    # -- round 4 hw: hardware leftovers
    Lib(
        "torchrun with an explicit cuda index",
        lambda: sk.distill.hardware.process_device("cuda:1", {"WORLD_SIZE": "2", "LOCAL_RANK": "1"}),
        ValueError,
        ["--device cuda:1", "WORLD_SIZE=2", "LOCAL_RANK", "--device cuda"],
    ),
    Lib(
        "torchrun without LOCAL_RANK",
        lambda: sk.distill.hardware.process_device("cuda", {"WORLD_SIZE": "2"}),
        ValueError,
        ["LOCAL_RANK", "None"],
    ),
    Lib(
        "torchrun LOCAL_RANK not a number",
        lambda: sk.distill.hardware.process_device("cuda", {"WORLD_SIZE": "2", "LOCAL_RANK": "first"}),
        ValueError,
        ["LOCAL_RANK", "'first'"],
    ),
    Lib(
        "torchrun WORLD_SIZE not a number",
        lambda: sk.distill.hardware.process_device("cpu", {"WORLD_SIZE": "two"}),
        ValueError,
        ["WORLD_SIZE", "'two'"],
    ),
    # -- end of round 4 hw
]


# ----------------------------------------------------------------------------- CLI cases

# The run every damaged-file case starts from: interrupted after its checkpoint of iteration 2
# (so --resume reads checkpoint.pt, metrics.jsonl and net_pool.pt), then a finished copy.
TEMPLATE = dict(
    dataset="digits",
    method="dm",
    ipc=1,
    iterations=4,
    width=8,
    batch_real=4,
    num_eval=0,
    quiet=True,
    net_pool=1,
    pool_epochs=1,
    checkpoint_every=2,
    seed=0,
)
TEMPLATE_ARGV = [
    f"--{k.replace('_', '-')}" if v is True else f"--{k.replace('_', '-')}={v}" for k, v in TEMPLATE.items()
]
_TEMPLATES: dict[str, Path] = {}


def _make_templates(root: Path) -> None:
    config = DistillConfig(**TEMPLATE, out=str(root / "cut"))

    def interrupt(iteration):
        if iteration == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        distill(config, on_iteration=interrupt)
    _TEMPLATES["cut"] = root / "cut"
    _TEMPLATES["done"] = distill(DistillConfig(**TEMPLATE, out=str(root / "done")))


def _backward_failing_compiler(d: Path):
    """A third-party torch.compile backend in d/plugin, found by torch through its
    torch_dynamo_backends entry point (as an installed package's would be): the forward compiles,
    the backward graph's compiler fails."""
    plugin = d / "plugin"
    info = plugin / "sk_test_backward_failing-0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: sk-test-backward-failing\nVersion: 0\n")
    (info / "entry_points.txt").write_text(
        "[torch_dynamo_backends]\nspectral_kernels_test_failing_backward = sk_test_backward_failing:backend\n"
    )
    (plugin / "sk_test_backward_failing.py").write_text(
        "from torch._dynamo.backends.common import aot_autograd\n\n\n"
        "def _forward(gm, example_inputs):\n    return gm.forward\n\n\n"
        "def _fail(gm, example_inputs):\n"
        "    raise RuntimeError('forced backward compiler failure\\nwith a second line')\n\n\n"
        "backend = aot_autograd(fw_compiler=_forward, bw_compiler=_fail)\n"
    )


# The case's PYTHONPATH: the plugin's folder before whatever the tests run with (the worktree).
_PLUGIN_PATH = os.pathsep.join(["{d}/plugin", *filter(None, [os.environ.get("PYTHONPATH")])])
_BACKWARD_FAILING_ENV = {
    "PYTHONPATH": _PLUGIN_PATH,
    "SPECTRAL_KERNELS_COMPILE_BACKEND": "spectral_kernels_test_failing_backward",
}


def _copy(which="cut", to="run"):
    def setup(d: Path):
        shutil.copytree(_TEMPLATES[which], d / to)

    return setup


def _then(*steps):
    def setup(d: Path):
        cleanups = [step(d) for step in steps]
        return lambda: [c() for c in cleanups if callable(c)]

    return setup


def _write(name, data):
    """Replace run/name with bytes, text, or (a function of the loaded object) its torch.save."""

    def step(d: Path):
        path = d / "run" / name
        if callable(data):
            obj = torch.load(path, weights_only=True)
            with open(path, "wb") as f:
                torch.save(data(obj), f)
        elif isinstance(data, str):
            path.write_text(data)
        else:
            path.write_bytes(data)

    return step


def _truncate(name, keep=200):
    return lambda d: (d / "run" / name).write_bytes((d / "run" / name).read_bytes()[:keep])


class _RunsCode:
    """Unpickling this runs a shell command (pickled as posix.system): a crafted file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _crafted(name):
    return lambda d: (d / "run" / name).write_bytes(pickle.dumps({"iteration": 0, "images": _RunsCode(d / "pwned")}))


def _no_code_ran(d: Path):
    assert not (d / "pwned").exists(), "the crafted file ran code"


def _user_files(folder="mine"):
    def setup(d: Path):
        (d / folder).mkdir(exist_ok=True)
        (d / folder / "thesis.tex").write_text("years of work")
        (d / folder / "grid.png").write_text("not ours")

    return setup


def _user_files_intact(folder="mine"):
    def after(d: Path):
        assert sorted(p.name for p in (d / folder).iterdir()) == ["grid.png", "thesis.tex"]
        assert (d / folder / "thesis.tex").read_text() == "years of work"

    return after


def _run_unchanged(which="done"):
    def after(d: Path):
        template = _TEMPLATES[which]
        assert sorted(p.name for p in (d / "run").iterdir()) == sorted(p.name for p in template.iterdir())
        for p in template.iterdir():
            if p.name != ".lock":
                assert (d / "run" / p.name).read_bytes() == p.read_bytes(), p.name

    return after


def _cut_run_kept(d: Path) -> bool:
    """The interrupted run's checkpoint and pool as they were, and no synthetic set written."""
    kept = ("checkpoint.pt", "net_pool.pt")
    same = all((d / "run" / name).read_bytes() == (_TEMPLATES["cut"] / name).read_bytes() for name in kept)
    return same and not (d / "run" / "synthetic.pt").exists()


def _hold_lock(d: Path):
    """This pytest process takes the run's flock, as a running distillation would."""
    fd = hold_run_lock(d / "run")
    return lambda: os.close(fd)


def _config_file(name, text):
    return lambda d: (d / name).write_text(text) if isinstance(text, str) else (d / name).write_bytes(text)


def _fake_cifar(damaged: str | None = None):
    def setup(d: Path):
        import numpy as np

        folder = d / "cifar" / "cifar-10-batches-py"
        folder.mkdir(parents=True)
        rng = np.random.default_rng(0)
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            batch = {b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), b"labels": [0, 1, 0, 1]}
            (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
        if damaged:
            (folder / damaged).write_bytes((folder / damaged).read_bytes()[:50])

    return setup


def _image_folder(kind: str):
    def setup(d: Path):
        import numpy as np
        from PIL import Image

        root = d / "images"
        for split in ["train", "test"] if kind == "split" else [""]:
            for c in ("cats", "dogs") if not (kind == "split" and split == "test") else ("cats", "mice"):
                (root / split / c).mkdir(parents=True)
                for i in range(3):
                    Image.fromarray(np.full((8, 8, 3), 40 * i, dtype=np.uint8)).save(root / split / c / f"{i}.png")
        if kind == "unreadable":
            (root / "dogs" / "broken.png").write_bytes(b"\x89PNG but not really")
        if kind == "empty class":
            (root / "birds").mkdir()

    return setup


CIFAR10 = ["distill", *FAST_CLI, "--out", "{d}/run", "--dataset", "cifar10", "--data-root", "{d}/cifar"]
IMAGES = ["distill", *FAST_CLI, "--out", "{d}/run", "--dataset", "imagefolder", "--data-root", "{d}/images"]


def _cifar_with(which="cifar10", **files):
    """A CIFAR folder under {d}/cifar whose named files hold the given bytes, or what the given
    functions return when the case is set up (tests/_bad_data.py builds them)."""
    from ._bad_data import cifar_folder

    def setup(d: Path):
        cifar_folder(d / "cifar", which, {name: raw() if callable(raw) else raw for name, raw in files.items()})

    return setup


def _cifar_labels(labels, which="cifar10"):
    """A CIFAR folder whose first file holds these labels (a function of numpy: called at setup)."""

    def batch():
        import numpy as np

        from ._bad_data import CIFAR, cifar_batch

        _, files, key, _ = CIFAR[which]
        return cifar_batch(labels=labels(np) if callable(labels) else labels, label_key=key)

    return _cifar_with(which, **{"data_batch_1" if which == "cifar10" else "train": batch})


def _cifar_images(data):
    """A CIFAR folder whose data_batch_2 holds these images (a function of numpy: called at setup)."""

    def batch():
        import numpy as np

        from ._bad_data import cifar_batch

        return cifar_batch(data=data(np) if callable(data) else data)

    return _cifar_with(data_batch_2=batch)


def _hostile_batch(kind):
    """A CIFAR folder whose data_batch_2 is one of the hostile pickles of tests/_bad_data.py."""

    def batch():
        from . import _bad_data as bad

        rows = (40000, 3072)  # 123 MB named by a file of a few hundred bytes
        return {
            "declared": lambda: bad.cifar_batch(data=bad.DeclaredArray(rows), labels=bad.DeclaredArray((40000,), "i8")),
            "reconstructed": lambda: bad.cifar_batch(data=bad.ReconstructedArray(rows, "u1", b"", empty_shape=rows)),
            "state": lambda: bad.cifar_batch(data=bad.ReconstructedArray(rows, "u1", bytes(3072))),
            "shared": lambda: bad.cifar_batch(
                extra={b"more": [bad.ReconstructedArray((65536,), "u1", SHARED_64K) for _ in range(400)]}
            ),
            "object state": lambda: bad.cifar_batch(data=bad.ReconstructedArray((4, 3072), "O", [0, 1])),
            "in-band": bad.in_band_bytearray_batch,
            "out-of-band": bad.out_of_band_batch,
            "rot13": lambda: bad.cifar_batch(data=bad.Encoded("images", "rot13")),
        }[kind]()

    return _cifar_with(data_batch_2=batch)


SHARED_64K = bytes(65536)  # one object, so that the pickler memoizes it: 400 arrays share its 64 KiB


def _fifo_batch(name):
    def setup(d: Path):
        _cifar_with()(d)
        path = d / "cifar" / "cifar-10-batches-py" / name
        path.unlink()
        os.mkfifo(path)

    return setup


def _hostile_images(kind):
    from ._bad_data import hostile_image_folder

    return lambda d: hostile_image_folder(d / "images", kind)


def _sized_images(*sizes, bomb=False):
    """{d}/images/cats and dogs of three RGB images each, image k of (height, width) sizes[k % len(sizes)]."""

    def setup(d: Path):
        from ._bad_data import png_declaring, save_image

        for k in range(6):
            height, width = sizes[k % len(sizes)]
            save_image(d / "images" / ("cats", "dogs")[k // 3] / f"{k % 3}.png", 40 * k, size=(width, height))
        if bomb:
            (d / "images" / "dogs" / "huge.png").write_bytes(png_declaring(20000, 20000))

    return setup


def _damaged_pool_cache(d: Path):
    """A garbage file where the pool of DISTILL --net-pool 1 --pool-epochs 1 would be cached."""
    from spectral_kernels.cli import _parser
    from spectral_kernels.distill.pool import pool_key

    args = vars(_parser().parse_args([*DISTILL, "--net-pool", "1", "--pool-epochs", "1"]))
    values = {k: v for k, v in args.items() if k not in ("command", "config", "resume", "overwrite")}
    path = d / "cache" / "pools" / f"{pool_key(DistillConfig.from_dict(values))}.pt"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a pool")


RUN = ["--out", "{d}/run"]
DISTILL = ["distill", *FAST_CLI, *RUN]
RESUME = ["distill", *TEMPLATE_ARGV, *RUN, "--resume"]
UNSAFE = {"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}  # torch's default would trust any pickle

CLI_CASES = [
    # options
    Cli("unknown dataset", [*DISTILL, "--dataset", "mnist"], ["unknown dataset", "mnist"]),
    Cli("unknown method", [*DISTILL, "--method", "gan"], ["unknown method", "gan"]),
    Cli("unknown kernel option", [*DISTILL, "--kernel", "rbf"], ["unknown kernel", "rbf"]),
    Cli("unknown alpha rule option", [*DISTILL, "--alpha-rule", "median"], ["--alpha-rule", "alpha_rule", "'median'"]),
    Cli("ipc zero", [*DISTILL, "--ipc", "0"], ["--ipc", "[1, 10000]", "0"]),
    Cli("ipc a billion", [*DISTILL, "--ipc", "1000000000"], ["--ipc", "1000000000"]),
    Cli("ipc not a number", [*DISTILL, "--ipc", "three"], ["--ipc", "invalid int value", "three"]),
    Cli("imbalance below one", [*DISTILL, "--imbalance", "0.5"], ["--imbalance", "0.5"]),
    Cli("imbalance nan", [*DISTILL, "--imbalance", "nan"], ["--imbalance", "nan"]),
    Cli("imbalance inf", [*DISTILL, "--imbalance", "inf"], ["--imbalance", "inf"]),
    Cli(
        "imbalance empties a class",
        [*DISTILL, "--dataset", "digits-lt", "--imbalance", "100000"],
        ["--imbalance 100000", "no training image", "<= "],
    ),
    Cli("cifar without data root", [*DISTILL, "--dataset", "cifar10"], ["cifar10", "--data-root"]),
    Cli(
        "data root missing",
        [*DISTILL, "--dataset", "cifar10", "--data-root", "{d}/nowhere"],
        ["nowhere", "does not exist"],
    ),
    Cli("data root empty string", [*DISTILL, "--dataset", "cifar10", "--data-root", ""], ["--data-root", "''"]),
    Cli("lr zero", [*DISTILL, "--lr", "0"], ["--lr", "0.0"]),
    Cli("lr inf", [*DISTILL, "--lr", "inf"], ["--lr", "inf"]),
    Cli("lr nan", [*DISTILL, "--lr", "nan"], ["--lr", "nan"]),
    Cli("bandwidth negative", [*DISTILL, "--bandwidth", "-1"], ["--bandwidth", "-1.0"]),
    Cli("bandwidth inf", [*DISTILL, "--bandwidth", "inf"], ["--bandwidth", "inf"]),
    Cli("alpha head above one", [*DISTILL, "--alpha-head", "1.5"], ["--alpha-head", "1.5"]),
    Cli("device unknown", [*DISTILL, "--device", "tpu"], ["--device", "tpu"]),
    Cli("device cuda-ish", [*DISTILL, "--device", "cudafoo"], ["--device", "cudafoo"]),
    Cli("seed negative", [*DISTILL, "--seed", "-1"], ["--seed", "-1"]),
    Cli("seed beyond 32 bits", [*DISTILL, "--seed", str(2**40)], ["--seed", str(2**40)]),
    Cli("num freqs zero", [*DISTILL, "--num-freqs", "0"], ["--num-freqs", "0"]),
    Cli("width huge", [*DISTILL, "--width", "100000"], ["--width", "100000"]),
    Cli("checkpoint every zero", [*DISTILL, "--checkpoint-every", "0"], ["--checkpoint-every", "0"]),
    Cli("iterations negative", [*DISTILL, "--iterations", "-5"], ["--iterations", "-5"]),
    Cli("unknown flag", [*DISTILL, "--ipcs", "3"], ["unrecognized arguments", "--ipcs"]),
    Cli("no command", [], ["command"]),
    Cli("unknown command", ["train"], ["invalid choice", "train"]),
    Cli("out empty", ["distill", *FAST_CLI, "--out", ""], ["--out", "''"]),
    Cli(
        "out is a file",
        ["distill", *FAST_CLI, "--out", "{d}/file"],
        ["--out", "not a directory"],
        setup=lambda d: (d / "file").write_text("x"),
    ),
    Cli(
        "out under a file",
        ["distill", *FAST_CLI, "--out", "{d}/file/run"],
        ["cannot write to --out"],
        setup=lambda d: (d / "file").write_text("x"),
    ),
    Cli("resume and overwrite together", [*DISTILL, "--resume", "--overwrite"], ["--resume and --overwrite"]),
    # recipe options
    Cli(
        "unknown frequency structure",
        [*DISTILL, "--structure", "sobol"],
        ["--structure", "'iid', 'orthogonal', 'hadamard'", "'sobol'"],
    ),
    Cli(
        "structured frequencies of a kernel not radial",
        [*DISTILL, "--method", "sdd", "--kernel", "laplacian", "--structure", "hadamard"],
        ["--structure", "'hadamard'", "radial", "laplacian"],
    ),
    Cli(
        "structured frequencies with a learned sampler",
        [*DISTILL, "--method", "ncfm", "--learned-sampler", "--structure", "orthogonal"],
        ["--structure", "learned sampler"],
    ),
    Cli("unknown recipe", [*DISTILL, "--recipe", "dc"], ["--recipe", "thin, ncfm", "'dc'"]),
    Cli("factor that does not divide the image", [*DISTILL, "--factor", "3"], ["--factor 3", "image size 8"]),
    Cli("factor zero", [*DISTILL, "--factor", "0"], ["--factor", "[1, 8]"]),
    Cli("unknown optimizer", [*DISTILL, "--optimizer", "sgd"], ["--optimizer", "adam, adamw", "'sgd'"]),
    Cli("unknown lr schedule", [*DISTILL, "--lr-schedule", "cosine"], ["--lr-schedule", "'cosine'"]),
    Cli("unknown eval optimizer", [*DISTILL, "--eval-optimizer", "adam"], ["--eval-optimizer", "sgd, adamw"]),
    Cli("unknown eval schedule", [*DISTILL, "--eval-schedule", "cosine"], ["--eval-schedule", "half, steps"]),
    Cli("unknown init fill", [*DISTILL, "--init-fill", "zeros"], ["--init-fill", "noise, repeat", "'zeros'"]),
    Cli("eval cutmix above one", [*DISTILL, "--eval-cutmix", "1.5"], ["--eval-cutmix", "probability", "1.5"]),
    Cli("calibration weight negative", [*DISTILL, "--calib-weight", "-1"], ["--calib-weight", "-1.0"]),
    Cli("calibration without a pool", [*DISTILL, "--calib-weight", "1"], ["--calib-weight", "--net-pool >= 1"]),
    Cli("interpolation without a pool", [*DISTILL, "--pool-interpolate"], ["--pool-interpolate", "--net-pool >= 1"]),
    Cli("weight decay nan", [*DISTILL, "--weight-decay", "nan"], ["--weight-decay", "nan"]),
    Cli(
        "cached pool damaged",
        [*DISTILL, "--net-pool", "1", "--pool-epochs", "1"],
        ["cache", "damaged"],
        setup=lambda d: _damaged_pool_cache(d),
        env={"SPECTRAL_KERNELS_CACHE": "{d}/cache"},
    ),
    # config files
    Cli(
        "config bool as a string",
        [*DISTILL, "--config", "{d}/c.json"],
        ["--learned-sampler", "true or false", "'false'"],
        setup=_config_file("c.json", '{"learned_sampler": "false"}'),
    ),
    Cli(
        "config int as a string",
        [*DISTILL, "--config", "{d}/c.json"],
        ["--num-freqs", "an integer", "'3'"],
        setup=_config_file("c.json", '{"num_freqs": "3"}'),
    ),
    Cli(
        "config int as a float",
        [*DISTILL, "--config", "{d}/c.json"],
        ["--pool-epochs", "an integer", "2.5"],
        setup=_config_file("c.json", '{"pool-epochs": 2.5}'),
    ),
    Cli(
        "config int as a bool",
        [*DISTILL, "--config", "{d}/c.json"],
        ["--seed", "an integer", "True"],
        setup=_config_file("c.json", '{"seed": true}'),
    ),
    Cli(
        "config float as a string",
        [*DISTILL, "--config", "{d}/c.json"],
        ["--lr", "a number", "'fast'"],
        setup=_config_file("c.json", '{"lr": "fast"}'),
    ),
    Cli(
        "config string as a number",
        [*DISTILL, "--config", "{d}/c.json"],
        ["--kernel", "a string", "5"],
        setup=_config_file("c.json", '{"kernel": 5}'),
    ),
    Cli(
        "config list for a float",
        [*DISTILL, "--config", "{d}/c.json"],
        ["--imbalance", "a number or null"],
        setup=_config_file("c.json", '{"imbalance": [1, 2]}'),
    ),
    Cli(
        "config null for a string",
        [*DISTILL, "--config", "{d}/c.json"],
        ["--method", "null"],
        setup=_config_file("c.json", '{"method": null}'),
    ),
    Cli(
        "config huge integer for a float",
        [*DISTILL, "--config", "{d}/c.json"],
        ["--lr", "too large"],
        setup=_config_file("c.json", '{"lr": ' + "9" * 400 + "}"),
    ),
    Cli(
        "config unknown key",
        [*DISTILL, "--config", "{d}/c.json"],
        ["unknown option", "ipcs"],
        setup=_config_file("c.json", '{"ipcs": 3}'),
    ),
    Cli(
        "config a list",
        [*DISTILL, "--config", "{d}/c.json"],
        ["mapping", "list"],
        setup=_config_file("c.json", "[1, 2]"),
    ),
    Cli(
        "config invalid JSON",
        [*DISTILL, "--config", "{d}/c.json"],
        ["not valid JSON"],
        setup=_config_file("c.json", '{"ipc": 3,'),
    ),
    Cli(
        "config invalid YAML",
        [*DISTILL, "--config", "{d}/c.yaml"],
        ["not valid YAML", "line"],
        setup=_config_file("c.yaml", "ipc: [3\nmethod: dm\n"),
    ),
    Cli(
        "config YAML date for an int",
        [*DISTILL, "--config", "{d}/c.yaml"],
        ["--seed", "an integer", "date"],
        setup=_config_file("c.yaml", "seed: 2020-01-01\n"),
    ),
    Cli(
        "config YAML scalar",
        [*DISTILL, "--config", "{d}/c.yaml"],
        ["mapping", "str"],
        setup=_config_file("c.yaml", "just words\n"),
    ),
    Cli(
        "config not UTF-8",
        [*DISTILL, "--config", "{d}/c.json"],
        ["not UTF-8"],
        setup=_config_file("c.json", b"\xff\xfe{\x00"),
    ),
    Cli("config missing", [*DISTILL, "--config", "{d}/none.json"], ["--config", "does not exist"]),
    Cli("config a directory", [*DISTILL, "--config", "{d}"], ["--config", "not a file"]),
    Cli(
        "config integer of 5000 digits",
        [*DISTILL, "--config", "{d}/c.json"],
        ["not valid JSON"],
        setup=_config_file("c.json", '{"ipc": ' + "9" * 5000 + "}"),
    ),
    Cli(
        "config nested 100000 deep",
        [*DISTILL, "--config", "{d}/c.json"],
        ["not valid JSON"],
        setup=_config_file("c.json", "[" * 100000 + "]" * 100000),
    ),
    Cli(
        "config YAML aliases",
        [*DISTILL, "--config", "{d}/c.yaml"],
        ["YAML aliases"],
        setup=_config_file("c.yaml", "a: &x [1, 2]\nb: [*x, *x]\n"),
    ),
    Cli(
        "config a FIFO",
        [*DISTILL, "--config", "{d}/c.json"],
        ["--config", "not a file"],
        setup=lambda d: os.mkfifo(d / "c.json"),
    ),
    Cli(
        "config sets overwrite",
        [*DISTILL, "--config", "{d}/c.json"],
        ["overwrite", "command line"],
        setup=_config_file("c.json", '{"overwrite": true}'),
    ),
    # run directories: nothing that is not a run is ever written into or removed
    Cli(
        "overwrite a folder of user files",
        ["distill", *FAST_CLI, "--out", "{d}/mine", "--overwrite"],
        ["holds no run", "never written into"],
        setup=_user_files(),
        after=_user_files_intact(),
    ),
    Cli(
        "resume a folder of user files",
        ["distill", *FAST_CLI, "--out", "{d}/mine", "--resume"],
        ["holds no run"],
        setup=_user_files(),
        after=_user_files_intact(),
    ),
    Cli(
        "out dot in a folder of user files",
        ["distill", *FAST_CLI, "--out", ".", "--overwrite"],
        ["holds no run"],
        setup=_user_files(),
        after=_user_files_intact(),
        cwd="mine",
    ),
    Cli(
        "overwrite where config.json is not ours",
        ["distill", *FAST_CLI, "--out", "{d}/mine", "--overwrite"],
        ["does not hold a run", "nothing was changed"],
        setup=_then(_user_files(), lambda d: (d / "mine" / "config.json").write_text('{"name": "my paper"}')),
        after=lambda d: (d / "mine" / "config.json").read_text() == '{"name": "my paper"}',
    ),
    Cli(
        "overwrite with a rejected data root keeps the run",
        [*DISTILL, "--dataset", "cifar10", "--data-root", "{d}/nowhere", "--overwrite"],
        ["does not exist"],
        setup=_copy("done"),
        after=_run_unchanged(),
    ),
    Cli(
        "overwrite with a rejected option keeps the run",
        [*DISTILL, "--ipc", "0", "--overwrite"],
        ["--ipc"],
        setup=_copy("done"),
        after=_run_unchanged(),
    ),
    Cli(
        "existing run without a flag",
        DISTILL,
        ["already holds a run", "--resume", "--overwrite"],
        setup=_copy("done"),
        after=_run_unchanged(),
    ),
    Cli(
        "resume with other options",
        [*RESUME, "--ipc", "2"],
        ["options differ", "ipc"],
        setup=_copy("cut"),
        after=_run_unchanged("cut"),
    ),
    Cli(
        "resume a run in use",
        RESUME,
        ["in use by another", f"pid {os.getpid()}"],
        setup=_then(_copy("cut"), _hold_lock),
    ),
    Cli(
        "overwrite a run in use",
        [*DISTILL, "--overwrite"],
        ["in use by another", f"pid {os.getpid()}"],
        setup=_then(_copy("done"), _hold_lock),
        after=_run_unchanged(),
    ),
    Cli(
        "resume with a damaged config.json",
        RESUME,
        ["config.json", "damaged"],
        setup=_then(_copy("cut"), _write("config.json", "{not json")),
    ),
    Cli(
        "overwrite where config.json is someone's parsable JSON",
        ["distill", *FAST_CLI, "--out", "{d}/mine", "--overwrite"],
        ["not written by spectral-distill", "nothing was changed"],
        setup=_then(_user_files(), lambda d: (d / "mine" / "config.json").write_text('{"seed": 3}')),
        after=lambda d: (
            (d / "mine" / "config.json").read_text() == '{"seed": 3}' and (d / "mine" / "thesis.tex").exists()
        ),
    ),
    Cli(
        "overwrite with a bandwidth float32 cannot hold",
        [*DISTILL, "--method", "sdd", "--bandwidth", "1e300", "--overwrite"],
        ["--bandwidth", "float32"],
        setup=_copy("done"),
        after=_run_unchanged(),
    ),
    Cli(
        "a lock file of someone else's",
        ["distill", *FAST_CLI, "--out", "{d}/mine"],
        [".lock", "not a spectral-distill lock file"],
        setup=lambda d: ((d / "mine").mkdir(), (d / "mine" / ".lock").write_text("my notes")),
        after=lambda d: (d / "mine" / ".lock").read_text() == "my notes",
    ),
    Cli(
        "evaluate through a symlinked metrics.jsonl",
        ["evaluate", "{d}/run", "--num-eval", "1", "--eval-epochs", "1"],
        ["metrics.jsonl", "symbolic link"],
        setup=_then(
            _copy("done"),
            lambda d: (d / "outside.txt").write_text("mine\n"),
            lambda d: (d / "run" / "metrics.jsonl").unlink(),
            lambda d: (d / "run" / "metrics.jsonl").symlink_to(d / "outside.txt"),
        ),
        after=lambda d: (d / "outside.txt").read_text() == "mine\n",
    ),
    Cli(
        "a sampler the learning rate blows up",
        [*DISTILL, "--method", "ncfm", "--learned-sampler", "--lr", "100", "--iterations", "20"],
        ["iteration", "--lr"],
    ),
    Cli(
        "heavy-tailed frequencies overflowing mid-run",
        [*DISTILL, "--method", "sdd", "--kernel", "laplacian", "--bandwidth", "1e-37"],
        ["iteration", "Cauchy"],
    ),
    # damaged or hostile files of a run being resumed
    Cli(
        "checkpoint truncated",
        RESUME,
        ["checkpoint.pt", "damaged"],
        setup=_then(_copy("cut"), _truncate("checkpoint.pt")),
    ),
    Cli(
        "checkpoint garbage",
        RESUME,
        ["checkpoint.pt", "damaged"],
        setup=_then(_copy("cut"), _write("checkpoint.pt", b"\x00\xff" * 300)),
    ),
    Cli(
        "checkpoint crafted to run code",
        RESUME,
        ["checkpoint.pt", "damaged"],
        setup=_then(_copy("cut"), _crafted("checkpoint.pt")),
        after=_no_code_ran,
        env=UNSAFE,
    ),
    Cli(
        "checkpoint not a dict",
        RESUME,
        ["checkpoint.pt", "not a checkpoint"],
        setup=_then(_copy("cut"), _write("checkpoint.pt", lambda s: [1, 2])),
    ),
    Cli(
        "checkpoint images of another run",
        RESUME,
        ["checkpoint.pt", "images has shape (10, 1, 4, 4)"],
        setup=_then(
            _copy("cut"), _write("checkpoint.pt", lambda s: {**s, "images": s["images"][:, :, :4, :4].contiguous()})
        ),
    ),
    Cli(
        "checkpoint images NaN",
        RESUME,
        ["checkpoint.pt", "non-finite"],
        setup=_then(_copy("cut"), _write("checkpoint.pt", lambda s: {**s, "images": s["images"] * float("nan")})),
    ),
    Cli(
        "checkpoint iteration beyond the run",
        RESUME,
        ["checkpoint.pt", "iteration 1000000", "[0, 4]"],
        setup=_then(_copy("cut"), _write("checkpoint.pt", lambda s: {**s, "iteration": 10**6})),
    ),
    Cli(
        "checkpoint iteration a string",
        RESUME,
        ["checkpoint.pt", "iteration 'two'"],
        setup=_then(_copy("cut"), _write("checkpoint.pt", lambda s: {**s, "iteration": "two"})),
    ),
    Cli(
        "checkpoint optimizer moments of another shape",
        RESUME,
        ["checkpoint.pt", "exp_avg", "shape"],
        setup=_then(
            _copy("cut"),
            _write(
                "checkpoint.pt",
                lambda s: {
                    **s,
                    "optimizer": {
                        **s["optimizer"],
                        "state": {0: {**s["optimizer"]["state"][0], "exp_avg": torch.zeros(3)}},
                    },
                },
            ),
        ),
    ),
    Cli(
        "checkpoint optimizer lr a string",
        RESUME,
        ["checkpoint.pt", "learning rate"],
        setup=_then(
            _copy("cut"),
            _write(
                "checkpoint.pt",
                lambda s: {
                    **s,
                    "optimizer": {
                        **s["optimizer"],
                        "param_groups": [{**s["optimizer"]["param_groups"][0], "lr": "abc"}],
                    },
                },
            ),
        ),
    ),
    Cli(
        "checkpoint optimizer betas changed",
        RESUME,
        ["checkpoint.pt", "'betas'"],
        setup=_then(
            _copy("cut"),
            _write(
                "checkpoint.pt",
                lambda s: {
                    **s,
                    "optimizer": {
                        **s["optimizer"],
                        "param_groups": [{**s["optimizer"]["param_groups"][0], "betas": (2.0,)}],
                    },
                },
            ),
        ),
    ),
    Cli(
        "checkpoint adam step of two values",
        RESUME,
        ["checkpoint.pt", "'step'"],
        setup=_then(
            _copy("cut"),
            _write(
                "checkpoint.pt",
                lambda s: {
                    **s,
                    "optimizer": {
                        **s["optimizer"],
                        "state": {0: {**s["optimizer"]["state"][0], "step": torch.tensor([1.0, 2.0])}},
                    },
                },
            ),
        ),
    ),
    Cli(
        "checkpoint images sparse",
        RESUME,
        ["checkpoint.pt", "dense"],
        setup=_then(_copy("cut"), _write("checkpoint.pt", lambda s: {**s, "images": s["images"].to_sparse()})),
    ),
    Cli(
        "checkpoint optimizer not a state dict",
        RESUME,
        ["checkpoint.pt", "optimizer"],
        setup=_then(_copy("cut"), _write("checkpoint.pt", lambda s: {**s, "optimizer": "adam"})),
    ),
    Cli(
        "metrics line damaged",
        RESUME,
        ["metrics.jsonl line 2", "not JSON"],
        setup=_then(
            _copy("cut"),
            _write("metrics.jsonl", '{"iteration": 0, "loss": 1.0, "seconds": 0.1}\n{"iteration": 1, "lo\n'),
        ),
    ),
    Cli(
        "metrics iteration a string",
        RESUME,
        ["metrics.jsonl line 1", "'iteration'", "integer"],
        setup=_then(_copy("cut"), _write("metrics.jsonl", '{"iteration": "0", "loss": 1.0, "seconds": 0.1}\n')),
    ),
    Cli(
        "network pool crafted to run code",
        RESUME,
        ["net_pool.pt", "damaged"],
        setup=_then(_copy("cut"), _crafted("net_pool.pt")),
        after=_no_code_ran,
        env=UNSAFE,
    ),
    Cli(
        "network pool of the wrong size",
        RESUME,
        ["net_pool.pt", "list of 1 networks"],
        setup=_then(_copy("cut"), _write("net_pool.pt", lambda p: p * 2)),
    ),
    Cli(
        "network pool without init weights",
        RESUME,
        ["net_pool.pt", "network 0 must hold 'init' and 'trained'"],
        setup=_then(_copy("cut"), _write("net_pool.pt", lambda p: [p[0]["trained"]])),
    ),
    Cli(
        "network pool of another width",
        RESUME,
        ["net_pool.pt", "network 0 does not fit"],
        setup=_then(
            _copy("cut"),
            _write(
                "net_pool.pt",
                lambda p: [
                    {
                        "init": p[0]["init"],
                        "trained": {k: v[..., :2].contiguous() if v.dim() else v for k, v in p[0]["trained"].items()},
                    }
                ],
            ),
        ),
    ),
    # evaluate
    Cli("evaluate num-eval zero", ["evaluate", "{d}/run", "--num-eval", "0"], ["--num-eval", "0"], setup=_copy("done")),
    Cli(
        "evaluate num-eval negative",
        ["evaluate", "{d}/run", "--num-eval", "-3"],
        ["--num-eval", "-3"],
        setup=_copy("done"),
    ),
    Cli(
        "evaluate eval-epochs zero",
        ["evaluate", "{d}/run", "--eval-epochs", "0"],
        ["--eval-epochs", "0"],
        setup=_copy("done"),
    ),
    Cli(
        "evaluate a folder that is not a run",
        ["evaluate", "{d}/mine"],
        ["config.json", "missing"],
        setup=_user_files(),
        after=_user_files_intact(),
    ),
    Cli(
        "evaluate an unfinished run",
        ["evaluate", "{d}/run"],
        ["no synthetic.pt", "not a finished run"],
        setup=_copy("cut"),
    ),
    Cli(
        "evaluate a run in use",
        ["evaluate", "{d}/run"],
        ["in use by another", f"pid {os.getpid()}"],
        setup=_then(_copy("done"), _hold_lock),
    ),
    Cli(
        "synthetic truncated",
        ["evaluate", "{d}/run"],
        ["synthetic.pt", "damaged"],
        setup=_then(_copy("done"), _truncate("synthetic.pt")),
    ),
    Cli(
        "synthetic crafted to run code",
        ["evaluate", "{d}/run"],
        ["synthetic.pt", "damaged"],
        setup=_then(_copy("done"), _crafted("synthetic.pt")),
        after=_no_code_ran,
        env=UNSAFE,
    ),
    Cli(
        "synthetic not a dict",
        ["evaluate", "{d}/run"],
        ["synthetic.pt", "not a synthetic set"],
        setup=_then(_copy("done"), _write("synthetic.pt", lambda s: [s["images"]])),
    ),
    Cli(
        "synthetic labels out of range",
        ["evaluate", "{d}/run"],
        ["synthetic.pt", "labels must lie in [0, 10)", "99"],
        setup=_then(_copy("done"), _write("synthetic.pt", lambda s: {**s, "labels": s["labels"] + 90})),
    ),
    Cli(
        "synthetic labels float",
        ["evaluate", "{d}/run"],
        ["synthetic.pt", "labels must hold integers"],
        setup=_then(_copy("done"), _write("synthetic.pt", lambda s: {**s, "labels": s["labels"].float()})),
    ),
    Cli(
        "synthetic images of another shape",
        ["evaluate", "{d}/run"],
        ["synthetic.pt", "do not match", "(1, 8, 8)"],
        setup=_then(
            _copy("done"), _write("synthetic.pt", lambda s: {**s, "images": s["images"][:, :, :5, :5].contiguous()})
        ),
    ),
    Cli(
        "synthetic images expanded to 2**40",
        ["evaluate", "{d}/run"],
        ["synthetic.pt", "dense contiguous"],
        setup=_then(
            _copy("done"),
            _write(
                "synthetic.pt",
                lambda s: {
                    **s,
                    "images": s["images"][:1].expand(2**40, 1, 8, 8),
                    "labels": s["labels"][:1].expand(2**40),
                },
            ),
        ),
    ),
    Cli(
        "synthetic images NaN",
        ["evaluate", "{d}/run"],
        ["synthetic.pt", "images holds a non-finite"],
        setup=_then(_copy("done"), _write("synthetic.pt", lambda s: {**s, "images": s["images"] * float("nan")})),
    ),
    Cli(
        "synthetic config with wrong types",
        ["evaluate", "{d}/run"],
        ["synthetic.pt", "config", "--width"],
        setup=_then(
            _copy("done"), _write("synthetic.pt", lambda s: {**s, "config": {**s["config"], "width": "eight"}})
        ),
    ),
    # show
    Cli("show a folder that is not a run", ["show", "{d}/mine"], ["config.json", "missing"], setup=_user_files()),
    Cli(
        "show a damaged config.json",
        ["show", "{d}/run"],
        ["config.json", "damaged"],
        setup=_then(_copy("done"), _write("config.json", "\x00garbage")),
    ),
    Cli(
        "show a config.json of wrong types",
        ["show", "{d}/run"],
        ["config.json", "--ipc", "'ten'"],
        setup=_then(
            _copy("done"),
            _write("config.json", json.dumps({"format": "spectral-distill run 1", **TEMPLATE, "ipc": "ten"})),
        ),
    ),
    Cli(
        "show damaged metrics",
        ["show", "{d}/run"],
        ["metrics.jsonl line 1", "not JSON"],
        setup=_then(_copy("done"), _write("metrics.jsonl", "garbage\n")),
    ),
    Cli(
        "show metrics row not an object",
        ["show", "{d}/run"],
        ["metrics.jsonl line 1", "JSON object"],
        setup=_then(_copy("done"), _write("metrics.jsonl", "[1, 2]\n")),
    ),
    Cli(
        "show metrics loss a string",
        ["show", "{d}/run"],
        ["metrics.jsonl line 1", "'loss'"],
        setup=_then(_copy("done"), _write("metrics.jsonl", '{"iteration": 0, "loss": "low", "seconds": 1}\n')),
    ),
    Cli(
        "show metrics row of both kinds",
        ["show", "{d}/run"],
        ["metrics.jsonl line 1", "'accuracy_mean'"],
        setup=_then(
            _copy("done"), _write("metrics.jsonl", '{"iteration": 0, "loss": 1, "seconds": 1, "event": "eval"}\n')
        ),
    ),
    Cli(
        "show metrics nan loss",
        ["show", "{d}/run"],
        ["metrics.jsonl line 1", "'loss'", "finite"],
        setup=_then(_copy("done"), _write("metrics.jsonl", '{"iteration": 0, "loss": NaN, "seconds": 1}\n')),
    ),
    Cli(
        "show metrics a FIFO",
        ["show", "{d}/run"],
        ["metrics.jsonl", "not a regular file"],
        setup=_then(
            _copy("done"),
            lambda d: (d / "run" / "metrics.jsonl").unlink(),
            lambda d: os.mkfifo(d / "run" / "metrics.jsonl"),
        ),
    ),
    Cli(
        "show config.json nested deep",
        ["show", "{d}/run"],
        ["config.json", "not JSON"],
        setup=_then(_copy("done"), _write("config.json", "[" * 100000 + "]" * 100000)),
    ),
    Cli(
        "show metrics not UTF-8",
        ["show", "{d}/run"],
        ["metrics.jsonl", "UTF-8"],
        setup=_then(_copy("done"), _write("metrics.jsonl", b"\xff\xfe\xfa\n")),
    ),
    # datasets on disk
    Cli(
        "cifar batch truncated",
        [*DISTILL, "--dataset", "cifar10", "--data-root", "{d}/cifar"],
        ["data_batch_3", "damaged or not a CIFAR batch"],
        setup=_fake_cifar("data_batch_3"),
    ),
    Cli(
        "imagefolder with an unreadable image",
        [*DISTILL, "--dataset", "imagefolder", "--data-root", "{d}/images"],
        ["cannot read", "broken.png"],
        setup=_image_folder("unreadable"),
    ),
    Cli(
        "imagefolder with an empty class",
        [*DISTILL, "--dataset", "imagefolder", "--data-root", "{d}/images"],
        ["imagefolder", "birds"],
        setup=_image_folder("empty class"),
    ),
    Cli(
        "imagefolder splits with other classes",
        [*DISTILL, "--dataset", "imagefolder", "--data-root", "{d}/images"],
        ["same class folders"],
        setup=_image_folder("split"),
    ),
    Cli(
        "imagefolder root is a file",
        [*DISTILL, "--dataset", "imagefolder", "--data-root", "{d}/file"],
        ["not a folder"],
        setup=lambda d: (d / "file").write_text("x"),
    ),
    # -- trust round 3: library values and sizes, through the CLI
    # --bandwidth 1e-30 ran to the end: every pair's Gaussian kernel underflowed (mmd a constant,
    # the spectral losses noise from phases float32 keeps no digits of)
    Cli(
        "bandwidth whose kernel vanishes, sdd",
        [*DISTILL, "--method", "sdd", "--bandwidth", "1e-30"],
        ["iteration 0", "--bandwidth 1e-30", "too small", "use --bandwidth >="],
    ),
    Cli(
        "bandwidth whose kernel vanishes, mmd",
        [*DISTILL, "--method", "mmd", "--bandwidth", "1e-30"],
        ["--bandwidth 1e-30", "too small"],
    ),
    Cli(
        "bandwidth whose kernel vanishes, ncfm",
        [*DISTILL, "--method", "ncfm", "--bandwidth", "1e-30"],
        ["--bandwidth 1e-30", "too small"],
    ),
    Cli(
        "bandwidth whose kernel vanishes, csdm",
        [*DISTILL, "--method", "csdm", "--bandwidth", "1e-12"],
        ["--bandwidth 1e-12", "too small"],
    ),
    # -- end of library values and sizes, through the CLI
    # -- trust round 3: run folders, checkpoints and synthetic sets, through the CLI
    # A folder holding a copied config.json beside the user's own results: --overwrite must
    # keep every file the run did not write, and say which (the run's manifest.json decides).
    Cli(
        "overwrite a copied config.json beside the user's results",
        ["distill", *FAST_CLI, "--out", "{d}/mine", "--overwrite"],
        ["not this run's", "grid.png", "metrics.jsonl", "eval.json", "nothing was removed"],
        setup=lambda d: (
            (d / "mine").mkdir(),
            shutil.copy(_TEMPLATES["done"] / "config.json", d / "mine" / "config.json"),
            *((d / "mine" / name).write_text(f"my {name}") for name in ("grid.png", "metrics.jsonl", "eval.json")),
        ),
        after=lambda d: (
            all((d / "mine" / name).read_text() == f"my {name}" for name in ("grid.png", "metrics.jsonl", "eval.json"))
            and not (d / "mine" / ".lock").exists()
        ),
    ),
    Cli(
        "overwrite a run whose grid.png the user replaced",
        [*DISTILL, "--overwrite"],
        ["grid.png", "changed since the run wrote it", "nothing was removed"],
        setup=_then(_copy("done"), _write("grid.png", b"my picture")),
        after=lambda d: (
            (d / "run" / "grid.png").read_bytes() == b"my picture"
            and (d / "run" / "synthetic.pt").read_bytes() == (_TEMPLATES["done"] / "synthetic.pt").read_bytes()
        ),
    ),
    Cli(
        "overwrite a run whose eval.json the user edited",
        [*DISTILL, "--overwrite"],
        ["eval.json", "not this run's"],
        setup=_then(_copy("done"), lambda d: (d / "run" / "eval.json").write_text('{"accuracy_mean": 0.99}')),
        after=lambda d: (d / "run" / "eval.json").read_text() == '{"accuracy_mean": 0.99}',
    ),
    Cli(
        "overwrite a run whose metrics.jsonl the user replaced",
        [*DISTILL, "--overwrite"],
        ["metrics.jsonl", "changed since the run wrote it"],
        setup=_then(_copy("done"), _write("metrics.jsonl", '{"note": "mine"}\n')),
        after=lambda d: (d / "run" / "metrics.jsonl").read_text() == '{"note": "mine"}\n',
    ),
    Cli(
        "overwrite a run whose metrics.jsonl is a link to the user's file",
        [*DISTILL, "--overwrite"],
        ["metrics.jsonl", "symbolic link"],
        setup=_then(
            _copy("done"),
            lambda d: (d / "log.txt").write_text("mine\n"),
            lambda d: (d / "run" / "metrics.jsonl").unlink(),
            lambda d: (d / "run" / "metrics.jsonl").symlink_to(d / "log.txt"),
        ),
        after=lambda d: (d / "log.txt").read_text() == "mine\n" and (d / "run" / "metrics.jsonl").is_symlink(),
    ),
    Cli(
        "overwrite a run made before run manifests",
        [*DISTILL, "--overwrite"],
        ["manifest.json", "synthetic.pt", "nothing was removed"],
        setup=_then(_copy("done"), lambda d: (d / "run" / "manifest.json").unlink()),
        after=lambda d: (d / "run" / "synthetic.pt").read_bytes() == (_TEMPLATES["done"] / "synthetic.pt").read_bytes(),
    ),
    Cli(
        "overwrite a run with a damaged manifest",
        [*DISTILL, "--overwrite"],
        ["manifest.json", "damaged"],
        setup=_then(_copy("done"), _write("manifest.json", "{not json")),
        after=lambda d: (d / "run" / "synthetic.pt").exists(),
    ),
    Cli(
        "overwrite a run whose manifest is someone else's JSON",
        [*DISTILL, "--overwrite"],
        ["manifest.json", "not written by spectral-distill"],
        setup=_then(_copy("done"), _write("manifest.json", '{"files": {"grid.png": []}}')),
        after=lambda d: (d / "run" / "grid.png").exists(),
    ),
    Cli(
        "overwrite a run whose manifest names a file outside the run",
        [*DISTILL, "--overwrite"],
        ["manifest.json", "../outside.txt"],
        setup=_then(
            _copy("done"),
            lambda d: (d / "outside.txt").write_text("mine"),
            lambda d: (d / "run" / "manifest.json").write_text(
                json.dumps(
                    {
                        **json.loads((d / "run" / "manifest.json").read_text()),
                        "files": {
                            "../outside.txt": [
                                {"bytes": 4, "sha256": __import__("hashlib").sha256(b"mine").hexdigest()}
                            ]
                        },
                    }
                )
            ),
        ),
        after=lambda d: (d / "outside.txt").read_text() == "mine",
    ),
    Cli(
        "resume a run whose grid.png the user put there",
        RESUME,
        ["grid.png", "not this run's"],
        setup=_then(_copy("cut"), lambda d: (d / "run" / "grid.png").write_bytes(b"my picture")),
        after=lambda d: (d / "run" / "grid.png").read_bytes() == b"my picture",
    ),
    # The lock file is created only in a folder that is new, empty, or a run.
    Cli(
        "a foreign config.json gets no lock file",
        ["distill", *FAST_CLI, "--out", "{d}/mine", "--overwrite"],
        ["does not hold a run", "nothing was changed"],
        setup=_then(_user_files(), lambda d: (d / "mine" / "config.json").write_text('{"name": "my paper"}')),
        after=lambda d: sorted(p.name for p in (d / "mine").iterdir()) == ["config.json", "grid.png", "thesis.tex"],
    ),
    Cli(
        "a damaged config.json gets no lock file",
        ["distill", *FAST_CLI, "--out", "{d}/mine", "--resume"],
        ["does not hold a run", "damaged"],
        setup=_then(_user_files(), lambda d: (d / "mine" / "config.json").write_bytes(b"\x00garbage")),
        after=lambda d: not (d / "mine" / ".lock").exists(),
    ),
    Cli(
        "a config.json without the run mark gets no lock file",
        ["distill", *FAST_CLI, "--out", "{d}/mine"],
        ["not written by spectral-distill"],
        setup=lambda d: ((d / "mine").mkdir(), (d / "mine" / "config.json").write_text(json.dumps(TEMPLATE))),
        after=lambda d: sorted(p.name for p in (d / "mine").iterdir()) == ["config.json"],
    ),
    # A resumed or evaluated run is the run it claims to be.
    Cli(
        "resume after config.json was edited from dm to sdd",
        [*RESUME, "--method", "sdd"],
        ["checkpoint.pt", "--method dm", "not sdd"],
        setup=_then(
            _copy("cut"),
            lambda d: (d / "run" / "config.json").write_text(
                json.dumps({**json.loads((d / "run" / "config.json").read_text()), "method": "sdd"})
            ),
        ),
        after=lambda d: (
            (d / "run" / "checkpoint.pt").read_bytes() == (_TEMPLATES["cut"] / "checkpoint.pt").read_bytes()
            and not (d / "run" / "synthetic.pt").exists()
        ),
    ),
    Cli(
        "resume after config.json was edited from 4 to 8 iterations",
        [*RESUME, "--iterations", "8"],
        ["checkpoint.pt", "--iterations 4", "not 8"],
        setup=_then(
            _copy("cut"),
            lambda d: (d / "run" / "config.json").write_text(
                json.dumps({**json.loads((d / "run" / "config.json").read_text()), "iterations": 8})
            ),
        ),
        after=lambda d: not (d / "run" / "synthetic.pt").exists(),
    ),
    Cli(
        "resume a checkpoint of another seed",
        RESUME,
        ["checkpoint.pt", "--seed 5", "not 0"],
        setup=_then(_copy("cut"), _write("checkpoint.pt", lambda s: {**s, "config": {**s["config"], "seed": 5}})),
    ),
    Cli(
        "resume a checkpoint that records no options",
        RESUME,
        ["checkpoint.pt", "records no options"],
        setup=_then(_copy("cut"), _write("checkpoint.pt", lambda s: {k: v for k, v in s.items() if k != "config"})),
    ),
    Cli(
        "resume a checkpoint whose options are not a mapping",
        RESUME,
        ["checkpoint.pt", "records no options"],
        setup=_then(_copy("cut"), _write("checkpoint.pt", lambda s: {**s, "config": "dm"})),
    ),
    Cli(
        "evaluate after config.json was edited from dm to sdd",
        ["evaluate", "{d}/run", "--num-eval", "1", "--eval-epochs", "1"],
        ["synthetic.pt", "--method dm", "config.json", "--method sdd"],
        setup=_then(
            _copy("done"),
            lambda d: (d / "run" / "config.json").write_text(
                json.dumps({**json.loads((d / "run" / "config.json").read_text()), "method": "sdd"})
            ),
        ),
        after=lambda d: (
            not (d / "run" / "eval.json").exists()
            or (d / "run" / "eval.json").read_bytes() == (_TEMPLATES["done"] / "eval.json").read_bytes()
        ),
    ),
    Cli(
        "evaluate a synthetic set of factor 2 in a factor-1 run",
        ["evaluate", "{d}/run", "--num-eval", "1", "--eval-epochs", "1"],
        ["synthetic.pt", "--factor 2", "--factor 1"],
        setup=_then(_copy("done"), _write("synthetic.pt", lambda s: {**s, "config": {**s["config"], "factor": 2}})),
    ),
    Cli(
        "evaluate a synthetic set of another IPC",
        ["evaluate", "{d}/run", "--num-eval", "1", "--eval-epochs", "1"],
        ["synthetic.pt", "--ipc 2", "--ipc 1"],
        setup=_then(
            _copy("done"),
            _write(
                "synthetic.pt",
                lambda s: {
                    **s,
                    "images": s["images"].repeat_interleave(2, 0),
                    "labels": s["labels"].repeat_interleave(2),
                    "config": {**s["config"], "ipc": 2},
                },
            ),
        ),
    ),
    Cli(
        "synthetic labels all zero",
        ["evaluate", "{d}/run", "--num-eval", "1", "--eval-epochs", "1"],
        ["synthetic.pt", "labels", "IPC 1", "class order"],
        setup=_then(_copy("done"), _write("synthetic.pt", lambda s: {**s, "labels": s["labels"] * 0})),
    ),
    Cli(
        "synthetic labels reversed",
        ["evaluate", "{d}/run", "--num-eval", "1", "--eval-epochs", "1"],
        ["synthetic.pt", "labels", "class order"],
        setup=_then(_copy("done"), _write("synthetic.pt", lambda s: {**s, "labels": s["labels"].flip(0)})),
    ),
    Cli(
        "synthetic images 1e38",
        ["evaluate", "{d}/run", "--num-eval", "1", "--eval-epochs", "1"],
        ["synthetic.pt", "images", "1e+38"],
        setup=_then(
            _copy("done"), _write("synthetic.pt", lambda s: {**s, "images": torch.full_like(s["images"], 1e38)})
        ),
    ),
    Cli(
        "synthetic images one pixel of -1e9",
        ["evaluate", "{d}/run", "--num-eval", "1", "--eval-epochs", "1"],
        ["synthetic.pt", "images", "-1e+09"],
        setup=_then(
            _copy("done"), _write("synthetic.pt", lambda s: {**s, "images": _with(s["images"], (0, 0, 0, 0), -1e9)})
        ),
    ),
    Cli(
        "synthetic mean and std of another dataset",
        ["evaluate", "{d}/run", "--num-eval", "1", "--eval-epochs", "1"],
        ["synthetic.pt", "mean"],
        setup=_then(_copy("done"), _write("synthetic.pt", lambda s: {**s, "mean": s["mean"] + 0.5})),
    ),
    # Pools: the cache and the run's copy hold the weights of the run's network, dtype included.
    Cli(
        "cached pool of integer weights",
        [*DISTILL, "--net-pool", "1", "--pool-epochs", "1"],
        ["cache", "torch.int64", "torch.float32"],
        setup=lambda d: (
            _damaged_pool_cache(d),
            torch.save(
                [
                    {part: {k: v.long() for k, v in e[part].items()} for part in e}
                    for e in torch.load(_TEMPLATES["cut"] / "net_pool.pt", weights_only=True)
                ],
                next((d / "cache" / "pools").iterdir()),
            ),
        ),
        env={"SPECTRAL_KERNELS_CACHE": "{d}/cache"},
    ),
    Cli(
        "network pool of float64 weights",
        RESUME,
        ["net_pool.pt", "torch.float64", "torch.float32"],
        setup=_then(
            _copy("cut"),
            _write(
                "net_pool.pt", lambda p: [{part: {k: v.double() for k, v in e[part].items()} for part in e} for e in p]
            ),
        ),
    ),
    # Sizes and counts that cannot work are refused before the run starts.
    Cli(
        "eval-epochs zero with an evaluation",
        [*DISTILL, "--num-eval", "1", "--eval-epochs", "0"],
        ["--eval-epochs", "0"],
        after=lambda d: not (d / "run").exists(),
    ),
    Cli(
        "config eval-epochs zero",
        [*DISTILL, "--config", "{d}/c.json"],
        ["--eval-epochs", "0"],
        setup=_config_file("c.json", '{"eval_epochs": 0}'),
        after=lambda d: not (d / "run").exists(),
    ),
    Cli(
        "show a metrics line longer than any row",
        ["show", "{d}/run"],
        ["metrics.jsonl line 2", "bytes"],
        setup=_then(
            _copy("done"),
            lambda d: (d / "run" / "metrics.jsonl").write_text(
                '{"iteration": 0, "loss": 1.0, "seconds": 0.1}\n{"note": "' + "x" * 2**21 + '"}\n'
            ),
        ),
    ),
    # -- end of run folders, through the CLI
    # -- trust round 3: datasets on disk, through the CLI
    Cli(
        "imagefolder with a 20000 x 20000 png (a decompression bomb)",
        IMAGES,
        ["{d}/images/dogs/huge.png", "400000000 pixels", "67108864"],
        setup=_hostile_images("bomb"),
    ),
    Cli(
        "imagefolder with a 10000 x 10000 png (PIL only warns)",
        IMAGES,
        ["{d}/images/dogs/huge.png", "100000000 pixels", "67108864"],
        setup=_hostile_images("bomb below PIL's error"),
    ),
    Cli(
        "imagefolder with a 9000 x 9000 png (below PIL's limits)",
        IMAGES,
        ["{d}/images/dogs/huge.png", "9000 x 9000", "67108864"],
        setup=_hostile_images("bomb below PIL's warning"),
    ),
    Cli(
        "imagefolder with a FIFO named x.png",
        IMAGES,
        ["{d}/images/dogs/x.png", "not a regular file", "FIFO"],
        setup=_hostile_images("fifo"),
    ),
    Cli(
        "imagefolder with a socket named x.png",
        IMAGES,
        ["{d}/images/dogs/x.png", "not a regular file", "socket"],
        setup=_hostile_images("socket"),
    ),
    Cli(
        "imagefolder with x.png linking to /dev/zero",
        IMAGES,
        ["{d}/images/dogs/x.png", "not a regular file", "character device"],
        setup=_hostile_images("link to /dev/zero"),
    ),
    Cli(
        "imagefolder with a broken link named x.png",
        IMAGES,
        ["{d}/images/dogs/x.png", "broken symbolic link"],
        setup=_hostile_images("broken link"),
    ),
    Cli(
        "imagefolder with x.png linking to itself",
        IMAGES,
        ["{d}/images/dogs/x.png", "symbolic links"],
        setup=_hostile_images("link loop file"),
    ),
    Cli(
        "imagefolder with a class folder linking to itself",
        IMAGES,
        ["{d}/images/cats/again is {d}/images/cats again"],
        setup=_hostile_images("class links to itself"),
    ),
    Cli(
        "imagefolder with two class folders linking to each other",
        IMAGES,
        ["{d}/images/cats/dogs is {d}/images/dogs again"],
        setup=_hostile_images("classes link to each other"),
    ),
    Cli(
        "imagefolder with a class folder linking to the root",
        IMAGES,
        ["{d}/images/cats/up is {d}/images again"],
        setup=_hostile_images("link to the root"),
    ),
    Cli(
        "imagefolder with an image linked twice",
        IMAGES,
        ["{d}/images/cats/copy.png is {d}/images/cats/0.png again"],
        setup=_hostile_images("image linked twice"),
    ),
    Cli(
        "imagefolder with an image hard-linked into another class",
        IMAGES,
        ["{d}/images/dogs/cat.png is {d}/images/cats/0.png again"],
        setup=_hostile_images("image hard-linked into another class"),
    ),
    Cli(
        "imagefolder with two class folders that are one folder",
        IMAGES,
        ["{d}/images/kittens is {d}/images/cats again"],
        setup=_hostile_images("two classes are one folder"),
    ),
    Cli(
        "imagefolder with one image in every class",
        IMAGES,
        ["{d}/images", "two images", "held out"],
        setup=_hostile_images("one image in every class"),
    ),
    Cli(
        "cifar label 10**6",
        CIFAR10,
        ["{d}/cifar/cifar-10-batches-py/data_batch_1", "label 1000000", "[0, 10)"],
        setup=_cifar_labels([0, 10**6, 0, 1]),
    ),
    Cli(
        "cifar label 2**70",
        CIFAR10,
        ["{d}/cifar/cifar-10-batches-py/data_batch_1", f"label {2**70}", "[0, 10)"],
        setup=_cifar_labels([0, 2**70, 0, 1]),
    ),
    Cli(
        "cifar label -1",
        CIFAR10,
        ["{d}/cifar/cifar-10-batches-py/data_batch_1", "label -1 at position 1", "[0, 10)"],
        setup=_cifar_labels([0, -1, 0, 1]),
    ),
    Cli(
        "cifar label 0.5",
        CIFAR10,
        ["{d}/cifar/cifar-10-batches-py/data_batch_1", "label 0.5", "not an integer"],
        setup=_cifar_labels([0, 0.5, 0, 1]),
    ),
    Cli(
        "cifar label True",
        CIFAR10,
        ["{d}/cifar/cifar-10-batches-py/data_batch_1", "label True", "not an integer"],
        setup=_cifar_labels([0, True, 0, 1]),
    ),
    Cli(
        "cifar100 label 100",
        [*DISTILL, "--dataset", "cifar100", "--data-root", "{d}/cifar"],
        ["{d}/cifar/cifar-100-python/train", "label 100", "[0, 100)"],
        setup=_cifar_labels([0, 100, 0, 1], "cifar100"),
    ),
    Cli(
        "cifar labels a float array",
        CIFAR10,
        ["{d}/cifar/cifar-10-batches-py/data_batch_1", "float64 array", "integers"],
        setup=_cifar_labels(lambda np: np.zeros(4)),
    ),
    Cli(
        "cifar batch of 200 bytes calling numpy.ndarray for 123 MB",
        CIFAR10,
        ["{d}/cifar/cifar-10-batches-py/data_batch_2", "(40000, 3072)", "122880000 bytes", "in a file of"],
        setup=_hostile_batch("declared"),
    ),
    Cli(
        "cifar batch reconstructing an array larger than the file",
        CIFAR10,
        ["{d}/cifar/cifar-10-batches-py/data_batch_2", "(40000, 3072)", "122880000 bytes", "in a file of"],
        setup=_hostile_batch("reconstructed"),
    ),
    Cli(
        "cifar batch whose array state declares more than its data",
        CIFAR10,
        ["{d}/cifar/cifar-10-batches-py/data_batch_2", "(40000, 3072)", "122880000 bytes", "in a file of"],
        setup=_hostile_batch("state"),
    ),
    Cli(
        "cifar batch with 400 arrays sharing one piece of data",
        CIFAR10,
        ["{d}/cifar/cifar-10-batches-py/data_batch_2", "arrays of", "bytes in all", "in a file of"],
        setup=_hostile_batch("shared"),
    ),
    Cli(
        "cifar images an object array",
        CIFAR10,
        ["{d}/cifar/cifar-10-batches-py/data_batch_2", "dtype object"],
        setup=_cifar_images(lambda np: np.zeros((4, 3072), dtype=object)),
    ),
    Cli(
        "cifar images an object array whose state is short (numpy crashes)",
        CIFAR10,
        ["{d}/cifar/cifar-10-batches-py/data_batch_2", "dtype object"],
        setup=_hostile_batch("object state"),
    ),
    Cli(
        "cifar images float32",
        CIFAR10,
        ["{d}/cifar/cifar-10-batches-py/data_batch_2", "float32 array of shape (4, 3072)", "uint8"],
        setup=_cifar_images(lambda np: np.zeros((4, 3072), dtype=np.float32)),
    ),
    Cli(
        "cifar images of 100 values a row",
        CIFAR10,
        ["{d}/cifar/cifar-10-batches-py/data_batch_2", "shape (4, 100)", "3072"],
        setup=_cifar_images(lambda np: np.zeros((4, 100), dtype=np.uint8)),
    ),
    Cli(
        "cifar images as bytes",
        CIFAR10,
        ["{d}/cifar/cifar-10-batches-py/data_batch_2", "a bytes", "uint8"],
        setup=_cifar_images(bytes(4 * 3072)),
    ),
    Cli(
        "cifar batch of protocol 5 with an in-band bytearray",
        CIFAR10,
        ["{d}/cifar/cifar-10-batches-py/data_batch_2", "a bytearray", "uint8"],
        setup=_hostile_batch("in-band"),
    ),
    Cli(
        "cifar batch of protocol 5 with out-of-band buffers",
        CIFAR10,
        ["{d}/cifar/cifar-10-batches-py/data_batch_2", "out-of-band"],
        setup=_hostile_batch("out-of-band"),
    ),
    Cli(
        "cifar batch decoding bytes with rot13",
        CIFAR10,
        ["{d}/cifar/cifar-10-batches-py/data_batch_2", "encoding", "rot13"],
        setup=_hostile_batch("rot13"),
    ),
    Cli(
        "cifar batch that is a list",
        CIFAR10,
        ["{d}/cifar/cifar-10-batches-py/data_batch_2", "a list where a dict"],
        setup=_cifar_with(data_batch_2=pickle.dumps([1, 2], protocol=2)),
    ),
    Cli(
        "cifar batch without labels",
        CIFAR10,
        ["{d}/cifar/cifar-10-batches-py/data_batch_2", "no b'labels'"],
        setup=_cifar_with(data_batch_2=pickle.dumps({b"data": b"images"}, protocol=2)),
    ),
    Cli(
        "cifar batch that is a FIFO",
        CIFAR10,
        ["{d}/cifar/cifar-10-batches-py/data_batch_4", "not a regular file", "FIFO"],
        setup=_fifo_batch("data_batch_4"),
    ),
    # -- end of datasets, through the CLI
    # -- hardware: devices, precision, compile, through the CLI
    Cli("device index without a GPU", [*DISTILL, "--device", "cuda:1"], ["--device cuda:1", "no CUDA device"]),
    Cli("device meta", [*DISTILL, "--device", "meta"], ["--device meta", "holds no values"]),
    Cli("device absent mps", [*DISTILL, "--device", "mps"], ["--device mps", "no mps device is available"]),
    Cli("device upper case", [*DISTILL, "--device", "CPU"], ["--device", "torch device", "'CPU'"]),
    Cli(
        "amp fp16 on the cpu",
        [*DISTILL, "--amp", "fp16"],
        ["--amp fp16", "device cpu", "bf16"],
        after=lambda d: not (d / "run").exists(),
    ),
    Cli("amp unknown", [*DISTILL, "--amp", "fp32"], ["--amp", "off, bf16, fp16", "'fp32'"]),
    Cli(
        "amp as a number in a config file",
        [*DISTILL, "--config", "{d}/c.json"],
        ["--amp", "a string", "16"],
        setup=_config_file("c.json", '{"amp": 16}'),
    ),
    Cli(
        "compile as a string in a config file",
        [*DISTILL, "--config", "{d}/c.json"],
        ["--compile", "true or false", "'yes'"],
        setup=_config_file("c.json", '{"compile": "yes"}'),
    ),
    Cli(
        "resume with another amp",
        [*RESUME, "--amp", "bf16"],
        ["options differ", "amp"],
        setup=_copy("cut"),
        after=_run_unchanged("cut"),
    ),
    Cli(
        "compile with a compiler that fails, on resume",
        [*RESUME, "--compile"],
        ["--compile", "InvalidBackend", "no-such-backend", "SPECTRAL_KERNELS_COMPILE_BACKEND", "without --compile"],
        setup=_copy("cut"),
        env={"SPECTRAL_KERNELS_COMPILE_BACKEND": "no-such-backend"},
        after=_cut_run_kept,
    ),
    Cli(
        "evaluate on an absent GPU",
        ["evaluate", "{d}/run", "--device", "cuda"],
        ["--device cuda", "no CUDA device"],
        setup=_copy("done"),
        after=_run_unchanged(),
    ),
    Cli(
        "evaluate with fp16 on the cpu",
        ["evaluate", "{d}/run", "--amp", "fp16"],
        ["--amp fp16", "device cpu"],
        setup=_copy("done"),
        after=_run_unchanged(),
    ),
    # -- end of hardware, through the CLI
    # -- round 4 freq: frequencies home, through the CLI
    # -- end of round 4 freq, through the CLI
    # -- round 4 ops: backend protocol and Triton toolkit, through the CLI
    # -- end of round 4 ops, through the CLI
    # -- round 4 modules: loss modules, through the CLI
    # -- end of round 4 modules, through the CLI
    # -- round 4 names: names and config, through the CLI
    Cli(
        "old flag with a bad value",
        [*DISTILL, "--head-rule", "median"],
        ["--alpha-rule", "'median'", "--head-rule is the old name of --alpha-rule"],
    ),
    Cli(
        "config file naming an option by its old and new name",
        [*DISTILL, "--config", "{d}/both.json"],
        ["frequencies is the old name of structure"],
        setup=lambda d: (d / "both.json").write_text('{"frequencies": "iid", "structure": "iid"}'),
    ),
    Cli(
        "evaluate num-eval above distill's bound",
        ["evaluate", "{d}/run", "--num-eval", "1001"],
        ["--num-eval", "[1, 1000]", "1001"],
        setup=_copy("done"),
        after=_run_unchanged(),
    ),
    # -- end of round 4 names, through the CLI
    # -- round 4 api: Python distillation API, through the CLI
    Cli(
        "evaluate a run of data given from Python",
        ["evaluate", "{d}/run"],
        ["{d}/run", "data given from Python", "spectral_kernels.distill.evaluate", "test_data"],
        setup=lambda d: (
            sk.distill.distill(
                (torch.rand(6, 1, 8, 8), torch.arange(6) % 3),
                method="dm",
                ipc=1,
                iterations=1,
                width=8,
                batch_real=2,
                quiet=True,
                out=d / "run",
            ),
            None,
        )[1],
        after=lambda d: not (d / "run" / "eval.json").exists(),
    ),
    Cli(
        "distill --dataset python from a config file",
        ["distill", "--config", "{d}/c.json", *RUN],
        ["--dataset python", "given from Python"],
        setup=_config_file("c.json", '{"dataset": "python", "data_fingerprint": "0123", "num_eval": 0}'),
        after=lambda d: not (d / "run").exists(),
    ),
    Cli(
        "distill --method python from a config file",
        [*DISTILL, "--config", "{d}/c.json"],
        ["--method python", "loss module"],
        setup=_config_file("c.json", '{"method": "python", "loss": "python:Mine"}'),
        after=lambda d: not (d / "run").exists(),
    ),
    Cli("distill --dataset python", [*DISTILL, "--dataset", "python"], ["unknown dataset", "'python'"]),
    # -- end of round 4 api, through the CLI
    # -- round 4 imgsize: image size and lazy image folders, through the CLI
    Cli(
        "imagefolder of mixed sizes without --image-size",
        IMAGES,
        ["--image-size", "{d}/images/cats/0.png is 8 x 8", "{d}/images/cats/1.png is 8 x 12"],
        setup=_sized_images((8, 8), (8, 12)),
        after=lambda d: not (d / "run").exists(),
    ),
    Cli(
        "imagefolder whose own size the factor does not divide",
        [*IMAGES, "--factor", "2"],
        ["--factor 2", "9 x 10", "--image-size"],
        setup=_sized_images((9, 10)),
        after=lambda d: not (d / "run").exists(),
    ),
    Cli(
        "imagefolder of 1 x 1 images without --image-size",
        IMAGES,
        ["1 x 1", "--image-size", "{d}/images/cats/0.png"],
        setup=_sized_images((1, 1)),
        after=lambda d: not (d / "run").exists(),
    ),
    Cli(
        "imagefolder bomb with --image-size given",
        [*IMAGES, "--image-size", "8"],
        ["{d}/images/dogs/huge.png", "400000000 pixels"],
        setup=_sized_images((8, 8), bomb=True),
        after=lambda d: not (d / "run").exists(),
    ),
    Cli("--image-size 0", [*DISTILL, "--image-size", "0"], ["--image-size", "[0]"]),
    Cli("--image-size of three values", [*DISTILL, "--image-size", "8", "8", "8"], ["--image-size", "3"]),
    Cli("--image-size 4096", [*DISTILL, "--image-size", "4096"], ["--image-size", "4096", "1024"]),
    Cli("--image-size not a number", [*DISTILL, "--image-size", "big"], ["--image-size", "'big'"]),
    Cli("--image-size without a value", [*DISTILL, "--image-size"], ["--image-size"]),
    Cli(
        "--image-size the factor does not divide",
        [*DISTILL, "--image-size", "20", "27", "--factor", "2"],
        ["--factor 2", "20 x 27", "--image-size"],
        after=lambda d: not (d / "run").exists(),
    ),
    Cli(
        "config file image_size a string",
        [*DISTILL, "--config", "{d}/c.json"],
        ["--image-size", "'big'"],
        setup=_config_file("c.json", '{"image_size": "big"}'),
    ),
    Cli(
        "config file image_size with a bool side",
        [*DISTILL, "--config", "{d}/c.json"],
        ["--image-size", "[True, 8]"],
        setup=_config_file("c.json", '{"image_size": [true, 8]}'),
    ),
    # -- end of round 4 imgsize, through the CLI
    # -- round 4 hw: hardware leftovers, through the CLI
    Cli(
        "torchrun WORLD_SIZE not a number, through the CLI",
        ["distill", *FAST_CLI, "--out", "{d}/run"],
        ["WORLD_SIZE", "'two'"],
        env={"WORLD_SIZE": "two"},
        after=lambda d: not (d / "run").exists(),
    ),
    # -- end of round 4 hw, through the CLI
    # issue 27: compile with a compiler that fails only on the backward, on resume
    Cli(
        "compile with a compiler that fails only on the backward, on resume",
        [*RESUME, "--compile"],
        ["--compile", "RuntimeError: forced backward compiler failure", "--resume"],
        setup=_then(_copy("cut"), _backward_failing_compiler),
        env=_BACKWARD_FAILING_ENV,
        fresh=True,
        after=_cut_run_kept,
    ),
    # issue 27: evaluate with a compiler that fails only on the backward
    Cli(
        "evaluate with a compiler that fails only on the backward",
        ["evaluate", "{d}/run", "--num-eval", "1", "--eval-epochs", "1", "--compile"],
        ["--compile", "RuntimeError: forced backward compiler failure", "evaluate", "--no-compile"],
        setup=_then(_copy("done"), _backward_failing_compiler),
        env=_BACKWARD_FAILING_ENV,
        fresh=True,
        after=lambda d: (
            all(
                (d / "run" / name).read_bytes() == (_TEMPLATES["done"] / name).read_bytes()
                for name in ("synthetic.pt", "checkpoint.pt", "net_pool.pt", "config.json")
            )
            and not (d / "run" / "eval.json").exists()
        ),
    ),
]

CASES = [*LIB_CASES, *CLI_CASES]


def test_the_catalogue_holds_at_least_400_distinct_cases():
    ids = [c.id for c in CASES]
    assert len(set(ids)) == len(ids), [i for i in ids if ids.count(i) > 1]
    assert len(ids) >= 400, len(ids)


@pytest.mark.parametrize("case", LIB_CASES, ids=[c.id for c in LIB_CASES])
def test_bad_input_raises_an_error_naming_the_argument(case):
    if case.id.startswith("triton") and "triton" not in sk.available_backends():
        pytest.skip("triton is not importable")
    with pytest.raises(case.exception) as info:
        case.call()
    message = str(info.value)
    for word in case.words:
        assert word in message, f"{word!r} not in {message!r}"


def _prepare(case: Cli, tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    return case, d, (case.setup(d) if case.setup else None)


def _run_case(job, cli) -> subprocess.CompletedProcess:
    """One prepared case through `cli` (run_cli's arguments), then its cleanup."""
    case, d, cleanup = job
    cli = _fresh_process if case.fresh else cli
    try:
        env = {**os.environ, **{k: v.replace("{d}", str(d)) for k, v in case.env.items()}}
        return cli([a.replace("{d}", str(d)) for a in case.argv], cwd=d / case.cwd, env=env, timeout=300)
    finally:
        if callable(cleanup):
            cleanup()


def _fresh_process(args, *, cwd, env, timeout):
    return run_cli(*args, cwd=cwd, env=env, timeout=timeout)


@pytest.fixture(scope="module")
def cli_outcomes(request, tmp_path_factory):
    """Run the selected CLI cases, each in its own folder and its own process, two at a time. Each
    process is forked from a server that imported the CLI once (tests/cli_forkserver.py): a fresh
    Python spends ~2 s importing torch, which was nearly half of the whole suite's time."""
    wanted = {
        item.callspec.params["case"].id
        for item in request.session.items
        if getattr(item, "callspec", None) and isinstance(item.callspec.params.get("case"), Cli)
    }
    _make_templates(tmp_path_factory.mktemp("templates"))
    jobs = {case.id: _prepare(case, tmp_path_factory) for case in CLI_CASES if case.id in wanted}
    local, servers = threading.local(), []

    def cli(args, **kwargs):
        if not cli_forkserver.available():
            return _fresh_process(args, **kwargs)
        if not hasattr(local, "server"):
            local.server = cli_forkserver.ForkServer()
            servers.append(local.server)
        return local.server.run(args, **kwargs)

    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
            procs = dict(zip(jobs, pool.map(lambda job: _run_case(job, cli), jobs.values())))
    finally:
        for server in servers:
            server.close()
    return {case_id: (procs[case_id], jobs[case_id][1]) for case_id in jobs}


# Cases whose outcome comes from different places: argparse, a check before any work, the
# environment, a damaged file, a folder in use, data read and refused mid-run, the working folder.
SAME_EITHER_WAY = (
    "unknown dataset",
    "torchrun WORLD_SIZE not a number, through the CLI",
    "cached pool damaged",
    "resume a run in use",
    "imagefolder of mixed sizes without --image-size",
    "out dot in a folder of user files",
)
# A relative path, read from the case's working folder: found there, the file's own error.
RELATIVE_CONFIG = Cli(
    "relative --config",
    [*DISTILL, "--config", "c.json"],
    ["--num-freqs", "'3'"],
    setup=_config_file("c.json", '{"num_freqs": "3"}'),
)


@pytest.mark.skipif(not cli_forkserver.available(), reason="the fork server needs os.fork")
@pytest.mark.parametrize(
    "case", [c for c in CLI_CASES if c.id in SAME_EITHER_WAY] + [RELATIVE_CONFIG], ids=lambda c: c.id
)
def test_a_forked_cli_process_gives_what_a_fresh_one_gives(case, tmp_path_factory):
    """The fork server stands in for the console script faithfully: the same exit status, the same
    stderr and stdout (its folder's name aside), and the same files left in the case's folder."""
    _make_templates(tmp_path_factory.mktemp("templates"))
    outcomes = []
    with cli_forkserver.ForkServer() as server:
        for cli in (_fresh_process, server.run):
            job = _prepare(case, tmp_path_factory)
            proc, d = _run_case(job, cli), job[1]
            files = sorted(str(p.relative_to(d)) for p in d.rglob("*") if ".lock" not in p.name)
            outcomes.append(
                (proc.returncode, proc.stderr.replace(str(d), "{d}"), proc.stdout.replace(str(d), "{d}"), files)
            )
    assert outcomes[0] == outcomes[1]
    assert_one_line_error(proc, *[w.replace("{d}", str(d)) for w in case.words], status=case.status)


@pytest.mark.parametrize("case", CLI_CASES, ids=[c.id for c in CLI_CASES])
def test_bad_cli_input_is_one_line_and_exit_2_and_harms_nothing(case, cli_outcomes):
    proc, folder = cli_outcomes[case.id]
    assert_one_line_error(proc, *[w.replace("{d}", str(folder)) for w in case.words], status=case.status)
    if case.after is not None:
        assert case.after(folder) is not False


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
