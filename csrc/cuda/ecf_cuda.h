// Launchers of the CUDA kernels of ecf_cuda.cu, called by the CUDA engine in ecf_cuda_ops.cpp.
// Plain pointers and sizes only, so the .cu unit is compiled by nvcc with nothing heavier than
// the CUDA runtime and the host/device kernel bodies of csrc/chunk_kernels.h.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace spectral_kernels {
namespace cuda {

// chunk::piece_sums for every (column, piece) of a chunk of `len` positions.
template <typename T>
cudaError_t launch_piece_sums(const T* phase, int64_t len, int64_t num_freqs, const int64_t* offsets,
                              int64_t num_classes, int64_t base, T* partial, cudaStream_t stream);

// chunk::class_sums for every (class, entry of its 2M sums).
template <typename T>
cudaError_t launch_class_sums(const T* partial, int64_t len, int64_t num_freqs, const int64_t* offsets,
                              int64_t num_classes, int64_t base, T* out, cudaStream_t stream);

// chunk::weight for every element of the len x M chunk.
template <typename T>
cudaError_t launch_weight(T* phase, int64_t len, int64_t num_freqs, const int64_t* offsets, int64_t num_classes,
                          int64_t base, const T* grad, cudaStream_t stream);

}  // namespace cuda
}  // namespace spectral_kernels
