// The chunk walk of the CUDA backend (SPEC §1), written once over an "engine" that supplies the
// products and the kernels: csrc/cuda/ecf_cuda_ops.cpp runs it with cuBLAS and CUDA kernels,
// csrc/cpu/chunk_emulation.cpp with a column-major reference GEMM and the same kernel bodies in
// CPU loops, so everything but cuBLAS and the launch itself is tested without a GPU.
//
//   forward   for each chunk of <= R perm positions: gather its rows of x, P = x_rows t^T,
//             then the sin/cos epilogue summed per piece and class, then per class (no atomics)
//   backward  for each chunk: gather, P = x_rows t^T, W = -G_re sin P + G_im cos P in place,
//             dx_rows = W t (scattered back to x's rows through perm) and dt += W^T x_rows
//
// The N x M matrix is never held: each chunk buffer (P: R x M; the gathered rows and their dx:
// R x d) stays within the budget (kChunkBytes), so the memory beyond inputs and outputs is
// bounded whatever N is. Chunks are ranges of positions, so the work is the same whatever the
// class sizes. perm and offsets are cleaned on the device (clean_layout), never read on the
// host: no sync per call, and a layout that breaks the contract cannot cause an access out of
// bounds (its sums are then meaningless; class_index() always builds a valid one).
//
// Engine interface:
//   void gemm(const GemmArgs&, const at::Tensor& a, const at::Tensor& b, at::Tensor& c, bool tf32)
//   template <typename T> void piece_sums(const T* phase, int64_t len, int64_t M, const int64_t* offsets,
//                                         int64_t C, int64_t base, T* partial)
//   template <typename T> void class_sums(const T* partial, int64_t len, int64_t M, const int64_t* offsets,
//                                         int64_t C, int64_t base, T* out)
//   template <typename T> void weight(T* phase, int64_t len, int64_t M, const int64_t* offsets, int64_t C,
//                                     int64_t base, const T* grad)
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdlib>
#include <string>
#include <tuple>

#include "chunk_kernels.h"
#include "ecf_checks.h"

