// Fused CPU kernels for the per-class ECF sums at structured orthogonal frequencies (SORF, Yu et
// al., NeurIPS 2016), never materialising t: frequency j of block b is
//     t_{bj} = radii[b, j] / D^{3/2} * (H D1 H D2 H D3)[j, :d]
// with H the D x D Walsh-Hadamard matrix (entries +-1, D a power of two >= d) and D1, D2, D3 the
// random sign diagonals signs[b, 0..2]. So the phases of one block are three fast Walsh-Hadamard
// transforms of each zero-padded row x~ (O(D log D) per row instead of O(D d)):
//     p_b = radii[b] / D^{3/2} * H D1 H D2 H D3 x~
// then the shared sin/cos (ecf_math.h) and per-class sums. The block b covers frequencies
// [b D, b D + D), the last one cut at num_freqs. The backward for x runs the transposed chain:
// dx~ = D3 H D2 H D1 H (radii[b] / D^{3/2} * W_b), W of SPEC §1; the signs and radii are
// samples, not parameters, so they get no gradient.
//
// Layout. Rows are taken kSub at a time and held transposed, as a D x kSub panel v (frequency
// or coordinate k of row r at v[k * kSub + r]): every butterfly then combines whole panel rows
// of kSub contiguous values, a plain vector loop whatever the stride, and a frequency's sum over
// rows is a sum along one panel row, so the result is never transposed back. At D = 2048 a
// float32 panel is 512 KiB and stays in L2 through the transforms. Each pass over the panel
// does three butterfly stages at once (radix 8: eight panel rows held in registers), so a
// transform of width 2048 reads and writes the panel 4 times instead of 11; the sign diagonals
// and the radii are applied inside the passes that read the panel anyway.
//
// Parallelism: the forward runs the blocks in turn and the row tiles (cpu::row_tiles) of each
// in parallel, in waves whose per-tile partial sums are added in tile order; the backward splits
// row tiles (disjoint rows of dx). No atomics: bitwise reproducible whatever the thread count.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <type_traits>
#include <vector>

#include "../ecf_checks.h"
#include "tiles.h"

