// Fused CPU kernels for the per-class ECF sums at structured orthogonal frequencies (SORF, Yu et
// al., NeurIPS 2016), never materialising t: frequency j of block b is
//     t_{bj} = radii[b, j] / D^{3/2} * (H D1 H D2 H D3)[j, :d]
// with H the D x D Walsh-Hadamard matrix (entries +-1, D a power of two >= d) and D1, D2, D3 the
// random sign diagonals signs[b, 0..2]. So the phases of one block are three fast Walsh-Hadamard
// transforms of each zero-padded row x~ (O(D log D) per row instead of O(D d)):
//     p_b = radii[b] / D^{3/2} * H D1 H D2 H D3 x~
// then the same sin/cos epilogue and per-class sums as the dense kernels (tiles.h). The block
// b covers frequencies [b D, b D + D), the last one cut at num_freqs. The backward for x runs the
// transposed chain: dx~ = D3 H D2 H D1 H (radii[b] / D^{3/2} * W_b), W of SPEC §1; the signs and
// radii are samples, not parameters, so they get no gradient.
//
// Parallelism: the forward runs the blocks in turn and the row tiles of each in parallel (waves
// of tiles whose partial sums are added in tile order), the backward splits row tiles (rows of
// dx); no atomics, bitwise reproducible whatever the thread count.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <vector>

#include "../ecf_checks.h"
#include "tiles.h"

