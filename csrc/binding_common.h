// Host-side helpers shared by the CPU and CUDA bindings: argument checks, the layout of an operand as a View,
// the work decomposition, and the folding of the statistics gradients. Depends on ATen; the kernels do not.
#pragma once
#include <ATen/ATen.h>
#include <c10/util/Optional.h>

#include <cmath>
#include <utility>

#include "cpu/kernel_args.h"

namespace lk {

inline DType dtype_of(const at::Tensor& t, const char* name) {
  switch (t.scalar_type()) {
    case at::kFloat: return DType::F32;
    case at::kDouble: return DType::F64;
    case at::kHalf: return DType::F16;
    case at::kBFloat16: return DType::BF16;
    default:
      TORCH_CHECK(false, "lattice_kernels: ", name, " must be float32, float64, float16 or bfloat16, got ",
                  t.scalar_type());
  }
  return DType::F32;
}

// Statistics and coefficients are float32, or float64 for float64 inputs.
inline at::ScalarType stats_type(const at::Tensor& x) {
  return x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

inline void check_input(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.defined(), "lattice_kernels: ", name, " is undefined");
  TORCH_CHECK(t.dim() == 4, "lattice_kernels: ", name, " must be 4-D (N, C, H, W), got shape ", t.sizes());
  TORCH_CHECK(t.numel() > 0, "lattice_kernels: ", name, " is empty (shape ", t.sizes(), "); N*C*H*W must be > 0");
  dtype_of(t, name);
}

inline void check_like(const at::Tensor& t, const at::Tensor& ref, const char* name, const char* ref_name) {
  check_input(t, name);
  TORCH_CHECK(t.sizes() == ref.sizes(), "lattice_kernels: ", name, " must have the shape of ", ref_name, " ",
              ref.sizes(), ", got ", t.sizes());
  TORCH_CHECK(t.scalar_type() == ref.scalar_type(), "lattice_kernels: ", name, " must have the dtype of ", ref_name,
              " (", ref.scalar_type(), "), got ", t.scalar_type());
  TORCH_CHECK(t.device() == ref.device(), "lattice_kernels: ", name, " is on ", t.device(), " but ", ref_name,
              " is on ", ref.device());
}

// (N, C) statistics-typed tensor on x's device, made contiguous.
inline at::Tensor per_channel(const at::Tensor& t, const at::Tensor& x, const char* name) {
  TORCH_CHECK(t.dim() == 2 && t.size(0) == x.size(0) && t.size(1) == x.size(1), "lattice_kernels: ", name,
              " must have shape (N, C) = (", x.size(0), ", ", x.size(1), "), got ", t.sizes());
  TORCH_CHECK(t.scalar_type() == stats_type(x), "lattice_kernels: ", name, " must be ", stats_type(x), ", got ",
              t.scalar_type());
  TORCH_CHECK(t.device() == x.device(), "lattice_kernels: ", name, " is on ", t.device(), " but x is on ",
              x.device());
  return t.contiguous();
}

inline at::Tensor coefficient_or_ones(const c10::optional<at::Tensor>& t, const at::Tensor& x, const char* name) {
  if (t.has_value() && t->defined()) return per_channel(*t, x, name);
  return at::ones({x.size(0), x.size(1)}, x.options().dtype(stats_type(x)));
}

// The kernels' layout rule (mirrored in lattice_kernels/ops/_layout.py): channels_last-contiguous tensors that are
// not also NCHW-contiguous run interleaved and give channels_last outputs; everything else runs planar.
inline bool is_interleaved(const at::Tensor& x) {
  return !x.is_contiguous() && x.is_contiguous(at::MemoryFormat::ChannelsLast);
}
inline at::MemoryFormat format_of(bool interleaved) {
  return interleaved ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
}

// The View of t in the given layout, if its strides allow one: H and W must flatten into one axis P, and the unit
// stride must be P (planar) or C (interleaved). Channel slices of a contiguous tensor qualify.
inline bool view_of(const at::Tensor& t, bool interleaved, View& v) {
  const int64_t H = t.size(2), W = t.size(3), C = t.size(1);
  int64_t sp;
  if (H == 1) sp = t.stride(3);
  else if (W == 1) sp = t.stride(2);
  else if (t.stride(2) == W * t.stride(3)) sp = t.stride(3);
  else return false;
  int64_t sc = t.stride(1);
  if (H * W == 1) sp = 1;  // a single pixel: the pixel stride is never used
  if (C == 1) sc = interleaved ? 1 : sc;
  if (!interleaved && sp != 1) return false;
  if (interleaved && sc != 1) return false;
  v = View{t.data_ptr(), t.stride(0), sc, sp};
  return true;
}

// An operand in the call's layout: the tensor itself when its strides fit, else a copy in that memory format.
inline std::pair<at::Tensor, View> operand(const at::Tensor& t, bool interleaved) {
  View v;
  if (view_of(t, interleaved, v)) return {t, v};
  at::Tensor c = t.contiguous(format_of(interleaved));
  TORCH_CHECK(view_of(c, interleaved, v), "lattice_kernels: internal error: no view after contiguous()");
  return {c, v};
}

inline at::Tensor new_like_layout(const at::Tensor& x, bool interleaved, int64_t channels = -1) {
  return at::empty({x.size(0), channels < 0 ? x.size(1) : channels, x.size(2), x.size(3)},
                   x.options().memory_format(format_of(interleaved)));
}

// Work decomposition (see Geometry). 4096 elements = 16 KiB of float32: a chunk of q written by the butterfly is
// still in L1 when its statistics are taken.
constexpr int64_t kChunkElems = 4096;

inline Geometry make_geometry(const at::Tensor& x, bool interleaved) {
  Geometry g;
  g.N = x.size(0);
  g.C = x.size(1);
  g.P = x.size(2) * x.size(3);
  g.interleaved = interleaved;
  g.chunk = interleaved ? std::max<int64_t>(1, kChunkElems / g.C) : kChunkElems;
  g.chunk = std::min(g.chunk, g.P);
  g.nchunk = (g.P + g.chunk - 1) / g.chunk;
  return g;
}

// Folded statistics gradients, per (n, c): a = grad_mean / P and b = grad_std / ((P - 1) * std), with b = 0 where
// grad_std == 0 or std == 0 (torch.std's backward masks std == 0 the same way; a zero grad_std must not turn a NaN
// std of a single pixel into NaN gradients).
inline std::pair<at::Tensor, at::Tensor> fold_stats_grads(const at::Tensor& grad_mean, const at::Tensor& grad_std,
                                                         const at::Tensor& stdv, int64_t P) {
  at::Tensor a = grad_mean / static_cast<double>(P);
  at::Tensor b = grad_std / (stdv * static_cast<double>(P - 1));
  b = at::where((grad_std == 0) | (stdv == 0), at::zeros_like(b), b);
  return {a.contiguous(), b.contiguous()};
}

}  // namespace lk
