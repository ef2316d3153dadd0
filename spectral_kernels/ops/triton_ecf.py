"""The Triton backend: fused per-class ECF sums and their gradients on the GPU (SPEC §1).

Forward (fully fused, no N x M buffer): rows arrive as a class permutation with CSR offsets.
Each class is cut into *work items* of at most `rows_per_item` rows, so a 5000-row class
becomes many items next to a 25-row class's one item, and the grid (items x frequency blocks)
keeps the GPU busy whatever the class sizes. A program loops over its item's row tiles:
tile of x t^T with tl.dot (float32 accumulation), sin/cos epilogue, column sums. A second,
small kernel adds each class's item partials in a fixed order: no atomics, so repeated calls
give bitwise-equal results. Across processes the autotuner may time its way to another tile
shape, which changes the order of the sums; under torch.use_deterministic_algorithms(True)
the kernels skip autotuning and run one fixed shape, so a program's results repeat from run
to run on the same GPU model (the backward's cuBLAS GEMMs then need CUBLAS_WORKSPACE_CONFIG,
as torch requires for any matmul in that mode).

Backward: a kernel recomputes x t^T for a chunk of x's rows (in x's own order: a row's W needs
only its class's G) and writes W = -G_re sin + G_im cos (SPEC §1) for that chunk only (at most
32 MiB, whatever N is); two GEMMs on contiguous slices then give dx = W t and dt += W^T x.
Keeping W for a chunk, instead of the fused-attention layout that holds a (rows x d)
accumulator per program, is deliberate: at d = 2048 such an accumulator does not fit in
registers, and tiling d instead would recompute x t^T d / BLOCK_D times.
Only the gradients that are needed are computed.

sin/cos: one shared Cody-Waite reduction to [-pi/4, pi/4] and the Cephes minimax polynomials
(the scheme of csrc/ecf_math.h, whose kMaxFastPhase = MAX_FAST_PHASE below and whose stated
bound, 1e-7 against float64 for |p| <= MAX_FAST_PHASE, this variant also meets), about 22
straight-line instructions per element for both values in the sm_90 build, where libdevice's
sinf and cosf each do their own reduction and carry a Payne-Hanek slow path with a
local-memory array. A tile holding any |p| > MAX_FAST_PHASE takes libdevice instead, so every argument
stays accurate; float64 always uses libdevice. SPECTRAL_KERNELS_TRITON_SINCOS=libdevice
switches the fast path off, for the A/B timing in benchmarks/bench_ops.py --device cuda.

Precision: bfloat16 and float16 inputs go to tl.dot as they are, a native low-precision
product on the tensor cores with float32 accumulation: a product of two bf16 (or two fp16)
numbers is exact in float32, so the products are those an upcast to float32 and an IEEE
product would give, whatever `precision` says; only the order and rounding of the float32
additions inside the tensor cores differ (under TRITON_INTERPRET=1 they are upcast to float32
first: the interpreter mishandles bf16 dots). float32 inputs use tf32 products when torch's
TF32 setting for CUDA matmuls is on (ops/precision.py reads either of its APIs), unless
`precision` says "ieee" or "tf32".
Accumulation, sin/cos and the sums are float32 for all three.
float64 inputs run in float64 throughout (IEEE products; used by gradcheck).

Registration uses torch.library.custom_op + register_fake rather than triton_op: under the
Triton interpreter (how CI runs these kernels, on CPU tensors) only the former passes opcheck
and torch.compile. The price: on the GPU inductor sees one opaque call instead of kernels it
could look into.
"""

from __future__ import annotations

import contextlib
import os

import torch

from .autograd import register_dense_autograd
from .gpu import FLOAT_DTYPES, GpuBackend
from .precision import PRECISIONS, cuda_matmul_precision
from .reference import row_classes

try:
    import triton
    import triton.language as tl

    _IMPORT_ERROR: str | None = None
