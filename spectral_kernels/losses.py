"""nn.Module forms of the discrepancies: configuration checked once in __init__, the call
takes only tensors. Each forwards to the function of the same name in functional.py."""
from __future__ import annotations

import torch
from torch import nn

from . import _checks, functional
from .kernels import check_kernel


class NCFDLoss(nn.Module):
    """`sk.ncfd` as a module: loss(real, syn, t, real_labels=None, syn_labels=None)."""

    def __init__(self, *, alpha=0.5, sqrt=True, eps=1e-12, num_classes=None, reduction="mean", backend="auto", precision=None):
        super().__init__()
        self.precision = _checks.choice("precision", precision, functional.PRECISIONS)
        if not isinstance(alpha, torch.Tensor):
            _checks.unit_interval("alpha", alpha, 1, torch.empty(0))
        self.alpha, self.sqrt, self.eps = alpha, sqrt, _checks.non_negative("eps", eps)
        self.num_classes = _checks.num_classes(num_classes)
        self.reduction = _checks.choice("reduction", reduction, _checks.REDUCTIONS)
        self.backend = backend

    def forward(self, real, syn, t, real_labels=None, syn_labels=None):
        return functional.ncfd(
            real, syn, t, real_labels, syn_labels, num_classes=self.num_classes, alpha=self.alpha,
            sqrt=self.sqrt, eps=self.eps, reduction=self.reduction, backend=self.backend, precision=self.precision,
        )


class _SpectralLoss(nn.Module):
    def __init__(self, kernel, bandwidth, nu, num_freqs, num_classes, reduction, backend, generator, precision):
        super().__init__()
        self.precision = _checks.choice("precision", precision, functional.PRECISIONS)
        self.kernel = check_kernel(kernel, spectral=True)
        self.bandwidth = list(_checks.bandwidths(bandwidth)) if not isinstance(bandwidth, (int, float)) else _checks.positive("bandwidth", bandwidth)
        self.nu = _checks.positive("nu", nu)
        self.num_freqs = _checks.positive_int("num_freqs", num_freqs)
        self.num_classes = _checks.num_classes(num_classes)
        self.reduction = _checks.choice("reduction", reduction, _checks.REDUCTIONS)
        self.backend = backend
        self.generator = generator

    def _spectral_kwargs(self, t):
        return dict(
            t=t, kernel=self.kernel, bandwidth=self.bandwidth, nu=self.nu, num_freqs=self.num_freqs,
            generator=self.generator, num_classes=self.num_classes, reduction=self.reduction, backend=self.backend,
            precision=self.precision,
        )


class SDDLoss(_SpectralLoss):
    """`sk.sdd` as a module: loss(real, syn, real_labels=None, syn_labels=None, t=None).

    Without t, fresh frequencies are drawn from the kernel's spectral measure on every call
    (through `generator` when one is given).
    """

    def __init__(self, *, kernel="gaussian", bandwidth=1.0, nu=1.5, num_freqs=4096, num_classes=None, reduction="mean", backend="auto", generator=None, precision=None):
        super().__init__(kernel, bandwidth, nu, num_freqs, num_classes, reduction, backend, generator, precision)

    def forward(self, real, syn, real_labels=None, syn_labels=None, t=None):
        return functional.sdd(real, syn, real_labels, syn_labels, **self._spectral_kwargs(t))


class CSDMLoss(_SpectralLoss):
    """`sk.csdm` as a module: loss(real, syn, real_labels, syn_labels, t=None).

    The per-class weights are fixed at construction from `class_counts` (whole training set).
    """

    def __init__(self, class_counts, *, kernel="gaussian", bandwidth=1.0, nu=1.5, num_freqs=4096, alpha_head=0.8, head_classes=None, alpha_rule="binary", num_classes=None, reduction="mean", backend="auto", generator=None, precision=None):
        super().__init__(kernel, bandwidth, nu, num_freqs, num_classes, reduction, backend, generator, precision)
        self.register_buffer("class_alpha", functional.csdm_class_alpha(class_counts, alpha_head=alpha_head, head_classes=head_classes, alpha_rule=alpha_rule))
        self.class_counts = class_counts
        self.alpha_head, self.head_classes, self.alpha_rule = alpha_head, head_classes, alpha_rule

    def forward(self, real, syn, real_labels, syn_labels, t=None):
        return functional.csdm(
            real, syn, real_labels, syn_labels, class_counts=self.class_counts, alpha_head=self.alpha_head,
            head_classes=self.head_classes, alpha_rule=self.alpha_rule, **self._spectral_kwargs(t),
        )


class MMDLoss(nn.Module):
    """`sk.mmd` as a module: loss(real, syn, real_labels=None, syn_labels=None)."""

    def __init__(self, *, kernel="gaussian", bandwidth=1.0, nu=1.5, estimator="v", num_classes=None, reduction="mean"):
        super().__init__()
        self.kernel = check_kernel(kernel, spectral=False)
        self.bandwidth = bandwidth
        _checks.bandwidths(bandwidth)
        self.nu = _checks.positive("nu", nu)
        self.estimator = _checks.choice("estimator", estimator, functional.ESTIMATORS)
        self.num_classes = _checks.num_classes(num_classes)
        self.reduction = _checks.choice("reduction", reduction, _checks.REDUCTIONS)

    def forward(self, real, syn, real_labels=None, syn_labels=None):
        return functional.mmd(
            real, syn, real_labels, syn_labels, kernel=self.kernel, bandwidth=self.bandwidth, nu=self.nu,
            estimator=self.estimator, num_classes=self.num_classes, reduction=self.reduction,
        )
