"""Learned frequency sampler for the NCFM min-max (SPEC §5).

t = z * exp(s_k): z ~ N(0, I) drawn afresh on every call, s_k a learned log-scale per mixture
component, frequency m belonging to component m mod K. The reparameterisation makes t a
differentiable function of the log-scales, so the sampler learns from dL/dt of the fused op.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from . import _checks
from .kernels import check_frequency_scale, frequency_scale_limits


class FrequencySampler(nn.Module):
    """A scale mixture of Gaussians over frequencies, trained to *maximise* a discrepancy.

    Args:
        dim: d, the feature dimension.
        num_freqs: M drawn per call by default.
        num_components: K learned scales (default max(1, M // 16)).
        bandwidth: the initial scales spread geometrically around 1 / bandwidth ...
        spread: ... over exp(-spread) to exp(+spread) times that.

    Raises ValueError when a scale exp(log-scale) would not fit the parameters' dtype (torch's
    default dtype at construction): above its largest finite value / 16 a frequency can
    overflow, below its smallest normal number every frequency rounds to 0. The message gives
    the limits. In forward, learned log-scales that have grown past the upper limit raise too
    (outside torch.compile), rather than hand inf frequencies to the loss.

    forward(num_freqs=None, generator=None) -> t (M, d), on the parameters' device and dtype;
    z is drawn on the generator's device (the parameters' without one), as sk.sample_frequencies
    draws, then moved: a CPU generator drives a sampler on a GPU with the CPU's numbers.

    Training step of the min-max (the synthetic data descend, the sampler ascends)::

        loss = sk.ncfd(real, syn, sampler(), real_labels, syn_labels)
        syn_opt.zero_grad(); sampler_opt.zero_grad()
        loss.backward()
        for p in sampler.parameters():
            p.grad.neg_()          # ascent for the sampler, descent for the data
        syn_opt.step(); sampler_opt.step()

    Flipping the sign of the sampler's own gradients is what makes its max step move it.
    """

    def __init__(
        self,
        dim: int,
        num_freqs: int = 4096,
        num_components: int | None = None,
        *,
        bandwidth: float = 1.0,
        spread: float = 1.0,
    ):
        super().__init__()
        self.dim = _checks.positive_int("dim", dim)
        self.num_freqs = _checks.positive_int("num_freqs", num_freqs)
        k = (
            max(1, self.num_freqs // 16)
            if num_components is None
            else _checks.positive_int("num_components", num_components)
        )
        if k > self.num_freqs:
            # frequency m belongs to component m mod K: components past num_freqs would never draw
            raise ValueError(
                f"num_components={k} is more than num_freqs={self.num_freqs}: component k draws the frequencies "
                "m with m mod K = k, so the extra components would never be used; pass num_components <= num_freqs"
            )
        _checks.draw_size(self.num_freqs, self.dim)  # the default draw of every forward, refused now
        bandwidth = _checks.positive("bandwidth", bandwidth)
        spread = _checks.non_negative("spread", spread)
        if not math.isfinite(spread):
            raise ValueError(f"spread must be finite, got {spread}")
        centre = -math.log(bandwidth)
        dtype = torch.get_default_dtype()
        low, high = (math.log(v) for v in frequency_scale_limits(dtype))
        widest = spread if k > 1 else 0.0
        if centre + widest > high or centre - widest < low:
            raise ValueError(
                f"FrequencySampler: bandwidth={bandwidth} and spread={spread} give log-scales in "
                f"[{centre - widest:.4g}, {centre + widest:.4g}], outside [{low:.4g}, {high:.4g}], the range whose "
                f"frequencies fit {dtype}; choose bandwidth * exp(+-spread) within [{math.exp(-high):.3g}, "
                f"{math.exp(-low):.3g}]"
            )
        self.log_scales = nn.Parameter(
            centre + torch.linspace(-spread, spread, k) if k > 1 else torch.full((1,), centre)
        )

    @property
    def num_components(self) -> int:
        return self.log_scales.shape[0]

    def forward(self, num_freqs: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        m = self.num_freqs if num_freqs is None else _checks.positive_int("num_freqs", num_freqs)
        if self.log_scales.device.type == "meta":
            raise ValueError("FrequencySampler: its parameters are on the meta device, which holds no values; move it")
        _checks.draw_size(m, self.dim, self.log_scales.device)
        generator = _checks.generator("generator", generator)
        # The draw happens on the generator's device and z then moves to the parameters': the
        # distillation keeps its generators on the CPU (distill/hardware.py: every device draws the
        # same numbers) and moves the sampler to --device; drawing on the parameters' device, the
        # sampler refused that CPU generator, and every NCFM step with a learned sampler on a GPU failed.
        draw_device = generator.device if generator is not None else self.log_scales.device
        if draw_device != self.log_scales.device:
            _checks.draw_size(m, self.dim, draw_device)
        if not _checks.tracing():
            largest = float(self.log_scales.detach().max())
            if math.isnan(largest):
                raise ValueError(
                    "FrequencySampler: its log-scales hold NaN (a NaN gradient reached them); "
                    "restore a checkpoint and lower the learning rate"
                )
            check_frequency_scale(
                f"FrequencySampler: a learned log-scale of {largest:.4g}",
                math.exp(min(largest, 709.0)),
                self.log_scales.dtype,
                "lower the sampler's learning rate",
            )
        scales = torch.exp(self.log_scales)
        z = torch.randn(m, self.dim, generator=generator, device=draw_device, dtype=scales.dtype).to(scales.device)
        component = torch.arange(m, device=scales.device) % self.num_components
        return z * scales[component].unsqueeze(1)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_freqs={self.num_freqs}, num_components={self.num_components}"
