// Op schemas of spectral_kernels (SPEC §1). Device implementations live in cpu/ and cuda/; fake
// kernels and autograd are registered from Python (spectral_kernels/ops/cpp.py), as
// pytorch/extension-cpp does. Every implementation checks its inputs with ecf_checks.h and
// computes its per-element math with ecf_math.h, so the contract and the math are one.
//
// Class layout shared by every op: `perm` (N,) int64 lists the rows of x class by class and
// `offsets` (C+1,) int64 is the CSR index into perm, so class c owns rows
// x[perm[offsets[c]:offsets[c+1]]]. Passing a permutation instead of a class-sorted copy of x
// keeps the extra memory independent of N: the kernels gather a tile of rows at a time.
//
// `precision` ("ieee" or "tf32") is how float32 products run on a GPU; the CPU kernels accept it
// and always compute in IEEE float.
#include <Python.h>
#include <torch/library.h>

#include <cstdint>

namespace spectral_kernels {
#ifdef SPECTRAL_KERNELS_WITH_CUDA
int64_t built_cuda_version();  // csrc/cuda/ecf_cuda_ops.cpp: CUDART_VERSION of the build
#else
int64_t built_cuda_version() { return 0; }
#endif
}  // namespace spectral_kernels

extern "C" {
// `import spectral_kernels._C` only has to load this library (which runs the TORCH_LIBRARY
// static initialisers below); the module itself exposes nothing.
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

TORCH_LIBRARY(spectral_kernels, m) {
  // Per-class sums S (C, 2, M): S[c,0,m] = sum_{i in c} cos(<t_m, x_i>), S[c,1,m] = ... sin.
  // float32 for bfloat16/float16 inputs (accumulated in float32), else x's dtype.
  m.def("ecf_sums(Tensor x, Tensor t, Tensor perm, Tensor offsets, str precision) -> Tensor");
  // dL/dx (N, d) = W @ t with W[i,m] = -G[c_i,0,m] sin(p_im) + G[c_i,1,m] cos(p_im).
  m.def("ecf_sums_grad_x(Tensor grad, Tensor x, Tensor t, Tensor perm, Tensor offsets, str precision) -> Tensor");
  // dL/dt (M, d) = W^T @ x.
  m.def("ecf_sums_grad_t(Tensor grad, Tensor x, Tensor t, Tensor perm, Tensor offsets, str precision) -> Tensor");
  // (dx, dt) in one pass where a backend can share the work (CUDA: one product x t^T and one W
  // per chunk for both); a gradient not asked for comes back as an empty tensor.
  m.def(
      "ecf_sums_backward(Tensor grad, Tensor x, Tensor t, Tensor perm, Tensor offsets, str precision, bool need_x, "
      "bool need_t) -> (Tensor, Tensor)");
  // The per-class sums at structured orthogonal frequencies (SORF), t never materialised:
  // frequency j of block b is radii[b, j] / D^1.5 (H D1 H D2 H D3)[j, :d], H the D x D
  // Walsh-Hadamard matrix, D_k = diag(signs[b, k - 1]); blocks of D, the last cut at num_freqs.
  m.def("hadamard_sums(Tensor x, Tensor signs, Tensor radii, Tensor perm, Tensor offsets, int num_freqs) -> Tensor");
  // dL/dx (N, d) of hadamard_sums (the signs and radii are samples: no gradient).
  m.def(
      "hadamard_sums_grad_x(Tensor grad, Tensor x, Tensor signs, Tensor radii, Tensor perm, Tensor offsets, "
      "int num_freqs) -> Tensor");
  // The shared per-element math (ecf_math.h) on CPU tensors, for its tests.
  m.def("_sincos(Tensor p) -> (Tensor, Tensor)");
  m.def("_grad_weight(Tensor g_re, Tensor g_im, Tensor p) -> Tensor");
  // The CUDA backend's chunk walk emulated on CPU tensors (csrc/cpu/chunk_emulation.cpp), for its tests.
  m.def(
      "_chunk_walk_forward(Tensor x, Tensor t, Tensor perm, Tensor offsets, str precision, int chunk_bytes) -> Tensor");
  m.def(
      "_chunk_walk_backward(Tensor grad, Tensor x, Tensor t, Tensor perm, Tensor offsets, str precision, "
      "int chunk_bytes, bool need_x, bool need_t) -> (Tensor, Tensor)");
  // The CUDA runtime version the library was built against (e.g. 13000), 0 if built without CUDA.
  m.def("cuda_version() -> int", [] { return spectral_kernels::built_cuda_version(); });
}
