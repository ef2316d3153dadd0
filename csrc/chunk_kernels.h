// The per-thread bodies of the CUDA backend's kernels, and the products' arguments, written as
// host/device code so that the CPU can run them too: csrc/cuda/ecf_cuda.cu wraps each body in a
// __global__ kernel, and csrc/cpu/chunk_emulation.cpp calls the same bodies in plain loops over
// the grid, so the CPU tests exercise the kernel code the GPU runs (tests/test_chunk_walk.py).
//
// Vocabulary (SPEC §1 layout): a chunk is a range of perm positions [base, base + len) whose
// rows were gathered and multiplied by t^T into `phase` (len x M, row-major; float for float32
// and half inputs, double for float64). Positions are cut into pieces of kPieceRows; a piece
// and a class it meets form a pair, numbered q + c - first_class with first_class the class of
// position `base`. Along the chunk that number strictly increases (each class a piece meets
// adds one; the next piece starts at the class the last one ended in, or later), so pairs never
// collide, and a chunk has at most pieces + C of them.
//
// Offsets must be clean (monotone, offsets[0] = 0, offsets[C] = N: see chunk_walk.h), so every
// class lookup lands in [0, C) and every pair number in [0, max_pairs).
#pragma once

#include <c10/macros/Macros.h>

#include <cstdint>

#include "ecf_math.h"

