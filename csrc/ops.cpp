// Op schemas of spectral_kernels (SPEC §1). Device implementations live in cpu/ (and, for GPU
// backends, in their own files); fake kernels and autograd are registered from Python
// (spectral_kernels/ops/cpp.py), as pytorch/extension-cpp does.
//
// Class layout shared by every op: `perm` (N,) int64 lists the rows of x class by class and
// `offsets` (C+1,) int64 is the CSR index into perm, so class c owns rows
// x[perm[offsets[c]:offsets[c+1]]]. Passing a permutation instead of a class-sorted copy of x
// keeps the extra memory independent of N: the kernels gather a tile of rows at a time.
#include <Python.h>
#include <torch/library.h>

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
  m.def("ecf_sums(Tensor x, Tensor t, Tensor perm, Tensor offsets) -> Tensor");
  // dL/dx (N, d) = W @ t with W[i,m] = -G[c_i,0,m] sin(p_im) + G[c_i,1,m] cos(p_im).
  m.def("ecf_sums_grad_x(Tensor grad, Tensor x, Tensor t, Tensor perm, Tensor offsets) -> Tensor");
  // dL/dt (M, d) = W^T @ x.
  m.def("ecf_sums_grad_t(Tensor grad, Tensor x, Tensor t, Tensor perm, Tensor offsets) -> Tensor");
}
