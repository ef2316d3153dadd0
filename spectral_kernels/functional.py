"""The discrepancies of SPEC §3 as functions: ecf, ncfd, sdd, csdm, mmd.

Each function checks its arguments (spectral_kernels._checks), groups rows by class
(spectral_kernels.classes), asks a backend for the ECF sums (spectral_kernels.ops), turns them
into amplitude and phase terms (spectral_kernels.terms) and reduces over classes. Nothing here
depends on which backend runs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

import torch

from . import _checks, frequencies, ops
from ._distributed import sum_over_group
from .classes import ClassIndex, class_index
from .frequencies import Frequencies, HadamardFrequencies
from .kernels import check_kernel, kernel_matrix
from .ops.autocast import policy as autocast_policy
from .ops.precision import PRECISIONS as OP_PRECISIONS
from .safe_math import safe_sqrt
from .terms import amplitude_phase

if TYPE_CHECKING:
    from torch.distributed import ProcessGroup

# What the public functions take (annotations only; the values are checked at run time).
# Frequencies (t: a matrix (M, d) or SORF parameters) is defined in spectral_kernels.frequencies.
Bandwidth: TypeAlias = "float | Sequence[float]"  # a list means the sum of the kernels
ClassCounts: TypeAlias = "torch.Tensor | Sequence[float]"  # (C,) real images per class

ALPHA_RULES = ("binary", "log-linear")
PRECISIONS = (None, *OP_PRECISIONS)  # None: follow torch's TF32 setting
ESTIMATORS = ("v", "u")


# --------------------------------------------------------------------------- shared plumbing


@dataclass(frozen=True)
class _Pair:
    """Checked real and synthetic features with their class layouts."""

    real: torch.Tensor
    syn: torch.Tensor
    real_index: ClassIndex
    syn_index: ClassIndex
    num_classes: int
    present: torch.Tensor  # (C,) bool: the class has rows on both sides
    real_counts: torch.Tensor  # (C,) real rows per class, summed over `real_group` when given
    real_group: object = None
    check_finite: bool = True  # value checks on (eager mode, unless check_finite=False)


def _classes_of_labels(num_classes, labels: dict, real_group=None) -> int:
    """C: `num_classes` as given, else 1 + the largest label (a host sync, so refused under
    torch.compile, and with real_group, where a shard may lack the last class); every labels
    tensor ({name: (n,) int64}) is then checked to lie in [0, C) outside torch.compile."""
    if num_classes is None:
        if _checks.tracing():
            raise ValueError(
                "num_classes is required under torch.compile: inferring it from the labels needs a host sync"
            )
        if real_group is not None:
            raise ValueError("num_classes is required with real_group: a shard may lack the last class")
        num_classes = _checks.inferred_num_classes(max(int(y.max()) for y in labels.values()), "/".join(labels))
    if not _checks.tracing():
        for name, y in labels.items():
            _checks.label_range(name, y, num_classes)
    return num_classes


def _prepare_pair(real, syn, real_labels, syn_labels, *, num_classes, check_finite, real_group=None) -> _Pair:
    real = _checks.features("real", real)
    syn = _checks.features("syn", syn)
    _checks.same_layout("syn", syn, "real", real)
    num_classes = _checks.num_classes(num_classes)
    real_group = _checks.process_group("real_group", real_group)
    check_finite = _checks.resolve_check_finite(check_finite)
    if check_finite:
        _checks.finite("real", real)
        _checks.finite("syn", syn)
    if (real_labels is None) != (syn_labels is None):
        given, missing = ("real_labels", "syn_labels") if syn_labels is None else ("syn_labels", "real_labels")
        raise ValueError(f"{given} was given but {missing} is None; pass labels for both sides or for neither")

    if real_labels is None:
        if num_classes not in (None, 1):
            raise ValueError(f"num_classes={num_classes} was given without labels; without labels there is one class")
        real_y = syn_y = None
        num_classes = 1
    else:
        real_y = _checks.labels("real_labels", real_labels, real.shape[0], "real", real.device)
        syn_y = _checks.labels("syn_labels", syn_labels, syn.shape[0], "syn", real.device)
        num_classes = _classes_of_labels(num_classes, {"real_labels": real_y, "syn_labels": syn_y}, real_group)

    real_index = class_index(real_y, real.shape[0], num_classes, real.device)
    syn_index = class_index(syn_y, syn.shape[0], num_classes, real.device)
    real_counts = real_index.counts
    if real_group is not None:
        real_counts = real_counts.clone()
        torch.distributed.all_reduce(real_counts, group=real_group)
    real_has, syn_has = real_counts > 0, syn_index.counts > 0
    if not _checks.tracing() and bool((real_has != syn_has).any()):
        c = int((real_has != syn_has).nonzero()[0])
        raise ValueError(
            f"class {c} has {int(real_counts[c])} real and {int(syn_index.counts[c])} synthetic samples; "
            "a class must be present on both sides or on neither"
        )
    return _Pair(
        real, syn, real_index, syn_index, num_classes, real_has & syn_has, real_counts, real_group, check_finite
    )


def _ecf_means(
    x: torch.Tensor,
    t: Frequencies,
    index: ClassIndex,
    backend: ops.Backend,
    precision,
    *,
    name: str,
    check_finite: bool,
    group=None,
    counts=None,
):
    """Per-class ECF means (re, im), each (C, M); 0 for a class with no rows.

    With a process group, the sums are added over its processes (SPEC §1: sums are additive)
    and `counts` must be the matching global counts, so every process gets the ECF of the
    union of their rows. The all_reduce is autograd-aware: the backward sends each process
    the gradient for its own rows. With `check_finite`, sums made non-finite by an overflowing
    phase raise ValueError naming `name` (inputs are already known to be finite then).
    """
    precision = _checks.choice("precision", precision, PRECISIONS)
    _checks.allocation(
        f"num_classes={index.num_classes} with {t.shape[0]} frequencies: the per-class ECF sums (C, 2, M) of {name}",
        (index.num_classes, 2, t.shape[0]),
        torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype,
        x.device,
    )
    if isinstance(t, HadamardFrequencies):
        sums = backend.structured_sums(x, t, index, precision)
    else:
        sums = backend.ecf_sums(x, t, index, precision)
    if check_finite:
        _checks.finite_sums(name, sums, x, t.radii if isinstance(t, HadamardFrequencies) else t)
    if group is not None:
        sums = sum_over_group(sums, group)
    n = (index.counts if counts is None else counts).clamp_min(1).to(sums.dtype).unsqueeze(1)
    return sums[:, 0] / n, sums[:, 1] / n


def _terms(pair: _Pair, t: Frequencies, backend: str, precision):
    """Amplitude and phase terms (A, H), each (C, M), of the real vs synthetic ECFs."""
    chosen = ops.resolve(backend, pair.real)
    check = pair.check_finite
    re_p, im_p = _ecf_means(
        pair.real,
        t,
        pair.real_index,
        chosen,
        precision,
        name="real",
        check_finite=check,
        group=pair.real_group,
        counts=pair.real_counts,
    )
    re_q, im_q = _ecf_means(pair.syn, t, pair.syn_index, chosen, precision, name="syn", check_finite=check)
    return amplitude_phase(re_p, im_p, re_q, im_q)


def _reduce(per_class: torch.Tensor, present: torch.Tensor, reduction: str) -> torch.Tensor:
    """SPEC §3: classes absent from both sides take no part; "none" gives them 0."""
    per_class = torch.where(present, per_class, torch.zeros_like(per_class))
    if reduction == "none":
        return per_class
    total = per_class.sum()
    if reduction == "sum":
        return total
    return total / present.sum().clamp_min(1).to(total.dtype)


def _spectral_discrepancy(
    real,
    syn,
    real_labels,
    syn_labels,
    *,
    alpha,
    t,
    kernel,
    bandwidth,
    nu,
    num_freqs,
    generator,
    num_classes,
    reduction,
    backend,
    precision,
    check_finite,
    real_group,
    structure,
) -> torch.Tensor:
    """mean_m [alpha_c A + (1 - alpha_c) H] per class (CSDM, alpha a (C,) tensor), or
    mean_m [A + H] = |P - Q|^2 (SDD) when alpha is None, at the given or freshly drawn
    frequencies, reduced over classes."""
    pair = _prepare_pair(
        real, syn, real_labels, syn_labels, num_classes=num_classes, check_finite=check_finite, real_group=real_group
    )
    reduction = _checks.choice("reduction", reduction, _checks.REDUCTIONS)
    t, scale = frequencies.resolve(
        t,
        kernel=kernel,
        bandwidth=bandwidth,
        nu=nu,
        num_freqs=num_freqs,
        generator=generator,
        like=pair.real,
        check_finite=pair.check_finite,
        structure=structure,
    )
    amplitude, phase = _terms(pair, t, backend, precision)
    if alpha is None:
        weighted = amplitude + phase
    else:
        alpha = _checks.unit_interval("class_alpha", alpha, pair.num_classes, amplitude).unsqueeze(1)
        weighted = alpha * amplitude + (1.0 - alpha) * phase
    return _reduce(scale * weighted.mean(1), pair.present, reduction)


# --------------------------------------------------------------------------- public functions


@autocast_policy((0, "x"), (1, "t"))
def ecf(
    x: torch.Tensor,
    t: Frequencies,
    labels: torch.Tensor | None = None,
    num_classes: int | None = None,
    *,
    backend: str = "auto",
    precision: str | None = None,
    check_finite: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class empirical characteristic function (SPEC §1).

    Args:
        x: (N, d) features. t: (M, d) frequencies, same dtype and device.
        labels: (N,) integer class of each row, or None (one class).
        num_classes: C; by default 1 + the largest label (a host sync: pass it under torch.compile).
        backend: "auto", "reference", "cpu", "triton", "cuda" (spectral_kernels.ops).
        precision: products on CUDA in "tf32" or "ieee"; None follows
            torch.backends.cuda.matmul.fp32_precision (or the legacy allow_tf32). CPU backends always
            use IEEE float.

    Returns:
        (re, im), each (C, M): re[c, m] = mean_{i in c} cos(<t_m, x_i>), im likewise with sin;
        0 for a class with no rows. Differentiable with respect to x and t.

    Raises:
        TypeError for non-tensors and non-floating or mismatched dtypes; ValueError for bad
        shapes, empty inputs, non-finite values, labels out of range, an unknown backend.
    """
    x = _checks.features("x", x)
    check_finite = _checks.resolve_check_finite(check_finite)
    t = frequencies.given("t", t, x, "x", check_finite)
    if check_finite:
        _checks.finite("x", x)
    num_classes = _checks.num_classes(num_classes)
    if labels is None:
        if num_classes not in (None, 1):
            raise ValueError(f"num_classes={num_classes} was given without labels; without labels there is one class")
        y, num_classes = None, 1
    else:
        y = _checks.labels("labels", labels, x.shape[0], "x", x.device)
        num_classes = _classes_of_labels(num_classes, {"labels": y})
    index = class_index(y, x.shape[0], num_classes, x.device)
    return _ecf_means(x, t, index, ops.resolve(backend, x), precision, name="x", check_finite=check_finite)


