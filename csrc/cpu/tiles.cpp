// Definitions of tiles.h: the row tiles, and the vectorised sin/cos passes built for AVX-512,
// AVX2 and generic x86-64 (target_clones picks one at load time, so the library runs on any
// x86-64 while GCC vectorises for the machine it meets).
#include "tiles.h"

namespace spectral_kernels {
namespace cpu {

// Row tiles of every class, in class order: math::item_rows with kRowTile rows per item.
std::vector<ItemRows> row_tiles(const at::Tensor& offsets) {
  const int64_t num_classes = offsets.size(0) - 1;
  const int64_t* off = offsets.data_ptr<int64_t>();
  std::vector<int64_t> items_before(num_classes + 1, 0);
  for (int64_t c = 0; c < num_classes; ++c) {
    items_before[c + 1] = items_before[c] + math::ceil_div(off[c + 1] - off[c], kRowTile);
  }
  std::vector<ItemRows> tiles(items_before[num_classes]);
  for (int64_t k = 0; k < items_before[num_classes]; ++k) {
    tiles[k] = math::item_rows(k, off, items_before.data(), num_classes, kRowTile);
  }
  return tiles;
}

// sum_cos[j] += sum_i cos(p[i, j]), sum_sin[j] += sum_i sin(p[i, j]).
SK_CLONES bool sincos_column_sums(const float* p, int64_t rows, int64_t cols, float* sum_cos, float* sum_sin) {
  int big = 0;
  for (int64_t i = 0; i < rows; ++i) {
    const float* row = p + i * cols;
    for (int64_t j = 0; j < cols; ++j) {
      float s, c;
      math::sincos_reduced(row[j], s, c);
      sum_cos[j] += c;
      sum_sin[j] += s;
      big |= !math::in_fast_range(row[j]);
    }
  }
  return big == 0;
}

// w[i, j] = W of SPEC §1 (math::grad_weight) for one class, whose G rows are g_re, g_im.
SK_CLONES bool sincos_weight(const float* p, int64_t rows, int64_t cols, const float* g_re, const float* g_im,
                             float* w) {
  int big = 0;
  for (int64_t i = 0; i < rows; ++i) {
    const float* row = p + i * cols;
    float* out = w + i * cols;
    for (int64_t j = 0; j < cols; ++j) {
      float s, c;
      math::sincos_reduced(row[j], s, c);
      out[j] = math::grad_weight(g_re[j], g_im[j], s, c);
      big |= !math::in_fast_range(row[j]);
    }
  }
  return big == 0;
}

}  // namespace cpu
}  // namespace spectral_kernels
