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

The sin/cos epilogue, the work items, the class reduction and the launch plumbing are shared
with the SORF kernels (ops/triton_common.py); the op contract with the reference op
(ops/contract.py, the twin of csrc/ecf_checks.h).

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

import os

import torch

from . import triton_common as tc
from . import triton_hadamard
from .autograd import register_dense_autograd
from .contract import check_grad, check_inputs
from .gpu import GpuBackend
from .precision import cuda_matmul_precision, resolve_precision
from .reference import row_classes
from .triton_common import IMPORT_ERROR, INTERPRETED

if IMPORT_ERROR is None:
    import triton
    import triton.language as tl

    from .triton_common import sincos as _sincos  # the name the kernel bodies below call it by

# Rows per chunk of W in the backward are chosen so W takes at most this many bytes.
W_CHUNK_BYTES = 32 * 2**20
# SPECTRAL_KERNELS_TRITON_AUTOTUNE=0: one tile shape per accumulator type, untimed (read once, at
# import). The GPU test run uses it to keep compiles down; test_backends checks every shape separately.
AUTOTUNE = os.environ.get("SPECTRAL_KERNELS_TRITON_AUTOTUNE", "1") != "0"


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
if IMPORT_ERROR is None:
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


def _forward(
    x: torch.Tensor, t: torch.Tensor, perm: torch.Tensor, offsets: torch.Tensor, precision: str
) -> torch.Tensor:
    n, d = x.shape
    m, num_classes = t.shape[0], offsets.shape[0] - 1
    reduce_grid = tc.class_reduce_grid(num_classes, m)  # refused before anything is allocated
    x, t = x.contiguous(), t.contiguous()
    acc_type, precision = _kernel_types(x.dtype, precision)
    out = torch.zeros(num_classes, 2, m, device=x.device, dtype=_sums_dtype(x.dtype))
    if n == 0 or m == 0:
        return out
    perm, offsets = tc.safe_layout(perm, offsets, n)
    # Enough items that items x frequency blocks fill the device, counting blocks of 128 frequencies
    # (the first tile shape's BLOCK_M; the 256 and 64 shapes give half and twice as many programs).
    freq_blocks = triton.cdiv(m, 128)
    target_items = max(1, triton.cdiv(_target_programs(x.device), freq_blocks))
    rows_per_item = 128 * max(1, triton.cdiv(n, 128 * target_items))
    start, end, item_offsets = tc.work_items(offsets, n, rows_per_item)
    partial = torch.empty(start.shape[0], 2, m, device=x.device, dtype=out.dtype)
    grid = lambda meta: (start.shape[0] * triton.cdiv(m, meta["BLOCK_M"]),)
    with tc.device_guard(x.device):
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
            SINCOS=tc.sincos_mode(),
        )
        tc.class_reduce_kernel[reduce_grid](partial, item_offsets, out, m, BLOCK=tc.CLASS_REDUCE_BLOCK)
    return out


def _backward(grad, x, t, perm, offsets, precision, need_x, need_t):
    x, t = x.contiguous(), t.contiguous()
    n, d = x.shape
    m = t.shape[0]
    acc_type, precision = _kernel_types(x.dtype, precision)
    work = _sums_dtype(x.dtype)
    sincos = tc.sincos_mode()
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
    with cuda_matmul_precision(precision, x.device), tc.device_guard(x.device):
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


if IMPORT_ERROR is None:

    @torch.library.custom_op("spectral_kernels::ecf_sums_triton", mutates_args=())
    def ecf_sums_triton(
        x: torch.Tensor, t: torch.Tensor, perm: torch.Tensor, offsets: torch.Tensor, precision: str
    ) -> torch.Tensor:
        """Per-class sums (C, 2, M) of cos/sin of x t^T; float32 for half inputs."""
        check_inputs(x, t, perm, offsets, precision, check_values=x.device.type == "cpu", backend="triton")
        return _forward(x, t, perm, offsets, precision)

    @ecf_sums_triton.register_fake
    def _(x, t, perm, offsets, precision):
        check_inputs(x, t, perm, offsets, precision, check_values=False, backend="triton")
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
        check_inputs(x, t, perm, offsets, precision, check_values=x.device.type == "cpu", backend="triton")
        check_grad(grad, offsets, t, backend="triton")
        return _backward(grad, x, t, perm, offsets, precision, need_x, need_t)

    @ecf_sums_triton_backward.register_fake
    def _(grad, x, t, perm, offsets, precision, need_x, need_t):
        check_inputs(x, t, perm, offsets, precision, check_values=False, backend="triton")
        check_grad(grad, offsets, t, backend="triton")
        # new_empty, not empty_like: the real op returns contiguous gradients whatever x's strides
        # (Inductor asserts the fake's strides, e.g. for a transposed x).
        return (x.new_empty(x.shape) if need_x else x.new_empty(0)), (
            t.new_empty(t.shape) if need_t else t.new_empty(0)
        )

    register_dense_autograd(ecf_sums_triton, ecf_sums_triton_backward)


class TritonBackend(GpuBackend):
    name = "triton"

    def unavailable_reason(self) -> str | None:
        return IMPORT_ERROR

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

    def structured_sums(self, x, t, index, precision=None):
        """SORF frequencies of block width 16..2048 (not float64) run the fused SORF kernels
        (ops/triton_hadamard.py); everything else gets the default, t materialised."""
        if triton_hadamard.takes(x, t):
            return torch.ops.spectral_kernels.hadamard_sums_triton(
                x,
                t.signs.float(),
                t.radii.float(),
                index.perm,
                index.offsets,
                t.num_freqs,
                resolve_precision(precision),
            )
        return super().structured_sums(x, t, index, precision)
