"""What the two Triton op files (triton_ecf.py: dense t; triton_hadamard.py: SORF t) share: the
sin/cos epilogue, the work items that cut classes into row ranges, the class reduction that adds
each class's item partials, and the launch plumbing around them. The op contract both check is
ops/contract.py (shared with the reference op).

sin/cos: the scheme of csrc/ecf_math.h written in Triton, operation for operation: a Cody-Waite
reduction around the nearest multiple of pi/2 (Cephes' three-part split of pi/4, |p| taken first
and the octant pair found by truncation, as the C++ does), then the Cephes minimax polynomials of
sinf/cosf in the header's evaluation order. One scheme, so one bound (ops/ecf_math.py:
SINCOS_MAX_ABS_ERROR, SPEC §6) holds for every backend, measured on one grid of arguments by
tests/test_sincos_bound.py. About as many straight-line instructions as the pi/2-quadrant form
it replaces, where libdevice's sinf and cosf each do their own reduction and carry a Payne-Hanek
slow path with a local-memory array. A tile holding any |p| > MAX_FAST_PHASE takes libdevice
instead, so every argument stays accurate; float64 always uses libdevice.
SPECTRAL_KERNELS_TRITON_SINCOS=libdevice switches the fast path off, for the A/B timing in
benchmarks/bench_ops.py --device cuda.
"""

from __future__ import annotations

import contextlib
import os

import torch

from .ecf_math import MAX_FAST_PHASE

try:
    import triton
    import triton.language as tl

    IMPORT_ERROR: str | None = None
except ImportError as error:  # pragma: no cover - triton ships with CUDA builds of torch
    IMPORT_ERROR = f"triton is not installed ({error})"

INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") == "1"
SINCOS_MODES = ("reduced", "libdevice")
# The class reduction's grid is (C, ceil(2M / CLASS_REDUCE_BLOCK)); CUDA caps grid.y at 65535.
CLASS_REDUCE_BLOCK = 256
MAX_GRID_Y = 65535
MAX_FREQS = MAX_GRID_Y * CLASS_REDUCE_BLOCK // 2

if IMPORT_ERROR is None:
    FAST_PHASE_LIMIT = tl.constexpr(MAX_FAST_PHASE)  # globals read by @triton.jit code must be constexpr

    @triton.jit
    def sincos_reduced(p):
        """(sin p, cos p) in float32: csrc/ecf_math.h's sincos_reduced, line for line."""
        ax = tl.abs(p)
        j = (ax * 1.27323954473516).to(tl.int32)
        j = (j + 1) & -2  # octant pair: reduce around the nearest multiple of pi/2
        y = j.to(tl.float32)
        r = ((ax - y * 0.78515625) - y * 2.4187564849853515625e-4) - y * 3.77489497744594108e-8
        z = r * r
        poly_cos = ((2.443315711809948e-5 * z - 1.388731625493765e-3) * z + 4.166664568298827e-2) * z * z
        poly_cos = poly_cos - 0.5 * z + 1.0
        poly_sin = ((-1.9515295891e-4 * z + 8.3321608736e-3) * z - 1.6666654611e-1) * z * r + r
        swap = (j & 2) != 0
        sv = tl.where(swap, poly_cos, poly_sin)
        cv = tl.where(swap, poly_sin, poly_cos)
        sin_p = tl.where((p < 0) ^ ((j & 4) != 0), -sv, sv)
        cos_p = tl.where(((j - 2) & 4) == 0, -cv, cv)
        return sin_p, cos_p

    @triton.jit
    def sincos(p, ACC: tl.constexpr, SINCOS: tl.constexpr):
        """(sin p, cos p) of a tile; the fast reduction unless the tile holds a large phase."""
        if ACC == tl.float64 or SINCOS == "libdevice":
            sin_p, cos_p = tl.sin(p), tl.cos(p)
        elif tl.max(tl.max(tl.abs(p), axis=1), axis=0) > FAST_PHASE_LIMIT:
            sin_p, cos_p = tl.sin(p), tl.cos(p)
        else:
            sin_p, cos_p = sincos_reduced(p)
        return sin_p, cos_p

    @triton.jit
    def class_reduce_kernel(partial_ptr, item_offsets_ptr, out_ptr, M, BLOCK: tl.constexpr):
        """out[c] = sum of the partials of class c's items, in item order (deterministic)."""
        c = tl.program_id(0)
        offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < 2 * M
        lo = tl.load(item_offsets_ptr + c)
        hi = tl.load(item_offsets_ptr + c + 1)
        acc = tl.zeros((BLOCK,), dtype=out_ptr.dtype.element_ty)
        for i in range(lo, hi):
            acc += tl.load(partial_ptr + i * 2 * M + offs, mask=mask, other=0.0)
        tl.store(out_ptr + c.to(tl.int64) * 2 * M + offs, acc, mask=mask)