@autocast_policy((0, "real"), (1, "syn"), (2, "t"))
def ncfd(
    real: torch.Tensor,
    syn: torch.Tensor,
    t: Frequencies,
    real_labels: torch.Tensor | None = None,
    syn_labels: torch.Tensor | None = None,
    *,
    num_classes: int | None = None,
    alpha: float | torch.Tensor = 0.5,
    sqrt: bool = True,
    eps: float = 1e-12,
    reduction: str = "mean",
    backend: str = "auto",
    precision: str | None = None,
    check_finite: bool | None = None,
    real_group: ProcessGroup | None = None,
) -> torch.Tensor:
    """Neural characteristic function discrepancy of NCFM (SPEC §3).

    With P, Q the per-class ECFs of `real` and `syn` at the frequencies `t` and A, H the
    amplitude and phase terms of SPEC §2:

        D[c, m] = alpha_c A + (1 - alpha_c) max(H, eps)
        NCFD_c  = mean_m sqrt(D[c, m])   (sqrt=True; D[c, m] without the sqrt otherwise)

    alpha = 0.5 reproduces the NCFM loss mean(sqrt(0.5 amp + 0.5 clamp(pha, 1e-12))) (without
    its x300 scale). The derivative of sqrt at 0 is taken as 0, so no NaN reaches the inputs.

    Args:
        real: (N, d), syn: (S, d) features; t: (M, d) frequencies (a kernel's samples from
            sk.sample_frequencies or a learned sk.FrequencySampler).
        real_labels, syn_labels: (N,), (S,) integer labels, or both None (one class).
        num_classes: C (default 1 + the largest label).
        alpha: float in [0, 1] or a (C,) tensor. eps: >= 0.
        reduction: "mean" over the classes present, "sum", or "none" ((C,) with 0 for a class
            absent from both sides).
        backend, precision: as in `ecf`.
        real_group: a torch.distributed process group over which `real` is sharded: the real
            ECF sums and counts are all-reduced, so the value is that of all shards together
            (the synthetic side and `t` must be the same on every process).

    Raises:
        ValueError / TypeError as listed in SPEC §6, naming the argument; ValueError when a
        class is present on one side only.
    """
    pair = _prepare_pair(
        real, syn, real_labels, syn_labels, num_classes=num_classes, check_finite=check_finite, real_group=real_group
    )
    t = frequencies.given("t", t, pair.real, "real", pair.check_finite)
    alpha = _checks.unit_interval("alpha", alpha, pair.num_classes, pair.real).unsqueeze(1)
    eps = _checks.non_negative("eps", eps)
    if eps > 1.0:
        raise ValueError(f"eps is a small floor for the phase term (default 1e-12), at most 1; got {eps}")
    if not isinstance(sqrt, bool):
        raise TypeError(f"sqrt must be a bool, got {sqrt!r}")
    reduction = _checks.choice("reduction", reduction, _checks.REDUCTIONS)
    amplitude, phase = _terms(pair, t, backend, precision)
    d = alpha * amplitude + (1.0 - alpha) * phase.clamp_min(eps)
    per_class = (safe_sqrt(d) if sqrt else d).mean(1)
    return _reduce(per_class, pair.present, reduction)


