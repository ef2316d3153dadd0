"""The one check of an image size a run works at, for --image-size (config.py, data.py, image
folders) and for image_size= from Python (sources.py, api.py): same limits, same message."""

from __future__ import annotations

# Pixels a side a run works at: 2 is the least the ConvNet's first 2x2 pooling leaves a pixel of;
# 1024 keeps one image's float32 copy and feature maps in tens of megabytes.
IMAGE_SIDE_LIMITS = (2, 1024)


def image_size_pair(value, name: str = "--image-size") -> tuple[int, int] | None:
    """`value` as (height, width): an int is a square, [side] too, [height, width] itself; None
    stays None (the data's own size). TypeError or ValueError naming `name` and the value otherwise."""
    if value is None:
        return None
    ints = lambda v: isinstance(v, int) and not isinstance(v, bool)
    sides = [value] if ints(value) else list(value) if isinstance(value, (list, tuple)) else None
    if sides is None or not all(ints(v) for v in sides):
        raise TypeError(f"{name} must be an integer or [height, width] integers, got {value!r:.60}")
    if len(sides) not in (1, 2):
        raise ValueError(f"{name} takes one or two integers (H [W]), got {len(sides)}: {sides!r:.60}")
    low, high = IMAGE_SIDE_LIMITS
    if not all(low <= v <= high for v in sides):
        raise ValueError(f"{name} sides must be integers in [{low}, {high}], got {sides}")
    return (sides[0], sides[-1])
