// Fused CPU kernels for the per-class ECF sums and their gradients (SPEC §1).
//
// The N x M matrix p = x t^T is never held. Work is cut into tiles of at most kRowTile rows of
// one class by kFreqTile frequencies; per tile the kernel gathers the rows (through `perm`),
// forms p with one GEMM, takes cos/sin with ATen's vectorised kernels and reduces at once.
// The backward recomputes p tile by tile, as fused attention does.
//
// Parallelism never shares an output between threads, so there are no atomics and results are
// bitwise reproducible; the tile shapes do not depend on the thread count, so 1 and 2 threads
// give the same numbers:
//   forward, grad_t: each thread owns a contiguous range of frequency tiles (columns of S,
//                    rows of dt) and walks all row tiles;
//   grad_x:          each thread owns a range of row tiles (rows of dx) and walks all
//                    frequency tiles.
// Memory beyond inputs and outputs: a few tile buffers per thread.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace spectral_kernels {
namespace {

// 256 x 256 tiles keep every GEMM large enough for MKL to run near peak (for d >= 64) while the
// per-thread buffers stay well inside L2 plus a little of L3.
constexpr int64_t kRowTile = 256;
constexpr int64_t kFreqTile = 256;

struct RowTile {
  int64_t cls;    // class of every row in the tile
  int64_t begin;  // first position in perm
  int64_t rows;   // number of rows (<= kRowTile)
};

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

void check_inputs(const at::Tensor& x, const at::Tensor& t, const at::Tensor& perm,
                  const at::Tensor& offsets) {
  TORCH_CHECK_VALUE(x.dim() == 2, "spectral_kernels: x must be 2-D (N, d), got shape ", x.sizes());
  TORCH_CHECK_VALUE(t.dim() == 2, "spectral_kernels: t must be 2-D (M, d), got shape ", t.sizes());
  TORCH_CHECK_VALUE(x.size(1) == t.size(1), "spectral_kernels: x has d=", x.size(1),
                    " but t has d=", t.size(1));
  TORCH_CHECK_TYPE(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
                   "spectral_kernels (cpu): x must be float32 or float64, got ", x.scalar_type());
  TORCH_CHECK_TYPE(t.scalar_type() == x.scalar_type(), "spectral_kernels: t has dtype ",
                   t.scalar_type(), " but x has dtype ", x.scalar_type());
  TORCH_CHECK_TYPE(perm.scalar_type() == at::kLong && offsets.scalar_type() == at::kLong,
                   "spectral_kernels: perm and offsets must be int64, got ", perm.scalar_type(),
                   " and ", offsets.scalar_type());
  TORCH_CHECK_VALUE(perm.dim() == 1 && perm.size(0) == x.size(0), "spectral_kernels: perm must have shape (",
                    x.size(0), ",), got ", perm.sizes());
  TORCH_CHECK_VALUE(offsets.dim() == 1 && offsets.size(0) >= 2,
                    "spectral_kernels: offsets must have shape (C+1,) with C >= 1, got ", offsets.sizes());
  for (const auto* tensor : {&x, &t, &perm, &offsets}) {
    TORCH_CHECK_VALUE(tensor->device().is_cpu(), "spectral_kernels (cpu): every input must be on the CPU, got ",
                      tensor->device());
  }
}

// The CSR offsets are checked in full before anything is sized by them: a bad entry such as
// offsets = {0, 10^12, N} would otherwise make the tile list below take gigabytes first.
void check_offsets(const at::Tensor& offsets, int64_t num_rows) {
  const auto off = offsets.accessor<int64_t, 1>();
  const int64_t num_classes = offsets.size(0) - 1;
  TORCH_CHECK_VALUE(off[0] == 0 && off[num_classes] == num_rows, "spectral_kernels: offsets must start at 0 and end at N=",
                    num_rows, ", got ", off[0], " and ", off[num_classes]);
  for (int64_t c = 0; c < num_classes; ++c) {
    TORCH_CHECK_VALUE(off[c + 1] >= off[c], "spectral_kernels: offsets must be non-decreasing, offsets[", c + 1,
                      "]=", off[c + 1], " < offsets[", c, "]=", off[c]);
  }
}

// Cuts each class segment into tiles of at most kRowTile rows, so a class of 5000 rows and a
// class of 5 rows both become units of bounded work (offsets already checked: at most
// N / kRowTile + C tiles).
std::vector<RowTile> row_tiles(const at::Tensor& offsets) {
  const auto off = offsets.accessor<int64_t, 1>();
  const int64_t num_classes = offsets.size(0) - 1;
  std::vector<RowTile> tiles;
  for (int64_t c = 0; c < num_classes; ++c) {
    for (int64_t begin = off[c]; begin < off[c + 1]; begin += kRowTile) {
      tiles.push_back({c, begin, std::min(kRowTile, off[c + 1] - begin)});
    }
  }
  return tiles;
}

// ---------------------------------------------------------------------------------------------
// float32 sin and cos in one pass (Cody-Waite reduction to [-pi/4, pi/4], minimax polynomials,
// as in Cephes' sinf/cosf), fused with what the caller needs next, so each element of the
// phase tile is read once. Max abs error 8e-8 against float64 for |p| <= 8192 (under one ulp
// at 1.0); larger phases lose reduction accuracy, so a tile that holds one returns false and
// the caller redoes it with ATen's sin/cos (Sleef, accurate for every argument).
// target_clones builds AVX-512, AVX2 and generic copies and picks one at load time, so the
// library runs on any x86-64 while GCC auto-vectorises the loops for the machine it meets.
constexpr float kMaxFastPhase = 8192.0f;
constexpr float kFourOverPi = 1.27323954473516f;
constexpr float kPiOver4Hi = 0.78515625f, kPiOver4Mid = 2.4187564849853515625e-4f, kPiOver4Lo = 3.77489497744594108e-8f;
constexpr float kSin0 = -1.9515295891e-4f, kSin1 = 8.3321608736e-3f, kSin2 = -1.6666654611e-1f;
constexpr float kCos0 = 2.443315711809948e-5f, kCos1 = -1.388731625493765e-3f, kCos2 = 4.166664568298827e-2f;

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define SK_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define SK_CLONES
#endif

inline __attribute__((always_inline)) void sincos_f32(float x, float& s, float& c) {
  const float ax = std::fabs(x);
  int j = static_cast<int>(ax * kFourOverPi);
  j = (j + 1) & ~1;  // octant pair: reduce around the nearest multiple of pi/2
  const float y = static_cast<float>(j);
  const float r = ((ax - y * kPiOver4Hi) - y * kPiOver4Mid) - y * kPiOver4Lo;
  const float z = r * r;
  const float poly_cos = ((kCos0 * z + kCos1) * z + kCos2) * z * z - 0.5f * z + 1.0f;
  const float poly_sin = ((kSin0 * z + kSin1) * z + kSin2) * z * r + r;
  const bool swap = (j & 2) != 0;
  const float sv = swap ? poly_cos : poly_sin, cv = swap ? poly_sin : poly_cos;
  s = ((x < 0.0f) != ((j & 4) != 0)) ? -sv : sv;
  c = (((j - 2) & 4) == 0) ? -cv : cv;
}

// sum_cos[j] += sum_i cos(p[i, j]), sum_sin[j] += sum_i sin(p[i, j]).
SK_CLONES bool sincos_column_sums(const float* p, int64_t rows, int64_t cols, float* sum_cos, float* sum_sin) {
  int big = 0;
  for (int64_t i = 0; i < rows; ++i) {
    const float* row = p + i * cols;
    for (int64_t j = 0; j < cols; ++j) {
      float s, c;
      sincos_f32(row[j], s, c);
      sum_cos[j] += c;
      sum_sin[j] += s;
      big |= std::fabs(row[j]) > kMaxFastPhase;
    }
  }
  return big == 0;
}

// w[i, j] = -g_re[j] sin(p[i, j]) + g_im[j] cos(p[i, j])   (W of SPEC §1 for one class).
SK_CLONES bool sincos_weight(const float* p, int64_t rows, int64_t cols, const float* g_re, const float* g_im, float* w) {
  int big = 0;
  for (int64_t i = 0; i < rows; ++i) {
    const float* row = p + i * cols;
    float* out = w + i * cols;
    for (int64_t j = 0; j < cols; ++j) {
      float s, c;
      sincos_f32(row[j], s, c);
      out[j] = g_im[j] * c - g_re[j] * s;
      big |= std::fabs(row[j]) > kMaxFastPhase;
    }
  }
  return big == 0;
}

// Per-thread scratch space, allocated once per parallel chunk.
struct Scratch {
  at::Tensor rows;    // gathered rows of x, (kRowTile, d)
  at::Tensor phase;   // p = x t^T for one tile, flat kRowTile * kFreqTile
  at::Tensor cosine;  // cos(p) on the generic path, same size
  at::Tensor sine;    // sin(p) on the generic path, same size
  at::Tensor weight;  // W of SPEC §1, same size
  at::Tensor partial; // one tile's column sums of cos and sin, (2, kFreqTile)

