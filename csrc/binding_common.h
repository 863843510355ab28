// Host-side helpers shared by the CPU and CUDA bindings: argument checks, the layout of an operand as a View,
// the work decomposition, and the folding of the statistics gradients. Depends on ATen; the kernels do not.
#pragma once
#include <ATen/ATen.h>
#include <ATen/MemoryOverlap.h>
#include <c10/util/Optional.h>

#include <cmath>
#include <tuple>
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

// The (N, C) statistics the coefficient MLP takes on its own (coefficients_from_stats): float32 or float64, one
// shape, one device, N and C >= 1. Returns them contiguous.
inline std::pair<at::Tensor, at::Tensor> check_stats(const at::Tensor& mean, const at::Tensor& stdv) {
  TORCH_CHECK(mean.defined() && stdv.defined(), "lattice_kernels: mean and std must be tensors");
  TORCH_CHECK(mean.dim() == 2 && mean.size(0) >= 1 && mean.size(1) >= 1,
              "lattice_kernels: mean must be a non-empty (N, C) tensor, got shape ", mean.sizes());
  TORCH_CHECK(stdv.sizes() == mean.sizes(), "lattice_kernels: std must have mean's shape ", mean.sizes(), ", got ",
              stdv.sizes());
  TORCH_CHECK(mean.scalar_type() == at::kFloat || mean.scalar_type() == at::kDouble,
              "lattice_kernels: mean must be float32 or float64 (the statistics' dtype), got ", mean.scalar_type());
  TORCH_CHECK(stdv.scalar_type() == mean.scalar_type(), "lattice_kernels: std must have mean's dtype ",
              mean.scalar_type(), ", got ", stdv.scalar_type());
  TORCH_CHECK(stdv.device() == mean.device(), "lattice_kernels: std is on ", stdv.device(), " but mean is on ",
              mean.device());
  return {mean.contiguous(), stdv.contiguous()};
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

inline bool present(const c10::optional<at::Tensor>& t) { return t.has_value() && t->defined() && t->numel() > 0; }

inline void check_pair(const at::Tensor& x1, const at::Tensor& x2) {
  check_input(x1, "x1");
  check_like(x2, x1, "x2", "x1");
}

// butterfly_out's buffer: (N, 2C, H, W), x1's dtype and device, no overlap with the inputs, contiguous or
// channels_last. Returns the layout to run in (x1's when out's halves fit it, else the other one) and the halves.
inline std::tuple<bool, at::Tensor, at::Tensor> out_halves(const at::Tensor& out, const at::Tensor& x1,
                                                           const at::Tensor& x2) {
  const int64_t N = x1.size(0), C = x1.size(1), H = x1.size(2), W = x1.size(3);
  TORCH_CHECK(out.dim() == 4 && out.size(0) == N && out.size(1) == 2 * C && out.size(2) == H && out.size(3) == W,
              "lattice_kernels: out must have shape (N, 2C, H, W) = (", N, ", ", 2 * C, ", ", H, ", ", W, "), got ",
              out.sizes());
  TORCH_CHECK(out.scalar_type() == x1.scalar_type(), "lattice_kernels: out must have the dtype of x1 (",
              x1.scalar_type(), "), got ", out.scalar_type());
  TORCH_CHECK(out.device() == x1.device(), "lattice_kernels: out is on ", out.device(), " but x1 is on ",
              x1.device());
  at::assert_no_internal_overlap(out);
  at::assert_no_overlap(out, x1);
  at::assert_no_overlap(out, x2);
  at::Tensor p = out.narrow(1, 0, C), q = out.narrow(1, C, C);
  View tmp;
  bool il = is_interleaved(x1);
  if (!(view_of(p, il, tmp) && view_of(q, il, tmp))) il = !il;
  TORCH_CHECK(view_of(p, il, tmp) && view_of(q, il, tmp),
              "lattice_kernels: out must be contiguous or channels_last-contiguous, got strides ", out.strides());
  return {il, p, q};
}

// The gradients of q's statistics folded for the butterfly backward: (grad_mean / P, grad_std / ((P-1) std), mean),
// undefined tensors when neither gradient is given.
inline std::tuple<at::Tensor, at::Tensor, at::Tensor> q_stats_grads(const c10::optional<at::Tensor>& grad_mean_q,
                                                                     const c10::optional<at::Tensor>& grad_std_q,
                                                                     const c10::optional<at::Tensor>& mean_q,
                                                                     const c10::optional<at::Tensor>& std_q,
                                                                     const at::Tensor& x1, int64_t P) {
  if (!present(grad_mean_q) && !present(grad_std_q)) return {};
  TORCH_CHECK(present(mean_q) && present(std_q), "lattice_kernels: grads of q's statistics need mean_q and std_q");
  const at::Tensor m = per_channel(*mean_q, x1, "mean_q"), s = per_channel(*std_q, x1, "std_q");
  const at::Tensor gm = present(grad_mean_q) ? per_channel(*grad_mean_q, x1, "grad_mean_q") : at::zeros_like(m);
  const at::Tensor gs = present(grad_std_q) ? per_channel(*grad_std_q, x1, "grad_std_q") : at::zeros_like(s);
  auto [a, b] = fold_stats_grads(gm, gs, s, P);
  return {a, b, m};
}

}  // namespace lk