namespace spectral_kernels {
namespace {

using math::ItemRows;

// Rows per panel. A multiple of the lane groups below; 64 keeps a D = 2048 float32 panel in L2.
constexpr int64_t kSub = 64;

// Values of one panel row handled as one vector: a 64-byte line. GCC's vector extension lowers it
// to one AVX-512 register, two AVX2 ones or four SSE ones, whichever clone runs.
template <typename T>
struct Line;
template <>
struct Line<float> {
  typedef float type __attribute__((vector_size(64)));
};
template <>
struct Line<double> {
  typedef double type __attribute__((vector_size(64)));
};
template <typename T>
constexpr int kLanes = 64 / sizeof(T);
static_assert(kSub % kLanes<float> == 0 && kSub % kLanes<double> == 0);

// GCC warns that returning a 64-byte vector changes the ABI where AVX-512 is off; these two are
// always inlined into the functions that use them, so no call ever crosses that ABI.
#pragma GCC diagnostic ignored "-Wpsabi"
template <typename T>
__attribute__((always_inline)) inline typename Line<T>::type load_line(const T* p) {
  typename Line<T>::type v;
  std::memcpy(&v, p, sizeof(v));  // an unaligned vector load
  return v;
}

template <typename T>
__attribute__((always_inline)) inline void store_line(T* p, const typename Line<T>::type& v) {
  std::memcpy(p, &v, sizeof(v));
}

// One pass of the fast Walsh-Hadamard transform along the panel's rows (n rows of kSub values):
// the stages of stride h, 2h, ..., 2^(LOG-1) h at once, on groups of 2^LOG rows j + q h held in
// registers. Each row is first multiplied by pre[row] when pre is given (a sign diagonal), so
// that multiply costs no pass of its own. The stages commute (each acts on one bit of the row
// index), so grouping them gives the same H as the textbook one-stage-at-a-time loop.
template <typename T, int LOG>
SK_CLONES void fwht_pass(T* v, int64_t n, int64_t h, const T* pre) {
  using V = typename Line<T>::type;
  constexpr int R = 1 << LOG;
  for (int64_t start = 0; start < n; start += R * h) {
    for (int64_t j = start; j < start + h; ++j) {
      T scale[R];
      for (int q = 0; q < R; ++q) scale[q] = pre ? pre[j + q * h] : T(1);
      for (int64_t k0 = 0; k0 < kSub; k0 += kLanes<T>) {
        V b[R];
        for (int q = 0; q < R; ++q) b[q] = load_line(v + (j + q * h) * kSub + k0) * scale[q];
        for (int m = 1; m < R; m *= 2) {
          for (int q = 0; q < R; ++q) {
            if (q & m) continue;
            const V x = b[q], y = b[q + m];
            b[q] = x + y;
            b[q + m] = x - y;
          }
        }
        for (int q = 0; q < R; ++q) store_line(v + (j + q * h) * kSub + k0, b[q]);
      }
    }
  }
}

// v <- H diag(pre) v along the panel's n rows (n a power of two): radix-8 passes, one of radix 2
// or 4 for what is left; pre (or nothing) is applied in the first pass.
template <typename T>
void fwht(T* v, int64_t n, const T* pre) {
  int64_t h = 1;
  while (h * 8 <= n) {
    fwht_pass<T, 3>(v, n, h, pre);
    pre = nullptr;
    h *= 8;
  }
  if (h * 4 <= n) {
    fwht_pass<T, 2>(v, n, h, pre);
  } else if (h * 2 <= n) {
    fwht_pass<T, 1>(v, n, h, pre);
  } else if (pre) {  // n == 1: H is the identity
    for (int64_t k = 0; k < kSub; ++k) v[k] *= pre[0];
  }
}

struct Structured {
  at::Tensor x, signs, radii, perm, offsets;
  std::vector<ItemRows> tiles;
  int64_t num_classes, num_freqs, dim, width, blocks;
};

Structured prepare(const at::Tensor& x, const at::Tensor& signs, const at::Tensor& radii, const at::Tensor& perm,
                   const at::Tensor& offsets, int64_t num_freqs) {
  // The whole contract, values of the signs and radii included, lives in ecf_checks.h.
  const OpShape shape = check_sorf_inputs(x, signs, radii, perm, offsets, num_freqs, c10::DeviceType::CPU, "cpu");
  const int64_t blocks = signs.size(0), width = signs.size(2);
  Structured s{x.detach().contiguous(),
               signs.detach().contiguous(),
               radii.detach().contiguous(),
               perm.contiguous(),
               offsets.contiguous(),
               {},
               shape.num_classes,
               num_freqs,
               shape.dim,
               width,
               blocks};
  check_layout_values(s.perm, s.offsets, shape.num_rows);
  s.tiles = cpu::row_tiles(s.offsets);
  return s;
}

// Typed views of one call's inputs, and the panel operations on them.
template <typename T>
struct Kernel {
  const T* x;
  const T* signs;  // (B, 3, D)
  const T* radii;  // (B, D)
  const int64_t* perm;
  int64_t dim, width, num_freqs;
  T scale;  // D^{-3/2}

  explicit Kernel(const Structured& s)
      : x(s.x.data_ptr<T>()),
        signs(s.signs.data_ptr<T>()),
        radii(s.radii.data_ptr<T>()),
        perm(s.perm.data_ptr<int64_t>()),
        dim(s.dim),
        width(s.width),
        num_freqs(s.num_freqs),
        scale(static_cast<T>(1.0 / std::pow(static_cast<double>(s.width), 1.5))) {}

  const T* sign(int64_t b, int k) const { return signs + (b * 3 + k) * width; }
  int64_t cols(int64_t b) const { return std::min(width, num_freqs - b * width); }  // frequencies of block b

  // panel (at least dim x kSub) <- the rows perm[begin, begin + rows) of x, transposed, in 16 x 16
  // blocks so that both the reads and the writes run along lines; then zero from panel row dim
  // up to `fill` (the padding of x~ to D), and columns past `rows` are zero too (their phases
  // are then 0: finite, and masked wherever sums are taken).
  void gather(T* panel, int64_t begin, int64_t rows, int64_t fill) const {
    constexpr int B = 16;
    static_assert(kSub % B == 0);
    for (int64_t r0 = 0; r0 < kSub; r0 += B) {
      const T* src[B];
      for (int i = 0; i < B; ++i) src[i] = r0 + i < rows ? x + perm[begin + r0 + i] * dim : nullptr;
      for (int64_t k0 = 0; k0 < dim; k0 += B) {
        const int64_t count = std::min<int64_t>(B, dim - k0);
        T block[B][B];
        for (int i = 0; i < B; ++i) {
          for (int64_t c = 0; c < count; ++c) block[c][i] = src[i] ? src[i][k0 + c] : T(0);
        }
        for (int64_t c = 0; c < count; ++c) std::memcpy(panel + (k0 + c) * kSub + r0, block[c], sizeof(block[c]));
      }
    }
    std::fill(panel + dim * kSub, panel + fill * kSub, T(0));
  }

