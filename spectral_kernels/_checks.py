"""Argument checks shared by every public function (SPEC §6).

Each check raises TypeError (wrong kind of thing) or ValueError (right kind, bad value) with a
message that names the argument and shows the offending value, so a user never has to guess
which of six tensors was wrong. Checks that need the tensor's values on the host (ranges,
finiteness) are skipped while torch.compile traces, where they would force a graph break.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import TypeVar

import torch

REDUCTIONS = ("mean", "sum", "none")
# Beyond this many classes the per-class outputs (C, 2, M) would take gigabytes: a label that
# large is a bug (a stray id, an unsigned overflow), not a dataset.
MAX_CLASSES = 2**24


def _float(name: str, value) -> float:
    """float(value) for a real number, an int too large for a float being a ValueError."""
    try:
        return float(value)
    except OverflowError:
        raise ValueError(f"{name} is too large for a float: {value}") from None


def _dense(name: str, x: torch.Tensor) -> None:
    if x.layout != torch.strided:
        raise TypeError(f"{name} must be a dense (strided) tensor, got layout {x.layout}")
    if x.device.type == "meta":
        raise ValueError(f"{name} is on the meta device, which holds no values; pass tensors with data")


def tracing() -> bool:
    """True while torch.compile (dynamo) traces: value-dependent checks are skipped then."""
    return torch.compiler.is_compiling()


def resolve_check_finite(check_finite: bool | None) -> bool:
    if check_finite is None:
        return not tracing()
    if not isinstance(check_finite, bool):
        raise TypeError(f"check_finite must be a bool or None, got {check_finite!r}")
    return check_finite


def features(name: str, x) -> torch.Tensor:
    """A (N, d) floating tensor with N >= 1 and d >= 1."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (N, d), got {type(x).__name__}")
    _dense(name, x)
    if not x.is_floating_point():
        raise TypeError(f"{name} must have a floating dtype, got {x.dtype}")
    if x.dim() != 2:
        raise ValueError(f"{name} must be 2-D (N, d), got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty: shape {tuple(x.shape)} has no rows")
    if x.shape[1] == 0:
        raise ValueError(f"{name} has no feature dimensions: shape {tuple(x.shape)}")
    return x


