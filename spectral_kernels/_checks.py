"""Argument checks shared by every public function (SPEC §6).

Each check raises TypeError (wrong kind of thing) or ValueError (right kind, bad value) with a
message that names the argument and shows the offending value, so a user never has to guess
which of six tensors was wrong. Checks that need the tensor's values on the host (ranges,
finiteness) are skipped while torch.compile traces, where they would force a graph break.
"""

from __future__ import annotations

import math
import numbers
import os
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
        not_meta(name, value)
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


def draw_size(num_freqs: int, dim: int, device=None) -> None:
    """Frequencies are drawn as a float64 (M, d) array: refuse 2**32 values or more (32 GiB: a
    typo, not a draw), and any draw the draw device's memory cannot hold."""
    gib = num_freqs * dim * 8 / 2**30
    if num_freqs * dim >= 2**32:
        raise ValueError(
            f"num_freqs={num_freqs} x dim={dim} frequencies would take {gib:.0f} GiB to draw; "
            "fewer than 2**32 values per draw"
        )
    allocation(f"num_freqs={num_freqs} x dim={dim}: the float64 draw", (num_freqs, dim), torch.float64, device)


# Below this many bytes a call never asks the system how much memory is left (a file read per
# call): small requests are what every training step makes, and they fit.
_PROBE_BYTES = 1 << 26


def _cpu_available_bytes() -> int | None:
    """What this process can still allocate on the host: MemAvailable + SwapFree of
    /proc/meminfo, lowered to what a cgroup (v2) memory limit leaves; None where unknown."""
    available = None
    try:
        with open("/proc/meminfo") as f:
            fields = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f if line.split()[1:2]}
        available = fields["MemAvailable"] + fields.get("SwapFree", 0)
    except (OSError, KeyError, ValueError, IndexError):
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, AttributeError):
            return None
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            limit = f.read().strip()
        with open("/sys/fs/cgroup/memory.current") as f:
            used = int(f.read().strip())
        if limit != "max":
            available = min(available, max(0, int(limit) - used))
    except (OSError, ValueError):
        pass
    return available


def available_bytes(device) -> int | None:
    """Bytes a new tensor on `device` can still take: the host's available memory for CPU
    tensors, the GPU's free memory plus what torch's caching allocator holds unused for CUDA
    tensors; None where there is nothing to measure (meta) or no way to (other devices)."""
    device = torch.device(device if device is not None else "cpu")
    if device.type == "cpu":
        return _cpu_available_bytes()
    if device.type == "cuda" and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return None


def allocation(what: str, shape: Sequence[int], dtype: torch.dtype, device) -> None:
    """The size guard (SPEC §6): refuse, before allocating, a tensor of `shape` and `dtype` that
    `device` cannot hold, naming `what` (the arguments that sized it), the shape and the bytes.
    Skipped under torch.compile (a file read is not traceable)."""
    if tracing():
        return
    nbytes = math.prod(int(n) for n in shape) * dtype.itemsize
    if nbytes < _PROBE_BYTES:
        return
    available = available_bytes(device)
    if available is not None and nbytes > available:
        where = torch.device(device if device is not None else "cpu")
        raise ValueError(
            f"{what}: shape {tuple(int(n) for n in shape)} of {dtype} would take {nbytes} bytes "
            f"({nbytes / 2**30:.3g} GiB), more than the {available} bytes ({available / 2**30:.3g} GiB) available on "
            f"{where}"
        )


def not_meta(name: str, tensor: torch.Tensor) -> torch.Tensor:
    """A tensor whose values are read must hold some: the meta device holds none."""
    if tensor.device.type == "meta":
        raise ValueError(f"{name} is on the meta device, which holds no values; pass a tensor with data")
    return tensor


def sorf(signs, radii, num_freqs, dim: int, *, name: str = "", where: str = "", check_values: bool = True):
    """The contract of SORF frequencies (structured.HadamardFrequencies and the ops that take
    their parts), the Python twin of check_sorf_inputs in csrc/ecf_checks.h, with the same
    messages: signs (B, 3, D) holding exactly +1 or -1, radii (B, D) finite and > 0, D a power
    of two >= d, num_freqs an int in ((B - 1) D, B D]. `name` prefixes the parts ("t."),
    `where` the message ("spectral_kernels (triton): "). Values are read only with
    `check_values` (host tensors outside torch.compile). Returns (B, D)."""
    for part, tensor, shape in (("signs", signs, "(B, 3, D)"), ("radii", radii, "(B, D)")):
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"{where}{name}{part} must be a torch.Tensor of shape {shape}, got {type(tensor).__name__}")
    for part, value in (("num_freqs", num_freqs), ("dim", dim)):
        # (a SymInt where torch.compile traces with dynamic shapes)
        if isinstance(value, bool) or not isinstance(value, (numbers.Integral, torch.SymInt)):
            raise TypeError(f"{where}{name}{part} must be an int, got {value!r}")
    if signs.dim() != 3 or signs.shape[1] != 3 or signs.shape[0] < 1:
        raise ValueError(f"{where}{name}signs must have shape (B, 3, D), got {tuple(signs.shape)}")
    blocks, width = signs.shape[0], signs.shape[2]
    if width < 1 or width & (width - 1):
        raise ValueError(f"{where}the block width D must be a power of two, got {width}")
    if tuple(radii.shape) != (blocks, width):
        raise ValueError(f"{where}{name}radii must have shape ({blocks}, {width}), got {tuple(radii.shape)}")
    if not (blocks - 1) * width < num_freqs <= blocks * width:
        raise ValueError(
            f"{where}{name}num_freqs={num_freqs} does not fit {blocks} blocks of {width} (it must lie in "
            f"({(blocks - 1) * width}, {blocks * width}])"
        )
    if width < dim:
        raise ValueError(f"{where}the block width D={width} must be >= d={dim}")
    if check_values and not tracing():
        _sorf_values(signs, radii, name, where)
    return blocks, width