# Packed as SPEC §7 prints it (fmt: skip): one parameter per line would run to 20 lines.
@autocast_policy((0, "real"), (1, "syn"), (None, "t"))
def sdd(real: torch.Tensor, syn: torch.Tensor, real_labels: torch.Tensor | None = None,
        syn_labels: torch.Tensor | None = None, *, t: Frequencies | None = None, kernel: str = "gaussian",
        bandwidth: Bandwidth = 1.0, nu: float = 1.5, num_freqs: int = 4096, generator: torch.Generator | None = None,
        num_classes: int | None = None, reduction: str = "mean", backend: str = "auto", precision: str | None = None,
        check_finite: bool | None = None, real_group: ProcessGroup | None = None,
        structure: str = "iid") -> torch.Tensor:  # fmt: skip
    """Spectral distribution distance (SPEC §3): SDD_c = mean_m |P_c(w_m) - Q_c(w_m)|^2.

    With `t=None`, `num_freqs` frequencies w are drawn afresh on every call from the spectral
    measure of `kernel` (SPEC §4, seeded by `generator`); the expectation over the draws is
    then exactly the biased (V-statistic) MMD^2 with that kernel (Bochner), which
    `sk.mmd(..., estimator="v")` computes pairwise. A list of bandwidths means the summed
    kernel, as in `mmd`. With `t` given, kernel and bandwidth are not used to draw.

    Args: as `ncfd`, plus kernel in {"gaussian", "laplacian", "cauchy", "matern"}, bandwidth
    sigma > 0 (or a list), nu > 0 (Matérn smoothness), num_freqs >= 1, and structure: how the
    frequencies are drawn, "iid", or for the radial kernels (gaussian, matern) "orthogonal"
    (ORF) or "hadamard" (SORF, evaluated without materialising t on the cpu and triton backends): the same
    expectation with less variance (SPEC §4, spectral_kernels.structured).

    Raises: as `ncfd`; ValueError for kernel="linear" (no spectral measure: use `mmd`).
    """
    # Every option spelled out, not gathered with locals(): torch 2.11's dynamo cannot trace locals(), so
    # torch.compile(fullgraph=True) of sdd and csdm failed there (torch 2.14 traces it).
    return _spectral_discrepancy(
        real,
        syn,
        real_labels,
        syn_labels,
        alpha=None,
        t=t,
        kernel=kernel,
        bandwidth=bandwidth,
        nu=nu,
        num_freqs=num_freqs,
        generator=generator,
        num_classes=num_classes,
        reduction=reduction,
        backend=backend,
        precision=precision,
        check_finite=check_finite,
        real_group=real_group,
        structure=structure,
    )