namespace spectral_kernels {
namespace chunk {

constexpr int64_t kPieceRows = 64;

inline int64_t max_pairs(int64_t len, int64_t num_classes) { return math::ceil_div(len, kPieceRows) + num_classes; }

// The class of perm position `pos`: the last c with offsets[c] <= pos (never an empty class).
C10_HOST_DEVICE inline int64_t class_of(int64_t pos, const int64_t* offsets, int64_t num_classes) {
  return math::segment_of(pos, offsets, num_classes);
}

// Thread (m, q): frequency column m of piece q. Writes one pair per class the piece meets:
// partial[pair] = (sum of cos, sum of sin) of that class's rows in the piece (0 for an empty
// class in between).
template <typename T>
C10_HOST_DEVICE void piece_sums(int64_t m, int64_t q, const T* phase, int64_t len, int64_t num_freqs,
                                const int64_t* offsets, int64_t num_classes, int64_t base, T* partial) {
  const int64_t first_class = class_of(base, offsets, num_classes);
  const int64_t begin = base + q * kPieceRows;
  const int64_t end = begin + kPieceRows < base + len ? begin + kPieceRows : base + len;
  int64_t c = class_of(begin, offsets, num_classes);
  int64_t next = offsets[c + 1];
  T sum_cos = 0, sum_sin = 0;
  for (int64_t pos = begin; pos < end; ++pos) {
    while (pos >= next && c < num_classes - 1) {  // the class ends here: write its pair, go on
      T* out = partial + (q + c - first_class) * 2 * num_freqs;
      out[m] = sum_cos;
      out[num_freqs + m] = sum_sin;
      sum_cos = 0;
      sum_sin = 0;
      ++c;
      next = offsets[c + 1];
    }
    T s, co;
    math::sincos_any(phase[(pos - base) * num_freqs + m], s, co);
    sum_cos += co;
    sum_sin += s;
  }
  T* out = partial + (q + c - first_class) * 2 * num_freqs;
  out[m] = sum_cos;
  out[num_freqs + m] = sum_sin;
}

// Thread (c, j): entry j of out[c] (its 2M cos sums then sin sums) += the pairs of class c in
// this chunk, in piece order. Deterministic: no atomics, a fixed order of additions.
template <typename T>
C10_HOST_DEVICE void class_sums(int64_t c, int64_t j, const T* partial, int64_t len, int64_t num_freqs,
                                const int64_t* offsets, int64_t num_classes, int64_t base, T* out) {
  const int64_t a = offsets[c] > base ? offsets[c] : base;                      // class c's positions
  const int64_t b = offsets[c + 1] < base + len ? offsets[c + 1] : base + len;  // in the chunk: [a, b)
  if (a >= b) return;
  const int64_t first_class = class_of(base, offsets, num_classes);
  T acc = out[c * 2 * num_freqs + j];
  for (int64_t q = (a - base) / kPieceRows; q <= (b - 1 - base) / kPieceRows; ++q) {
    acc += partial[(q + c - first_class) * 2 * num_freqs + j];
  }
  out[c * 2 * num_freqs + j] = acc;
}

// Thread `index` of len x M: phase <- W = -G[c, 0, m] sin(phase) + G[c, 1, m] cos(phase) in
// place, c the class of position base + row (math::grad_weight).
template <typename T>
C10_HOST_DEVICE void weight(int64_t index, T* phase, int64_t num_freqs, const int64_t* offsets, int64_t num_classes,
                            int64_t base, const T* grad) {
  const int64_t row = index / num_freqs, m = index - row * num_freqs;
  const int64_t c = class_of(base + row, offsets, num_classes);
  const T* g = grad + c * 2 * num_freqs;
  T s, co;
  math::sincos_any(phase[index], s, co);
  phase[index] = math::grad_weight(g[m], g[num_freqs + m], s, co);
}

// ---------------------------------------------------------------------------------------------
// The launch grids of the three kernels (threads per block: kThreads), computed once here for
// the CUDA launches and for the CPU emulation, which walks the same grid and refuses what CUDA
// would refuse (grid_ok): a dimension of 0 blocks, or past grid.x < 2^31 / grid.y <= 65535.
constexpr int64_t kThreads = 256;
constexpr int64_t kMaxGridX = (1LL << 31) - 1, kMaxGridY = 65535;

struct Grid {
  int64_t x, y;
};

inline Grid piece_grid(int64_t len, int64_t num_freqs) {  // (column block, piece)
  return {math::ceil_div(num_freqs, kThreads), math::ceil_div(len, kPieceRows)};
}
inline Grid class_grid(int64_t num_classes, int64_t num_freqs) {  // (class, block of its 2M sums)
  return {num_classes, math::ceil_div(2 * num_freqs, kThreads)};
}
inline Grid weight_grid(int64_t len, int64_t num_freqs) { return {math::ceil_div(len * num_freqs, kThreads), 1}; }
inline bool grid_ok(const Grid& g) { return g.x >= 1 && g.x <= kMaxGridX && g.y >= 1 && g.y <= kMaxGridY; }

// ---------------------------------------------------------------------------------------------
// The three products, as arguments of a column-major GEMM (cuBLAS's convention):
// C (m x n, ldc) = op(A) op(B) + beta C. A row-major (r x c) matrix is, to a column-major
// routine, its transpose (c x r) with leading dimension c, hence the swapped operands below.
struct GemmArgs {
  bool trans_a, trans_b;
  int64_t m, n, k, lda, ldb, ldc;
  double beta;
};

// Whether cuBLAS takes these arguments (cublasGemmEx returns CUBLAS_STATUS_INVALID_VALUE
// otherwise): sizes >= 0 and every leading dimension >= max(1, rows of its stored matrix), also
// when a size is 0. The walk never calls a GEMM with m, n or k = 0 (chunk_walk.h: product).
inline bool gemm_ok(const GemmArgs& g) {
  const auto at_least = [](int64_t ld, int64_t rows) { return ld >= (rows > 1 ? rows : 1); };
  return g.m >= 0 && g.n >= 0 && g.k >= 0 && at_least(g.lda, g.trans_a ? g.k : g.m) &&
         at_least(g.ldb, g.trans_b ? g.n : g.k) && at_least(g.ldc, g.m);
}

// phase (rows x M) = x_rows (rows x d) t^T   <=>   phase^T (M x rows) = t (M x d) x_rows^T.
inline GemmArgs phase_args(int64_t rows, int64_t num_freqs, int64_t dim) {
  return {true, false, num_freqs, rows, dim, dim, dim, num_freqs, 0.0};  // A = t, B = x_rows, C = phase
}

// dx_rows (rows x d) = W (rows x M) t (M x d)   <=>   dx_rows^T = t^T W^T.
inline GemmArgs dx_args(int64_t rows, int64_t num_freqs, int64_t dim) {
  return {false, false, dim, rows, num_freqs, dim, num_freqs, dim, 0.0};  // A = t, B = W, C = dx_rows
}

// dt (M x d) += W^T (M x rows) x_rows (rows x d)   <=>   dt^T += x_rows^T W.
inline GemmArgs dt_args(int64_t rows, int64_t num_freqs, int64_t dim) {
  return {false, true, dim, num_freqs, rows, dim, num_freqs, dim, 1.0};  // A = x_rows, B = W, C = dt
}

}  // namespace chunk
}  // namespace spectral_kernels