  // The transposed write back: dx rows perm[begin, begin + rows) <- the first `rows` columns of
  // the panel (dim x kSub).
  void scatter(const T* panel, int64_t begin, int64_t rows, T* dx) const {
    constexpr int B = 16;
    for (int64_t r0 = 0; r0 < rows; r0 += B) {
      const int64_t count_r = std::min<int64_t>(B, rows - r0);
      for (int64_t k0 = 0; k0 < dim; k0 += B) {
        const int64_t count = std::min<int64_t>(B, dim - k0);
        T block[B][B];
        for (int64_t c = 0; c < count; ++c) std::memcpy(block[c], panel + (k0 + c) * kSub + r0, sizeof(block[c]));
        for (int64_t i = 0; i < count_r; ++i) {
          T* dst = dx + perm[begin + r0 + i] * dim + k0;
          for (int64_t c = 0; c < count; ++c) dst[c] = block[c][i];
        }
      }
    }
  }

  // v (width x kSub), holding x~ of the panel's rows, <- the phases of block b except the radii
  // and D^{-3/2}: H D1 H D2 H D3 x~. The radii are applied where the phases are used.
  void unscaled_phases(T* v, int64_t b) const {
    fwht(v, width, sign(b, 2));
    fwht(v, width, sign(b, 1));
    fwht(v, width, sign(b, 0));
  }
};

// cos_out[j] = sum_{r < rows} cos(radius_j v[j, r]) and likewise for sin, for the first `cols`
// panel rows, radius_j = radii[j] * scale. Returns false if a phase lies beyond
// math::kMaxFastPhase: the caller then discards them and takes the full-range routine. A panel row's
// values are summed in a fixed tree (four lines, then the lanes in order): the same bits on
// every machine and thread count.
SK_CLONES bool panel_sums_fast(const float* v, int64_t cols, int64_t rows, const float* radii, float scale,
                               float* cos_out, float* sin_out) {
  using V = Line<float>::type;
  constexpr int L = kLanes<float>;
  float cosines[kSub], sines[kSub];
  int big = 0;
  for (int64_t j = 0; j < cols; ++j) {
    const float radius = radii[j] * scale;
    const float* row = v + j * kSub;
    for (int64_t r = 0; r < kSub; ++r) {  // the loop GCC vectorises: sincos_reduced is branch-free
      const float p = row[r] * radius;
      math::sincos_reduced(p, sines[r], cosines[r]);
      big |= !math::in_fast_range(p);
    }
    for (int64_t r = rows; r < kSub; ++r) cosines[r] = sines[r] = 0.0f;  // the panel's empty columns
    V c = load_line(cosines), s = load_line(sines);
    for (int64_t r0 = L; r0 < kSub; r0 += L) {
      c += load_line(cosines + r0);
      s += load_line(sines + r0);
    }
    float c_total = 0.0f, s_total = 0.0f;
    for (int l = 0; l < L; ++l) {
      c_total += c[l];
      s_total += s[l];
    }
    cos_out[j] = c_total;
    sin_out[j] = s_total;
  }
  return big == 0;
}

// The same with the full-range sin and cos (float64 always; float32 beyond the fast range).
template <typename T>
void panel_sums_full(const T* v, int64_t cols, int64_t rows, const T* radii, T scale, T* sum_cos, T* sum_sin) {
  for (int64_t j = 0; j < cols; ++j) {
    const T radius = radii[j] * scale;
    T c_total = 0, s_total = 0;
    for (int64_t r = 0; r < rows; ++r) {
      T s, c;
      math::sincos_full(v[j * kSub + r] * radius, s, c);
      c_total += c;
      s_total += s;
    }
    sum_cos[j] += c_total;
    sum_sin[j] += s_total;
  }
}

// sum_cos[j] += sum_{r < rows} cos(radius_j v[j, r]), sum_sin likewise; `scratch`: 2 * cols values.
template <typename T>
void panel_sums(const T* v, int64_t cols, int64_t rows, const T* radii, T scale, T* sum_cos, T* sum_sin, T* scratch) {
  if constexpr (std::is_same_v<T, float>) {
    if (panel_sums_fast(v, cols, rows, radii, scale, scratch, scratch + cols)) {
      for (int64_t j = 0; j < cols; ++j) {
        sum_cos[j] += scratch[j];
        sum_sin[j] += scratch[cols + j];
      }
      return;
    }
  }
  panel_sums_full(v, cols, rows, radii, scale, sum_cos, sum_sin);
}

// w[j, :] <- radius_j W[j, :] from the phases' panel v, for the first `cols` panel rows (W of
// SPEC §1 from the class's G rows g_re, g_im), 0 for the cut frequencies after them: what the
// transposed chain starts from. Returns false if a phase lies beyond math::kMaxFastPhase.
SK_CLONES bool panel_weight_fast(const float* v, int64_t cols, const float* radii, float scale, const float* g_re,
                                 const float* g_im, float* w) {
  int big = 0;
  for (int64_t j = 0; j < cols; ++j) {
    const float radius = radii[j] * scale, re = g_re[j], im = g_im[j];
    const float* row = v + j * kSub;
    float* out = w + j * kSub;
    for (int64_t r = 0; r < kSub; ++r) {
      const float p = row[r] * radius;
      float s, c;
      math::sincos_reduced(p, s, c);
      out[r] = radius * math::grad_weight(re, im, s, c);
      big |= !math::in_fast_range(p);
    }
  }
  return big == 0;
}

template <typename T>
void panel_weight(const T* v, int64_t cols, int64_t width, const T* radii, T scale, const T* g_re, const T* g_im,
                  T* w) {
  bool done = false;
  if constexpr (std::is_same_v<T, float>) done = panel_weight_fast(v, cols, radii, scale, g_re, g_im, w);
  if (!done) {
    for (int64_t j = 0; j < cols; ++j) {
      const T radius = radii[j] * scale;
      for (int64_t r = 0; r < kSub; ++r) {
        T s, c;
        math::sincos_full(v[j * kSub + r] * radius, s, c);
        w[j * kSub + r] = radius * math::grad_weight(g_re[j], g_im[j], s, c);
      }
    }
  }
  std::fill(w + cols * kSub, w + width * kSub, T(0));
}

// Per-thread panels, made on a thread's first work item and kept for the whole call.
template <typename T>
struct Panels {
  // gathered rows (d x kSub); the phases' panel and the transposed chain's (D x kSub); dx~ (d x kSub);
  // one panel's sums (2 x D)
  std::vector<T> xt, v, w, acc, sums;
  Panels(int64_t dim, int64_t width)
      : xt(dim * kSub), v(width * kSub), w(width * kSub), acc(dim * kSub), sums(2 * width) {}
};

template <typename T>
class PerThread {
 public:
  PerThread(int64_t dim, int64_t width) : dim_(dim), width_(width), slots_(at::get_num_threads()) {}
  Panels<T>& get() {  // each thread touches only its own slot
    auto& slot = slots_.at(at::get_thread_num());
    if (!slot) slot = std::make_unique<Panels<T>>(dim_, width_);
    return *slot;
  }