def csdm_class_alpha(
    class_counts: ClassCounts,
    *,
    alpha_head: float = 0.8,
    head_classes: torch.Tensor | Sequence[bool] | None = None,
    alpha_rule: str = "binary",
) -> torch.Tensor:
    """Per-class amplitude weight alpha_c of CSDM (SPEC §3), a (C,) float64 tensor.

    Head classes get alpha_head (weight on amplitude, i.e. diversity), tail classes
    1 - alpha_head (weight on phase, i.e. realism). Which classes are head:
      - `head_classes`: an explicit (C,) bool mask, if given;
      - alpha_rule="binary" (default): count >= the median count (mean of the two middle
        counts when C is even);
      - alpha_rule="log-linear": alpha moves linearly in log count from 1 - alpha_head (rarest)
        to alpha_head (most frequent).
    When all counts are equal every class is head under both rules. The CSDM paper's exact
    split rule was not public; these rules are this library's choice.

    Raises: TypeError / ValueError for counts that are not a 1-D list or tensor of positive
    numbers, alpha_head outside [0, 1], a head mask that is not (C,) bool, an unknown rule.
    """
    counts = _checks.class_counts(class_counts)
    if isinstance(alpha_head, bool) or not isinstance(alpha_head, (int, float)):
        raise TypeError(f"alpha_head must be a float in [0, 1], got {alpha_head!r}")
    if not 0.0 <= alpha_head <= 1.0:
        raise ValueError(f"alpha_head must lie in [0, 1], got {alpha_head}")
    alpha_rule = _checks.choice("alpha_rule", alpha_rule, ALPHA_RULES)
    head, tail = float(alpha_head), 1.0 - float(alpha_head)
    if head_classes is not None:
        is_head = _checks.head_mask(head_classes, counts.shape[0])
    elif alpha_rule == "binary":
        ordered = counts.sort().values
        mid = counts.shape[0] // 2
        median = ordered[mid] if counts.shape[0] % 2 else 0.5 * (ordered[mid - 1] + ordered[mid])
        is_head = counts >= median
    else:
        # Tensor ops only (no Python branch on values), so this traces under torch.compile.
        logs = counts.log()
        spread = logs.max() - logs.min()
        position = (logs - logs.min()) / torch.where(spread > 0, spread, torch.ones_like(spread))
        return torch.where(spread > 0, tail + (head - tail) * position, torch.full_like(counts, head))
    return torch.where(is_head, torch.full_like(counts, head), torch.full_like(counts, tail))


