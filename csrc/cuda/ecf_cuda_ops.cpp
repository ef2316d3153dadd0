// The ECF ops on CUDA tensors (SPEC §1): the chunk walk of csrc/chunk_walk.h run by a CUDA
// engine, whose products are cuBLAS calls and whose kernels are those of ecf_cuda.cu.
//
// Precision is explicit per product, never taken from torch's global TF32 flag: float32 inputs
// use CUBLAS_COMPUTE_32F_FAST_TF32 for "tf32" and CUBLAS_COMPUTE_32F under the default math mode
// for "ieee"; bfloat16/float16 inputs multiply on tensor cores with float32 accumulation into
// float32 outputs; float64 is IEEE float64 throughout.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContextLight.h>
#include <ATen/cuda/Exceptions.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cublas_v2.h>
#include <torch/library.h>

#include <tuple>

#include "../chunk_walk.h"
#include "ecf_cuda.h"

namespace spectral_kernels {

int64_t built_cuda_version() { return CUDART_VERSION; }

namespace {

cudaDataType_t cuda_type(at::ScalarType type) {
  switch (type) {
    case at::kFloat:
      return CUDA_R_32F;
    case at::kDouble:
      return CUDA_R_64F;
    case at::kBFloat16:
      return CUDA_R_16BF;
    case at::kHalf:
      return CUDA_R_16F;
    default:
      TORCH_CHECK(false, "spectral_kernels (cuda): no cuBLAS type for ", type);
  }
}

// The handle's math mode decides whether CUBLAS_COMPUTE_32F may use TF32 (torch sets it from its
// global flag); the default mode, restored afterwards, makes "ieee" mean IEEE.
class DefaultMathMode {
 public:
  explicit DefaultMathMode(cublasHandle_t handle) : handle_(handle) {
    TORCH_CUDABLAS_CHECK(cublasGetMathMode(handle_, &saved_));
    TORCH_CUDABLAS_CHECK(cublasSetMathMode(handle_, CUBLAS_DEFAULT_MATH));
  }
  ~DefaultMathMode() { cublasSetMathMode(handle_, saved_); }

 private:
  cublasHandle_t handle_;
  cublasMath_t saved_;
};

struct CudaEngine {
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();

  void gemm(const chunk::GemmArgs& g, const at::Tensor& a, const at::Tensor& b, at::Tensor& c, bool tf32) {
    cublasHandle_t handle = at::cuda::getCurrentCUDABlasHandle();  // bound to the current stream
    const DefaultMathMode mode(handle);
    const bool dbl = c.scalar_type() == at::kDouble;
    const cublasComputeType_t compute =
        dbl ? CUBLAS_COMPUTE_64F
            : (tf32 && a.scalar_type() == at::kFloat ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F);
    const float alpha_f = 1.0f, beta_f = static_cast<float>(g.beta);
    const double alpha_d = 1.0, beta_d = g.beta;
    const void* alpha = dbl ? static_cast<const void*>(&alpha_d) : static_cast<const void*>(&alpha_f);
    const void* beta = dbl ? static_cast<const void*>(&beta_d) : static_cast<const void*>(&beta_f);
    TORCH_CUDABLAS_CHECK(cublasGemmEx(
        handle, g.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, g.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, static_cast<int>(g.m),
        static_cast<int>(g.n), static_cast<int>(g.k), alpha, a.data_ptr(), cuda_type(a.scalar_type()),
        static_cast<int>(g.lda), b.data_ptr(), cuda_type(b.scalar_type()), static_cast<int>(g.ldb), beta, c.data_ptr(),
        cuda_type(c.scalar_type()), static_cast<int>(g.ldc), compute, CUBLAS_GEMM_DEFAULT));
  }

  template <typename T>
  void piece_sums(const T* phase, int64_t len, int64_t m, const int64_t* offsets, int64_t c, int64_t base, T* partial) {
    C10_CUDA_CHECK(cuda::launch_piece_sums<T>(phase, len, m, offsets, c, base, partial, stream));
  }

  template <typename T>
  void class_sums(const T* partial, int64_t len, int64_t m, const int64_t* offsets, int64_t c, int64_t base, T* out) {
    C10_CUDA_CHECK(cuda::launch_class_sums<T>(partial, len, m, offsets, c, base, out, stream));
  }

  template <typename T>
  void weight(T* phase, int64_t len, int64_t m, const int64_t* offsets, int64_t c, int64_t base, const T* grad) {
    C10_CUDA_CHECK(cuda::launch_weight<T>(phase, len, m, offsets, c, base, grad, stream));
  }
};

chunk::Problem prepare(const at::Tensor& x, const at::Tensor& t, const at::Tensor& perm, const at::Tensor& offsets,
                       c10::string_view precision) {
  return chunk::prepare(x, t, perm, offsets, precision, c10::DeviceType::CUDA, "cuda", /*half_ok=*/true,
                        chunk::default_chunk_bytes());
}

at::Tensor ecf_sums_cuda(const at::Tensor& x, const at::Tensor& t, const at::Tensor& perm, const at::Tensor& offsets,
                         c10::string_view precision) {
  const c10::cuda::CUDAGuard guard(x.device());
  CudaEngine engine;
  return chunk::forward(engine, prepare(x, t, perm, offsets, precision));
}

std::tuple<at::Tensor, at::Tensor> ecf_sums_backward_cuda(const at::Tensor& grad, const at::Tensor& x,
                                                          const at::Tensor& t, const at::Tensor& perm,
                                                          const at::Tensor& offsets, c10::string_view precision,
                                                          bool need_x, bool need_t) {
  const c10::cuda::CUDAGuard guard(x.device());
  CudaEngine engine;
  return chunk::backward(engine, prepare(x, t, perm, offsets, precision), grad, x, need_x, need_t);
}

at::Tensor ecf_sums_grad_x_cuda(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& t,
                                const at::Tensor& perm, const at::Tensor& offsets, c10::string_view precision) {
  return std::get<0>(ecf_sums_backward_cuda(grad, x, t, perm, offsets, precision, true, false));
}

at::Tensor ecf_sums_grad_t_cuda(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& t,
                                const at::Tensor& perm, const at::Tensor& offsets, c10::string_view precision) {
  return std::get<1>(ecf_sums_backward_cuda(grad, x, t, perm, offsets, precision, false, true));
}

}  // namespace

TORCH_LIBRARY_IMPL(spectral_kernels, CUDA, m) {
  m.impl("ecf_sums", &ecf_sums_cuda);
  m.impl("ecf_sums_backward", &ecf_sums_backward_cuda);
  m.impl("ecf_sums_grad_x", &ecf_sums_grad_x_cuda);
  m.impl("ecf_sums_grad_t", &ecf_sums_grad_t_cuda);
}

}  // namespace spectral_kernels