  Scratch(int64_t d, const at::TensorOptions& options)
      : rows(at::empty({kRowTile, d}, options)),
        phase(at::empty({kRowTile * kFreqTile}, options)),
        cosine(at::empty_like(phase)),
        sine(at::empty_like(phase)),
        weight(at::empty_like(phase)),
        partial(at::empty({2, kFreqTile}, options)) {}

  // A contiguous (rows, cols) view over the front of a flat buffer.
  static at::Tensor tile(const at::Tensor& flat, int64_t rows, int64_t cols) {
    return flat.narrow(0, 0, rows * cols).view({rows, cols});
  }

  at::Tensor gather(const at::Tensor& x, const at::Tensor& perm, const RowTile& tile_rows) {
    at::Tensor out = rows.narrow(0, 0, tile_rows.rows);
    at::index_select_out(out, x, 0, perm.narrow(0, tile_rows.begin, tile_rows.rows));
    return out;
  }

  at::Tensor phases(const at::Tensor& x_tile, const at::Tensor& t_tile) {
    at::Tensor p = tile(phase, x_tile.size(0), t_tile.size(0));
    at::mm_out(p, x_tile, t_tile.t());
    return p;
  }

  // Generic path (float64, or float32 with a phase beyond kMaxFastPhase): ATen's sin and cos.
  void aten_trig(const at::Tensor& p) {
    const int64_t r = p.size(0), f = p.size(1);
    at::Tensor c = tile(cosine, r, f), s = tile(sine, r, f);
    at::cos_out(c, p);
    at::sin_out(s, p);
  }