# Packed as SPEC §7 prints it (fmt: skip), like sdd.
def csdm(real: torch.Tensor, syn: torch.Tensor, real_labels: torch.Tensor, syn_labels: torch.Tensor, *,
         class_counts: ClassCounts, t: Frequencies | None = None, kernel: str = "gaussian",
         bandwidth: Bandwidth = 1.0, nu: float = 1.5, num_freqs: int = 4096, alpha_head: float = 0.8,
         head_classes: torch.Tensor | Sequence[bool] | None = None, alpha_rule: str = "binary",
         generator: torch.Generator | None = None, num_classes: int | None = None, reduction: str = "mean",
         backend: str = "auto", precision: str | None = None, check_finite: bool | None = None,
         real_group: ProcessGroup | None = None, structure: str = "iid") -> torch.Tensor:  # fmt: skip
    """Class-aware spectral distribution matching (SPEC §3).

        CSDM_c = mean_m [ alpha_c A + (1 - alpha_c) H ]

    with A, H the amplitude and phase terms of the real vs synthetic ECFs of class c at
    frequencies from the kernel's spectral measure (as in `sdd`), and alpha_c from
    `csdm_class_alpha(class_counts, ...)`: head classes weight amplitude (diversity), tail
    classes weight phase (realism). alpha_c = 1/2 for all classes gives SDD / 2.

    Args: as `sdd`, plus class_counts: (C,) real counts over the whole training set (not of
    one batch; all > 0; C = len(class_counts) unless num_classes says otherwise), alpha_head,
    head_classes, alpha_rule (see `csdm_class_alpha`). Labels are required.

    Raises: as `sdd` and `csdm_class_alpha`; ValueError if num_classes != len(class_counts).
    """
    alpha = csdm_class_alpha(class_counts, alpha_head=alpha_head, head_classes=head_classes, alpha_rule=alpha_rule)
    # Options spelled out as in sdd (torch 2.11 cannot compile locals()).
    return csdm_with_alpha(
        real,
        syn,
        real_labels,
        syn_labels,
        alpha,
        t=t,
        kernel=kernel,
        bandwidth=bandwidth,
        nu=nu,
        num_freqs=num_freqs,
        generator=generator,
        num_classes=num_classes,
        reduction=reduction,
        backend=backend,
        precision=precision,
        check_finite=check_finite,
        real_group=real_group,
        structure=structure,
    )


