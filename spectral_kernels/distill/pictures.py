"""Pictures of synthetic sets that a person can read: a title (dataset, method, IPC, and the
test accuracy once evaluated), one row per class, its name on the left, every image enlarged by
an integer factor with nearest-neighbour sampling (no blur, so each stored pixel stays visible)
to at least MIN_CELL pixels on its shorter side.

grid.png shows the images the networks train on: with multi-formation (factor > 1) each stored
image is decoded (distill/formation.py) into its factor^2 images, drawn side by side with a
wider gap (GROUP_GAP) between the groups of different stored images."""

from __future__ import annotations

import math
from pathlib import Path

import torch

MIN_CELL = 64  # pixels: an 8x8 digit becomes 64x64, a 28x28 silhouette 56 -> x3 = 84, CIFAR x2
PAD = 2
GROUP_GAP = 6  # extra pixels between the decoded images of different stored images
MAX_NAME = 14  # characters shown of a class name


def labelled_grid(images: torch.Tensor, labels: torch.Tensor, class_names, per_row: int, *, group=1, title=()):
    """A PIL image of `images` (K, channels, H, W) in [0, 1], a row per class in class order
    (classes without images are skipped), at most `per_row` images per row, GROUP_GAP more
    pixels after every `group` images of a row (group > 1), and the lines of `title` above."""
    from PIL import Image, ImageDraw, ImageFont

    channels, height, width = images.shape[1:]
    scale = max(1, math.ceil(MIN_CELL / min(height, width)))
    cell_h, cell_w = height * scale, width * scale
    font = ImageFont.load_default()
    classes = [c for c in range(len(class_names)) if bool((labels == c).any())]
    names = [str(class_names[c])[:MAX_NAME] for c in classes]
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_w = max((probe.textbbox((0, 0), n, font=font)[2] for n in names), default=0) + 4 * PAD
    line_h = probe.textbbox((0, 0), "Ag", font=font)[3] + PAD
    title_h = len(title) * line_h + (2 * PAD if title else 0)
    title_w = max((probe.textbbox((0, 0), line, font=font)[2] for line in title), default=0) + 4 * PAD
    gap = lambda col: (col // group) * GROUP_GAP if group > 1 else 0  # noqa: E731  (before column `col`)
    grid_w = label_w + per_row * (cell_w + PAD) + PAD + gap(per_row - 1)
    canvas = Image.new("RGB", (max(grid_w, title_w), title_h + len(classes) * (cell_h + PAD) + PAD), "white")
    draw = ImageDraw.Draw(canvas)
    for k, line in enumerate(title):
        draw.text((2 * PAD, PAD + k * line_h), line, fill="black", font=font)
    big = torch.nn.functional.interpolate(images.float().clamp(0, 1), scale_factor=scale, mode="nearest")
    pixels = (big * 255).round().to(torch.uint8)
    if channels == 1:
        pixels = pixels.expand(-1, 3, -1, -1)
    for row, (c, name) in enumerate(zip(classes, names)):
        top = title_h + PAD + row * (cell_h + PAD)
        text_h = probe.textbbox((0, 0), name, font=font)[3]
        draw.text((2 * PAD, top + (cell_h - text_h) // 2), name, fill="black", font=font)
        for col, i in enumerate(torch.nonzero(labels == c).flatten()[:per_row].tolist()):
            tile = Image.fromarray(pixels[i, :3].permute(1, 2, 0).contiguous().numpy(), "RGB")
            canvas.paste(tile, (label_w + PAD + col * (cell_w + PAD) + gap(col), top))
    return canvas


def grid_title(dataset_name: str, config, evaluation: dict | None = None) -> list[str]:
    """The lines above grid.png: what was distilled, how, and (once evaluated) how well."""
    imbalance = f" (imbalance {config.imbalance:g})" if config.imbalance not in (None, 1.0) else ""
    first = f"{dataset_name}{imbalance}, {config.method}, IPC {config.ipc}"
    if config.factor > 1:
        first += f", factor {config.factor}: {config.factor**2} decoded images per stored one"
    lines = [first]
    if evaluation is not None:
        mean, n = 100 * evaluation["accuracy_mean"], evaluation["num_eval"]
        if evaluation.get("accuracy_ci95"):
            low, high = (100 * v for v in evaluation["accuracy_ci95"])
            lines.append(f"test accuracy {mean:.2f}%, 95% interval [{low:.2f}, {high:.2f}] over {n} seeds")
        else:
            lines.append(f"test accuracy {mean:.2f}% ({n} seed)")
    return lines


def write_grid(run: Path, images: torch.Tensor, labels: torch.Tensor, dataset, config, evaluation=None) -> None:
    """<run>/grid.png of the stored `images` (normalised, as in synthetic.pt): decoded, back in
    [0, 1], a row per class with its name, under grid_title's lines."""
    from . import formation
    from .manifest import write_run_file

    decoded = formation.decode(images.detach().float().cpu(), config.factor)
    shown = (decoded * dataset.std[None, :, None, None] + dataset.mean[None, :, None, None]).clamp(0, 1)
    names = dataset.class_names or tuple(str(c) for c in range(dataset.num_classes))
    grid = labelled_grid(
        shown,
        formation.decoded_labels(labels.cpu(), config.factor),
        names,
        per_row=config.ipc * config.factor**2,
        group=config.factor**2,
        title=grid_title(dataset.name, config, evaluation),
    )
    write_run_file(Path(run) / "grid.png", lambda f: grid.save(f, format="png"))
