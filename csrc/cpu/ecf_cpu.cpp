// Fused CPU kernels for the per-class ECF sums and their gradients (SPEC §1).
//
// The N x M matrix p = x t^T is never held. Work is cut into tiles of at most kRowTile rows of
// one class (math::item_rows: the class-segment walk the CUDA kernels share) by kFreqTile
// frequencies; per tile the kernel gathers the rows (through `perm`), forms p with one GEMM,
// then makes one vectorised pass that takes sin and cos together (math::sincos_reduced, the
// same function the CUDA kernels call) and reduces at once. A tile holding a phase beyond
// math::kMaxFastPhase is redone with ATen's sin/cos. The backward recomputes p tile by tile, as
// fused attention does.
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
#include <tuple>
#include <vector>

#include "../ecf_checks.h"
#include "../ecf_math.h"
#include "tiles.h"

namespace spectral_kernels {
namespace {

using math::ItemRows;

using cpu::kFreqTile;
using cpu::kRowTile;
using cpu::Scratch;

struct Prepared {
  at::Tensor x, t, perm, offsets;
  std::vector<ItemRows> tiles;
  int64_t num_classes, num_freqs, dim;
};

// The op contract (ecf_checks.h: the same checks and messages as the CUDA op), contiguous plain
// copies, then the tile list, sized only after the values of perm and offsets were checked.
Prepared prepare(const at::Tensor& x, const at::Tensor& t, const at::Tensor& perm, const at::Tensor& offsets,
                 c10::string_view precision) {
  const OpShape shape = check_op_inputs(x, t, perm, offsets, c10::DeviceType::CPU, "cpu", /*half_ok=*/false);
  check_precision(std::string(precision));  // one schema on every device; CPU products are always IEEE
  // The kernels compute on plain data: detaching keeps the ATen calls inside them out of
  // autograd even when the caller's tensors require grad (the gradient ops are not themselves
  // differentiated).
  Prepared prep{x.detach().contiguous(), t.detach().contiguous(), perm.contiguous(), offsets.contiguous(), {},
                shape.num_classes,       shape.num_freqs,         shape.dim};
  check_layout_values(prep.perm, prep.offsets, shape.num_rows);
  prep.tiles = cpu::row_tiles(prep.offsets);
  return prep;
}

at::Tensor checked_grad(const at::Tensor& grad, const Prepared& prep) {
  check_grad(grad, prep.x, {prep.x.size(0), prep.num_freqs, prep.dim, prep.num_classes});
  return grad.detach().to(prep.x.scalar_type()).contiguous();
}

// Forward and grad_t share one walk: each thread owns a contiguous range of frequency tiles,
// gathers every row tile once and calls fn(scratch, row_tile, x_tile, m0, f) per frequency tile.
template <typename TileFn>
void walk_frequency_tiles(const Prepared& prep, TileFn&& fn) {
  at::parallel_for(0, math::ceil_div(prep.num_freqs, kFreqTile), 1, [&](int64_t ft_begin, int64_t ft_end) {
    Scratch scratch(prep.dim, prep.x.options());
    for (const ItemRows& rt : prep.tiles) {
      const at::Tensor x_tile = scratch.gather(prep.x, prep.perm, rt);
      for (int64_t ft = ft_begin; ft < ft_end; ++ft) {
        const int64_t m0 = ft * kFreqTile;
        fn(scratch, rt, x_tile, m0, std::min(kFreqTile, prep.num_freqs - m0));
      }
    }
  });
}

at::Tensor ecf_sums_cpu(const at::Tensor& x_in, const at::Tensor& t_in, const at::Tensor& perm_in,
                        const at::Tensor& offsets_in, c10::string_view precision) {
  const Prepared prep = prepare(x_in, t_in, perm_in, offsets_in, precision);
  at::Tensor out = at::zeros({prep.num_classes, 2, prep.num_freqs}, prep.x.options());
  walk_frequency_tiles(
      prep, [&](Scratch& scratch, const ItemRows& rt, const at::Tensor& x_tile, int64_t m0, int64_t f) {
        at::Tensor sum_cos = out[rt.cls][0].narrow(0, m0, f), sum_sin = out[rt.cls][1].narrow(0, m0, f);
        scratch.add_column_sums(x_tile, prep.t.narrow(0, m0, f), sum_cos, sum_sin);
      });
  return out;
}

at::Tensor ecf_sums_grad_t_cpu(const at::Tensor& grad_in, const at::Tensor& x_in, const at::Tensor& t_in,
                               const at::Tensor& perm_in, const at::Tensor& offsets_in, c10::string_view precision) {
  const Prepared prep = prepare(x_in, t_in, perm_in, offsets_in, precision);
  const at::Tensor grad = checked_grad(grad_in, prep);
  at::Tensor dt = at::zeros({prep.num_freqs, prep.dim}, prep.x.options());
  walk_frequency_tiles(
      prep, [&](Scratch& scratch, const ItemRows& rt, const at::Tensor& x_tile, int64_t m0, int64_t f) {
        const at::Tensor w = scratch.grad_weight(x_tile, prep.t.narrow(0, m0, f), grad[rt.cls][0].narrow(0, m0, f),
                                                 grad[rt.cls][1].narrow(0, m0, f));
        at::Tensor dt_tile = dt.narrow(0, m0, f);
        dt_tile.addmm_(w.t(), x_tile);
      });
  return dt;
}

at::Tensor ecf_sums_grad_x_cpu(const at::Tensor& grad_in, const at::Tensor& x_in, const at::Tensor& t_in,
                               const at::Tensor& perm_in, const at::Tensor& offsets_in, c10::string_view precision) {
  const Prepared prep = prepare(x_in, t_in, perm_in, offsets_in, precision);
  const at::Tensor grad = checked_grad(grad_in, prep);
  at::Tensor dx = at::zeros({prep.x.size(0), prep.dim}, prep.x.options());
  const int64_t num_row_tiles = static_cast<int64_t>(prep.tiles.size());
  at::parallel_for(0, num_row_tiles, 1, [&](int64_t rt_begin, int64_t rt_end) {
    Scratch scratch(prep.dim, prep.x.options());
    at::Tensor acc = at::empty({kRowTile, prep.dim}, prep.x.options());
    for (int64_t i = rt_begin; i < rt_end; ++i) {
      const ItemRows& rt = prep.tiles[i];
      const int64_t rows = rt.end - rt.begin;
      const at::Tensor x_tile = scratch.gather(prep.x, prep.perm, rt);
      at::Tensor acc_tile = acc.narrow(0, 0, rows);
      acc_tile.zero_();
      for (int64_t m0 = 0; m0 < prep.num_freqs; m0 += kFreqTile) {
        const int64_t f = std::min(kFreqTile, prep.num_freqs - m0);
        const at::Tensor t_tile = prep.t.narrow(0, m0, f);
        const at::Tensor w =
            scratch.grad_weight(x_tile, t_tile, grad[rt.cls][0].narrow(0, m0, f), grad[rt.cls][1].narrow(0, m0, f));
        acc_tile.addmm_(w, t_tile);
      }
      // Rows of different tiles are disjoint (perm is a permutation), so threads never collide.
      dx.index_copy_(0, prep.perm.narrow(0, rt.begin, rows), acc_tile);
    }
  });
  return dx;
}

// The CPU kernels parallelise dx over row tiles and dt over frequency tiles, so they share
// nothing; the combined op exists for one schema on every device.
std::tuple<at::Tensor, at::Tensor> ecf_sums_backward_cpu(const at::Tensor& grad, const at::Tensor& x,
                                                         const at::Tensor& t, const at::Tensor& perm,
                                                         const at::Tensor& offsets, c10::string_view precision,
                                                         bool need_x, bool need_t) {
  return {need_x ? ecf_sums_grad_x_cpu(grad, x, t, perm, offsets, precision) : x.new_empty({0}),
          need_t ? ecf_sums_grad_t_cpu(grad, x, t, perm, offsets, precision) : t.new_empty({0})};
}

// The shared per-element math of ecf_math.h on tensors, for its tests: sin and cos exactly as
// the CUDA kernels take them (math::sincos_any), and W from G_re, G_im and p of one shape.
std::tuple<at::Tensor, at::Tensor> sincos_cpu(const at::Tensor& p_in) {
  TORCH_CHECK_TYPE(p_in.scalar_type() == at::kFloat, "spectral_kernels::_sincos takes float32, got ",
                   p_in.scalar_type());
  const at::Tensor p = p_in.contiguous();
  at::Tensor s = at::empty_like(p), c = at::empty_like(p);
  const float* pp = p.data_ptr<float>();
  float *sp = s.data_ptr<float>(), *cp = c.data_ptr<float>();
  for (int64_t i = 0; i < p.numel(); ++i) math::sincos_any(pp[i], sp[i], cp[i]);
  return {s, c};
}

at::Tensor grad_weight_cpu(const at::Tensor& g_re_in, const at::Tensor& g_im_in, const at::Tensor& p) {
  TORCH_CHECK_VALUE(g_re_in.sizes() == p.sizes() && g_im_in.sizes() == p.sizes(),
                    "spectral_kernels::_grad_weight: g_re, g_im and p must have one shape");
  auto [s, c] = sincos_cpu(p);
  const at::Tensor g_re = g_re_in.to(at::kFloat).contiguous(), g_im = g_im_in.to(at::kFloat).contiguous();
  at::Tensor w = at::empty_like(s);
  const float *re = g_re.data_ptr<float>(), *im = g_im.data_ptr<float>(), *sp = s.data_ptr<float>(),
              *cp = c.data_ptr<float>();
  float* wp = w.data_ptr<float>();
  for (int64_t i = 0; i < p.numel(); ++i) wp[i] = math::grad_weight(re[i], im[i], sp[i], cp[i]);
  return w;
}

}  // namespace

TORCH_LIBRARY_IMPL(spectral_kernels, CPU, m) {
  m.impl("ecf_sums", &ecf_sums_cpu);
  m.impl("ecf_sums_grad_x", &ecf_sums_grad_x_cpu);
  m.impl("ecf_sums_grad_t", &ecf_sums_grad_t_cpu);
  m.impl("ecf_sums_backward", &ecf_sums_backward_cpu);
  m.impl("_sincos", &sincos_cpu);
  m.impl("_grad_weight", &grad_weight_cpu);
}

}  // namespace spectral_kernels