namespace spectral_kernels {
namespace {

using cpu::kRowTile;
using cpu::Scratch;
using math::ItemRows;

// In place, along the first dimension of v (n x len, row-major, n a power of two): each column
// v[:, k] <- H v[:, k], H the unnormalised +-1 matrix. The tiles are transposed before they get
// here so that every butterfly combines two contiguous rows of `len` values: the inner loop is
// a plain vector loop for every stride h (a row-wise butterfly at h = 1, 2, 4, 8 is not). The
// small strides run chunk by chunk (32 rows of len values stay in L1), the large ones over v.
template <typename T>
SK_CLONES void fwht_columns(T* v, int64_t n, int64_t len) {
  auto butterflies = [&](int64_t begin, int64_t end, int64_t h) {
    for (int64_t start = begin; start < end; start += 2 * h) {
      for (int64_t j = start; j < start + h; ++j) {
        T* a = v + j * len;
        T* b = v + (j + h) * len;
        for (int64_t k = 0; k < len; ++k) {
          const T x = a[k], y = b[k];
          a[k] = x + y;
          b[k] = x - y;
        }
      }
    }
  };
  const int64_t chunk = std::min<int64_t>(n, 32);
  for (int64_t c = 0; c < n; c += chunk) {
    for (int64_t h = 1; h < chunk; h *= 2) butterflies(c, c + chunk, h);
  }
  for (int64_t h = chunk; h < n; h *= 2) butterflies(0, n, h);
}

void fwht(at::Tensor& v) {  // v: a contiguous (n, len) buffer, transformed along dim 0
  if (v.scalar_type() == at::kFloat) {
    fwht_columns(v.data_ptr<float>(), v.size(0), v.size(1));
  } else {
    fwht_columns(v.data_ptr<double>(), v.size(0), v.size(1));
  }
}

struct Structured {
  at::Tensor x, signs, radii, perm, offsets;
  std::vector<ItemRows> tiles;
  int64_t num_classes, num_freqs, dim, width, blocks;
};

Structured prepare(const at::Tensor& x, const at::Tensor& signs, const at::Tensor& radii, const at::Tensor& perm,
                   const at::Tensor& offsets, int64_t num_freqs) {
  TORCH_CHECK_VALUE(signs.dim() == 3 && signs.size(1) == 3 && signs.size(0) >= 1,
                    "spectral_kernels: signs must have shape (B, 3, D), got ", signs.sizes());
  const int64_t blocks = signs.size(0), width = signs.size(2);
  TORCH_CHECK_VALUE(width >= 1 && (width & (width - 1)) == 0, "spectral_kernels: the block width D must be a power of two, got ", width);
  TORCH_CHECK_VALUE(radii.dim() == 2 && radii.size(0) == blocks && radii.size(1) == width,
                    "spectral_kernels: radii must have shape (", blocks, ", ", width, "), got ", radii.sizes());
  TORCH_CHECK_VALUE(num_freqs > (blocks - 1) * width && num_freqs <= blocks * width, "spectral_kernels: num_freqs=", num_freqs,
                    " does not fit ", blocks, " blocks of ", width, " (it must lie in (", (blocks - 1) * width, ", ",
                    blocks * width, "])");
  // x against a stand-in t of shape (M, d): the same contract and messages as the dense ops.
  const OpShape shape = check_op_inputs(x, radii.new_empty({num_freqs, x.dim() == 2 ? x.size(1) : 0}), perm, offsets,
                                        c10::DeviceType::CPU, "cpu", /*half_ok=*/false);
  TORCH_CHECK_VALUE(width >= shape.dim, "spectral_kernels: the block width D=", width, " must be >= d=", shape.dim);
  for (const auto* tensor : {&signs, &radii}) {
    TORCH_CHECK_TYPE(tensor->scalar_type() == x.scalar_type(), "spectral_kernels: signs and radii must have x's dtype ",
                     x.scalar_type(), ", got ", tensor->scalar_type());
    TORCH_CHECK_VALUE(tensor->device().is_cpu(), "spectral_kernels (cpu): signs and radii must be on the CPU");
  }
  Structured s{x.detach().contiguous(), signs.detach().contiguous(), radii.detach().contiguous(), perm.contiguous(),
               offsets.contiguous(), {}, shape.num_classes, num_freqs, shape.dim, width, blocks};
  check_layout_values(s.perm, s.offsets, shape.num_rows);
  s.tiles = cpu::row_tiles(s.offsets);
  return s;
}

// The phases of block b for one gathered row tile: `tile` (rows x D, zero-padded rows of x)
// becomes p_b in place, by way of `work` (flat, D * kRowTile), where the chain runs transposed.
void block_phases(const Structured& s, int64_t b, at::Tensor& tile, at::Tensor& work) {
  const double scale = 1.0 / std::pow(static_cast<double>(s.width), 1.5);
  at::Tensor v = work.narrow(0, 0, s.width * tile.size(0)).view({s.width, tile.size(0)});
  v.copy_(tile.t());
  v.mul_(s.signs[b][2].unsqueeze(1));
  fwht(v);
  v.mul_(s.signs[b][1].unsqueeze(1));
  fwht(v);
  v.mul_(s.signs[b][0].unsqueeze(1));
  fwht(v);
  v.mul_((s.radii[b] * scale).unsqueeze(1));
  tile.copy_(v.t());
}

// The transposed chain: u (rows x D, the block's W) becomes dx~ in place, by way of `work`.
void block_transpose(const Structured& s, int64_t b, at::Tensor& u, at::Tensor& work) {
  const double scale = 1.0 / std::pow(static_cast<double>(s.width), 1.5);
  at::Tensor v = work.narrow(0, 0, s.width * u.size(0)).view({s.width, u.size(0)});
  v.copy_(u.t());
  v.mul_((s.radii[b] * scale).unsqueeze(1));
  fwht(v);
  v.mul_(s.signs[b][0].unsqueeze(1));
  fwht(v);
  v.mul_(s.signs[b][1].unsqueeze(1));
  fwht(v);
  v.mul_(s.signs[b][2].unsqueeze(1));
  u.copy_(v.t());
}

// Gathered rows of one tile, zero-padded to D columns, in the scratch's row buffer.
at::Tensor padded_rows(const Structured& s, Scratch& scratch, const ItemRows& rt) {
  const int64_t rows = rt.end - rt.begin;
  at::Tensor tile = scratch.rows.narrow(0, 0, rows);
  tile.zero_();
  tile.narrow(1, 0, s.dim).copy_(s.x.index_select(0, s.perm.narrow(0, rt.begin, rows)));
  return tile;
}

// Per-thread buffers, made on a thread's first work item and kept for the whole call.
struct ThreadBuffers {
  Scratch scratch;
  at::Tensor work;  // the transposed chain's buffer, D * kRowTile
  ThreadBuffers(int64_t width, const at::TensorOptions& options)
      : scratch(width, options, width), work(at::empty({width * kRowTile}, options)) {}
};

class PerThread {
 public:
  PerThread(int64_t width, const at::TensorOptions& options)
      : width_(width), options_(options), slots_(at::get_num_threads()) {}
  ThreadBuffers& get() {  // each thread touches only its own slot
    auto& slot = slots_.at(at::get_thread_num());
    if (!slot) slot = std::make_unique<ThreadBuffers>(width_, options_);
    return *slot;
  }

