"""Multi-formation (NCFM's `factor`): each stored synthetic image holds factor x factor smaller
images, tiled; before any network sees them they are cut apart and each is upsampled
(bilinearly) to the full size. With factor 2 the same pixels give four training images, each at
half resolution: more images per class for the same storage.

    stored (K, ch, H, W)  --decode-->  (K * factor^2, ch, H, W), labels repeated factor^2 times

Decoding is differentiable (the stored pixels learn through it) and is used both during
distillation and in evaluation. Initialisation tiles downsampled real images the same way.
factor = 1 is the identity.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def check_factor(factor: int, image_size) -> None:
    """ValueError unless factor divides both sides of image_size ((height, width), or one int)."""
    height, width = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if height % factor or width % factor:
        raise ValueError(
            f"--factor {factor} must divide the image size {height} x {width} (height x width; each stored image "
            f"holds factor x factor tiles); choose --image-size H W divisible by {factor}, or another --factor"
        )


def decode(images: torch.Tensor, factor: int) -> torch.Tensor:
    """(K, ch, H, W) stored images -> (K * factor^2, ch, H, W) decoded ones: tile (i, j) of image
    k becomes image k * factor^2 + i * factor + j, upsampled bilinearly to H x W."""
    if factor == 1:
        return images
    k, ch, h, w = images.shape
    th, tw = h // factor, w // factor
    tiles = (
        images.reshape(k, ch, factor, th, factor, tw).permute(0, 2, 4, 1, 3, 5).reshape(k * factor * factor, ch, th, tw)
    )
    return F.interpolate(tiles, size=(h, w), mode="bilinear", align_corners=False)


def decoded_labels(labels: torch.Tensor, factor: int) -> torch.Tensor:
    return labels.repeat_interleave(factor * factor)


def encode(images: torch.Tensor, factor: int) -> torch.Tensor:
    """The inverse layout of `decode` for initialisation: (K * factor^2, ch, H, W) full-size
    images, downsampled (area-averaged) and tiled factor^2 to a stored image -> (K, ch, H, W)."""
    if factor == 1:
        return images
    n, ch, h, w = images.shape
    k, th, tw = n // (factor * factor), h // factor, w // factor
    small = F.interpolate(images, size=(th, tw), mode="area")
    return small.reshape(k, factor, factor, ch, th, tw).permute(0, 3, 1, 4, 2, 5).reshape(k, ch, h, w)
