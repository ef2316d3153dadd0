"""The ConvNet of dataset distillation (DC/DM): conv 3x3 -> instance norm -> ReLU -> 2x2
average pooling, repeated until the feature map is at most 4x4, then a linear classifier.

A non-square H x W image pools until its shorter side is at most 4 (depth_for of min(H, W)):
the same depth as the square of that side, and no side pooled away (from the longer side, an
8 x 64 image would pool its height to nothing); the features keep the map's shape, e.g. 20 x 28
-> 2 x 3."""

from __future__ import annotations

import torch
from torch import nn


def depth_for(image_size: int) -> int:
    """Poolings until the map is <= 4 wide: 32 -> 3, 28 -> 3, 8 -> 1."""
    depth, size = 0, image_size
    while size > 4:
        size //= 2
        depth += 1
    return max(1, depth)


class ConvNet(nn.Module):
    def __init__(
        self,
        channels: int,
        num_classes: int,
        image_size: int | tuple[int, int],
        width: int = 128,
        depth: int | None = None,
    ):
        """image_size: the side of a square image, or (height, width)."""
        super().__init__()
        height, wide = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        depth = depth or depth_for(min(height, wide))
        layers, in_ch = [], channels
        for _ in range(depth):
            # GroupNorm with one group per channel is instance norm with a learned affine map.
            layers += [
                nn.Conv2d(in_ch, width, 3, padding=1),
                nn.GroupNorm(width, width, affine=True),
                nn.ReLU(inplace=True),
                nn.AvgPool2d(2),
            ]
            in_ch, height, wide = width, height // 2, wide // 2
        self.features = nn.Sequential(*layers)
        self.feature_dim = width * height * wide
        self.classifier = nn.Linear(self.feature_dim, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, channels, H, W) -> (B, feature_dim): the features the discrepancies compare."""
        return self.features(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))