 private:
  int64_t width_;
  at::TensorOptions options_;
  std::vector<std::unique_ptr<ThreadBuffers>> slots_;
};

// Row tiles per wave of the forward: their partial sums (2 x D each) are kept until the wave is
// added to the output in tile order, so memory stays bounded and the result does not depend on
// the thread count.
constexpr int64_t kWave = 64;

at::Tensor hadamard_sums_cpu(const at::Tensor& x, const at::Tensor& signs, const at::Tensor& radii, const at::Tensor& perm,
                             const at::Tensor& offsets, int64_t num_freqs) {
  const Structured s = prepare(x, signs, radii, perm, offsets, num_freqs);
  at::Tensor out = at::zeros({s.num_classes, 2, s.num_freqs}, s.x.options());
  const int64_t num_tiles = static_cast<int64_t>(s.tiles.size());
  if (num_tiles == 0) return out;
  // Blocks one after the other, the row tiles of each in parallel: a block is one transform
  // of width D, so a call with fewer blocks than threads (M <= D is the common case) still
  // keeps every thread busy.
  PerThread buffers(s.width, s.x.options());
  at::Tensor partial = at::empty({std::min(kWave, num_tiles), 2, s.width}, s.x.options());
  for (int64_t b = 0; b < s.blocks; ++b) {
    const int64_t cols = std::min(s.width, s.num_freqs - b * s.width);
    for (int64_t w0 = 0; w0 < num_tiles; w0 += kWave) {
      const int64_t w1 = std::min(num_tiles, w0 + kWave);
      at::parallel_for(w0, w1, 1, [&](int64_t i_begin, int64_t i_end) {
        ThreadBuffers& own = buffers.get();
        for (int64_t i = i_begin; i < i_end; ++i) {
          at::Tensor tile = padded_rows(s, own.scratch, s.tiles[i]);
          block_phases(s, b, tile, own.work);
          at::Tensor sums = partial[i - w0].zero_();
          at::Tensor sum_cos = sums[0], sum_sin = sums[1];
          own.scratch.add_phase_sums(tile, sum_cos, sum_sin);
        }
      });
      for (int64_t i = w0; i < w1; ++i) {
        out[s.tiles[i].cls].narrow(1, b * s.width, cols).add_(partial[i - w0].narrow(1, 0, cols));
      }
    }
  }
  return out;
}

at::Tensor hadamard_sums_grad_x_cpu(const at::Tensor& grad_in, const at::Tensor& x, const at::Tensor& signs,
                                    const at::Tensor& radii, const at::Tensor& perm, const at::Tensor& offsets,
                                    int64_t num_freqs) {
  const Structured s = prepare(x, signs, radii, perm, offsets, num_freqs);
  check_grad(grad_in, s.x, {s.x.size(0), s.num_freqs, s.dim, s.num_classes});
  // G padded with zeros to whole blocks: the cut frequencies of the last block get W = 0.
  at::Tensor grad = at::zeros({s.num_classes, 2, s.blocks * s.width}, s.x.options());
  grad.narrow(2, 0, s.num_freqs).copy_(grad_in.detach());
  at::Tensor dx = at::zeros({s.x.size(0), s.dim}, s.x.options());
  at::parallel_for(0, static_cast<int64_t>(s.tiles.size()), 1, [&](int64_t t_begin, int64_t t_end) {
    Scratch scratch(s.width, s.x.options(), s.width);
    at::Tensor work = at::empty({s.width * kRowTile}, s.x.options());
    at::Tensor acc = at::empty({kRowTile, s.width}, s.x.options());
    for (int64_t i = t_begin; i < t_end; ++i) {
      const ItemRows& rt = s.tiles[i];
      const int64_t rows = rt.end - rt.begin;
      at::Tensor acc_tile = acc.narrow(0, 0, rows);
      acc_tile.zero_();
      for (int64_t b = 0; b < s.blocks; ++b) {
        at::Tensor tile = padded_rows(s, scratch, rt);
        block_phases(s, b, tile, work);
        at::Tensor u = scratch.phase_weight(tile, grad[rt.cls][0].narrow(0, b * s.width, s.width).contiguous(),
                                            grad[rt.cls][1].narrow(0, b * s.width, s.width).contiguous());
        block_transpose(s, b, u, work);
        acc_tile.add_(u);
      }
      // Rows of different tiles are disjoint (perm is a permutation), so threads never collide.
      dx.index_copy_(0, s.perm.narrow(0, rt.begin, rows), acc_tile.narrow(1, 0, s.dim));
    }
  });
  return dx;
}

}  // namespace

TORCH_LIBRARY_IMPL(spectral_kernels, CPU, m) {
  m.impl("hadamard_sums", &hadamard_sums_cpu);
  m.impl("hadamard_sums_grad_x", &hadamard_sums_grad_x_cpu);
}

}  // namespace spectral_kernels