def frequencies(name: str, t, like: torch.Tensor, like_name: str) -> torch.Tensor:
    """A (M, d) tensor matching `like` in d, dtype and device."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (M, d), got {type(t).__name__}")
    _dense(name, t)
    if not t.is_floating_point():
        raise TypeError(f"{name} must have a floating dtype, got {t.dtype}")
    if t.dim() != 2:
        raise ValueError(f"{name} must be 2-D (M, d), got shape {tuple(t.shape)}")
    if t.shape[0] == 0:
        raise ValueError(f"{name} is empty: shape {tuple(t.shape)} has no frequencies")
    same_layout(name, t, like_name, like)
    return t


def same_layout(name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor) -> None:
    """Same feature dimension, dtype and device."""
    if a.shape[-1] != b.shape[-1]:
        raise ValueError(
            f"{name_a} has d={a.shape[-1]} but {name_b} has d={b.shape[-1]} (shapes {tuple(a.shape)} and "
            f"{tuple(b.shape)})"
        )
    if a.dtype != b.dtype:
        raise TypeError(f"{name_a} has dtype {a.dtype} but {name_b} has dtype {b.dtype}; cast one of them")
    if a.device != b.device:
        raise ValueError(f"{name_a} is on {a.device} but {name_b} is on {b.device}; move them to one device")


def finite(name: str, x: torch.Tensor) -> None:
    # min and max are NaN if any element is, and +-inf if one is: one pass, no (N, d) mask.
    low, high = torch.aminmax(x)
    if not bool(torch.isfinite(low) & torch.isfinite(high)):
        bad = ~torch.isfinite(x)
        index = tuple(int(i) for i in bad.nonzero()[0])
        raise ValueError(
            f"{name} contains a non-finite value ({x[index].item()} at index {index}); "
            "pass check_finite=False to skip this check"
        )


def finite_sums(name: str, sums: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> None:
    """The ECF sums of finite x and t are finite unless a phase <t, x> overflowed the dtype
    (cos and sin of inf are NaN): say so, rather than let a NaN loss appear steps later."""
    if bool(torch.isfinite(sums).all()):
        return
    largest = torch.finfo(x.dtype).max
    raise ValueError(
        f"the phases <t, x> of {name} overflow {x.dtype} (largest finite value {largest:.3g}; max |{name}| = "
        f"{float(x.detach().abs().max()):.3g}, max |t| = {float(t.detach().abs().max()):.3g}), so their cos/sin are "
        "NaN; "
        "scale the features or the frequencies down (a larger bandwidth), or compute in float64"
    )


def num_classes(value) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"num_classes must be an int, got {value!r}")
    if value < 1:
        raise ValueError(f"num_classes must be >= 1, got {value}")
    if value > MAX_CLASSES:
        raise ValueError(f"num_classes={value} is beyond the {MAX_CLASSES} classes this library accepts")
    return int(value)


def inferred_num_classes(largest_label: int, names: str) -> int:
    """1 + the largest label, refused when absurd (one stray label of 10^9 would mean 10^9 classes)."""
    if largest_label + 1 > MAX_CLASSES:
        raise ValueError(
            f"{names} contain label {largest_label}, which would make {largest_label + 1} classes (more than "
            f"{MAX_CLASSES}); check the labels, or pass num_classes"
        )
    return largest_label + 1


def labels(name: str, y, num_rows: int, rows_name: str, device: torch.device) -> torch.Tensor:
    """An integer (N,) tensor on `device`; ranges are checked once C is known (label_range)."""
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"{name} must be an integer torch.Tensor of shape ({num_rows},), got {type(y).__name__}")
    _dense(name, y)
    if y.dtype == torch.bool or y.is_floating_point() or y.is_complex():
        raise TypeError(f"{name} must have an integer dtype (int64, int32, ...), got {y.dtype}")
    if y.dim() != 1 or y.shape[0] != num_rows:
        raise ValueError(f"{name} must have shape ({num_rows},) to match {rows_name}, got {tuple(y.shape)}")
    if y.device != device:
        raise ValueError(f"{name} is on {y.device} but {rows_name} is on {device}")
    return y.long()


def label_range(name: str, y: torch.Tensor, num_classes: int) -> None:
    low, high = int(y.min()), int(y.max())
    if low < 0:
        raise ValueError(f"{name} contains a negative label ({low}); labels must lie in [0, num_classes)")
    if high >= num_classes:
        raise ValueError(f"{name} contains label {high}, outside [0, num_classes={num_classes})")


def unit_interval(name: str, value, num_classes: int, like: torch.Tensor) -> torch.Tensor:
    """A float in [0, 1] or a (C,) tensor of them, returned as a (C,) tensor like `like`."""
    if isinstance(value, torch.Tensor):
        if not value.is_floating_point():
            raise TypeError(f"{name} must be a float or a floating tensor, got dtype {value.dtype}")
        if value.dim() == 0:
            value = value.expand(num_classes)
        if value.shape != (num_classes,):
            raise ValueError(
                f"{name} must be a float or a tensor of shape ({num_classes},), got shape {tuple(value.shape)}"
            )
        value = value.to(device=like.device, dtype=like.dtype)
        if not tracing():
            low, high = float(value.min()), float(value.max())
            if not (0.0 <= low and high <= 1.0):
                raise ValueError(f"{name} must lie in [0, 1], got values from {low} to {high}")
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a float in [0, 1] or a ({num_classes},) tensor, got {value!r}")
    if not 0.0 <= _float(name, value) <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got {value}")
    return torch.full((num_classes,), float(value), device=like.device, dtype=like.dtype)


def positive(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a positive number, got {value!r}")
    if not (_float(name, value) > 0.0 and math.isfinite(float(value))):
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
    return float(value)


def bandwidths(value) -> tuple[float, ...]:
    """One bandwidth or a non-empty sequence of them (a sum of kernels)."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) == 0:
            raise ValueError("bandwidth must be a positive number or a non-empty list of them, got []")
        return tuple(positive(f"bandwidth[{i}]", v) for i, v in enumerate(value))
    return (positive("bandwidth", value),)


def positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a positive int, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


def non_negative(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number >= 0, got {value!r}")
    if not _float(name, value) >= 0.0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return float(value)


def draw_size(num_freqs: int, dim: int) -> None:
    """Frequencies are drawn as a float64 (M, d) array: refuse one that could not be allocated."""
    gib = num_freqs * dim * 8 / 2**30
    if num_freqs * dim > 2**32:
        raise ValueError(
            f"num_freqs={num_freqs} x dim={dim} frequencies would take {gib:.0f} GiB to draw; "
            "at most 2**32 values per draw"
        )


def boolean(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {value!r}")
    return value


def generator(name: str, value) -> torch.Generator | None:
    if value is not None and not isinstance(value, torch.Generator):
        raise TypeError(f"{name} must be a torch.Generator or None, got {type(value).__name__}")
    return value


T = TypeVar("T")  # the type of a choice's allowed values (str, or str | None)


def choice(name: str, value, allowed: Sequence[T]) -> T:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {value!r}")
    return value