# Packed as SPEC §7 prints csdm (fmt: skip), like sdd.
@autocast_policy((0, "real"), (1, "syn"), (None, "t"))
def csdm_with_alpha(real: torch.Tensor, syn: torch.Tensor, real_labels: torch.Tensor, syn_labels: torch.Tensor,
                    alpha: torch.Tensor, *, t: Frequencies | None = None, kernel: str = "gaussian",
                    bandwidth: Bandwidth = 1.0, nu: float = 1.5, num_freqs: int = 4096,
                    generator: torch.Generator | None = None, num_classes: int | None = None, reduction: str = "mean",
                    backend: str = "auto", precision: str | None = None, check_finite: bool | None = None,
                    real_group: ProcessGroup | None = None, structure: str = "iid") -> torch.Tensor:  # fmt: skip
    """CSDM with the per-class weights alpha (C,) already computed (what CSDMLoss keeps as a
    buffer, so a loaded state_dict is what the loss uses). Other arguments as in `csdm`."""
    if real_labels is None or syn_labels is None:
        raise ValueError("csdm needs real_labels and syn_labels: its weights are per class")
    if num_classes is None:
        num_classes = alpha.shape[0]
    elif _checks.num_classes(num_classes) != alpha.shape[0]:
        raise ValueError(f"num_classes={num_classes} but class_counts has {alpha.shape[0]} entries")
    # Every option by name, none gathered into a dict: a new option must be passed on here or
    # the call fails, never dropped silently (and torch 2.11's dynamo cannot trace locals()).
    return _spectral_discrepancy(
        real,
        syn,
        real_labels,
        syn_labels,
        alpha=alpha,
        t=t,
        kernel=kernel,
        bandwidth=bandwidth,
        nu=nu,
        num_freqs=num_freqs,
        generator=generator,
        num_classes=num_classes,
        reduction=reduction,
        backend=backend,
        precision=precision,
        check_finite=check_finite,
        real_group=real_group,
        structure=structure,
    )


