"""Pictures of synthetic sets that a person can read: one row per class, its name on the left,
every image enlarged by an integer factor with nearest-neighbour sampling (no blur, so each
stored pixel stays visible) to at least MIN_CELL pixels on its shorter side."""

from __future__ import annotations

import math

import torch

MIN_CELL = 64  # pixels: an 8x8 digit becomes 64x64, a 28x28 silhouette 56 -> x3 = 84, CIFAR x2
PAD = 2
MAX_NAME = 14  # characters shown of a class name


def labelled_grid(images: torch.Tensor, labels: torch.Tensor, class_names, per_row: int):
    """A PIL image of `images` (K, channels, H, W) in [0, 1], a row per class in class order
    (classes without images are skipped), at most `per_row` images per row."""
    from PIL import Image, ImageDraw, ImageFont

    channels, height, width = images.shape[1:]
    scale = max(1, math.ceil(MIN_CELL / min(height, width)))
    cell_h, cell_w = height * scale, width * scale
    font = ImageFont.load_default()
    classes = [c for c in range(len(class_names)) if bool((labels == c).any())]
    names = [str(class_names[c])[:MAX_NAME] for c in classes]
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_w = max((probe.textbbox((0, 0), n, font=font)[2] for n in names), default=0) + 4 * PAD
    canvas = Image.new("RGB", (label_w + per_row * (cell_w + PAD) + PAD, len(classes) * (cell_h + PAD) + PAD), "white")
    draw = ImageDraw.Draw(canvas)
    big = torch.nn.functional.interpolate(images.float().clamp(0, 1), scale_factor=scale, mode="nearest")
    pixels = (big * 255).round().to(torch.uint8)
    if channels == 1:
        pixels = pixels.expand(-1, 3, -1, -1)
    for row, (c, name) in enumerate(zip(classes, names)):
        top = PAD + row * (cell_h + PAD)
        text_h = probe.textbbox((0, 0), name, font=font)[3]
        draw.text((2 * PAD, top + (cell_h - text_h) // 2), name, fill="black", font=font)
        for col, i in enumerate(torch.nonzero(labels == c).flatten()[:per_row].tolist()):
            tile = Image.fromarray(pixels[i, :3].permute(1, 2, 0).contiguous().numpy(), "RGB")
            canvas.paste(tile, (label_w + PAD + col * (cell_w + PAD), top))
    return canvas
