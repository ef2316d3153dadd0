"""nn.Module forms of the discrepancies: each takes every option of the function of the same
name in functional.py and forwards it by keyword, unchanged (tests/test_loss_modules.py checks
this against the functions' signatures). SPEC §7 states which options are given where:
configuration at construction, checked once; what changes from call to call (the tensors, the
frequencies `t`, a `generator` and a `bandwidth`) per call.

What a module uses beyond its constructor arguments travels with its state_dict: tensor
weights are buffers (an NCFDLoss alpha tensor, CSDMLoss's class counts and per-class weights),
and the state of a loss's own torch.Generator is extra state, so a restored loss draws the
same frequencies the saved one would have drawn next.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from . import _checks, functional, ops
from .frequencies import check_structure
from .functional import Bandwidth, ClassCounts, Frequencies
from .kernels import check_kernel

if TYPE_CHECKING:
    from torch.distributed import ProcessGroup


class NCFDLoss(nn.Module):
    """`sk.ncfd` as a module: loss(real, syn, t, real_labels=None, syn_labels=None).

    alpha may be a float or a (C,) tensor of per-class weights in [0, 1] (a buffer: it moves
    with .to() and is saved in the state_dict).
    """

    def __init__(
        self,
        *,
        alpha: float | torch.Tensor = 0.5,
        sqrt: bool = True,
        eps: float = 1e-12,
        num_classes: int | None = None,
        reduction: str = "mean",
        backend: str = "auto",
        precision: str | None = None,
        check_finite: bool | None = None,
        real_group: ProcessGroup | None = None,
    ) -> None:
        super().__init__()
        self.num_classes = _checks.num_classes(num_classes)
        self.check_finite = _check_finite(check_finite)
        self.real_group = _checks.process_group("real_group", real_group)
        if isinstance(alpha, torch.Tensor):
            if not alpha.is_floating_point() or alpha.dim() != 1 or alpha.shape[0] == 0:
                raise ValueError(
                    f"alpha must be a float in [0, 1] or a 1-D floating (C,) tensor, got {alpha.dtype} of shape "
                    f"{tuple(alpha.shape)}"
                )
            if self.num_classes is not None and alpha.shape[0] != self.num_classes:
                raise ValueError(f"alpha has {alpha.shape[0]} entries but num_classes={self.num_classes}")
            _checks.unit_interval("alpha", alpha, alpha.shape[0], alpha)
            self.register_buffer("alpha", alpha.detach().clone())
        else:
            _checks.unit_interval("alpha", alpha, 1, torch.empty(0))
            self.alpha = float(alpha)
        self.sqrt = _checks.boolean("sqrt", sqrt)
        self.eps = _checks.non_negative("eps", eps)
        self.reduction = _checks.choice("reduction", reduction, _checks.REDUCTIONS)
        self.backend = ops.check_name(backend)
        self.precision = _checks.choice("precision", precision, functional.PRECISIONS)

    def forward(
        self,
        real: torch.Tensor,
        syn: torch.Tensor,
        t: Frequencies,
        real_labels: torch.Tensor | None = None,
        syn_labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return functional.ncfd(
            real,
            syn,
            t,
            real_labels,
            syn_labels,
            num_classes=self.num_classes,
            alpha=self.alpha,
            sqrt=self.sqrt,
            eps=self.eps,
            reduction=self.reduction,
            backend=self.backend,
            precision=self.precision,
            check_finite=self.check_finite,
            real_group=self.real_group,
        )

    def extra_repr(self) -> str:
        alpha = f"tensor of {self.alpha.shape[0]}" if isinstance(self.alpha, torch.Tensor) else self.alpha
        return (
            f"alpha={alpha}, sqrt={self.sqrt}, eps={self.eps}, num_classes={self.num_classes}, "
            f"reduction={self.reduction!r}, backend={self.backend!r}, precision={self.precision!r}, "
            + _runtime_repr(self)
        )


def _check_finite(value) -> bool | None:
    """check_finite as the functions take it: None (on outside torch.compile) or a bool."""
    if value is not None and not isinstance(value, bool):
        raise TypeError(f"check_finite must be a bool or None, got {value!r}")
    return value


def _runtime_repr(module) -> str:
    group = "None" if module.real_group is None else "a process group"
    return f"check_finite={module.check_finite}, real_group={group}"


class _SpectralLoss(nn.Module):
    """The configuration SDDLoss and CSDMLoss share (frequencies drawn from a kernel's measure);
    its __init__ is SDDLoss's, and CSDMLoss takes the same options after its own."""

    def __init__(
        self,
        *,
        kernel: str = "gaussian",
        bandwidth: Bandwidth = 1.0,
        nu: float = 1.5,
        num_freqs: int = 4096,
        num_classes: int | None = None,
        reduction: str = "mean",
        backend: str = "auto",
        generator: torch.Generator | None = None,
        precision: str | None = None,
        structure: str = "iid",
        check_finite: bool | None = None,
        real_group: ProcessGroup | None = None,
    ) -> None:
        super().__init__()
        self.kernel = check_kernel(kernel, spectral=True)
        self.structure = check_structure(structure, self.kernel)
        self.bandwidth = _bandwidth(bandwidth)
        self.nu = _checks.positive("nu", nu)
        self.num_freqs = _checks.positive_int("num_freqs", num_freqs)
        self.num_classes = _checks.num_classes(num_classes)
        self.reduction = _checks.choice("reduction", reduction, _checks.REDUCTIONS)
        self.backend = ops.check_name(backend)
        self.generator = _checks.generator("generator", generator)
        self.precision = _checks.choice("precision", precision, functional.PRECISIONS)
        self.check_finite = _check_finite(check_finite)
        self.real_group = _checks.process_group("real_group", real_group)

    # The generator's state is what decides the next frequencies: save and restore it.
    def get_extra_state(self):
        return {"generator_state": None if self.generator is None else self.generator.get_state()}

    def set_extra_state(self, state) -> None:
        saved = state.get("generator_state") if isinstance(state, dict) else None
        if saved is None:
            return
        if self.generator is None:
            raise ValueError(
                f"{type(self).__name__}: the state_dict holds a generator state but this loss was built "
                "without a generator; pass generator=torch.Generator() to restore it"
            )
        if not (isinstance(saved, torch.Tensor) and saved.dtype == torch.uint8):
            raise ValueError(
                f"{type(self).__name__}: the saved generator state must be a uint8 tensor, got {saved!r:.80}"
            )
        try:
            self.generator.set_state(saved)
        except RuntimeError as error:  # a state of another size or generator type
            raise ValueError(
                f"{type(self).__name__}: the saved generator state does not fit this generator "
                f"({str(error).splitlines()[0][:120]})"
            ) from None

    def _config_repr(self) -> str:
        generator = "None" if self.generator is None else f"Generator({self.generator.device})"
        return (
            f"kernel={self.kernel!r}, structure={self.structure!r}, bandwidth={self.bandwidth}, nu={self.nu}, "
            f"num_freqs={self.num_freqs}, "
            f"num_classes={self.num_classes}, reduction={self.reduction!r}, backend={self.backend!r}, "
            f"precision={self.precision!r}, generator={generator}, " + _runtime_repr(self)
        )


def _call_generator(module: _SpectralLoss, generator: torch.Generator | None, t) -> torch.Generator | None:
    """The generator a call draws through: the call's, else the loss's own. torch.compile's
    dynamo has no graph value for a torch.Generator (it fails deep inside the draw with "Failed
    to convert args/kwargs to proxy"), so under tracing a draw through one breaks the graph
    here, saying why and what to do: fullgraph=True stops with that message; without it the
    call runs eagerly, where the generator works."""
    generator = module.generator if generator is None else generator
    if generator is not None and t is None and _checks.tracing():
        torch._dynamo.graph_break(
            f"{type(module).__name__}: torch.compile cannot trace a draw through generator= (a torch.Generator has "
            "no graph value); under torch.compile build the loss without a generator (the draw then uses torch's "
            "global generator, seeded by torch.manual_seed) or pass t= drawn outside the compiled region"
        )
    return generator


def _bandwidth(bandwidth: Bandwidth) -> Bandwidth:
    """A checked bandwidth, kept as given: one number, or a list (the sum of the kernels)."""
    sigmas = _checks.bandwidths(bandwidth)
    return sigmas[0] if isinstance(bandwidth, (int, float)) else list(sigmas)


class SDDLoss(_SpectralLoss):
    """`sk.sdd` as a module: loss(real, syn, real_labels=None, syn_labels=None, t=None, *,
    generator=None, bandwidth=None).

    SDDLoss(*, kernel="gaussian", bandwidth=1.0, nu=1.5, num_freqs=4096, num_classes=None,
    reduction="mean", backend="auto", generator=None, precision=None, structure="iid",
    check_finite=None, real_group=None).
    Without t, fresh frequencies are drawn from the kernel's spectral measure on every call,
    through the call's `generator`, else the loss's own (SPEC §7); a call's `bandwidth` replaces
    the loss's for that call (a driver's median bandwidth of each batch).
    """

    def forward(
        self,
        real: torch.Tensor,
        syn: torch.Tensor,
        real_labels: torch.Tensor | None = None,
        syn_labels: torch.Tensor | None = None,
        t: Frequencies | None = None,
        *,
        generator: torch.Generator | None = None,
        bandwidth: Bandwidth | None = None,
    ) -> torch.Tensor:
        return functional.sdd(
            real,
            syn,
            real_labels,
            syn_labels,
            t=t,
            kernel=self.kernel,
            bandwidth=self.bandwidth if bandwidth is None else bandwidth,
            nu=self.nu,
            num_freqs=self.num_freqs,
            generator=_call_generator(self, generator, t),
            num_classes=self.num_classes,
            reduction=self.reduction,
            backend=self.backend,
            precision=self.precision,
            check_finite=self.check_finite,
            real_group=self.real_group,
            structure=self.structure,
        )

    def extra_repr(self) -> str:
        return self._config_repr()


class CSDMLoss(_SpectralLoss):
    """`sk.csdm` as a module: loss(real, syn, real_labels, syn_labels, t=None, *, generator=None,
    bandwidth=None).

    CSDMLoss(class_counts, *, alpha_head=0.8, head_classes=None, alpha_rule="binary", **options),
    the options those of SDDLoss (kernel, bandwidth, nu, num_freqs, num_classes, reduction,
    backend, generator, precision, structure, check_finite, real_group), and per call as in
    SDDLoss. The per-class weights are computed once, at construction, from `class_counts`
    (whole training set) and kept in the buffer `class_alpha`; forward uses that buffer, so
    weights loaded with load_state_dict are the ones that count.
    """

    class_counts: torch.Tensor  # buffers
    class_alpha: torch.Tensor

    def __init__(
        self,
        class_counts: ClassCounts,
        *,
        alpha_head: float = 0.8,
        head_classes: torch.Tensor | Sequence[bool] | None = None,
        alpha_rule: str = "binary",
        kernel: str = "gaussian",
        bandwidth: Bandwidth = 1.0,
        nu: float = 1.5,
        num_freqs: int = 4096,
        num_classes: int | None = None,
        reduction: str = "mean",
        backend: str = "auto",
        generator: torch.Generator | None = None,
        precision: str | None = None,
        structure: str = "iid",
        check_finite: bool | None = None,
        real_group: ProcessGroup | None = None,
    ) -> None:
        super().__init__(
            kernel=kernel,
            bandwidth=bandwidth,
            nu=nu,
            num_freqs=num_freqs,
            num_classes=num_classes,
            reduction=reduction,
            backend=backend,
            generator=generator,
            precision=precision,
            structure=structure,
            check_finite=check_finite,
            real_group=real_group,
        )
        class_alpha = functional.csdm_class_alpha(
            class_counts, alpha_head=alpha_head, head_classes=head_classes, alpha_rule=alpha_rule
        )
        if self.num_classes is not None and self.num_classes != class_alpha.shape[0]:
            raise ValueError(f"num_classes={self.num_classes} but class_counts has {class_alpha.shape[0]} entries")
        self.register_buffer("class_counts", _checks.class_counts(class_counts))
        self.register_buffer("class_alpha", class_alpha)
        self.alpha_head = float(alpha_head)
        self.alpha_rule = "head_classes mask" if head_classes is not None else alpha_rule

    def forward(
        self,
        real: torch.Tensor,
        syn: torch.Tensor,
        real_labels: torch.Tensor,
        syn_labels: torch.Tensor,
        t: Frequencies | None = None,
        *,
        generator: torch.Generator | None = None,
        bandwidth: Bandwidth | None = None,
    ) -> torch.Tensor:
        return functional.csdm_with_alpha(
            real,
            syn,
            real_labels,
            syn_labels,
            self.class_alpha,
            t=t,
            kernel=self.kernel,
            bandwidth=self.bandwidth if bandwidth is None else bandwidth,
            nu=self.nu,
            num_freqs=self.num_freqs,
            generator=_call_generator(self, generator, t),
            num_classes=self.num_classes,
            reduction=self.reduction,
            backend=self.backend,
            precision=self.precision,
            check_finite=self.check_finite,
            real_group=self.real_group,
            structure=self.structure,
        )

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.class_alpha.shape[0]}, alpha_head={self.alpha_head}, alpha_rule={self.alpha_rule!r}, "
            + self._config_repr().replace(f"num_classes={self.num_classes}, ", "")
        )