@autocast_policy((0, "real"), (1, "syn"), fused=False)
def mmd(
    real: torch.Tensor,
    syn: torch.Tensor,
    real_labels: torch.Tensor | None = None,
    syn_labels: torch.Tensor | None = None,
    *,
    kernel: str = "gaussian",
    bandwidth: Bandwidth = 1.0,
    nu: float = 1.5,
    estimator: str = "v",
    num_classes: int | None = None,
    reduction: str = "mean",
    check_finite: bool | None = None,
) -> torch.Tensor:
    """Exact pairwise MMD^2 per class (SPEC §3): the baseline for memory and speed.

    kernel="linear": ||mean(x) - mean(y)||^2 (the DM objective). Other kernels (SPEC §4, with
    a list of bandwidths meaning their sum): estimator="v" is the biased V-statistic
    mean k(x,x') + mean k(y,y') - 2 mean k(x,y), which SDD estimates; estimator="u" leaves out
    the i = j terms of the first two means (unbiased; needs 2 samples per class per side).
    Matérn needs nu in {0.5, 1.5, 2.5} here. Memory is O(N^2 + N S) per class; under
    torch.compile, where class sizes are unknown while tracing, O((N + S)^2) for the whole batch
    (kernel matrices weighted by class masks).

    Raises: as `ncfd`; ValueError for an unknown kernel or estimator, or estimator="u" with a
    class of fewer than 2 samples on a side.
    """
    pair = _prepare_pair(real, syn, real_labels, syn_labels, num_classes=num_classes, check_finite=check_finite)
    kernel = check_kernel(kernel, spectral=False)
    sigmas = _checks.bandwidths(bandwidth)
    nu = _checks.positive("nu", nu)
    estimator = _checks.choice("estimator", estimator, ESTIMATORS)
    reduction = _checks.choice("reduction", reduction, _checks.REDUCTIONS)
    if _checks.tracing():  # class sizes are data, unknown while torch.compile traces: no per-class slices
        masked = _mmd2_by_masks(pair, kernel=kernel, sigmas=sigmas, nu=nu, estimator=estimator)
        return _reduce(masked, pair.present, reduction)
    real_off, syn_off = pair.real_index.offsets.tolist(), pair.syn_index.offsets.tolist()
    per_class = []
    for c in range(pair.num_classes):
        x = pair.real[pair.real_index.perm[real_off[c] : real_off[c + 1]]]
        y = pair.syn[pair.syn_index.perm[syn_off[c] : syn_off[c + 1]]]
        if x.shape[0] == 0:
            per_class.append(pair.real.new_zeros(()))
            continue
        # k(x, x), k(y, y) and k(x, y) with their distance temporaries: at least (n + s)^2 values
        _checks.allocation(
            f"mmd: class {c} with {x.shape[0]} real and {y.shape[0]} synthetic rows: its kernel matrices",
            (x.shape[0] + y.shape[0], x.shape[0] + y.shape[0]),
            x.dtype,
            x.device,
        )
        if estimator == "u" and min(x.shape[0], y.shape[0]) < 2:
            raise ValueError(
                f"estimator='u' needs >= 2 samples per class on each side; class {c} has {x.shape[0]} real and "
                f"{y.shape[0]} synthetic"
            )
        per_class.append(_mmd2(x, y, kernel=kernel, sigmas=sigmas, nu=nu, estimator=estimator))
    return _reduce(torch.stack(per_class), pair.present, reduction)


def _class_masks(index: ClassIndex, rows: int, like: torch.Tensor) -> torch.Tensor:
    """(rows, C) 0/1 matrix of the class of each row, in like's dtype."""
    if index.labels is None:
        return like.new_ones(rows, 1)
    return torch.nn.functional.one_hot(index.labels, index.num_classes).to(like.dtype)