def _sorf_values(signs: torch.Tensor, radii: torch.Tensor, name: str, where: str) -> None:
    # One pass each over B x 3 x D and B x D values: small beside the op's N x M work. A sign of 0
    # would make every frequency 0 (a silent perfect match), 2 or 3.5 a matrix that is not
    # orthogonal; NaN passes neither test.
    signs, radii = signs.detach(), radii.detach()
    for part, bad, rule in (
        ("signs", (signs != 1) & (signs != -1), "hold exactly +1 or -1"),
        ("radii", ~(torch.isfinite(radii) & (radii > 0)), "be finite and > 0"),
    ):
        if bool(bad.any()):
            index = tuple(int(i) for i in bad.nonzero()[0])
            value = (signs if part == "signs" else radii)[index].item()
            raise ValueError(f"{where}{name}{part} must {rule}, got {value:g} at index {index}")


def class_counts(class_counts) -> torch.Tensor:
    """(C,) positive finite class counts over a whole training set (csdm, CSDMLoss), float64 on the CPU."""
    if isinstance(class_counts, torch.Tensor):
        counts = not_meta("class_counts", class_counts).detach().cpu()
        if counts.dtype == torch.bool or counts.is_complex():
            raise TypeError(f"class_counts must hold numbers, got dtype {counts.dtype}")
        counts = counts.double()
    elif isinstance(class_counts, Sequence) and not isinstance(class_counts, str):
        try:
            counts = torch.tensor([float(c) for c in class_counts], dtype=torch.float64)
        except (TypeError, ValueError):
            raise TypeError(f"class_counts must be a (C,) tensor or list of numbers, got {class_counts!r}") from None
    else:
        raise TypeError(
            f"class_counts must be a (C,) tensor or list of real class counts, got {type(class_counts).__name__}"
        )
    if counts.dim() != 1 or counts.shape[0] == 0:
        raise ValueError(f"class_counts must have shape (C,) with C >= 1, got {tuple(counts.shape)}")
    if not tracing() and not bool(((counts > 0) & torch.isfinite(counts)).all()):
        c = int((~((counts > 0) & torch.isfinite(counts))).nonzero()[0])
        raise ValueError(
            "class_counts must be finite and > 0 (counts over the whole training set), got "
            f"class_counts[{c}]={counts[c].item()}"
        )
    return counts


def head_mask(head_classes, num_classes: int) -> torch.Tensor:
    """csdm's explicit head classes: a (C,) bool mask, on the CPU like the counts."""
    if not isinstance(head_classes, torch.Tensor):
        head_classes = torch.as_tensor(head_classes)
    not_meta("head_classes", head_classes)
    if head_classes.dtype != torch.bool:
        raise TypeError(f"head_classes must be a bool mask of shape ({num_classes},), got dtype {head_classes.dtype}")
    if head_classes.shape != (num_classes,):
        raise ValueError(
            f"head_classes must have shape ({num_classes},) like class_counts, got {tuple(head_classes.shape)}"
        )
    return head_classes.cpu()


def boolean(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {value!r}")
    return value


def generator(name: str, value) -> torch.Generator | None:
    if value is not None and not isinstance(value, torch.Generator):
        raise TypeError(f"{name} must be a torch.Generator or None, got {type(value).__name__}")
    return value


def process_group(name: str, value):
    """None or a torch.distributed process group (anything else fails deep inside all_reduce)."""
    if value is None:
        return None
    group_type = getattr(torch.distributed, "ProcessGroup", None)
    if group_type is None or not isinstance(value, group_type):
        raise TypeError(
            f"{name} must be a torch.distributed process group or None, got {value!r} ({type(value).__name__})"
        )
    return value


T = TypeVar("T")  # the type of a choice's allowed values (str, or str | None)


def choice(name: str, value, allowed: Sequence[T]) -> T:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {value!r}")
    return value
