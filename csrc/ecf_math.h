// The math every C++ backend computes per element (SPEC §1), written once for the CPU and the
// GPU: C10_HOST_DEVICE functions that csrc/cpu/ecf_cpu.cpp and csrc/cuda/ecf_cuda.cu both call,
// so the CPU tests exercise the very code the GPU runs.
//
//   sincos_reduced  float32 sin and cos of one phase with one shared range reduction
//   grad_weight     W of SPEC §1 from the upstream gradient and (sin p, cos p)
//   item_rows       the class-segment walk: class segments cut into pieces of bounded rows
//
// Only this header and the standard library are included: the .cu unit stays light.
#pragma once

#include <c10/macros/Macros.h>

#include <cmath>
#include <cstdint>

namespace spectral_kernels {
namespace math {

// ---------------------------------------------------------------------------------------------
// sin and cos in one pass: Cody-Waite reduction to [-pi/4, pi/4] around the nearest multiple of
// pi/4 (Cephes' three-part split of pi/4), then the Cephes minimax polynomials of sinf/cosf.
// kMaxFastPhase: the largest |p| for which the reduction stays accurate; beyond it the callers
// switch to a full-range routine (ATen/Sleef on the CPU per tile, sincosf on the GPU per
// element). kFastSinCosMaxAbsError: SPEC §6's one bound against float64 sin/cos, for every
// backend and both paths: 2^-23, two float32 ulps below 1, what sincosf guarantees
// (spectral_kernels/ops/ecf_math.py holds both numbers for Python; tests/test_ecf_math.py checks
// they agree and measures this very function as the CPU build compiles it; the GPU build may
// contract to FMA, which the Cody-Waite split tolerates). ops/triton_common.py runs the same
// reduction in Triton, operation for operation. Branch-free, so GCC vectorises the CPU loops.
constexpr float kMaxFastPhase = 8192.0f;
constexpr double kFastSinCosMaxAbsError = 1.1920928955078125e-7;

C10_HOST_DEVICE inline void sincos_reduced(float x, float& s, float& c) {
  constexpr float kFourOverPi = 1.27323954473516f;
  constexpr float kPiOver4Hi = 0.78515625f, kPiOver4Mid = 2.4187564849853515625e-4f,
                  kPiOver4Lo = 3.77489497744594108e-8f;
  constexpr float kSin0 = -1.9515295891e-4f, kSin1 = 8.3321608736e-3f, kSin2 = -1.6666654611e-1f;
  constexpr float kCos0 = 2.443315711809948e-5f, kCos1 = -1.388731625493765e-3f, kCos2 = 4.166664568298827e-2f;
  const float ax = x < 0.0f ? -x : x;
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

C10_HOST_DEVICE inline bool in_fast_range(float p) { return (p < 0.0f ? -p : p) <= kMaxFastPhase; }

// One element, any phase: float32 takes the shared reduction within its range and a full-range
// routine beyond (what the CUDA kernels do per element; the CPU kernels decide per tile
// instead, so that their loops stay branch-free and vectorised); float64 the full-range routine.
template <typename T>
C10_HOST_DEVICE inline void sincos_full(T p, T& s, T& c) {
#ifdef __CUDA_ARCH__
  if constexpr (sizeof(T) == sizeof(float)) {
    sincosf(p, &s, &c);
  } else {
    sincos(p, &s, &c);
  }
#else
  s = std::sin(p);
  c = std::cos(p);
#endif
}

C10_HOST_DEVICE inline void sincos_any(float p, float& s, float& c) {
  if (in_fast_range(p)) {
    sincos_reduced(p, s, c);
  } else {
    sincos_full(p, s, c);
  }
}

C10_HOST_DEVICE inline void sincos_any(double p, double& s, double& c) { sincos_full(p, s, c); }

// W[i, m] = -G[c_i, 0, m] sin(p_im) + G[c_i, 1, m] cos(p_im): the weight that turns the
// upstream gradient of the sums into dL/dp, so that dx = W t and dt = W^T x (SPEC §1).
template <typename T>
C10_HOST_DEVICE inline T grad_weight(T g_re, T g_im, T sin_p, T cos_p) {
  return g_im * cos_p - g_re * sin_p;
}

// ---------------------------------------------------------------------------------------------
// The class-segment walk. Class c owns perm positions [offsets[c], offsets[c+1]); each segment
// is cut into pieces ("items") of at most rows_per_item rows, so a class of 5000 rows and one of
// 5 rows both become units of bounded work. items_before[c] = sum_{c' < c} ceil(n_c' / R)
// (C + 1 entries) numbers the items class by class; item k belongs to the class c with
// items_before[c] <= k < items_before[c + 1]. An item index past the last item gives an empty
// range at the end. Offsets must already be valid (checked on the CPU, cleaned on the GPU).
struct ItemRows {
  int64_t cls;    // class of every row in the item
  int64_t begin;  // first perm position
  int64_t end;    // one past the last (end - begin <= rows_per_item)
};

C10_HOST_DEVICE inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// The last c in [0, num_classes) with starts[c] <= value, for non-decreasing starts with
// starts[0] <= value: the segment that holds `value`, skipping empty ones (starts[c] == starts[c+1]).
C10_HOST_DEVICE inline int64_t segment_of(int64_t value, const int64_t* starts, int64_t num_classes) {
  int64_t lo = 0, hi = num_classes - 1;
  while (lo < hi) {
    const int64_t mid = (lo + hi + 1) / 2;
    if (starts[mid] <= value) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  return lo;
}

C10_HOST_DEVICE inline ItemRows item_rows(int64_t k, const int64_t* offsets, const int64_t* items_before,
                                          int64_t num_classes, int64_t rows_per_item) {
  if (k >= items_before[num_classes]) {
    return {num_classes - 1, offsets[num_classes], offsets[num_classes]};
  }
  const int64_t lo = segment_of(k, items_before, num_classes);  // the class that owns item k
  const int64_t begin = offsets[lo] + (k - items_before[lo]) * rows_per_item;
  const int64_t end = begin + rows_per_item < offsets[lo + 1] ? begin + rows_per_item : offsets[lo + 1];
  return {lo, begin, end};
}

}  // namespace math
}  // namespace spectral_kernels