 private:
  int64_t dim_, width_;
  std::vector<std::unique_ptr<Panels<T>>> slots_;
};

// Row tiles per wave of the forward: their partial sums (2 x D each) are kept until the wave is
// added to the output in tile order, so memory stays bounded and the result does not depend on
// the thread count.
constexpr int64_t kWave = 64;

template <typename T>
void forward(const Structured& s, at::Tensor& out) {
  const Kernel<T> k(s);
  const int64_t num_tiles = static_cast<int64_t>(s.tiles.size());
  PerThread<T> panels(s.dim, s.width);
  std::vector<T> partial(std::min(kWave, num_tiles) * 2 * s.width);
  T* result = out.data_ptr<T>();  // (C, 2, M), zero
  // Blocks one after the other, the row tiles of each in parallel: a block is one transform of
  // width D, so a call with fewer blocks than threads (M <= D is the common case) still keeps
  // every thread busy.
  for (int64_t b = 0; b < s.blocks; ++b) {
    const int64_t cols = k.cols(b);
    const T* radii = s.radii.data_ptr<T>() + b * s.width;
    for (int64_t w0 = 0; w0 < num_tiles; w0 += kWave) {
      const int64_t w1 = std::min(num_tiles, w0 + kWave);
      at::parallel_for(w0, w1, 1, [&](int64_t i_begin, int64_t i_end) {
        Panels<T>& own = panels.get();
        for (int64_t i = i_begin; i < i_end; ++i) {
          T* sums = partial.data() + (i - w0) * 2 * s.width;
          std::fill(sums, sums + 2 * s.width, T(0));
          const ItemRows& tile = s.tiles[i];
          for (int64_t r0 = tile.begin; r0 < tile.end; r0 += kSub) {
            const int64_t rows = std::min(kSub, tile.end - r0);
            k.gather(own.v.data(), r0, rows, s.width);
            k.unscaled_phases(own.v.data(), b);
            panel_sums(own.v.data(), cols, rows, radii, k.scale, sums, sums + s.width, own.sums.data());
          }
        }
      });
      for (int64_t i = w0; i < w1; ++i) {  // in tile order
        const T* sums = partial.data() + (i - w0) * 2 * s.width;
        T* dst = result + s.tiles[i].cls * 2 * s.num_freqs + b * s.width;
        for (int64_t j = 0; j < cols; ++j) {
          dst[j] += sums[j];
          dst[s.num_freqs + j] += sums[s.width + j];
        }
      }
    }
  }
}

template <typename T>
void backward(const Structured& s, const at::Tensor& grad, at::Tensor& dx_out) {
  const Kernel<T> k(s);
  const T* g = grad.data_ptr<T>();  // (C, 2, M), contiguous
  T* dx = dx_out.data_ptr<T>();
  PerThread<T> panels(s.dim, s.width);
  at::parallel_for(0, static_cast<int64_t>(s.tiles.size()), 1, [&](int64_t t_begin, int64_t t_end) {
    Panels<T>& own = panels.get();
    T* v = own.v.data();
    T* w = own.w.data();
    T* acc = own.acc.data();
    for (int64_t i = t_begin; i < t_end; ++i) {
      const ItemRows& tile = s.tiles[i];
      const T* g_re = g + tile.cls * 2 * s.num_freqs;
      const T* g_im = g_re + s.num_freqs;
      for (int64_t r0 = tile.begin; r0 < tile.end; r0 += kSub) {
        const int64_t rows = std::min(kSub, tile.end - r0);
        k.gather(own.xt.data(), r0, rows, s.dim);
        std::fill(acc, acc + s.dim * kSub, T(0));
        for (int64_t b = 0; b < s.blocks; ++b) {
          const T* radii = s.radii.data_ptr<T>() + b * s.width;
          std::copy(own.xt.begin(), own.xt.end(), v);
          std::fill(v + s.dim * kSub, v + s.width * kSub, T(0));
          k.unscaled_phases(v, b);
          panel_weight(v, k.cols(b), s.width, radii, k.scale, g_re + b * s.width, g_im + b * s.width, w);
          // dx~ = D3 H D2 H D1 H u: each sign diagonal rides on the next transform's first pass.
          fwht(w, s.width, static_cast<const T*>(nullptr));
          fwht(w, s.width, k.sign(b, 0));
          fwht(w, s.width, k.sign(b, 1));
          const T* d3 = k.sign(b, 2);
          for (int64_t c = 0; c < s.dim; ++c) {
            for (int64_t r = 0; r < kSub; ++r) acc[c * kSub + r] += d3[c] * w[c * kSub + r];
          }
        }
        // Rows of different tiles are disjoint (perm is a permutation), so threads never collide.
        k.scatter(acc, r0, rows, dx);
      }
    }
  });
}

at::Tensor hadamard_sums_cpu(const at::Tensor& x, const at::Tensor& signs, const at::Tensor& radii,
                             const at::Tensor& perm, const at::Tensor& offsets, int64_t num_freqs) {
  const Structured s = prepare(x, signs, radii, perm, offsets, num_freqs);
  at::Tensor out = at::zeros({s.num_classes, 2, s.num_freqs}, s.x.options());
  if (s.tiles.empty()) return out;
  if (s.x.scalar_type() == at::kFloat) {
    forward<float>(s, out);
  } else {
    forward<double>(s, out);
  }
  return out;
}

at::Tensor hadamard_sums_grad_x_cpu(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& signs,
                                    const at::Tensor& radii, const at::Tensor& perm, const at::Tensor& offsets,
                                    int64_t num_freqs) {
  const Structured s = prepare(x, signs, radii, perm, offsets, num_freqs);
  check_grad(grad, s.x, {s.x.size(0), s.num_freqs, s.dim, s.num_classes});
  // Every row of dx is written: the tiles cover every perm position, and perm is a permutation.
  at::Tensor dx = at::empty({s.x.size(0), s.dim}, s.x.options());
  if (s.tiles.empty()) return dx;
  const at::Tensor g = grad.detach().to(s.x.scalar_type()).contiguous();
  if (s.x.scalar_type() == at::kFloat) {
    backward<float>(s, g, dx);
  } else {
    backward<double>(s, g, dx);
  }
  return dx;
}

}  // namespace

TORCH_LIBRARY_IMPL(spectral_kernels, CPU, m) {
  m.impl("hadamard_sums", &hadamard_sums_cpu);
  m.impl("hadamard_sums_grad_x", &hadamard_sums_grad_x_cpu);
}

}  // namespace spectral_kernels