except ImportError as error:  # pragma: no cover - triton ships with CUDA builds of torch
    _IMPORT_ERROR = f"triton is not installed ({error})"

INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") == "1"
SINCOS_MODES = ("reduced", "libdevice")
# Rows per chunk of W in the backward are chosen so W takes at most this many bytes.
W_CHUNK_BYTES = 32 * 2**20
# The largest |phase| the fast sin/cos reduction takes (csrc/ecf_math.h: kMaxFastPhase, the same
# limit for every backend; tests/test_ecf_math.py checks they agree).
MAX_FAST_PHASE = 8192.0
# SPECTRAL_KERNELS_TRITON_AUTOTUNE=0: one tile shape per accumulator type, untimed (read once, at
# import). The GPU test run uses it to keep compiles down; test_backends checks every shape separately.
AUTOTUNE = os.environ.get("SPECTRAL_KERNELS_TRITON_AUTOTUNE", "1") != "0"
# The class reduction's grid is (C, ceil(2M / CLASS_REDUCE_BLOCK)); CUDA caps grid.y at 65535.
CLASS_REDUCE_BLOCK = 256
MAX_GRID_Y = 65535
MAX_FREQS = MAX_GRID_Y * CLASS_REDUCE_BLOCK // 2


def gpu_configs():
    """The tile shapes autotuning chooses from on a GPU (BLOCK_N, BLOCK_M <= 128 x 256)."""
    return [
        triton.Config({"BLOCK_N": bn, "BLOCK_M": bm, "BLOCK_K": bk}, num_warps=w, num_stages=s)
        for bn, bm, bk, w, s in [
            (128, 128, 32, 8, 3),
            (128, 256, 32, 8, 3),  # a quarter less operand traffic per product; K loop spill-free on sm_90
            (128, 64, 32, 4, 4),
            (64, 128, 32, 4, 4),
            (128, 128, 64, 8, 3),
            (64, 64, 64, 4, 3),
        ]
    ]


def _configs():
    if INTERPRETED:  # the interpreter cannot autotune over several configs; big blocks run faster there
        return [triton.Config({"BLOCK_N": 32, "BLOCK_M": 32, "BLOCK_K": 32}, num_warps=4)]
    # Untuned launches (AUTOTUNE off) bypass the autotuner (_launch), so one config is enough here.
    return gpu_configs() if AUTOTUNE else gpu_configs()[:1]


def _prune_configs(configs, named_args, **kwargs):
    """float64 (the gradcheck path) gets one small tile instead of timing every configuration:
    128 x 128 float64 accumulators spill heavily (benchmarks/results/triton_resources_sm90.md)."""
    if kwargs.get("ACC") == tl.float64 and not INTERPRETED:
        return [FP64_CONFIG]
    return configs


