"""Triton kernels for the ECF sums at SORF frequencies (structured.HadamardFrequencies), never
materialising t: the Triton counterpart of csrc/cpu/hadamard_cpu.cpp.

Per block b of D frequencies the phases of a tile of rows are
    p = radii[b] / D^{3/2} * H D1 H D2 H D3 x~      (x~: the rows zero-padded to D)
and each Walsh-Hadamard transform of a row runs as small dense products on the tensor cores:
for D = A B, H_D = H_A (x) H_B, so with the row as an A x B matrix X, H_D x = vec(H_A X H_B):
one product with H_B over the rows of X, then one with H_A over its columns. D <= 128 uses one
product with H_D. The cost per row and block is O(D (A + B)) instead of the dense O(D d): at
d = D = 2048 (A = 32, B = 64) about 21 times fewer multiply-adds, on tensor cores either way:
precision="tf32" rounds the input of each of the three transforms to tf32; precision="ieee" runs
each product as three tf32 products (Triton's "tf32x3": x split into a tf32 head and a tf32
tail), which is float32-accurate here because H's entries are +-1 and exact in tf32, so the
only rounding left is the tail's, about 2^-22 relative. A plain IEEE FMA product of this shape
does not fit in registers at D = 2048 (sm_90: 12000 spill instructions in the inner loop, against
365 with tf32x3; benchmarks/triton_resources.py).

Forward: work items as in the dense kernels (classes cut into row ranges), one program per
(item, block), the shared sin/cos epilogue, item partials added per class in a fixed order.
Backward (dx only; signs and radii are samples): one program per tile of x's rows in x's own
order, looping over the blocks: recompute p, W of SPEC §1 from its class's G, then the
transposed chain D3 H D2 H D1 H (radii * W), accumulated over blocks: no atomics.

D < 16 (d < 9) is below tl.dot's smallest shape, and D > 2048 does not fit in shared memory:
those calls get the backend protocol's default, t materialised and the dense op (`takes`).
The sin/cos epilogue, work items and class reduction are ops/triton_common.py's, shared with the
dense kernels; the contract of x, perm and offsets is ops/contract.py's.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .. import _checks
from . import triton_common as tc
from .autograd import register_sorf_autograd
from .contract import check_inputs
from .reference import row_classes
from .triton_common import IMPORT_ERROR

MIN_WIDTH = 16  # tl.dot's smallest dimension
NUM_STAGES = 2  # software pipelining depth of both kernels (launch_options)
# The widest block the kernels take: beyond it t is materialised (supports). Compiled for sm_90
# at NUM_STAGES, every width up to here fits H100's 227 KiB of shared memory per block
# (tests/test_triton_compile.py); D = 4096 needed 256 KiB (ieee backward). See docs/backends.md.
MAX_WIDTH = 2048

# The kernels below keep their parameters and calls packed, not one per line: Triton kernels take long
# lists of pointers and compile-time constants, and the formatter's one-per-line layout would make them
# several screens long and repeat each list in every kernel that shares it.
# fmt: off
if IMPORT_ERROR is None:
    import triton
    import triton.language as tl

    from .triton_common import sincos

    @triton.jit
    def _hadamard(v, h_a, h_b, BLOCK_N: tl.constexpr, A: tl.constexpr, B: tl.constexpr, PRECISION: tl.constexpr):
        """Each row of v (BLOCK_N, A*B) times H_{A*B} (unnormalised): H_B over the rows of each
        row's A x B matrix, then H_A over its columns. A == 1: one product with h_b = H_B."""
        if A == 1:
            out = tl.dot(v, h_b, input_precision=PRECISION)
        else:
            w = tl.dot(tl.reshape(v, (BLOCK_N * A, B)), h_b, input_precision=PRECISION)
            w = tl.reshape(tl.permute(tl.reshape(w, (BLOCK_N, A, B)), (0, 2, 1)), (BLOCK_N * B, A))
            w = tl.dot(w, h_a, input_precision=PRECISION)
            out = tl.reshape(tl.permute(tl.reshape(w, (BLOCK_N, B, A)), (0, 2, 1)), (BLOCK_N, A * B))
        return out

    @triton.jit
    def _block_phases(x_ptr, rows, row_mask, signs_ptr, radii_ptr, h_a, h_b, b, D_IN,
                      BLOCK_N: tl.constexpr, A: tl.constexpr, B: tl.constexpr, PRECISION: tl.constexpr):
        cols = tl.arange(0, A * B)
        x = tl.load(x_ptr + rows[:, None] * D_IN + cols[None, :], mask=row_mask[:, None] & (cols[None, :] < D_IN),
                    other=0.0).to(tl.float32)
        base = signs_ptr + b * 3 * (A * B)
        v = x * tl.load(base + 2 * (A * B) + cols)[None, :]
        v = _hadamard(v, h_a, h_b, BLOCK_N, A, B, PRECISION) * tl.load(base + (A * B) + cols)[None, :]
        v = _hadamard(v, h_a, h_b, BLOCK_N, A, B, PRECISION) * tl.load(base + cols)[None, :]
        v = _hadamard(v, h_a, h_b, BLOCK_N, A, B, PRECISION)
        return v * tl.load(radii_ptr + b * (A * B) + cols)[None, :]

    @triton.jit
    def _load_square(ptr, N: tl.constexpr):
        i = tl.arange(0, N)
        return tl.load(ptr + i[:, None] * N + i[None, :])

    @triton.jit
    def _hadamard_forward_kernel(x_ptr, signs_ptr, radii_ptr, ha_ptr, hb_ptr, perm_ptr, item_start_ptr, item_end_ptr,
                                 partial_ptr, M, D_IN, NUM_BLOCKS, BLOCK_N: tl.constexpr, A: tl.constexpr,
                                 B: tl.constexpr, PRECISION: tl.constexpr, SINCOS: tl.constexpr):
        item = tl.program_id(0) // NUM_BLOCKS
        b = tl.program_id(0) % NUM_BLOCKS
        h_a = _load_square(ha_ptr, A)
        h_b = _load_square(hb_ptr, B)
        start = tl.load(item_start_ptr + item)
        end = tl.load(item_end_ptr + item)
        sum_cos = tl.zeros((A * B,), dtype=tl.float32)
        sum_sin = tl.zeros((A * B,), dtype=tl.float32)
        for r0 in range(start, end, BLOCK_N):
            pos = r0 + tl.arange(0, BLOCK_N)
            row_mask = pos < end
            rows = tl.load(perm_ptr + pos, mask=row_mask, other=0).to(tl.int64)
            p = _block_phases(x_ptr, rows, row_mask, signs_ptr, radii_ptr, h_a, h_b, b, D_IN, BLOCK_N, A, B, PRECISION)
            sin_p, cos_p = sincos(p, tl.float32, SINCOS)
            sum_cos += tl.sum(tl.where(row_mask[:, None], cos_p, 0.0), axis=0)
            sum_sin += tl.sum(tl.where(row_mask[:, None], sin_p, 0.0), axis=0)
        m = b * (A * B) + tl.arange(0, A * B)
        out = partial_ptr + item.to(tl.int64) * 2 * M
        tl.store(out + m, sum_cos, mask=m < M)
        tl.store(out + M + m, sum_sin, mask=m < M)

    @triton.jit
    def _hadamard_backward_kernel(x_ptr, signs_ptr, radii_ptr, ha_ptr, hb_ptr, row_class_ptr, grad_ptr, dx_ptr, N, M,
                                  D_IN, NUM_BLOCKS, BLOCK_N: tl.constexpr, A: tl.constexpr, B: tl.constexpr,
                                  PRECISION: tl.constexpr, SINCOS: tl.constexpr):
        rows = (tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
        row_mask = rows < N
        cols = tl.arange(0, A * B)
        h_a = _load_square(ha_ptr, A)
        h_b = _load_square(hb_ptr, B)
        cls = tl.load(row_class_ptr + rows, mask=row_mask, other=0)
        acc = tl.zeros((BLOCK_N, A * B), dtype=tl.float32)
        for b in range(0, NUM_BLOCKS):
            p = _block_phases(x_ptr, rows, row_mask, signs_ptr, radii_ptr, h_a, h_b, b, D_IN, BLOCK_N, A, B, PRECISION)
            sin_p, cos_p = sincos(p, tl.float32, SINCOS)
            m = b * (A * B) + cols
            mask = row_mask[:, None] & (m[None, :] < M)
            g = grad_ptr + cls[:, None] * 2 * M + m[None, :]
            w = tl.load(g + M, mask=mask, other=0.0) * cos_p - tl.load(g, mask=mask, other=0.0) * sin_p
            base = signs_ptr + b * 3 * (A * B)
            u = w * tl.load(radii_ptr + b * (A * B) + cols)[None, :]
            u = _hadamard(u, h_a, h_b, BLOCK_N, A, B, PRECISION) * tl.load(base + cols)[None, :]
            u = _hadamard(u, h_a, h_b, BLOCK_N, A, B, PRECISION) * tl.load(base + (A * B) + cols)[None, :]
            u = _hadamard(u, h_a, h_b, BLOCK_N, A, B, PRECISION) * tl.load(base + 2 * (A * B) + cols)[None, :]
            acc += u
        tl.store(dx_ptr + rows[:, None] * D_IN + cols[None, :], acc, mask=row_mask[:, None] & (cols[None, :] < D_IN))
# fmt: on


def _factors(width: int) -> tuple[int, int]:
    """(A, B) with A * B = width for the two-product transform; (1, width) for one product."""
    if width <= 128:
        return 1, width
    a = 1 << ((width.bit_length() - 1) // 2)
    return a, width // a


def _matrices(width: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    from ..structured import hadamard_matrix

    a, b = _factors(width)
    h_b = hadamard_matrix(b, dtype=torch.float32, device=device).contiguous()
    h_a = hadamard_matrix(a, dtype=torch.float32, device=device).contiguous() if a > 1 else h_b
    return h_a, h_b


def _dot_precision(precision: str) -> str:
    """The tl.dot input precision of the transforms for the op's precision argument (see the top)."""
    return "tf32x3" if precision == "ieee" else precision


def _num_warps(width: int) -> int:
    """8 warps from D = 128 up: H_128 alone is 64 KiB of registers at 4 warps (sm_90: the
    backward's loop went from 1246 spill instructions to 100 at D = 128, and halved at 512 and
    2048; benchmarks/triton_resources.py)."""
    return 8 if width >= 128 else 4


def launch_options(width: int) -> dict:
    """num_warps and num_stages of both SORF kernels at block width D: set here, explicitly, and
    read by the launches and by the resource check (benchmarks/triton_resources.py), so the check
    compiles what launches. Triton's default num_stages (3) multi-buffers the backward's block
    loop: at D = 2048 it needed 164/200 KiB of shared memory (tf32/ieee) on sm_90, against
    100/136 KiB with 2 (tests/test_triton_compile.py checks every launchable D)."""
    return {"num_warps": _num_warps(width), "num_stages": NUM_STAGES}


def _block_rows(width: int) -> int:
    """Rows per program: about 4096 values of a tile, so one row of D = 2048 fits in registers
    (tl.dot still gets >= 16 rows: BLOCK_N * A and BLOCK_N * B with A, B >= 16 above D = 128)."""
    return max(2, min(16, 4096 // width))


def _check(x, signs, radii, perm, offsets, num_freqs, precision, check_values) -> None:
    """The dense contract for x, perm and offsets, then the SORF contract (_checks.sorf, the
    same checks and messages as csrc/ecf_checks.h), then what these kernels add: D >= 16 and
    float32 parameters."""
    where = "spectral_kernels (triton): "
    for name, tensor in (("signs", signs), ("radii", radii)):
        if isinstance(tensor, torch.Tensor) and tensor.device != x.device:
            raise ValueError(
                f"{where}every input must be on one device, got {name} on {tensor.device} and x on {x.device}"
            )
    d = x.shape[1] if x.dim() == 2 else 0
    _, width = _checks.sorf(signs, radii, num_freqs, d, where=where, check_values=False)
    stand_in = x.new_empty(1, 1).expand(num_freqs, d)  # t's shape and dtype, no memory
    check_inputs(x, stand_in, perm, offsets, precision, check_values=check_values, backend="triton")
    if width < MIN_WIDTH:
        raise ValueError(f"{where}the block width D={width} must be a power of two >= max(16, d={d})")
    for name, tensor in (("signs", signs), ("radii", radii)):
        if tensor.dtype != torch.float32:
            raise TypeError(f"{where}{name} must be float32, got {tensor.dtype}")
    if check_values:
        _checks.sorf(signs, radii, num_freqs, d, where=where)


def _check_width(width: int) -> None:
    """Wider blocks do not fit in shared memory (see MAX_WIDTH): refused before any allocation."""
    if width > MAX_WIDTH:
        raise ValueError(
            f"spectral_kernels (triton): the block width D={width} is above {MAX_WIDTH}, the widest whose kernels fit "
            "in a GPU's shared memory; materialise t (HadamardFrequencies.dense()) and call the dense op"
        )


def _forward(x, signs, radii, perm, offsets, num_freqs, precision):
    n, d = x.shape
    num_classes, (blocks, _, width) = offsets.shape[0] - 1, signs.shape
    _check_width(width)
    reduce_grid = tc.class_reduce_grid(num_classes, num_freqs)  # refused before anything is allocated
    out = torch.zeros(num_classes, 2, num_freqs, device=x.device, dtype=torch.float32)
    if n == 0:
        return out
    perm, offsets = tc.safe_layout(perm, offsets, n)
    a, b = _factors(width)
    h_a, h_b = _matrices(width, x.device)
    rows_per_item = 64 * max(1, triton.cdiv(n, 64 * max(1, triton.cdiv(256, blocks))))
    start, end, item_offsets = tc.work_items(offsets, n, rows_per_item)
    partial = torch.empty(start.shape[0], 2, num_freqs, device=x.device, dtype=torch.float32)
    with tc.device_guard(x.device):
        _hadamard_forward_kernel[(start.shape[0] * blocks,)](
            x,
            signs,
            radii * width**-1.5,  # the kernels take the radii with D^{-3/2} folded in
            h_a,
            h_b,
            perm,
            start,
            end,
            partial,
            num_freqs,
            d,
            blocks,
            BLOCK_N=_block_rows(width),
            A=a,
            B=b,
            PRECISION=_dot_precision(precision),
            SINCOS=tc.sincos_mode(),
            **launch_options(width),
        )
        tc.class_reduce_kernel[reduce_grid](partial, item_offsets, out, num_freqs, BLOCK=tc.CLASS_REDUCE_BLOCK)
    return out


def _backward(grad, x, signs, radii, perm, offsets, num_freqs, precision):
    n, d = x.shape
    blocks, _, width = signs.shape
    _check_width(width)
    dx = torch.empty(n, d, device=x.device, dtype=torch.float32)
    if n == 0:
        return dx
    a, b = _factors(width)
    h_a, h_b = _matrices(width, x.device)
    rows = _block_rows(width)
    with tc.device_guard(x.device):
        _hadamard_backward_kernel[(triton.cdiv(n, rows),)](
            x,
            signs,
            radii * width**-1.5,
            h_a,
            h_b,
            row_classes(perm, offsets, n),
            grad.float().contiguous(),
            dx,
            n,
            num_freqs,
            d,
            blocks,
            BLOCK_N=rows,
            A=a,
            B=b,
            PRECISION=_dot_precision(precision),
            SINCOS=tc.sincos_mode(),
            **launch_options(width),
        )
    return dx


if IMPORT_ERROR is None:

    @torch.library.custom_op("spectral_kernels::hadamard_sums_triton", mutates_args=())
    def hadamard_sums_triton(
        x: Tensor, signs: Tensor, radii: Tensor, perm: Tensor, offsets: Tensor, num_freqs: int, precision: str
    ) -> Tensor:
        """Per-class sums (C, 2, M) at SORF frequencies, float32 (x float32, bfloat16 or float16)."""
        _check(x, signs, radii, perm, offsets, num_freqs, precision, check_values=x.device.type == "cpu")
        return _forward(x.contiguous(), signs.contiguous(), radii.contiguous(), perm, offsets, num_freqs, precision)

    @hadamard_sums_triton.register_fake
    def _(x, signs, radii, perm, offsets, num_freqs, precision):
        _check(x, signs, radii, perm, offsets, num_freqs, precision, check_values=False)
        return x.new_empty((offsets.shape[0] - 1, 2, num_freqs), dtype=torch.float32)

    @torch.library.custom_op("spectral_kernels::hadamard_sums_triton_grad_x", mutates_args=())
    def hadamard_sums_triton_grad_x(
        grad: Tensor,
        x: Tensor,
        signs: Tensor,
        radii: Tensor,
        perm: Tensor,
        offsets: Tensor,
        num_freqs: int,
        precision: str,
    ) -> Tensor:
        _check(x, signs, radii, perm, offsets, num_freqs, precision, check_values=x.device.type == "cpu")
        expected = (offsets.shape[0] - 1, 2, num_freqs)
        if tuple(grad.shape) != expected:
            raise ValueError(f"spectral_kernels (triton): grad must have shape {expected}, got {tuple(grad.shape)}")
        return _backward(
            grad, x.contiguous(), signs.contiguous(), radii.contiguous(), perm, offsets, num_freqs, precision
        ).to(x.dtype)

    @hadamard_sums_triton_grad_x.register_fake
    def _(grad, x, signs, radii, perm, offsets, num_freqs, precision):
        return x.new_empty(x.shape)  # contiguous, as the real op returns (not x's strides)

    register_sorf_autograd(hadamard_sums_triton, hadamard_sums_triton_grad_x)


def supports(x: Tensor, width: int) -> bool:
    """Whether the Triton SORF kernels take SORF frequencies of block width `width` for x."""
    return IMPORT_ERROR is None and MIN_WIDTH <= width <= MAX_WIDTH and x.dtype != torch.float64


def takes(x: Tensor, t) -> bool:
    """Whether these kernels take frequencies t for x: SORF ones (structured.HadamardFrequencies)
    of a width they support. The Triton backend materialises t for everything else."""
    from ..structured import HadamardFrequencies

    return isinstance(t, HadamardFrequencies) and supports(x, t.width)


def launchable_widths() -> list[int]:
    """Every block width D the kernels can be launched with (what the resource check compiles)."""
    return [1 << k for k in range(MIN_WIDTH.bit_length() - 1, MAX_WIDTH.bit_length())]
