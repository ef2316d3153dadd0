// The contract of the ECF ops (SPEC §1), checked once for every C++ backend: the same checks
// and the same messages whether the tensors are on the CPU or on a GPU.
//
// Shapes, dtypes, devices and precision are checked always. The *values* of perm and offsets
// are checked where that is cheap (CPU tensors: an O(N + C) scan of host memory, before
// anything is sized by them); on a GPU reading them would stall the host on a sync at every
// call, so the CUDA backend instead cleans them on the device (clamped indices, offsets made
// monotone within [0, N]): a layout that breaks the contract gives meaningless sums there, but
// never a read or write out of bounds.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

namespace spectral_kernels {

struct OpShape {
  int64_t num_rows, num_freqs, dim, num_classes;
};

// `backend` names the device in messages ("cpu", "cuda"); `half_ok`: bfloat16/float16 accepted.
inline OpShape check_op_inputs(const at::Tensor& x, const at::Tensor& t, const at::Tensor& perm,
                               const at::Tensor& offsets, c10::DeviceType device, const char* backend, bool half_ok) {
  TORCH_CHECK_VALUE(x.dim() == 2, "spectral_kernels: x must be 2-D (N, d), got shape ", x.sizes());
  TORCH_CHECK_VALUE(t.dim() == 2, "spectral_kernels: t must be 2-D (M, d), got shape ", t.sizes());
  TORCH_CHECK_VALUE(x.size(1) == t.size(1), "spectral_kernels: x has d=", x.size(1), " but t has d=", t.size(1));
  const auto dtype = x.scalar_type();
  const bool half = dtype == at::kBFloat16 || dtype == at::kHalf;
  TORCH_CHECK_TYPE(dtype == at::kFloat || dtype == at::kDouble || (half_ok && half), "spectral_kernels (", backend,
                   "): x must be float32 or float64", half_ok ? ", bfloat16 or float16" : "", ", got ", dtype);
  TORCH_CHECK_TYPE(t.scalar_type() == dtype, "spectral_kernels: t has dtype ", t.scalar_type(), " but x has dtype ",
                   dtype);
  TORCH_CHECK_TYPE(perm.scalar_type() == at::kLong && offsets.scalar_type() == at::kLong,
                   "spectral_kernels: perm and offsets must be int64, got ", perm.scalar_type(), " and ",
                   offsets.scalar_type());
  TORCH_CHECK_VALUE(perm.dim() == 1 && perm.size(0) == x.size(0), "spectral_kernels: perm must have shape (", x.size(0),
                    ",), got ", perm.sizes());
  TORCH_CHECK_VALUE(offsets.dim() == 1 && offsets.size(0) >= 2,
                    "spectral_kernels: offsets must have shape (C+1,) with C >= 1, got ", offsets.sizes());
  for (const auto* tensor : {&x, &t, &perm, &offsets}) {
    TORCH_CHECK_VALUE(tensor->device().type() == device, "spectral_kernels (", backend,
                      "): every input must be on the same device as its backend (", c10::DeviceTypeName(device),
                      "), got one on ", tensor->device());
  }
  if (device != c10::DeviceType::CPU) {
    for (const auto* tensor : {&t, &perm, &offsets}) {
      TORCH_CHECK_VALUE(tensor->device() == x.device(), "spectral_kernels: x is on ", x.device(),
                        " but another input is on ", tensor->device());
    }
  }
  return {x.size(0), t.size(0), x.size(1), offsets.size(0) - 1};
}

// The contract of the SORF ops (hadamard_sums and its gradient; the twin of
// spectral_kernels._checks.sorf, with the same messages): signs (B, 3, D) holding exactly +1 or
// -1, radii (B, D) finite and > 0, D a power of two >= d, num_freqs in ((B - 1) D, B D], every
// input on `device`. The signs and radii are read on the host (B x 4 x D values, small beside
// the op's N x M work): a sign of 0 would make every frequency 0 (a silent perfect match), a
// NaN or negative radius meaningless sums.
inline OpShape check_sorf_inputs(const at::Tensor& x, const at::Tensor& signs, const at::Tensor& radii,
                                 const at::Tensor& perm, const at::Tensor& offsets, int64_t num_freqs,
                                 c10::DeviceType device, const char* backend) {
  TORCH_CHECK_VALUE(signs.dim() == 3 && signs.size(1) == 3 && signs.size(0) >= 1,
                    "spectral_kernels: signs must have shape (B, 3, D), got ", signs.sizes());
  const int64_t blocks = signs.size(0), width = signs.size(2);
  TORCH_CHECK_VALUE(width >= 1 && (width & (width - 1)) == 0,
                    "spectral_kernels: the block width D must be a power of two, got ", width);
  TORCH_CHECK_VALUE(radii.dim() == 2 && radii.size(0) == blocks && radii.size(1) == width,
                    "spectral_kernels: radii must have shape (", blocks, ", ", width, "), got ", radii.sizes());
  TORCH_CHECK_VALUE(num_freqs > (blocks - 1) * width && num_freqs <= blocks * width,
                    "spectral_kernels: num_freqs=", num_freqs, " does not fit ", blocks, " blocks of ", width,
                    " (it must lie in (", (blocks - 1) * width, ", ", blocks * width, "])");
  // x against a stand-in t of shape (M, d) (an expanded scalar: no memory): the same contract and
  // messages as the dense ops.
  const at::Tensor stand_in = radii.new_zeros({1, 1}).expand({num_freqs, x.dim() == 2 ? x.size(1) : 0});
  const OpShape shape = check_op_inputs(x, stand_in, perm, offsets, device, backend, /*half_ok=*/false);
  TORCH_CHECK_VALUE(width >= shape.dim, "spectral_kernels: the block width D=", width, " must be >= d=", shape.dim);
  for (const auto* tensor : {&signs, &radii}) {
    TORCH_CHECK_TYPE(tensor->scalar_type() == x.scalar_type(), "spectral_kernels: signs and radii must have x's dtype ",
                     x.scalar_type(), ", got ", tensor->scalar_type());
    TORCH_CHECK_VALUE(tensor->device().type() == device, "spectral_kernels (", backend,
                      "): every input must be on the same device as its backend (", c10::DeviceTypeName(device),
                      "), got one on ", tensor->device());
  }
  if (device == c10::DeviceType::CPU) {
    const auto s = signs.detach().to(at::kDouble).contiguous();
    const double* sv = s.data_ptr<double>();
    for (int64_t i = 0; i < s.numel(); ++i) {
      TORCH_CHECK_VALUE(sv[i] == 1.0 || sv[i] == -1.0, "spectral_kernels: signs must hold exactly +1 or -1, got ",
                        sv[i], " at index (", i / (3 * width), ", ", (i / width) % 3, ", ", i % width, ")");
    }
    const auto r = radii.detach().to(at::kDouble).contiguous();
    const double* rv = r.data_ptr<double>();
    for (int64_t i = 0; i < r.numel(); ++i) {
      TORCH_CHECK_VALUE(std::isfinite(rv[i]) && rv[i] > 0, "spectral_kernels: radii must be finite and > 0, got ",
                        rv[i], " at index (", i / width, ", ", i % width, ")");
    }
  }
  return shape;
}

inline void check_precision(const std::string& precision) {
  TORCH_CHECK_VALUE(precision == "ieee" || precision == "tf32",
                    "spectral_kernels: precision must be 'ieee' or 'tf32', got '", precision, "'");
}

inline void check_grad(const at::Tensor& grad, const at::Tensor& x, const OpShape& shape) {
  TORCH_CHECK_VALUE(
      grad.dim() == 3 && grad.size(0) == shape.num_classes && grad.size(1) == 2 && grad.size(2) == shape.num_freqs,
      "spectral_kernels: grad must have shape (", shape.num_classes, ", 2, ", shape.num_freqs, "), got ", grad.sizes());
  TORCH_CHECK_VALUE(grad.device() == x.device(), "spectral_kernels: grad is on ", grad.device(), " but x is on ",
                    x.device());
  TORCH_CHECK_TYPE(grad.is_floating_point(), "spectral_kernels: grad must be floating point, got ", grad.scalar_type());
}

// The values of offsets and perm, on the host (CPU tensors, contiguous). Offsets are checked in
// full before anything is sized by them: an entry such as offsets = {0, 10^12, N} would
// otherwise size a walk of billions of tiles first. perm must be a permutation of 0..N-1 (an
// N-byte table): a repeated row would count one row twice in the sums and let two threads
// write one row of dx.
inline void check_layout_values(const at::Tensor& perm, const at::Tensor& offsets, int64_t num_rows) {
  const auto off = offsets.accessor<int64_t, 1>();
  const int64_t num_classes = offsets.size(0) - 1;
  TORCH_CHECK_VALUE(off[0] == 0 && off[num_classes] == num_rows,
                    "spectral_kernels: offsets must start at 0 and end at N=", num_rows, ", got ", off[0], " and ",
                    off[num_classes]);
  for (int64_t c = 0; c < num_classes; ++c) {
    TORCH_CHECK_VALUE(off[c + 1] >= off[c], "spectral_kernels: offsets must be non-decreasing, offsets[", c + 1,
                      "]=", off[c + 1], " < offsets[", c, "]=", off[c]);
  }
  const auto rows = perm.accessor<int64_t, 1>();
  std::vector<uint8_t> seen(static_cast<size_t>(num_rows), 0);
  for (int64_t i = 0; i < num_rows; ++i) {
    const int64_t row = rows[i];
    TORCH_CHECK_VALUE(row >= 0 && row < num_rows, "spectral_kernels: perm must hold row numbers in [0, N=", num_rows,
                      "), got perm[", i, "]=", row);
    if (seen[row]) {
      int64_t earlier = 0;
      while (rows[earlier] != row) ++earlier;
      TORCH_CHECK_VALUE(false, "spectral_kernels: perm must be a permutation of 0..N-1, but perm[", earlier,
                        "] = perm[", i, "] = ", row);
    }
    seen[row] = 1;
  }
}

}  // namespace spectral_kernels
