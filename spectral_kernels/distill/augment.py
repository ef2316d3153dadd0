"""Siamese differentiable augmentation (after DSA): one random transform, drawn from a seed,
applied identically to the real and the synthetic batch, and differentiable in the images so
the synthetic ones learn through it."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

STRATEGY = ("color", "crop", "cutout", "flip", "scale", "rotate")


def siamese_augment(x: torch.Tensor, seed: int, strategy=STRATEGY) -> torch.Tensor:
    """Apply the transform drawn from `seed` to the batch x (B, C, H, W). Same seed, same transform."""
    gen = torch.Generator().manual_seed(int(seed) % (2**63))
    u = lambda low=0.0, high=1.0: float(low + (high - low) * torch.rand((), generator=gen))
    if "color" in strategy:
        x = x + (u() - 0.5)  # brightness
        mean = x.mean(dim=1, keepdim=True)
        x = (x - mean) * (u() * 2.0) + mean  # saturation
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * (u() + 0.5) + mean  # contrast
    theta = torch.eye(2, 3, dtype=x.dtype)
    if "scale" in strategy:
        theta[0, 0], theta[1, 1] = u(0.8, 1.2), u(0.8, 1.2)
    if "rotate" in strategy:
        angle = u(-15.0, 15.0) * math.pi / 180.0
        rotation = torch.tensor(
            [[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]], dtype=x.dtype
        )
        theta[:, :2] = rotation @ theta[:, :2]
    if "crop" in strategy:
        theta[0, 2], theta[1, 2] = u(-0.25, 0.25), u(-0.25, 0.25)  # translate by up to 1/8 of the image
    if "flip" in strategy and u() < 0.5:
        theta[0, :2] = -theta[0, :2]
    if not torch.equal(theta, torch.eye(2, 3, dtype=x.dtype)):
        grid = F.affine_grid(theta.to(x.device).expand(x.shape[0], 2, 3), list(x.shape), align_corners=True)
        x = F.grid_sample(x, grid, align_corners=True)
    if "cutout" in strategy:
        h, w = x.shape[2], x.shape[3]
        ch, cw = max(1, h // 2), max(1, w // 2)
        top, left = int(u() * (h - ch + 1)), int(u() * (w - cw + 1))
        mask = torch.ones(1, 1, h, w, dtype=x.dtype, device=x.device)
        mask[..., top : top + ch, left : left + cw] = 0
        x = x * mask
    return x
