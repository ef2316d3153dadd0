"""Distillation objectives on network features. Each computes one loss for all classes at
once (the library's discrepancies are per class by construction), never a loss per class."""

from __future__ import annotations

import math

import torch

import spectral_kernels as sk

METHODS = ("random", "dm", "mmd", "ncfm", "sdd", "csdm")


# Pairs the median bandwidth is taken over (SPEC §4.2): its relative standard error is about
# 1.25 cv / sqrt(MEDIAN_PAIRS), 0.3% for distances with a coefficient of variation of 0.2.
MEDIAN_PAIRS = 8192


def median_bandwidth(features: torch.Tensor, generator: torch.Generator, num_pairs: int = MEDIAN_PAIRS) -> float:
    """Median distance between pairs of rows of `features`: a scale-free bandwidth (SPEC §4.2).

    All N(N-1)/2 pairs when there are at most `num_pairs` (no draw from the generator), else about
    `num_pairs` of them: one torch.randperm(N) from `generator` cuts the rows into blocks of
    B = ceil(2 num_pairs / N) + 1 and every pair within the first ceil(num_pairs / (B(B-1)/2))
    blocks counts. Every pair is then equally likely to be in the sample, and every row is in as
    many pairs as any other, so the sample median is as close to the median over all pairs as
    that of num_pairs independent pairs, at the cost of small products (no N x N matrix, no
    gather per pair). Distances are computed in float32 at least.
    """
    n = features.shape[0]
    if n < 2:
        return 1.0
    rows = features.detach()
    if n * (n - 1) // 2 <= num_pairs:
        size, blocks = n, 1
    else:
        size = max(2, math.ceil(2 * num_pairs / n) + 1)
        blocks = min(n // size, math.ceil(num_pairs / (size * (size - 1) // 2)))
        rows = rows[torch.randperm(n, generator=generator)[: blocks * size].to(rows.device)]
    rows = rows.to(torch.promote_types(rows.dtype, torch.float32))
    rows = (rows - rows.mean(0)).reshape(blocks, size, -1)  # centred: less cancellation in the expansion below
    squares = (rows * rows).sum(-1)
    squared = squares[:, :, None] + squares[:, None, :] - 2.0 * torch.bmm(rows, rows.transpose(1, 2))
    upper = torch.triu_indices(size, size, 1, device=rows.device)
    distances = squared[:, upper[0], upper[1]].clamp_min(0.0).sqrt()
    return max(float(distances.median()), 1e-6)


def check_bandwidth(bandwidth: float, features: torch.Tensor, max_rows: int = 256) -> None:
    """--bandwidth against the features it is used on. A Gaussian kernel is exp(-D^2 / (2 sigma^2));
    once even the closest two distinct features have D / sigma > sqrt(2 ln(1 / tiny)) (13.2 in
    float32) the kernel of every pair underflows: mmd is then a constant with no gradient, and
    the spectral losses take cos and sin of phases <t, x> so large that float32 keeps none of
    their digits below 2 pi: noise (--bandwidth 1e-30 ran to the end this way). Refused with
    the limit. The first rows only: deterministic, no generator drawn from."""
    rows = features.detach()[:max_rows].float()
    distances = torch.cdist(rows, rows)
    apart = distances[distances > 0]
    if apart.numel() == 0:
        return
    closest = float(apart.min())
    tiny = torch.finfo(features.dtype).tiny
    limit = closest / (2.0 * -math.log(tiny)) ** 0.5
    if bandwidth < limit:
        raise ValueError(
            f"--bandwidth {bandwidth:g} is too small for these features: the closest two of {rows.shape[0]} real "
            f"features are {closest:.3g} apart, so the Gaussian kernel exp(-D^2 / (2 bandwidth^2)) of every pair is "
            f"below {features.dtype}'s smallest normal number {tiny:.3g} and the loss no longer depends on the data; "
            f"use --bandwidth >= {limit:.3g}, or leave it out (the median distance)"
        )


def gather_interleaved(x: torch.Tensor, group) -> torch.Tensor:
    """Undo `full[rank::world]` sharding: every process gets `full` in its original row order."""
    world = torch.distributed.get_world_size(group)
    size = torch.tensor([x.shape[0]], device=x.device)
    total = size.clone()
    torch.distributed.all_reduce(total, group=group)
    longest = -(-int(total) // world)  # shard 0 is the longest
    padded = torch.zeros(longest, *x.shape[1:], dtype=x.dtype, device=x.device)
    padded[: x.shape[0]] = x
    shards = [torch.empty_like(padded) for _ in range(world)]
    torch.distributed.all_gather(shards, padded, group=group)
    # Row p of the full batch is row p // world of shard p % world.
    return torch.stack(shards, dim=1).reshape(longest * world, *x.shape[1:])[: int(total)]


class Objective:
    """loss(real_features, real_labels, syn_features, syn_labels, generator) -> scalar.

    One loss module per run (`module`, built from the config by `loss_module`), called per
    iteration with what changes per iteration (SPEC §7): the iteration's generator, the
    bandwidth (the median distance of the batch unless --bandwidth is given), and for ncfm the
    frequencies. `maximisers` are modules trained to *raise* the loss (NCFM's learned frequency
    sampler); the loop flips the sign of their gradients before its optimiser step.
    """

    def __init__(self, config, class_counts: torch.Tensor, feature_dim: int, num_classes: int, real_group=None):
        self.config = config
        self.real_group = real_group  # set when the real batch is sharded over processes
        self.class_counts = class_counts
        self.num_classes = num_classes
        self.maximisers: list[torch.nn.Module] = []
        self._bandwidth_checked = False
        self.module = loss_module(config, class_counts, num_classes, real_group)
        if config.method == "ncfm" and config.learned_sampler:
            self.sampler = sk.FrequencySampler(
                feature_dim, num_freqs=config.num_freqs, bandwidth=(2.0 * feature_dim) ** 0.5
            )
            self.maximisers.append(self.sampler)

    def _bandwidth(self, real_features, generator, kernel: str = "gaussian") -> float:
        if self.config.bandwidth:
            if kernel == "gaussian" and not self._bandwidth_checked:  # once, on the first batch
                if self.real_group is not None:  # every process decides on the same rows
                    real_features = gather_interleaved(real_features, self.real_group)
                check_bandwidth(self.config.bandwidth, real_features)
                self._bandwidth_checked = True
            return self.config.bandwidth
        if self.real_group is not None:
            # Every process must draw the same frequencies: the median is not additive, so
            # gather the shards back into the single-process batch first.
            real_features = gather_interleaved(real_features, self.real_group)
        return median_bandwidth(real_features, generator)

    def loss(self, real_f, real_y, syn_f, syn_y, generator: torch.Generator) -> torch.Tensor:
        cfg = self.config
        if cfg.method == "dm":
            return self.module(real_f, syn_f, real_y, syn_y)
        if cfg.method == "mmd":
            return self.module(real_f, syn_f, real_y, syn_y, bandwidth=self._bandwidth(real_f, generator))
        if cfg.method == "ncfm":
            return self.module(real_f, syn_f, self._ncfm_frequencies(real_f, generator), real_y, syn_y)
        bandwidth = self._bandwidth(real_f, generator, cfg.kernel)  # before the draw: both take from generator
        return self.module(real_f, syn_f, real_y, syn_y, generator=generator, bandwidth=bandwidth)

    def _ncfm_frequencies(self, real_f, generator: torch.Generator):
        """NCFM's t: the learned sampler's, or drawn from the Gaussian kernel's measure."""
        if self.config.learned_sampler:
            return self.sampler(generator=generator).to(real_f.device)
        # hadamard gives the lazy structured object, never materialised on a backend with a SORF kernel
        return sk.sample_frequencies(
            "gaussian",
            self.config.num_freqs,
            real_f.shape[1],
            bandwidth=self._bandwidth(real_f, generator),
            structure=self.config.structure,
            generator=generator,
            device=real_f.device,
            dtype=real_f.dtype,
        )


def loss_module(config, class_counts: torch.Tensor, num_classes: int, real_group=None) -> torch.nn.Module | None:
    """The library's loss module that computes `config.method` (None for "random", which has no
    loss): dm is the linear-kernel MMD, ncfm the NCFD, the others their namesakes. real_group:
    the process group the real batch is sharded over (dm and mmd refuse to run data-parallel)."""
    method = config.method
    if method == "random":
        return None
    if method in ("dm", "mmd"):
        return sk.MMDLoss(kernel="linear" if method == "dm" else "gaussian", num_classes=num_classes)
    if method == "ncfm":
        return sk.NCFDLoss(num_classes=num_classes, real_group=real_group)
    if method == "sdd":
        return sk.SDDLoss(
            kernel=config.kernel,
            num_freqs=config.num_freqs,
            structure=config.structure,
            num_classes=num_classes,
            real_group=real_group,
        )
    return sk.CSDMLoss(
        class_counts,
        alpha_head=config.alpha_head,
        alpha_rule=config.alpha_rule,
        kernel=config.kernel,
        num_freqs=config.num_freqs,
        structure=config.structure,
        num_classes=num_classes,
        real_group=real_group,
    )