namespace spectral_kernels {
namespace chunk {

constexpr int64_t kChunkBytes = 16 << 20;     // the budget of each chunk buffer
constexpr int64_t kMaxPieces = 65535;         // CUDA grid.y limit of the piece kernel
constexpr int64_t kMaxFreqs = 65535LL * 128;  // CUDA grid.y limit of the class kernel (2M / 256 blocks)

// kChunkBytes, or SPECTRAL_KERNELS_CUDA_CHUNK_BYTES when set: a small budget makes the tests run
// many chunks at small sizes (the walk across chunks is what carries the sums).
inline int64_t default_chunk_bytes() {
  const char* env = std::getenv("SPECTRAL_KERNELS_CUDA_CHUNK_BYTES");
  const long long value = env != nullptr ? std::atoll(env) : 0;
  return value > 0 ? value : kChunkBytes;
}

// Rows per chunk: a multiple of kPieceRows with P (R x M of `work_bytes`) and the gathered rows
// (R x d of `gathered_bytes`) each within `budget`, at least one piece, at most what N needs.
inline int64_t chunk_rows(int64_t n, int64_t m, int64_t d, int64_t work_bytes, int64_t gathered_bytes, int64_t budget) {
  int64_t rows =
      std::min(budget / std::max<int64_t>(1, m * work_bytes), budget / std::max<int64_t>(1, d * gathered_bytes));
  rows = std::max(kPieceRows, rows / kPieceRows * kPieceRows);
  rows = std::min(rows, math::ceil_div(n, kPieceRows) * kPieceRows);
  return std::min(rows, kMaxPieces * kPieceRows);
}

struct Layout {
  at::Tensor perm, offsets;
};

// On the tensors' own device, no host sync: perm clamped into [0, N), offsets clamped into
// [0, N] and made non-decreasing with offsets[0] = 0 and offsets[C] = N.
inline Layout clean_layout(const at::Tensor& perm, const at::Tensor& offsets, int64_t n) {
  at::Tensor off = std::get<0>(at::cummax(offsets.clamp(0, n), 0)).contiguous();
  off.narrow(0, 0, 1).fill_(0);
  off.narrow(0, off.size(0) - 1, 1).fill_(n);
  return {perm.clamp(0, std::max<int64_t>(n - 1, 0)).contiguous(), off};
}

struct Problem {
  OpShape shape;
  at::Tensor x, t;
  Layout layout;
  at::ScalarType work;  // float32, or float64 for float64 inputs
  bool tf32;
  int64_t budget;
};

inline Problem prepare(const at::Tensor& x, const at::Tensor& t, const at::Tensor& perm, const at::Tensor& offsets,
                       c10::string_view precision, c10::DeviceType device, const char* backend, bool half_ok,
                       int64_t budget) {
  const OpShape shape = check_op_inputs(x, t, perm, offsets, device, backend, half_ok);
  const std::string mode(precision);
  check_precision(mode);
  TORCH_CHECK_VALUE(shape.num_freqs <= kMaxFreqs, "spectral_kernels (", backend, "): at most ", kMaxFreqs,
                    " frequencies per call, got M=", shape.num_freqs);
  TORCH_CHECK_VALUE(shape.dim < (1LL << 31), "spectral_kernels (", backend, "): d must be < 2^31, got ", shape.dim);
  return {shape,
          x.detach().contiguous(),
          t.detach().contiguous(),
          clean_layout(perm, offsets, shape.num_rows),
          x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat,
          mode == "tf32",
          budget};
}

// engine.gemm unless the product is empty: with nothing to write (m or n = 0) it is skipped, and
// with k = 0 (d = 0: every phase is 0) C becomes beta C. cuBLAS refuses the leading dimensions of
// 0 that such sizes bring (chunk::gemm_ok), so the engine never sees them.
template <typename Engine>
void product(Engine& engine, const GemmArgs& g, const at::Tensor& a, const at::Tensor& b, at::Tensor& c, bool tf32) {
  if (g.m == 0 || g.n == 0) return;
  if (g.k == 0) {
    if (g.beta == 0) c.zero_();
    return;
  }
  engine.gemm(g, a, b, c, tf32);
}

template <typename T, typename Engine>
void forward_walk(Engine& engine, const Problem& p, at::Tensor& out) {
  const OpShape& s = p.shape;
  const int64_t rows = chunk_rows(s.num_rows, s.num_freqs, s.dim, sizeof(T), p.x.element_size(), p.budget);
  const auto work = p.x.options().dtype(p.work);
  at::Tensor gathered = at::empty({rows, s.dim}, p.x.options());
  at::Tensor phase = at::empty({rows, s.num_freqs}, work);
  at::Tensor partial = at::empty({max_pairs(rows, s.num_classes), 2, s.num_freqs}, work);
  const int64_t* offsets = p.layout.offsets.data_ptr<int64_t>();
  for (int64_t base = 0; base < s.num_rows; base += rows) {
    const int64_t len = std::min(rows, s.num_rows - base);
    at::Tensor x_rows = gathered.narrow(0, 0, len), chunk_phase = phase.narrow(0, 0, len);
    at::index_select_out(x_rows, p.x, 0, p.layout.perm.narrow(0, base, len));
    product(engine, phase_args(len, s.num_freqs, s.dim), p.t, x_rows, chunk_phase, p.tf32);
    engine.template piece_sums<T>(chunk_phase.data_ptr<T>(), len, s.num_freqs, offsets, s.num_classes, base,
                                  partial.data_ptr<T>());
    engine.template class_sums<T>(partial.data_ptr<T>(), len, s.num_freqs, offsets, s.num_classes, base,
                                  out.data_ptr<T>());
  }
}

template <typename T, typename Engine>
void backward_walk(Engine& engine, const Problem& p, const at::Tensor& grad, at::Tensor* dx, at::Tensor* dt) {
  const OpShape& s = p.shape;
  const bool half = p.x.scalar_type() != p.work;  // bfloat16/float16: W's products run in float32
  const int64_t rows = chunk_rows(s.num_rows, s.num_freqs, s.dim, sizeof(T), sizeof(T), p.budget);
  const auto work = p.x.options().dtype(p.work);
  const at::Tensor t_work = p.t.to(p.work);  // no copy unless half
  at::Tensor gathered = at::empty({rows, s.dim}, p.x.options());
  at::Tensor gathered_work = half ? at::empty({rows, s.dim}, work) : gathered;
  at::Tensor phase = at::empty({rows, s.num_freqs}, work);
  at::Tensor dx_rows = dx != nullptr ? at::empty({rows, s.dim}, work) : at::Tensor();
  const int64_t* offsets = p.layout.offsets.data_ptr<int64_t>();
  for (int64_t base = 0; base < s.num_rows; base += rows) {
    const int64_t len = std::min(rows, s.num_rows - base);
    const at::Tensor positions = p.layout.perm.narrow(0, base, len);
    at::Tensor x_rows = gathered.narrow(0, 0, len), w = phase.narrow(0, 0, len);
    at::index_select_out(x_rows, p.x, 0, positions);
    product(engine, phase_args(len, s.num_freqs, s.dim), p.t, x_rows, w, p.tf32);
    engine.template weight<T>(w.data_ptr<T>(), len, s.num_freqs, offsets, s.num_classes, base, grad.data_ptr<T>());
    at::Tensor x_work = gathered_work.narrow(0, 0, len);
    if (half) x_work.copy_(x_rows);
    if (dx != nullptr) {
      at::Tensor dx_chunk = dx_rows.narrow(0, 0, len);
      product(engine, dx_args(len, s.num_freqs, s.dim), t_work, w, dx_chunk, p.tf32);
      dx->index_copy_(0, positions, dx_chunk);  // the rows of one chunk are distinct for a valid perm
    }
    if (dt != nullptr) product(engine, dt_args(len, s.num_freqs, s.dim), x_work, w, *dt, p.tf32);
  }
}

// Per-class sums (C, 2, M) in the work dtype (float32 for float32 and half inputs). No rows or
// no frequencies: zeros, with no launch (a grid of 0 blocks is a CUDA launch error).
template <typename Engine>
at::Tensor forward(Engine& engine, const Problem& p) {
  at::Tensor out = at::zeros({p.shape.num_classes, 2, p.shape.num_freqs}, p.x.options().dtype(p.work));
  if (p.shape.num_rows == 0 || p.shape.num_freqs == 0) return out;
  if (p.work == at::kDouble) {
    forward_walk<double>(engine, p, out);
  } else {
    forward_walk<float>(engine, p, out);
  }
  return out;
}

// (dx, dt) in x's and t's dtypes; a gradient not asked for is an empty tensor.
template <typename Engine>
std::tuple<at::Tensor, at::Tensor> backward(Engine& engine, const Problem& p, const at::Tensor& grad_in,
                                            const at::Tensor& x, bool need_x, bool need_t) {
  check_grad(grad_in, x, p.shape);
  const at::Tensor grad = grad_in.detach().to(p.work).contiguous();
  const auto work = p.x.options().dtype(p.work);
  at::Tensor dx = need_x ? at::zeros({p.shape.num_rows, p.shape.dim}, work) : at::Tensor();
  at::Tensor dt = need_t ? at::zeros({p.shape.num_freqs, p.shape.dim}, work) : at::Tensor();
  if (p.shape.num_rows > 0 && p.shape.num_freqs > 0 && (need_x || need_t)) {  // else zeros, as in forward
    if (p.work == at::kDouble) {
      backward_walk<double>(engine, p, grad, need_x ? &dx : nullptr, need_t ? &dt : nullptr);
    } else {
      backward_walk<float>(engine, p, grad, need_x ? &dx : nullptr, need_t ? &dt : nullptr);
    }
  }
  return {need_x ? dx.to(p.x.scalar_type()) : p.x.new_empty({0}),
          need_t ? dt.to(p.t.scalar_type()) : p.t.new_empty({0})};
}

}  // namespace chunk
}  // namespace spectral_kernels