class MMDLoss(nn.Module):
    """`sk.mmd` as a module: loss(real, syn, real_labels=None, syn_labels=None, *, bandwidth=None),
    a call's `bandwidth` replacing the loss's for that call (SPEC §7)."""

    def __init__(
        self,
        *,
        kernel: str = "gaussian",
        bandwidth: Bandwidth = 1.0,
        nu: float = 1.5,
        estimator: str = "v",
        num_classes: int | None = None,
        reduction: str = "mean",
        check_finite: bool | None = None,
    ) -> None:
        super().__init__()
        self.kernel = check_kernel(kernel, spectral=False)
        self.bandwidth = _bandwidth(bandwidth)
        self.nu = _checks.positive("nu", nu)
        self.estimator = _checks.choice("estimator", estimator, functional.ESTIMATORS)
        self.num_classes = _checks.num_classes(num_classes)
        self.reduction = _checks.choice("reduction", reduction, _checks.REDUCTIONS)
        self.check_finite = _check_finite(check_finite)

    def forward(
        self,
        real: torch.Tensor,
        syn: torch.Tensor,
        real_labels: torch.Tensor | None = None,
        syn_labels: torch.Tensor | None = None,
        *,
        bandwidth: Bandwidth | None = None,
    ) -> torch.Tensor:
        return functional.mmd(
            real,
            syn,
            real_labels,
            syn_labels,
            kernel=self.kernel,
            bandwidth=self.bandwidth if bandwidth is None else bandwidth,
            nu=self.nu,
            estimator=self.estimator,
            num_classes=self.num_classes,
            reduction=self.reduction,
            check_finite=self.check_finite,
        )

    def extra_repr(self) -> str:
        return (
            f"kernel={self.kernel!r}, bandwidth={self.bandwidth}, nu={self.nu}, estimator={self.estimator!r}, "
            f"num_classes={self.num_classes}, reduction={self.reduction!r}, check_finite={self.check_finite}"
        )