# The kernels below keep their parameters and calls packed, not one per line: Triton kernels take long
# lists of pointers and compile-time constants, and the formatter's one-per-line layout would make them
# several screens long and repeat each list in every kernel that shares it.
# fmt: off
if _IMPORT_ERROR is None:
    FAST_PHASE_LIMIT = tl.constexpr(MAX_FAST_PHASE)  # globals read by @triton.jit code must be constexpr
    # bf16/fp16 inputs go to tl.dot as they are, except under the interpreter: there a bf16 tl.dot
    # returns garbage (triton 3.8: errors of 1e10 on a 16 x 16 product of entries ~1), so
    # interpreted runs upcast to float32 first, which gives the same exact products.
    NATIVE_LOW_PRECISION = tl.constexpr(not INTERPRETED)
    FP64_CONFIG = triton.Config({"BLOCK_N": 32, "BLOCK_M": 64, "BLOCK_K": 16}, num_warps=4, num_stages=2)
    # The autotuning cache is keyed by these and by the pointer dtypes: the best tiles differ
    # between tf32 (tensor cores) and ieee (FFMA) products, and between the sin/cos modes.
    AUTOTUNE_KEY = ["M", "D", "PRECISION", "SINCOS"]

    @triton.jit
    def _phase_tile(x_ptr, t_ptr, rows, row_mask, m_offs, m_mask, D, stride_x, stride_t, BLOCK_N: tl.constexpr,
                    BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, PRECISION: tl.constexpr, ACC: tl.constexpr):
        """p[i, j] = <x[rows[i]], t[m_offs[j]]> in ACC, (BLOCK_N, BLOCK_M); 0 where masked."""
        acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=ACC)
        for k0 in range(0, D, BLOCK_K):
            k = k0 + tl.arange(0, BLOCK_K)
            k_mask = k < D
            xa = tl.load(x_ptr + rows[:, None] * stride_x + k[None, :], mask=row_mask[:, None] & k_mask[None, :],
                         other=0.0)
            # int64: m_offs x stride_t passes 2**31 once M d does (rows are int64 already).
            tb = tl.load(t_ptr + m_offs.to(tl.int64)[None, :] * stride_t + k[:, None],
                         mask=m_mask[None, :] & k_mask[:, None], other=0.0)
            if NATIVE_LOW_PRECISION and (xa.dtype == tl.bfloat16 or xa.dtype == tl.float16):
                # bf16 x bf16 and fp16 x fp16 products are exact in float32, so the tensor cores'
                # native low-precision dot with float32 accumulation multiplies as exactly as the
                # upcast path (PRECISION only chooses how float32 inputs are multiplied), at half
                # the operand traffic, and "ieee" no longer means FFMA products.
                acc = tl.dot(xa, tb, acc, out_dtype=ACC)
            else:
                acc = tl.dot(xa.to(ACC), tb.to(ACC), acc, input_precision=PRECISION, out_dtype=ACC)
        return acc

    @triton.jit
    def _sincos_reduced(p):
        """(sin p, cos p) in float32 via one reduction around the nearest multiple of pi/2."""
        q = tl.floor(p * 0.6366197723675814 + 0.5)
        # pi/2 = C1 + C2 + C3 with 8, 11 and 24 significant bits (Cephes' split): q C1 and q C2
        # are exact for |p| <= MAX_FAST_PHASE even without FMA (the interpreter's tl.fma is unfused).
        r = tl.fma(q, -1.5703125, p)
        r = tl.fma(q, -4.837512969970703e-4, r)
        r = tl.fma(q, -7.549790126404332e-08, r)
        z = r * r
        s = tl.fma(tl.fma(tl.fma(-1.9515295891e-4, z, 8.3321608736e-3), z, -1.6666654611e-1) * z, r, r)
        c = tl.fma(tl.fma(tl.fma(tl.fma(2.443315711809948e-5, z, -1.388731625493765e-3), z, 4.166664568298827e-2), z,
                          -0.5), z, 1.0)
        quadrant = q.to(tl.int32) & 3  # p = q pi/2 + r: rotate (sin r, cos r) by q quarter turns
        odd = (quadrant & 1) != 0
        sin_p = tl.where(odd, c, s)
        cos_p = tl.where(odd, s, c)
        sin_p = tl.where((quadrant & 2) != 0, -sin_p, sin_p)
        cos_p = tl.where(((quadrant + 1) & 2) != 0, -cos_p, cos_p)
        return sin_p, cos_p

    @triton.jit
    def _sincos(p, ACC: tl.constexpr, SINCOS: tl.constexpr):
        """(sin p, cos p) of a tile; the fast reduction unless the tile holds a large phase."""
        if ACC == tl.float64 or SINCOS == "libdevice":
            sin_p, cos_p = tl.sin(p), tl.cos(p)
        elif tl.max(tl.max(tl.abs(p), axis=1), axis=0) > FAST_PHASE_LIMIT:
            sin_p, cos_p = tl.sin(p), tl.cos(p)
        else:
            sin_p, cos_p = _sincos_reduced(p)
        return sin_p, cos_p

    @triton.autotune(configs=_configs(), key=AUTOTUNE_KEY, prune_configs_by={"early_config_prune": _prune_configs})
    @triton.jit
    def _forward_kernel(x_ptr, t_ptr, perm_ptr, item_start_ptr, item_end_ptr, partial_ptr, M, D, stride_x, stride_t,
                        BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, PRECISION: tl.constexpr,
                        ACC: tl.constexpr, SINCOS: tl.constexpr):
        # Frequency blocks vary fastest, so the programs running together share their x rows
        # through L2 (x is read from memory about once, t stays resident); a 1-D grid has no
        # 65535 limit on the number of items.
        freq_blocks = tl.cdiv(M, BLOCK_M)
        item = tl.program_id(0) // freq_blocks
        m_offs = (tl.program_id(0) % freq_blocks) * BLOCK_M + tl.arange(0, BLOCK_M)
        m_mask = m_offs < M
        start = tl.load(item_start_ptr + item)
        end = tl.load(item_end_ptr + item)
        sum_cos = tl.zeros((BLOCK_M,), dtype=ACC)
        sum_sin = tl.zeros((BLOCK_M,), dtype=ACC)
        for r0 in range(start, end, BLOCK_N):
            pos = r0 + tl.arange(0, BLOCK_N)
            row_mask = pos < end
            rows = tl.load(perm_ptr + pos, mask=row_mask, other=0)
            p = _phase_tile(x_ptr, t_ptr, rows, row_mask, m_offs, m_mask, D, stride_x, stride_t, BLOCK_N, BLOCK_M,
                            BLOCK_K, PRECISION, ACC)
            sin_p, cos_p = _sincos(p, ACC, SINCOS)
            # Masked rows have p = 0, whose cosine is 1: they must be zeroed, not just skipped.
            sum_cos += tl.sum(tl.where(row_mask[:, None], cos_p, 0.0), axis=0)
            sum_sin += tl.sum(tl.where(row_mask[:, None], sin_p, 0.0), axis=0)
        base = partial_ptr + item.to(tl.int64) * 2 * M  # int64: items x 2M can pass 2**31
        tl.store(base + m_offs, sum_cos, mask=m_mask)
        tl.store(base + M + m_offs, sum_sin, mask=m_mask)

    @triton.jit
    def _class_reduce_kernel(partial_ptr, item_offsets_ptr, out_ptr, M, BLOCK: tl.constexpr):
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

    @triton.autotune(configs=_configs(), key=AUTOTUNE_KEY, prune_configs_by={"early_config_prune": _prune_configs})
    @triton.jit
    def _weight_kernel(x_ptr, t_ptr, row_class_ptr, grad_ptr, w_ptr, num_rows, M, D, stride_x, stride_t,
                       BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, PRECISION: tl.constexpr,
                       ACC: tl.constexpr, SINCOS: tl.constexpr):
        """w[i, m] = -G[c_i, 0, m] sin(p_im) + G[c_i, 1, m] cos(p_im) for a chunk of rows of x, in
        x's own order (each row needs only its class's G, so no class sorting and no gather)."""
        freq_blocks = tl.cdiv(M, BLOCK_M)  # fastest, as in the forward
        # int64 rows: a chunk holds up to 32 MiB / (4 M) rows, and rows x stride_x can pass 2**31.
        rows = ((tl.program_id(0) // freq_blocks) * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
        m_offs = (tl.program_id(0) % freq_blocks) * BLOCK_M + tl.arange(0, BLOCK_M)
        row_mask = rows < num_rows
        m_mask = m_offs < M
        cls = tl.load(row_class_ptr + rows, mask=row_mask, other=0)
        p = _phase_tile(x_ptr, t_ptr, rows, row_mask, m_offs, m_mask, D, stride_x, stride_t, BLOCK_N, BLOCK_M, BLOCK_K,
                        PRECISION, ACC)
        mask = row_mask[:, None] & m_mask[None, :]
        g = grad_ptr + cls[:, None] * 2 * M + m_offs[None, :]
        g_re = tl.load(g, mask=mask, other=0.0)
        g_im = tl.load(g + M, mask=mask, other=0.0)
        sin_p, cos_p = _sincos(p, ACC, SINCOS)
        w = g_im * cos_p - g_re * sin_p
        tl.store(w_ptr + rows[:, None] * M + m_offs[None, :], w, mask=mask)
# fmt: on


def _check_inputs(x, t, perm, offsets, precision, check_values):
    """The op's contract, checked before any kernel reads memory through it.

    Shapes, dtypes and devices are checked always (also on the fake tensors torch.compile
    traces with). The values of perm and offsets are checked only when they are on the CPU (the
    interpreter): on the GPU that would stall the host on a sync at every call. There they are
    made safe instead (`_safe_layout`, `row_classes`): indices are clamped into range, so a perm
    that is not a permutation or offsets that are not a CSR index give meaningless sums but
    never a read or write out of bounds. `class_index` always builds a valid layout.
    """
    where = "spectral_kernels (triton):"
    if x.dim() != 2 or t.dim() != 2:
        name, bad = ("x", x) if x.dim() != 2 else ("t", t)
        raise ValueError(f"{where} {name} must be 2-D ({'N' if name == 'x' else 'M'}, d), got shape {tuple(bad.shape)}")
    if x.shape[1] != t.shape[1]:
        raise ValueError(f"{where} x has d={x.shape[1]} but t has d={t.shape[1]}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{where} x must be float32, float64, bfloat16 or float16, got {x.dtype}")
    if t.dtype != x.dtype:
        raise TypeError(f"{where} t has dtype {t.dtype} but x has dtype {x.dtype}")
    if perm.dtype != torch.int64 or offsets.dtype != torch.int64:
        raise TypeError(f"{where} perm and offsets must be int64, got {perm.dtype} and {offsets.dtype}")
    if tuple(perm.shape) != (x.shape[0],):
        raise ValueError(f"{where} perm must have shape ({x.shape[0]},), got {tuple(perm.shape)}")
    if offsets.dim() != 1 or offsets.shape[0] < 2:
        raise ValueError(f"{where} offsets must have shape (C+1,) with C >= 1, got {tuple(offsets.shape)}")
    for name, tensor in (("t", t), ("perm", perm), ("offsets", offsets)):
        if tensor.device != x.device:
            raise ValueError(f"{where} {name} is on {tensor.device} but x is on {x.device}")
    if precision not in PRECISIONS:
        raise ValueError(f"{where} precision must be 'ieee' or 'tf32', got {precision!r}")
    if not check_values:
        return
    n = x.shape[0]
    first, last = int(offsets[0]), int(offsets[-1])
    if first != 0 or last != n:
        raise ValueError(f"{where} offsets must start at 0 and end at N={n}, got {first} and {last}")
    steps = offsets[1:] - offsets[:-1]
    if bool((steps < 0).any()):
        c = int(torch.nonzero(steps < 0)[0, 0]) + 1
        raise ValueError(
            f"{where} offsets must be non-decreasing, offsets[{c}]={int(offsets[c])} < "
            f"offsets[{c - 1}]={int(offsets[c - 1])}"
        )
    outside = (perm < 0) | (perm >= n)
    if bool(outside.any()):
        i = int(torch.nonzero(outside)[0, 0])
        raise ValueError(f"{where} perm must hold row numbers in [0, N={n}), got perm[{i}]={int(perm[i])}")
    seen = torch.bincount(perm, minlength=n)
    if bool((seen > 1).any()):
        row = int(torch.nonzero(seen > 1)[0, 0])
        first, second = (int(i) for i in torch.nonzero(perm == row)[:2, 0])
        raise ValueError(f"{where} perm must be a permutation of 0..N-1, but perm[{first}] = perm[{second}] = {row}")


def _safe_layout(perm: torch.Tensor, offsets: torch.Tensor, n: int):
    """perm and offsets with every value clamped into range (offsets also made non-decreasing):
    two O(N + C) device ops, no host sync; a no-op on a valid layout."""
    return perm.clamp(0, max(n - 1, 0)), torch.cummax(offsets.clamp(0, n), 0).values


def _check_grad(grad, offsets, t):
    expected = (offsets.shape[0] - 1, 2, t.shape[0])
    if tuple(grad.shape) != expected:
        raise ValueError(f"spectral_kernels (triton): grad must have shape {expected}, got {tuple(grad.shape)}")


def _fixed_config(acc_type) -> triton.Config:
    """The one tile shape of an untuned launch (see _launch): the first config, pruned as the
    autotuner prunes (float64: FP64_CONFIG)."""
    if INTERPRETED:
        return _configs()[0]
    return FP64_CONFIG if acc_type == tl.float64 else gpu_configs()[0]


def _launch(kernel, grid, *args, **kwargs) -> None:
    """Launch an autotuned kernel, or, under torch.use_deterministic_algorithms(True) or with
    autotuning off, its plain jitted function with one fixed tile shape, untimed. Autotuning
    picks the shape by timing, so another process (or the same one after a cache flush) may
    pick another, and the tile shape fixes the order of the float sums: the same inputs would
    then give results that differ in the last bits from one run of a program to the next.
    Autotuning off goes through the same path because Triton's autotuner never prunes a single
    config: float64 would compile the 128 x 128 tile (12.2 KB stack per thread on sm_90)."""
    if torch.are_deterministic_algorithms_enabled() or not AUTOTUNE:
        kernel.fn[grid](*args, **kwargs, **_fixed_config(kwargs["ACC"]).all_kwargs())
    else:
        kernel[grid](*args, **kwargs)


def _device_guard(device: torch.device):
    """Triton launches on the *current* CUDA device, whatever device the tensors are on, and
    custom_op adds no guard: without this, cuda:1 tensors would be handed to a kernel running
    on cuda:0. CPU tensors (the interpreter) need none."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def _class_reduce_grid(num_classes: int, num_freqs: int) -> tuple[int, int]:
    """The class reduction's grid (C, ceil(2M / 256)), refused (ValueError) past CUDA's grid.y
    limit of 65535, as the cuda backend refuses it (csrc/chunk_walk.h: kMaxFreqs)."""
    blocks = triton.cdiv(2 * num_freqs, CLASS_REDUCE_BLOCK)
    if blocks > MAX_GRID_Y:
        raise ValueError(f"spectral_kernels (triton): at most {MAX_FREQS} frequencies per call, got M={num_freqs}")
    return num_classes, blocks


def _sincos_mode() -> str:
    """How the epilogues compute sin/cos: "reduced" (default) or "libdevice". Read at each call
    from SPECTRAL_KERNELS_TRITON_SINCOS, for A/B timing only: both are accurate everywhere."""
    mode = os.environ.get("SPECTRAL_KERNELS_TRITON_SINCOS", "reduced")
    if mode not in SINCOS_MODES:
        raise ValueError(f"SPECTRAL_KERNELS_TRITON_SINCOS must be 'reduced' or 'libdevice', got {mode!r}")
    return mode


def _sums_dtype(dtype: torch.dtype) -> torch.dtype:
    # Half-precision inputs get float32 sums: they are accumulated in float32, and a sum of
    # thousands of terms rounded to 8 bits of mantissa would throw that accuracy away.
    return torch.float64 if dtype == torch.float64 else torch.float32


def _kernel_types(dtype: torch.dtype, precision: str):
    """(accumulator type, tl.dot precision): float64 in, float64 IEEE products; else float32."""
    if dtype == torch.float64:
        return tl.float64, "ieee"
    return tl.float32, precision


def _target_programs(device: torch.device) -> int:
    if device.type == "cuda":
        # Many programs per multiprocessor: work items end where classes end, so programs are
        # uneven, and the last wave's idle tail shrinks as the waves multiply (a list-scheduling
        # model of the figure point: 93% busy at 4 per SM, 98% at 16).
        return 16 * torch.cuda.get_device_properties(device).multi_processor_count
    return 4


def _work_items(offsets: torch.Tensor, num_rows: int, rows_per_item: int):
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


def _forward(
    x: torch.Tensor, t: torch.Tensor, perm: torch.Tensor, offsets: torch.Tensor, precision: str
) -> torch.Tensor:
    n, d = x.shape
    m, num_classes = t.shape[0], offsets.shape[0] - 1
    reduce_grid = _class_reduce_grid(num_classes, m)  # refused before anything is allocated
    x, t = x.contiguous(), t.contiguous()
    acc_type, precision = _kernel_types(x.dtype, precision)
    out = torch.zeros(num_classes, 2, m, device=x.device, dtype=_sums_dtype(x.dtype))
    if n == 0 or m == 0:
        return out
    perm, offsets = _safe_layout(perm, offsets, n)
    # Enough items that items x frequency blocks fill the device, counting blocks of 128 frequencies
    # (the first tile shape's BLOCK_M; the 256 and 64 shapes give half and twice as many programs).
    freq_blocks = triton.cdiv(m, 128)
    target_items = max(1, triton.cdiv(_target_programs(x.device), freq_blocks))
    rows_per_item = 128 * max(1, triton.cdiv(n, 128 * target_items))
    start, end, item_offsets = _work_items(offsets, n, rows_per_item)
    partial = torch.empty(start.shape[0], 2, m, device=x.device, dtype=out.dtype)
    grid = lambda meta: (start.shape[0] * triton.cdiv(m, meta["BLOCK_M"]),)
    with _device_guard(x.device):
        _launch(
            _forward_kernel,
            grid,
            x,
            t,
            perm,
            start,
            end,
            partial,
            m,
            d,
            x.stride(0),
            t.stride(0),
            PRECISION=precision,
            ACC=acc_type,
            SINCOS=_sincos_mode(),
        )
        _class_reduce_kernel[reduce_grid](partial, item_offsets, out, m, BLOCK=CLASS_REDUCE_BLOCK)
    return out


def _backward(grad, x, t, perm, offsets, precision, need_x, need_t):
    x, t = x.contiguous(), t.contiguous()
    n, d = x.shape
    m = t.shape[0]
    acc_type, precision = _kernel_types(x.dtype, precision)
    work = _sums_dtype(x.dtype)
    sincos = _sincos_mode()
    grad = grad.to(work).contiguous()
    if n == 0 or m == 0:  # nothing to sum over: zero gradients
        empty = x.new_empty(0)
        return (torch.zeros_like(x) if need_x else empty), (torch.zeros_like(t) if need_t else empty)
    # Every chunk writes its own rows of dx, so dx needs no zero fill.
    dx = torch.empty(n, d, device=x.device, dtype=work) if need_x else None
    dt = torch.zeros(m, d, device=x.device, dtype=work) if need_t else None
    # Class of each row of x in x's order: the chunks below walk x's rows as they lie, so W, dx
    # and the rows for dt are contiguous slices (no gathered copy of x, no scattered dx).
    # Every entry lies in [0, C) whatever perm and offsets hold, so G is never read out of bounds.
    row_class = row_classes(perm, offsets, n)
    chunk = max(128, (W_CHUNK_BYTES // (grad.element_size() * m)) // 128 * 128)
    w_buffer = torch.empty(min(chunk, n), m, device=x.device, dtype=work)
    t_work = t.to(work)
    with cuda_matmul_precision(precision, x.device), _device_guard(x.device):
        for r0 in range(0, n, chunk):
            r = min(chunk, n - r0)
            w, x_rows = w_buffer[:r], x[r0 : r0 + r]
            grid = lambda meta, r=r: (triton.cdiv(r, meta["BLOCK_N"]) * triton.cdiv(m, meta["BLOCK_M"]),)
            _launch(
                _weight_kernel,
                grid,
                x_rows,
                t,
                row_class[r0 : r0 + r],
                grad,
                w,
                r,
                m,
                d,
                x.stride(0),
                t.stride(0),
                PRECISION=precision,
                ACC=acc_type,
                SINCOS=sincos,
            )
            if need_x:
                torch.mm(w, t_work, out=dx[r0 : r0 + r])
            if need_t:
                dt.addmm_(w.T, x_rows.to(work))
    empty = x.new_empty(0)
    return (dx.to(x.dtype) if need_x else empty), (dt.to(t.dtype) if need_t else empty)


if _IMPORT_ERROR is None:

    @torch.library.custom_op("spectral_kernels::ecf_sums_triton", mutates_args=())
    def ecf_sums_triton(
        x: torch.Tensor, t: torch.Tensor, perm: torch.Tensor, offsets: torch.Tensor, precision: str
    ) -> torch.Tensor:
        """Per-class sums (C, 2, M) of cos/sin of x t^T; float32 for half inputs."""
        _check_inputs(x, t, perm, offsets, precision, check_values=x.device.type == "cpu")
        return _forward(x, t, perm, offsets, precision)

    @ecf_sums_triton.register_fake
    def _(x, t, perm, offsets, precision):
        _check_inputs(x, t, perm, offsets, precision, check_values=False)
        return x.new_empty((offsets.shape[0] - 1, 2, t.shape[0]), dtype=_sums_dtype(x.dtype))

    @torch.library.custom_op("spectral_kernels::ecf_sums_triton_backward", mutates_args=())
    def ecf_sums_triton_backward(
        grad: torch.Tensor,
        x: torch.Tensor,
        t: torch.Tensor,
        perm: torch.Tensor,
        offsets: torch.Tensor,
        precision: str,
        need_x: bool,
        need_t: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(dx, dt); an empty tensor in place of a gradient that is not needed."""
        _check_inputs(x, t, perm, offsets, precision, check_values=x.device.type == "cpu")
        _check_grad(grad, offsets, t)
        return _backward(grad, x, t, perm, offsets, precision, need_x, need_t)

    @ecf_sums_triton_backward.register_fake
    def _(grad, x, t, perm, offsets, precision, need_x, need_t):
        _check_inputs(x, t, perm, offsets, precision, check_values=False)
        _check_grad(grad, offsets, t)
        # new_empty, not empty_like: the real op returns contiguous gradients whatever x's strides
        # (Inductor asserts the fake's strides, e.g. for a transposed x).
        return (x.new_empty(x.shape) if need_x else x.new_empty(0)), (
            t.new_empty(t.shape) if need_t else t.new_empty(0)
        )

    register_dense_autograd(ecf_sums_triton, ecf_sums_triton_backward)


class TritonBackend(GpuBackend):
    name = "triton"

    def unavailable_reason(self) -> str | None:
        return _IMPORT_ERROR

    def device_reason(self, x: torch.Tensor) -> str | None:
        if x.device.type == "cuda":
            return None
        if INTERPRETED and x.device.type == "cpu":
            if torch.compiler.is_compiling():
                # The probe launches a kernel, which dynamo cannot trace (fullgraph fails): under
                # compile the eager answer stands, and where no eager call asked first the kernel
                # itself fails with the interpreter's own error.
                return None
            from .triton_interpreter import loop_bound_reason  # imported only where the interpreter runs

            return loop_bound_reason()
        return f"it runs on CUDA tensors (or CPU tensors under TRITON_INTERPRET=1), got a tensor on {x.device}"

    def dense_op(self):
        return torch.ops.spectral_kernels.ecf_sums_triton
