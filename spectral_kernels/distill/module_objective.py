"""A loss module as the distillation's objective: SDDLoss, CSDMLoss, MMDLoss
(spectral_kernels.losses) or a user's module with the same call,
`module(real_features, syn_features, real_labels, syn_labels) -> scalar`; and NCFDLoss, whose
call takes frequencies t third: it gets --num-freqs Gaussian frequencies drawn each step at the
median distance of the real features (as --method ncfm draws them).

The driver asks its objective for `loss(real_f, real_y, syn_f, syn_y, generator)` and for
`maximisers` (modules it trains to raise the loss); this adapter gives that interface to a
module. Its random draws are made reproducible per iteration: the call runs under torch's
global generator seeded from the iteration's generator (and restored afterwards), so a module
built without a generator of its own (the default: SDDLoss draws fresh frequencies from the
global generator) draws the same frequencies at iteration i in a resumed run as in an
uninterrupted one. A module with a generator of its own draws from it instead, and that
generator's state is not part of the run's checkpoint.
"""

from __future__ import annotations

import torch

import spectral_kernels as sk

from .methods import median_bandwidth


def describe(module) -> str:
    """What config.json records of a loss module: its class and its repr (its configuration),
    on one line; of a plain function, its qualified name (its repr holds a memory address)."""
    if not isinstance(module, torch.nn.Module):
        name = getattr(module, "__qualname__", None) or type(module).__qualname__
        return f"python:{getattr(module, '__module__', None) or type(module).__module__}.{name}"
    text = " ".join(repr(module).split())
    return f"python:{type(module).__qualname__} {text[:300]}"


def check_loss_module(loss) -> None:
    """TypeError unless `loss` can be called as loss(real, syn, real_labels, syn_labels)."""
    if isinstance(loss, (str, bytes)) or not callable(loss):
        raise TypeError(
            f"loss must be a loss module called as module(real, syn, real_labels, syn_labels) (SDDLoss, CSDMLoss, "
            f"MMDLoss, or your own), got {loss!r:.60} (a {type(loss).__name__})"
        )


class ModuleObjective:
    """The driver's objective interface over a loss module (no maximisers)."""

    def __init__(self, module, num_freqs: int = 1024):
        check_loss_module(module)
        self.module = module
        self.num_freqs = num_freqs
        self.maximisers: list[torch.nn.Module] = []

    def to(self, device) -> ModuleObjective:
        if isinstance(self.module, torch.nn.Module):
            self.module.to(device)  # its buffers (CSDMLoss's class counts) where the features are
        return self

    def loss(self, real_f, real_y, syn_f, syn_y, generator: torch.Generator) -> torch.Tensor:
        seed = int(torch.randint(2**62, (1,), generator=generator))
        devices = [real_f.device.index or 0] if real_f.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            if isinstance(self.module, sk.NCFDLoss):
                bandwidth = median_bandwidth(real_f, generator)
                t = sk.sample_frequencies(
                    "gaussian",
                    self.num_freqs,
                    real_f.shape[1],
                    bandwidth=bandwidth,
                    generator=generator,
                    device=real_f.device,
                    dtype=real_f.dtype,
                )
                value = self.module(real_f, syn_f, t, real_y, syn_y)
            else:
                value = self.module(real_f, syn_f, real_y, syn_y)
        if not isinstance(value, torch.Tensor) or value.numel() != 1 or not value.is_floating_point():
            what = (
                f"a {value.dtype} tensor of shape {tuple(value.shape)}"
                if isinstance(value, torch.Tensor)
                else (f"{value!r:.60} (a {type(value).__name__})")
            )
            raise TypeError(f"loss: the loss module must return a floating scalar tensor, it returned {what}")
        return value.reshape(())