  // sum_cos += column sums of cos(x t^T), sum_sin likewise (both (f,), zero on first use).
  void add_column_sums(const at::Tensor& x_tile, const at::Tensor& t_tile, at::Tensor& sum_cos, at::Tensor& sum_sin) {
    const at::Tensor p = phases(x_tile, t_tile);
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
  at::Tensor grad_weight(const at::Tensor& x_tile, const at::Tensor& t_tile, const at::Tensor& g_re, const at::Tensor& g_im) {
    const at::Tensor p = phases(x_tile, t_tile);
    const int64_t r = p.size(0), f = p.size(1);
    at::Tensor w = tile(weight, r, f);
    if (p.scalar_type() == at::kFloat &&
        sincos_weight(p.data_ptr<float>(), r, f, g_re.data_ptr<float>(), g_im.data_ptr<float>(), w.data_ptr<float>())) {
      return w;
    }
    aten_trig(p);
    at::mul_out(w, tile(cosine, r, f), g_im);
    w.addcmul_(tile(sine, r, f), g_re, -1);
    return w;
  }
};

// perm must be a permutation of 0..N-1: an O(N) scan with an N-byte table, negligible next to
// the O(N M d) work. A repeated row would count one row twice in the sums and let two threads
// write the same row of dx; index_select would catch a row out of range too, but with a
// message that names neither perm nor the entry.
void check_perm(const at::Tensor& perm, int64_t num_rows) {
  const auto rows = perm.accessor<int64_t, 1>();
  std::vector<uint8_t> seen(static_cast<size_t>(num_rows), 0);
  for (int64_t i = 0; i < num_rows; ++i) {
    const int64_t row = rows[i];
    TORCH_CHECK_VALUE(row >= 0 && row < num_rows, "spectral_kernels: perm must hold row numbers in [0, N=", num_rows,
                      "), got perm[", i, "]=", row);
    if (seen[row]) {
      int64_t earlier = 0;
      while (rows[earlier] != row) ++earlier;
      TORCH_CHECK_VALUE(false, "spectral_kernels: perm must be a permutation of 0..N-1, but perm[", earlier, "] = perm[", i,
                        "] = ", row);
    }
    seen[row] = 1;
  }
}

struct Prepared {
  at::Tensor x, t, perm, offsets;
  std::vector<RowTile> tiles;
  int64_t num_classes, num_freqs, dim;
};

Prepared prepare(const at::Tensor& x, const at::Tensor& t, const at::Tensor& perm, const at::Tensor& offsets) {
  check_inputs(x, t, perm, offsets);
  // The kernels compute on plain data: detaching keeps the ATen calls inside them out of
  // autograd even when the caller's tensors require grad (the gradient ops are not themselves
  // differentiated).
  Prepared prep{x.detach().contiguous(), t.detach().contiguous(), perm.contiguous(), offsets.contiguous(), {},
                offsets.size(0) - 1, t.size(0), x.size(1)};
  check_offsets(prep.offsets, x.size(0));
  check_perm(prep.perm, x.size(0));
  prep.tiles = row_tiles(prep.offsets);
  return prep;
}

at::Tensor check_grad(const at::Tensor& grad, const Prepared& prep) {
  TORCH_CHECK_VALUE(grad.dim() == 3 && grad.size(0) == prep.num_classes && grad.size(1) == 2 &&
                        grad.size(2) == prep.num_freqs,
                    "spectral_kernels: grad must have shape (", prep.num_classes, ", 2, ", prep.num_freqs, "), got ",
                    grad.sizes());
  return grad.detach().to(prep.x.scalar_type()).contiguous();
}

// Forward and grad_t share one walk: each thread owns a contiguous range of frequency tiles,
// gathers every row tile once and calls fn(scratch, row_tile, x_tile, m0, f) per frequency tile.
template <typename TileFn>
void walk_frequency_tiles(const Prepared& prep, TileFn&& fn) {
  at::parallel_for(0, ceil_div(prep.num_freqs, kFreqTile), 1, [&](int64_t ft_begin, int64_t ft_end) {
    Scratch scratch(prep.dim, prep.x.options());
    for (const RowTile& rt : prep.tiles) {
      const at::Tensor x_tile = scratch.gather(prep.x, prep.perm, rt);
      for (int64_t ft = ft_begin; ft < ft_end; ++ft) {
        const int64_t m0 = ft * kFreqTile;
        fn(scratch, rt, x_tile, m0, std::min(kFreqTile, prep.num_freqs - m0));
      }
    }
  });
}

at::Tensor ecf_sums_cpu(const at::Tensor& x_in, const at::Tensor& t_in, const at::Tensor& perm_in,
                        const at::Tensor& offsets_in) {
  const Prepared prep = prepare(x_in, t_in, perm_in, offsets_in);
  at::Tensor out = at::zeros({prep.num_classes, 2, prep.num_freqs}, prep.x.options());
  walk_frequency_tiles(prep, [&](Scratch& scratch, const RowTile& rt, const at::Tensor& x_tile, int64_t m0, int64_t f) {
    at::Tensor sum_cos = out[rt.cls][0].narrow(0, m0, f), sum_sin = out[rt.cls][1].narrow(0, m0, f);
    scratch.add_column_sums(x_tile, prep.t.narrow(0, m0, f), sum_cos, sum_sin);
  });
  return out;
}

at::Tensor ecf_sums_grad_t_cpu(const at::Tensor& grad_in, const at::Tensor& x_in, const at::Tensor& t_in,
                               const at::Tensor& perm_in, const at::Tensor& offsets_in) {
  const Prepared prep = prepare(x_in, t_in, perm_in, offsets_in);
  const at::Tensor grad = check_grad(grad_in, prep);
  at::Tensor dt = at::zeros({prep.num_freqs, prep.dim}, prep.x.options());
  walk_frequency_tiles(prep, [&](Scratch& scratch, const RowTile& rt, const at::Tensor& x_tile, int64_t m0, int64_t f) {
    const at::Tensor w = scratch.grad_weight(x_tile, prep.t.narrow(0, m0, f), grad[rt.cls][0].narrow(0, m0, f),
                                             grad[rt.cls][1].narrow(0, m0, f));
    at::Tensor dt_tile = dt.narrow(0, m0, f);
    dt_tile.addmm_(w.t(), x_tile);
  });
  return dt;
}

at::Tensor ecf_sums_grad_x_cpu(const at::Tensor& grad_in, const at::Tensor& x_in, const at::Tensor& t_in,
                               const at::Tensor& perm_in, const at::Tensor& offsets_in) {
  const Prepared prep = prepare(x_in, t_in, perm_in, offsets_in);
  const at::Tensor grad = check_grad(grad_in, prep);
  at::Tensor dx = at::zeros({prep.x.size(0), prep.dim}, prep.x.options());
  const int64_t num_row_tiles = static_cast<int64_t>(prep.tiles.size());
  at::parallel_for(0, num_row_tiles, 1, [&](int64_t rt_begin, int64_t rt_end) {
    Scratch scratch(prep.dim, prep.x.options());
    at::Tensor acc = at::empty({kRowTile, prep.dim}, prep.x.options());
    for (int64_t i = rt_begin; i < rt_end; ++i) {
      const RowTile& rt = prep.tiles[i];
      const at::Tensor x_tile = scratch.gather(prep.x, prep.perm, rt);
      at::Tensor acc_tile = acc.narrow(0, 0, rt.rows);
      acc_tile.zero_();
      for (int64_t m0 = 0; m0 < prep.num_freqs; m0 += kFreqTile) {
        const int64_t f = std::min(kFreqTile, prep.num_freqs - m0);
        const at::Tensor t_tile = prep.t.narrow(0, m0, f);
        const at::Tensor w = scratch.grad_weight(x_tile, t_tile, grad[rt.cls][0].narrow(0, m0, f),
                                                 grad[rt.cls][1].narrow(0, m0, f));
        acc_tile.addmm_(w, t_tile);
      }
      // Rows of different tiles are disjoint (perm is a permutation), so threads never collide.
      dx.index_copy_(0, prep.perm.narrow(0, rt.begin, rt.rows), acc_tile);
    }
  });
  return dx;
}

}  // namespace

TORCH_LIBRARY_IMPL(spectral_kernels, CPU, m) {
  m.impl("ecf_sums", &ecf_sums_cpu);
  m.impl("ecf_sums_grad_x", &ecf_sums_grad_x_cpu);
  m.impl("ecf_sums_grad_t", &ecf_sums_grad_t_cpu);
}

}  // namespace spectral_kernels
