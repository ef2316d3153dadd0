// The CPU kernels' shared tile machinery: the class-segment row tiles, the vectorised sin/cos
// passes over a phase tile (fused with column sums, or with forming W), and the per-thread
// scratch buffers. Used by the dense kernels (ecf_cpu.cpp: phases from a GEMM per tile) and by
// the structured ones (hadamard_cpu.cpp: phases from fast Walsh-Hadamard transforms).
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <vector>

#include "../ecf_math.h"

namespace spectral_kernels {
namespace cpu {

using math::ItemRows;

// 256 x 256 tiles keep every GEMM large enough for MKL to run near peak (for d >= 64) while the
// per-thread buffers stay well inside L2 plus a little of L3.
constexpr int64_t kRowTile = 256;
constexpr int64_t kFreqTile = 256;

// Row tiles of every class, in class order: math::item_rows with kRowTile rows per item.
std::vector<ItemRows> row_tiles(const at::Tensor& offsets);

// target_clones builds AVX-512, AVX2 and generic copies of a function and picks one at load time,
// so the library runs on any x86-64 while GCC vectorises for the machine it meets.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define SK_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define SK_CLONES
#endif

// Vectorised passes over a float32 phase tile (rows x cols, row-major), each fused with what the
// caller needs next so every element is read once. They return false if the tile holds a phase
// beyond math::kMaxFastPhase; the caller then redoes the tile with ATen's sin/cos.
//   sum_cos[j] += sum_i cos(p[i, j]), sum_sin[j] += sum_i sin(p[i, j])
bool sincos_column_sums(const float* p, int64_t rows, int64_t cols, float* sum_cos, float* sum_sin);
//   w[i, j] = math::grad_weight(g_re[j], g_im[j], sin p[i, j], cos p[i, j])
bool sincos_weight(const float* p, int64_t rows, int64_t cols, const float* g_re, const float* g_im, float* w);

// Per-thread scratch space, allocated once per parallel chunk.
struct Scratch {
  at::Tensor rows;     // gathered rows of x, (kRowTile, d)
  at::Tensor phase;    // p = x t^T for one tile, flat kRowTile * kFreqTile
  at::Tensor cosine;   // cos(p) on the generic path, same size
  at::Tensor sine;     // sin(p) on the generic path, same size
  at::Tensor weight;   // W of SPEC §1, same size
  at::Tensor partial;  // one tile's column sums of cos and sin, (2, max(cols, kFreqTile))

  // `width`: columns of a gathered row tile; `cols`: the widest phase tile.
  Scratch(int64_t width, const at::TensorOptions& options, int64_t cols = kFreqTile)
      : rows(at::empty({kRowTile, width}, options)),
        phase(at::empty({kRowTile * std::max(cols, kFreqTile)}, options)),
        cosine(at::empty_like(phase)),
        sine(at::empty_like(phase)),
        weight(at::empty_like(phase)),
        partial(at::empty({2, std::max(cols, kFreqTile)}, options)) {}

  // A contiguous (rows, cols) view over the front of a flat buffer.
  static at::Tensor tile(const at::Tensor& flat, int64_t rows, int64_t cols) {
    return flat.narrow(0, 0, rows * cols).view({rows, cols});
  }

  at::Tensor gather(const at::Tensor& x, const at::Tensor& perm, const ItemRows& tile_rows) {
    const int64_t count = tile_rows.end - tile_rows.begin;
    at::Tensor out = rows.narrow(0, 0, count);
    at::index_select_out(out, x, 0, perm.narrow(0, tile_rows.begin, count));
    return out;
  }

  at::Tensor phases(const at::Tensor& x_tile, const at::Tensor& t_tile) {
    at::Tensor p = tile(phase, x_tile.size(0), t_tile.size(0));
    at::mm_out(p, x_tile, t_tile.t());
    return p;
  }

  // Generic path (float64, or float32 with a phase beyond math::kMaxFastPhase): ATen's sin and cos.
  void aten_trig(const at::Tensor& p) {
    const int64_t r = p.size(0), f = p.size(1);
    at::Tensor c = tile(cosine, r, f), s = tile(sine, r, f);
    at::cos_out(c, p);
    at::sin_out(s, p);
  }

  // sum_cos += column sums of cos(x t^T), sum_sin likewise (both (f,), zero on first use).
  void add_column_sums(const at::Tensor& x_tile, const at::Tensor& t_tile, at::Tensor& sum_cos, at::Tensor& sum_sin) {
    add_phase_sums(phases(x_tile, t_tile), sum_cos, sum_sin);
  }

  // The same for a phase tile p (rows x f) computed by the caller.
  void add_phase_sums(const at::Tensor& p, at::Tensor& sum_cos, at::Tensor& sum_sin) {
    const int64_t r = p.size(0), f = p.size(1);
    if (p.scalar_type() == at::kFloat) {
      // Sum the tile on its own first: float32 partial sums of <= kRowTile terms, then one add.
      at::Tensor cos_part = partial[0].narrow(0, 0, f).zero_(), sin_part = partial[1].narrow(0, 0, f).zero_();
      if (sincos_column_sums(p.data_ptr<float>(), r, f, cos_part.data_ptr<float>(), sin_part.data_ptr<float>())) {
        sum_cos.add_(cos_part);
        sum_sin.add_(sin_part);
        return;
      }
    }
    aten_trig(p);
    sum_cos.add_(tile(cosine, r, f).sum(0));
    sum_sin.add_(tile(sine, r, f).sum(0));
  }

  // W = -G_re * sin(x t^T) + G_im * cos(x t^T), with G_re, G_im (f,) rows of one class.
  at::Tensor grad_weight(const at::Tensor& x_tile, const at::Tensor& t_tile, const at::Tensor& g_re,
                         const at::Tensor& g_im) {
    return phase_weight(phases(x_tile, t_tile), g_re, g_im);
  }

  // The same for a phase tile p (rows x f) computed by the caller.
  at::Tensor phase_weight(const at::Tensor& p, const at::Tensor& g_re, const at::Tensor& g_im) {
    const int64_t r = p.size(0), f = p.size(1);
    at::Tensor w = tile(weight, r, f);
    if (p.scalar_type() == at::kFloat &&
        sincos_weight(p.data_ptr<float>(), r, f, g_re.data_ptr<float>(), g_im.data_ptr<float>(), w.data_ptr<float>())) {
      return w;
    }
    aten_trig(p);  // the same W as math::grad_weight, G_im cos p - G_re sin p, by ATen
    at::mul_out(w, tile(cosine, r, f), g_im);
    w.addcmul_(tile(sine, r, f), g_re, -1);
    return w;
  }
};

}  // namespace cpu
}  // namespace spectral_kernels
