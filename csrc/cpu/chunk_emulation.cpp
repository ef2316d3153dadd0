// The CUDA backend's chunk walk (csrc/chunk_walk.h) run on the CPU, for its tests: the same walk,
// the same layout cleaning, the same kernel bodies (csrc/chunk_kernels.h) called in loops over
// what would be the CUDA grid, and the same GEMM arguments given to a column-major reference
// GEMM that reads them as cuBLAS does. Each GEMM's arguments and each launch grid are checked
// as cuBLAS and CUDA check them (chunk::gemm_ok, chunk::grid_ok), and the kernel bodies run over
// that grid with the kernels' own bounds tests, so a walk that would hand cuBLAS a leading
// dimension of 0 or launch an empty grid fails here too. What this cannot test is cuBLAS itself
// and the launches; those run only on a GPU (tests/test_gpu.py). Exposed as spectral_kernels::_chunk_walk_forward and
// ::_chunk_walk_backward (CPU tensors, float32/float64), with the chunk budget as an argument.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <tuple>

#include "../chunk_walk.h"

namespace spectral_kernels {
namespace {

// What cudaLaunchKernel refuses (an empty grid, or one past the limits) is refused here too.
void check_grid(const chunk::Grid& grid, const char* kernel) {
  TORCH_CHECK(chunk::grid_ok(grid), "spectral_kernels::_chunk_walk: CUDA would refuse the ", kernel, " kernel's grid (",
              grid.x, ", ", grid.y, ")");
}

struct CpuEngine {
  // C = op(A) op(B) + beta C, all column-major with the given leading dimensions, accumulated in
  // double: the semantics of cublasGemmEx for these arguments, which it refuses as cuBLAS does.
  void gemm(const chunk::GemmArgs& g, const at::Tensor& a_in, const at::Tensor& b_in, at::Tensor& c, bool /*tf32*/) {
    TORCH_CHECK(chunk::gemm_ok(g), "spectral_kernels::_chunk_walk: cuBLAS would refuse this GEMM (m=", g.m, ", n=", g.n,
                ", k=", g.k, ", lda=", g.lda, ", ldb=", g.ldb, ", ldc=", g.ldc, ")");
    const at::Tensor a = a_in.to(at::kDouble).contiguous(), b = b_in.to(at::kDouble).contiguous();
    const double *pa = a.data_ptr<double>(), *pb = b.data_ptr<double>();
    at::Tensor out = c.to(at::kDouble).contiguous();
    double* pc = out.data_ptr<double>();
    for (int64_t j = 0; j < g.n; ++j) {
      for (int64_t i = 0; i < g.m; ++i) {
        double acc = 0;
        for (int64_t l = 0; l < g.k; ++l) {
          const double av = g.trans_a ? pa[l + i * g.lda] : pa[i + l * g.lda];
          const double bv = g.trans_b ? pb[j + l * g.ldb] : pb[l + j * g.ldb];
          acc += av * bv;
        }
        pc[i + j * g.ldc] = acc + (g.beta != 0 ? g.beta * pc[i + j * g.ldc] : 0.0);
      }
    }
    c.copy_(out);
  }

  // The kernels of ecf_cuda.cu, thread by thread over their grids (blockIdx.x/y, threadIdx.x).
  template <typename T>
  void piece_sums(const T* phase, int64_t len, int64_t m, const int64_t* offsets, int64_t c, int64_t base, T* partial) {
    const chunk::Grid grid = chunk::piece_grid(len, m);
    check_grid(grid, "piece_sums");
    for (int64_t q = 0; q < grid.y; ++q) {
      for (int64_t col = 0; col < grid.x * chunk::kThreads; ++col) {
        if (col < m) chunk::piece_sums<T>(col, q, phase, len, m, offsets, c, base, partial);
      }
    }
  }

  template <typename T>
  void class_sums(const T* partial, int64_t len, int64_t m, const int64_t* offsets, int64_t c, int64_t base, T* out) {
    const chunk::Grid grid = chunk::class_grid(c, m);
    check_grid(grid, "class_sums");
    for (int64_t cls = 0; cls < grid.x; ++cls) {
      for (int64_t j = 0; j < grid.y * chunk::kThreads; ++j) {
        if (j < 2 * m) chunk::class_sums<T>(cls, j, partial, len, m, offsets, c, base, out);
      }
    }
  }

  template <typename T>
  void weight(T* phase, int64_t len, int64_t m, const int64_t* offsets, int64_t c, int64_t base, const T* grad) {
    const chunk::Grid grid = chunk::weight_grid(len, m);
    check_grid(grid, "weight");
    for (int64_t index = 0; index < grid.x * chunk::kThreads; ++index) {
      if (index < len * m) chunk::weight<T>(index, phase, m, offsets, c, base, grad);
    }
  }
};

chunk::Problem prepare(const at::Tensor& x, const at::Tensor& t, const at::Tensor& perm, const at::Tensor& offsets,
                       c10::string_view precision, int64_t chunk_bytes) {
  TORCH_CHECK_VALUE(chunk_bytes > 0, "spectral_kernels::_chunk_walk: chunk_bytes must be > 0, got ", chunk_bytes);
  return chunk::prepare(x, t, perm, offsets, precision, c10::DeviceType::CPU, "chunk walk", /*half_ok=*/false,
                        chunk_bytes);
}

at::Tensor chunk_walk_forward(const at::Tensor& x, const at::Tensor& t, const at::Tensor& perm,
                              const at::Tensor& offsets, c10::string_view precision, int64_t chunk_bytes) {
  CpuEngine engine;
  return chunk::forward(engine, prepare(x, t, perm, offsets, precision, chunk_bytes));
}

std::tuple<at::Tensor, at::Tensor> chunk_walk_backward(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& t,
                                                       const at::Tensor& perm, const at::Tensor& offsets,
                                                       c10::string_view precision, int64_t chunk_bytes, bool need_x,
                                                       bool need_t) {
  CpuEngine engine;
  return chunk::backward(engine, prepare(x, t, perm, offsets, precision, chunk_bytes), grad, x, need_x, need_t);
}

}  // namespace

TORCH_LIBRARY_IMPL(spectral_kernels, CPU, m) {
  m.impl("_chunk_walk_forward", &chunk_walk_forward);
  m.impl("_chunk_walk_backward", &chunk_walk_backward);
}

}  // namespace spectral_kernels