def class_reduce_grid(num_classes: int, num_freqs: int) -> tuple[int, int]:
    """The class reduction's grid (C, ceil(2M / 256)), refused (ValueError) past CUDA's grid.y
    limit of 65535, as the cuda backend refuses it (csrc/chunk_walk.h: kMaxFreqs)."""
    blocks = -(-2 * num_freqs // CLASS_REDUCE_BLOCK)
    if blocks > MAX_GRID_Y:
        raise ValueError(f"spectral_kernels (triton): at most {MAX_FREQS} frequencies per call, got M={num_freqs}")
    return num_classes, blocks


def safe_layout(perm: torch.Tensor, offsets: torch.Tensor, n: int):
    """perm and offsets with every value clamped into range (offsets also made non-decreasing):
    two O(N + C) device ops, no host sync; a no-op on a valid layout."""
    return perm.clamp(0, max(n - 1, 0)), torch.cummax(offsets.clamp(0, n), 0).values


def device_guard(device: torch.device):
    """Triton launches on the *current* CUDA device, whatever device the tensors are on, and
    custom_op adds no guard: without this, cuda:1 tensors would be handed to a kernel running
    on cuda:0. CPU tensors (the interpreter) need none."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def sincos_mode() -> str:
    """How the epilogues compute sin/cos: "reduced" (default) or "libdevice". Read at each call
    from SPECTRAL_KERNELS_TRITON_SINCOS, for A/B timing only: both are accurate everywhere."""
    mode = os.environ.get("SPECTRAL_KERNELS_TRITON_SINCOS", "reduced")
    if mode not in SINCOS_MODES:
        raise ValueError(f"SPECTRAL_KERNELS_TRITON_SINCOS must be 'reduced' or 'libdevice', got {mode!r}")
    return mode


def work_items(offsets: torch.Tensor, num_rows: int, rows_per_item: int):
    """Cut every class into items of <= rows_per_item rows, on the device, with static shapes.

    Returns (start, end, item_offsets): item k covers perm positions [start[k], end[k]);
    class c owns items item_offsets[c] .. item_offsets[c+1]-1; unused items are empty.
    """
    num_classes = offsets.shape[0] - 1
    counts = offsets[1:] - offsets[:-1]
    per_class = (counts + rows_per_item - 1) // rows_per_item
    item_offsets = torch.cat([offsets.new_zeros(1), per_class.cumsum(0)])
    # sum_c ceil(n_c / R) <= N / R + C, so this many items always suffice.
    max_items = num_rows // rows_per_item + num_classes
    k = torch.arange(max_items, device=offsets.device)
    item_class = torch.searchsorted(item_offsets[1:], k, right=True).clamp_max(num_classes - 1)
    start = offsets[item_class] + (k - item_offsets[item_class]) * rows_per_item
    end = torch.minimum(start + rows_per_item, offsets[item_class + 1])
    end = torch.where(k < item_offsets[-1], end, start)
    return start.contiguous(), end.contiguous(), item_offsets.contiguous()