def _mmd2_by_masks(pair: _Pair, *, kernel, sigmas, nu, estimator) -> torch.Tensor:
    """Per-class MMD² (C,) without a loop over classes, for torch.compile: each class's sums are
    whole-batch kernel matrices weighted by its mask, O((N + S)²) memory where the eager loop
    takes Σ_c (n_c + s_c)², the same values up to rounding. The inputs are centred on the
    synthetic mean but not scaled (the scale is read from the values). As every value check
    under torch.compile, estimator="u"'s two samples per class are not checked: a class with
    fewer gives 0, as does an absent class (no 0/0 to send NaN into the gradients)."""
    centre = pair.syn.mean(0)
    x, y = pair.real - centre, pair.syn - centre
    mx, my = _class_masks(pair.real_index, x.shape[0], x), _class_masks(pair.syn_index, y.shape[0], y)
    nx, ny = mx.sum(0), my.sum(0)
    unbiased = estimator == "u"

    def pairs(n):  # the number of (i, j) pairs the within-set mean runs over
        return (n * (n - 1) if unbiased else n * n).clamp_min(1)

    if kernel == "linear":
        sum_x, sum_y = mx.T @ x, my.T @ y  # (C, d) per-class sums
        mean_x, mean_y = sum_x / nx.clamp_min(1)[:, None], sum_y / ny.clamp_min(1)[:, None]
        if not unbiased:
            return ((mean_x - mean_y) ** 2).sum(1)
        xx = ((sum_x * sum_x).sum(1) - mx.T @ (x * x).sum(1)) / pairs(nx)
        yy = ((sum_y * sum_y).sum(1) - my.T @ (y * y).sum(1)) / pairs(ny)
        return xx + yy - 2.0 * (mean_x * mean_y).sum(1)

    def within(z, m, n):
        k = kernel_matrix(kernel, z, z, sigmas, nu)
        total = ((k @ m) * m).sum(0)  # Σ_{i, j in c} k(z_i, z_j)
        if unbiased:
            total = total - m.T @ k.diagonal()
        return total / pairs(n)

    cross = ((kernel_matrix(kernel, x, y, sigmas, nu) @ my) * mx).sum(0) / (nx * ny).clamp_min(1)
    return within(x, mx, nx) + within(y, my, ny) - 2.0 * cross


def _centred_and_scaled(x: torch.Tensor, y: torch.Tensor):
    """(x', y', s) with x = s x' + c, y = s y' + c: s a power of two (exact division) that puts
    every value in (-2, 2), c the mean of y / s, so x', y' lie in (-4, 4). Squared distances of
    finite inputs then cannot overflow, and centring removes most of the cancellation of the
    expanded |x|^2 + |y|^2 - 2 <x, y>. s and c are constants for autograd: distances do not
    depend on them."""
    with torch.no_grad():
        largest = float(torch.maximum(x.abs().max(), y.abs().max()))
        exponent = math.frexp(largest)[1] if largest > 0 else 1  # largest < 2**exponent
        scale = math.ldexp(1.0, exponent - 1)
        centre = (y / scale).mean(0)
    return x / scale - centre, y / scale - centre, scale


def _mmd2(x, y, *, kernel, sigmas, nu, estimator) -> torch.Tensor:
    n, m = x.shape[0], y.shape[0]
    x, y, scale = _centred_and_scaled(x, y)
    if kernel == "linear":
        mean_x, mean_y = x.mean(0), y.mean(0)
        if estimator == "v":
            value = ((mean_x - mean_y) ** 2).sum()
        else:
            sum_x, sum_y = x.sum(0), y.sum(0)
            xx = ((sum_x * sum_x).sum() - (x * x).sum()) / (n * (n - 1))
            yy = ((sum_y * sum_y).sum() - (y * y).sum()) / (m * (m - 1))
            value = xx + yy - 2.0 * (mean_x * mean_y).sum()
        return value * scale * scale  # overflows to inf only if the true value exceeds the dtype
    sigmas = tuple(sigma / scale for sigma in sigmas)  # k depends on distance / sigma only

    def within(z):
        k = kernel_matrix(kernel, z, z, sigmas, nu)
        if estimator == "v":
            return k.mean()
        return (k.sum() - k.diagonal().sum()) / (z.shape[0] * (z.shape[0] - 1))

    return within(x) + within(y) - 2.0 * kernel_matrix(kernel, x, y, sigmas, nu).mean()
