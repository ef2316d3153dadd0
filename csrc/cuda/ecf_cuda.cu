// CUDA kernels of the ECF ops (SPEC §1): thin __global__ wrappers around the host/device bodies
// of csrc/chunk_kernels.h (the sin/cos epilogue with its per-piece and per-class sums, and W of
// the backward), which the CPU tests also run. The products are cuBLAS calls made by
// ecf_cuda_ops.cpp. Every element takes sin and cos from math::sincos_any (csrc/ecf_math.h):
// the shared reduction within math::kMaxFastPhase, sincosf beyond; float64 uses sincos.
#include "ecf_cuda.h"

#include "../chunk_kernels.h"

namespace spectral_kernels {
namespace cuda {
namespace {

template <typename T>
__global__ void piece_sums_kernel(const T* __restrict__ phase, int64_t len, int64_t num_freqs,
                                  const int64_t* __restrict__ offsets, int64_t num_classes, int64_t base,
                                  T* __restrict__ partial) {
  const int64_t m = static_cast<int64_t>(blockIdx.x) * chunk::kThreads + threadIdx.x;
  if (m < num_freqs) chunk::piece_sums<T>(m, blockIdx.y, phase, len, num_freqs, offsets, num_classes, base, partial);
}

template <typename T>
__global__ void class_sums_kernel(const T* __restrict__ partial, int64_t len, int64_t num_freqs,
                                  const int64_t* __restrict__ offsets, int64_t num_classes, int64_t base,
                                  T* __restrict__ out) {
  const int64_t j = static_cast<int64_t>(blockIdx.y) * chunk::kThreads + threadIdx.x;
  if (j < 2 * num_freqs) chunk::class_sums<T>(blockIdx.x, j, partial, len, num_freqs, offsets, num_classes, base, out);
}

template <typename T>
__global__ void weight_kernel(T* __restrict__ phase, int64_t len, int64_t num_freqs,
                              const int64_t* __restrict__ offsets, int64_t num_classes, int64_t base,
                              const T* __restrict__ grad) {
  const int64_t index = static_cast<int64_t>(blockIdx.x) * chunk::kThreads + threadIdx.x;
  if (index < len * num_freqs) chunk::weight<T>(index, phase, num_freqs, offsets, num_classes, base, grad);
}

// The grids of chunk_kernels.h; the walk (chunk_walk.h) never launches an empty one.
dim3 to_dim3(const chunk::Grid& g) { return dim3(static_cast<unsigned>(g.x), static_cast<unsigned>(g.y)); }

}  // namespace

template <typename T>
cudaError_t launch_piece_sums(const T* phase, int64_t len, int64_t num_freqs, const int64_t* offsets,
                              int64_t num_classes, int64_t base, T* partial, cudaStream_t stream) {
  const dim3 grid = to_dim3(chunk::piece_grid(len, num_freqs));
  piece_sums_kernel<T>
      <<<grid, chunk::kThreads, 0, stream>>>(phase, len, num_freqs, offsets, num_classes, base, partial);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_class_sums(const T* partial, int64_t len, int64_t num_freqs, const int64_t* offsets,
                              int64_t num_classes, int64_t base, T* out, cudaStream_t stream) {
  const dim3 grid = to_dim3(chunk::class_grid(num_classes, num_freqs));
  class_sums_kernel<T><<<grid, chunk::kThreads, 0, stream>>>(partial, len, num_freqs, offsets, num_classes, base, out);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_weight(T* phase, int64_t len, int64_t num_freqs, const int64_t* offsets, int64_t num_classes,
                          int64_t base, const T* grad, cudaStream_t stream) {
  weight_kernel<T><<<to_dim3(chunk::weight_grid(len, num_freqs)), chunk::kThreads, 0, stream>>>(
      phase, len, num_freqs, offsets, num_classes, base, grad);
  return cudaGetLastError();
}

#define SK_INSTANTIATE(T)                                                                                     \
  template cudaError_t launch_piece_sums<T>(const T*, int64_t, int64_t, const int64_t*, int64_t, int64_t, T*, \
                                            cudaStream_t);                                                    \
  template cudaError_t launch_class_sums<T>(const T*, int64_t, int64_t, const int64_t*, int64_t, int64_t, T*, \
                                            cudaStream_t);                                                    \
  template cudaError_t launch_weight<T>(T*, int64_t, int64_t, const int64_t*, int64_t, int64_t, const T*, cudaStream_t);
SK_INSTANTIATE(float)
SK_INSTANTIATE(double)
#undef SK_INSTANTIATE

}  // namespace cuda
}  // namespace spectral_kernels
