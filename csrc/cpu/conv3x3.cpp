// CPU binding of conv3x3: checks, the Winograd weight transform (in double), and the parallel loop over groups of
// tiles of conv3x3_kernels.h.
#include <torch/library.h>
#include <cmath>
#include <algorithm>
#include <cstdlib>
#include <memory>
#include <vector>
#include "binding.h"

namespace lk {
namespace cpu {
namespace {

// conv3x3 by Winograd F(4x4, 3x3) (conv3x3_kernels.h): each thread takes groups of tiles through input transform,
// GEMMs and output transform in a scratch of its own. Group size, measured for a conv 64->48 at 1x64x180x320 fp32
// channels_last on the 2-core EPYC (L2 1 MiB per core), medians of 20 calls in two runs: 8 tiles 8.2-8.3 ms,
// 16: 8.9-9.2, 24: 8.0-8.1, 32: 9.1-9.5, 48: 8.9 (the version with ATen's bmm over 2 MiB blocks: 10.1-10.5 ms).
// LATTICE_KERNELS_WINOGRAD_TILES overrides it.

int64_t winograd_group() {
  static const int64_t tiles = [] {
    const char* env = std::getenv("LATTICE_KERNELS_WINOGRAD_TILES");
    return env && *env ? std::max<int64_t>(1, std::atoll(env)) : int64_t(24);
  }();
  return tiles;
}

// U[6i + j][ci][co] = (G w[co][ci] G^T)[i][j] (G: rows p^k / prod_{l != j} (p - p_l) for the points of
// conv3x3_kernels.h, and (0, 0, 1) for infinity), computed in double and rounded once to the accumulation type.
// One thread, no ATen ops but the allocations: ~0.5 M multiply-adds for a 64->48 conv, which took 0.2-0.3 ms as
// ATen matmuls and copies (27 calls per LatticeNet forward) and far longer when another process holds a core and
// their parallel regions wait for it.
constexpr double kG[6][3] = {{1.0, 0.0, 0.0},
                             {-1.0 / 3, 1.0 / 3, -1.0 / 3},
                             {1.0 / 3, 1.0 / 3, 1.0 / 3},
                             {-16.0 / 15, -8.0 / 15, -4.0 / 15},
                             {1.0 / 15, -2.0 / 15, 4.0 / 15},
                             {0.0, 0.0, 1.0}};

template <class A> void winograd_weights_into(const double* w, int64_t Cout, int64_t Cin, A* u) {
  const auto& G = kG;
  // t[(ci * Cout + co) * 18 + 3i + b] = (G w[co][ci])[i][b], then u in its own order: writing u while walking w
  // stores 36 values Cin * Cout * 4 bytes apart, for 64 input channels a multiple of 4 KiB (12 KiB for 64 -> 48),
  // so they all fall in one L1 set; that took 0.57 ms per 64 -> 48 conv against 0.09 ms for 60 -> 48 (float32,
  // 2-core EPYC, 2026-12-07).
  std::vector<double> t(static_cast<size_t>(Cin * Cout * 18));
  for (int64_t co = 0; co < Cout; ++co)
    for (int64_t ci = 0; ci < Cin; ++ci) {
      const double* k = w + (co * Cin + ci) * 9;
      double* tk = t.data() + (ci * Cout + co) * 18;
      for (int i = 0; i < 6; ++i)
        for (int b = 0; b < 3; ++b) tk[3 * i + b] = G[i][0] * k[b] + G[i][1] * k[3 + b] + G[i][2] * k[6 + b];
    }
  for (int i = 0; i < 6; ++i)
    for (int j = 0; j < 6; ++j) {
      A* uk = u + (6 * i + j) * Cin * Cout;
      for (int64_t e = 0; e < Cin * Cout; ++e) {
        const double* ti = t.data() + e * 18 + 3 * i;
        uk[e] = static_cast<A>(ti[0] * G[j][0] + ti[1] * G[j][1] + ti[2] * G[j][2]);
      }
    }
}

at::Tensor winograd_weights(const at::Tensor& w, at::ScalarType acc) {
  const at::Tensor wd = w.to(at::kDouble).contiguous();
  const int64_t Cout = w.size(0), Cin = w.size(1);
  at::Tensor u = at::empty({36, Cin, Cout}, w.options().dtype(acc));
  if (acc == at::kDouble)
    winograd_weights_into(wd.data_ptr<double>(), Cout, Cin, u.data_ptr<double>());
  else
    winograd_weights_into(wd.data_ptr<double>(), Cout, Cin, u.data_ptr<float>());
  return u;
}

// Output rows per work item of the direct bf16 convolution: the band's input rows (rows + 2 of them, w_p + 2 pixels
// of cin_p channels) stay within ~1 MiB, half an AMX core's L2, and at most 8 rows (a 180-row image is then 23 work
// items for the threads; the next band copies a band's 2 halo rows again).
int64_t direct_rows(int64_t w_p, int64_t cin_p) {
  const int64_t row_bytes = (w_p + 2) * cin_p * 2;
  return std::clamp<int64_t>((int64_t(1) << 20) / row_bytes - 2, 1, 8);
}

// y = conv3x3 of bf16 x, weight and bias by the kernel set's direct convolution (kernels_amx.cpp).
void conv3x3_bf16_direct(const at::Tensor& x, const View& xv, const at::Tensor& weight, const at::Tensor& bias,
                         c10::optional<double> negative_slope, const View& yv) {
  const int64_t N = x.size(0), Cin = x.size(1), H = x.size(2), W = x.size(3), Cout = weight.size(0);
  const int64_t cin_p = (Cin + 31) / 32 * 32, cout_p = (Cout + 15) / 16 * 16, w_p = (W + 31) / 32 * 32;
  // w[co][ci][tap] into [tap][ci / 32][co / 16][(ci % 32) / 2][co % 16][ci % 2], zeros past Cin and Cout.
  const at::Tensor wc = weight.contiguous();
  const uint16_t* ws = reinterpret_cast<const uint16_t*>(wc.data_ptr());
  at::Tensor wp = at::zeros({9 * cin_p * cout_p}, x.options().dtype(at::kBFloat16));
  uint16_t* wd = reinterpret_cast<uint16_t*>(wp.data_ptr());
  for (int64_t co = 0; co < Cout; ++co)
    for (int64_t ci = 0; ci < Cin; ++ci)
      for (int64_t tap = 0; tap < 9; ++tap)
        wd[(((tap * (cin_p / 32) + ci / 32) * (cout_p / 16) + co / 16) * 16 + (ci % 32) / 2) * 32 + (co % 16) * 2 +
           ci % 2] = ws[(co * Cin + ci) * 9 + tap];
  at::Tensor bp = at::zeros({cout_p}, x.options().dtype(at::kFloat));
  if (bias.defined()) bp.narrow(0, 0, Cout).copy_(bias);
  Conv3x3DirectArgs args{N, H, W, Cin, Cout, xv, yv, W * xv.sp, xv.sp, W * yv.sp, yv.sp, wd,
                         bp.data_ptr<float>(), negative_slope.has_value(), negative_slope.value_or(0.0), 0,
                         cin_p, cout_p, w_p};
  args.rows = direct_rows(w_p, cin_p);
  const int64_t items = N * ((H + args.rows - 1) / args.rows);
  const size_t scratch_bytes = static_cast<size_t>(conv3x3_direct_scratch_bytes(args));
  at::parallel_for(0, items, 1, [&](int64_t b0, int64_t e0) {
    // not zero-filled: the kernel writes every scratch byte it reads (the band's padding included)
    const std::unique_ptr<double[]> s(new double[(scratch_bytes + 63) / sizeof(double) + 8]);
    void* aligned = reinterpret_cast<void*>((reinterpret_cast<uintptr_t>(s.get()) + 63) & ~uintptr_t(63));
    kernels().conv3x3_bf16_bands(args, b0, e0, aligned);
  });
}

at::Tensor conv3x3(const at::Tensor& x, const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
                   c10::optional<double> negative_slope) {
  check_input(x, "x");
  check_cpu(x, "x");
  const int64_t N = x.size(0), Cin = x.size(1), H = x.size(2), W = x.size(3);
  TORCH_CHECK(weight.dim() == 4 && weight.size(1) == Cin && weight.size(2) == 3 && weight.size(3) == 3 &&
                  weight.size(0) > 0,
              "lattice_kernels: conv3x3 weight must have shape (Cout, Cin, 3, 3) with Cin = ", Cin, ", got ",
              weight.sizes());
  TORCH_CHECK(weight.scalar_type() == x.scalar_type() && weight.device() == x.device(),
              "lattice_kernels: conv3x3 weight must have x's dtype and device (", x.scalar_type(), ", ", x.device(),
              "), got ", weight.scalar_type(), ", ", weight.device());
  const int64_t Cout = weight.size(0);
  const bool has_bias = bias.has_value() && bias->defined();
  if (has_bias)
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == Cout && bias->scalar_type() == x.scalar_type() &&
                    bias->device() == x.device(),
                "lattice_kernels: conv3x3 bias must be (Cout,) = (", Cout, ",) with x's dtype and device, got ",
                bias->sizes(), " ", bias->scalar_type(), " on ", bias->device());
  TORCH_CHECK(!negative_slope.has_value() || (std::isfinite(*negative_slope) && *negative_slope >= 0),
              "lattice_kernels: conv3x3 negative_slope must be finite and >= 0, got ", negative_slope.value_or(0));
  const bool il = is_interleaved(x);
  auto [xt, xv] = operand(x, il);
  at::Tensor y = at::empty({N, Cout, H, W}, x.options().memory_format(format_of(il)));
  View yv;
  TORCH_CHECK(view_of(y, il, yv), "lattice_kernels: internal error: no view of the conv3x3 output");
  if (x.scalar_type() == at::kBFloat16 && kernels().conv3x3_bf16_bands != nullptr && y.numel() > 0) {
    conv3x3_bf16_direct(xt, xv, weight, has_bias ? *bias : at::Tensor(), negative_slope, yv);
    return y;
  }

  const at::ScalarType acc = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const at::Tensor u = winograd_weights(weight, acc);
  const at::Tensor b = has_bias ? bias->to(acc).contiguous() : at::Tensor();
  const int64_t TH = (H + 3) / 4, TW = (W + 3) / 4, group = winograd_group();
  const Conv3x3Args args{dtype_of(x, "x"),
                         N, H, W, TH, TW, Cin, Cout,
                         xv, yv,
                         W * xv.sp, xv.sp, W * yv.sp, yv.sp,
                         il,
                         u.data_ptr(),
                         has_bias ? b.data_ptr() : nullptr,
                         negative_slope.has_value(),
                         negative_slope.value_or(0.0),
                         group};
  const int64_t items = (N * TH * TW + group - 1) / group;
  const size_t scratch_bytes = static_cast<size_t>(conv3x3_scratch_elements(group, Cin, Cout)) * at::elementSize(acc);
  at::parallel_for(0, items, 1, [&](int64_t b0, int64_t e0) {
    std::vector<double> s((scratch_bytes + sizeof(double) - 1) / sizeof(double));  // aligned for float and double
    kernels().conv3x3_tiles(args, b0, e0, s.data());
  });
  return y;
}

// dw[co][ci][a][b] = sum_ij G[i][a] P[6i + j][ci][co] G[j][b] with P the chunks' partial sums added in chunk order,
// all in double.
template <class A> void finish_weight_grad(const A* p, int64_t nchunk, int64_t Cin, int64_t Cout, double* o) {
  const int64_t plane = Cin * Cout, size = 36 * plane;
  std::vector<double> m(static_cast<size_t>(size), 0.0);  // [36][Cin][Cout]: the chunks added in order, streamed
  at::parallel_for(0, size, 4096, [&](int64_t b0, int64_t e0) {
    for (int64_t c = 0; c < nchunk; ++c)
      for (int64_t i = b0; i < e0; ++i) m[i] += double(p[c * size + i]);
  });
  at::parallel_for(0, plane, 64, [&](int64_t b0, int64_t e0) {
    for (int64_t e = b0; e < e0; ++e) {
      const int64_t ci = e / Cout, co = e % Cout;
      for (int ra = 0; ra < 3; ++ra)
        for (int rb = 0; rb < 3; ++rb) {
          double v = 0;
          for (int i = 0; i < 6; ++i)
            for (int j = 0; j < 6; ++j) v += kG[i][ra] * m[(6 * i + j) * plane + e] * kG[j][rb];
          o[((co * Cin + ci) * 3 + ra) * 3 + rb] = v;
        }
    }
  });
}

// Rows per band of the direct bf16 weight gradient: the band's copies (rows + 2 rows of x over cin_p planes, rows
// of dy over cout_p channels, row pitch W + 2) within ~1 MiB, at most 64 rows (a band's 2 halo rows of x are
// copied again by the next band: 2 / rows of the copy's reads).
int64_t direct_weight_grad_rows(int64_t W, int64_t cin_p, int64_t cout_p) {
  const int64_t row_bytes = (W + 2) * (cin_p + cout_p) * 2;
  return std::clamp<int64_t>((int64_t(1) << 20) / row_bytes - 2, 1, 64);
}

// The weight gradient dw (float64) and the bias gradient, the sum of the chunks' partial bias sums
// bias_part [nchunk][Cout] (float64) in chunk order, both in dtype.
std::tuple<at::Tensor, at::Tensor> weight_and_bias_grads(const at::Tensor& dw, const at::Tensor& bias_part,
                                                         int64_t nchunk, at::ScalarType dtype) {
  const int64_t Cout = dw.size(0);
  at::Tensor db = at::zeros({Cout}, dw.options());
  const double* bp = bias_part.data_ptr<double>();
  double* dbp = db.data_ptr<double>();
  for (int64_t c = 0; c < nchunk; ++c)
    for (int64_t co = 0; co < Cout; ++co) dbp[co] += bp[c * Cout + co];
  return {dw.to(dtype), db.to(dtype)};
}

// (dL/dw, dL/db) of conv3x3 for bf16 x and grad by the kernel set's direct kernel (kernels_amx.cpp): chunks of bands
// in parallel into float32 partials of their own, added in chunk order in double.
std::tuple<at::Tensor, at::Tensor> conv3x3_weight_grad_bf16_direct(const at::Tensor& x, const View& xv,
                                                                   const at::Tensor& grad, const View& gv) {
  const int64_t N = x.size(0), Cin = x.size(1), H = x.size(2), W = x.size(3), Cout = grad.size(1);
  Conv3x3DirectWeightGradArgs args{N, H, W, Cin, Cout, xv, gv, W * xv.sp, xv.sp, W * gv.sp, gv.sp, 0, 0,
                                   (Cin + 15) / 16 * 16, (Cout + 15) / 16 * 16, nullptr, nullptr};
  args.rows = direct_weight_grad_rows(W, args.cin_p, args.cout_p);
  const int64_t bands = args.bands();
  args.chunk = std::max<int64_t>(1, (bands + 15) / 16);
  const int64_t nchunk = (bands + args.chunk - 1) / args.chunk, size = 9 * args.cin_p * args.cout_p;
  at::Tensor part = at::empty({nchunk, size}, x.options().dtype(at::kFloat));
  at::Tensor bias_part = at::empty({nchunk, Cout}, x.options().dtype(at::kDouble));
  args.partials = part.data_ptr<float>();
  args.bias_partials = bias_part.data_ptr<double>();
  const size_t scratch_bytes = static_cast<size_t>(conv3x3_direct_weight_grad_scratch_bytes(args));
  at::parallel_for(0, nchunk, 1, [&](int64_t b0, int64_t e0) {
    // not zero-filled: the kernel writes every scratch byte it reads (the band's padding included)
    const std::unique_ptr<double[]> s(new double[(scratch_bytes + 63) / sizeof(double) + 8]);
    void* aligned = reinterpret_cast<void*>((reinterpret_cast<uintptr_t>(s.get()) + 63) & ~uintptr_t(63));
    kernels().conv3x3_bf16_weight_grad_chunks(args, b0, e0, aligned);
  });
  // part[c] holds [tap][ci / 16][co / 16][ci % 16][co % 16]
  at::Tensor dw = at::empty({Cout, Cin, 3, 3}, x.options().dtype(at::kDouble));
  double* o = dw.data_ptr<double>();
  const float* p = args.partials;
  std::vector<double> m(static_cast<size_t>(size), 0.0);  // the chunks added in order, streamed
  at::parallel_for(0, size, 4096, [&](int64_t b0, int64_t e0) {
    for (int64_t c = 0; c < nchunk; ++c)
      for (int64_t i = b0; i < e0; ++i) m[i] += double(p[c * size + i]);
  });
  const int64_t cob_n = args.cout_p / 16, cib_n = args.cin_p / 16;
  for (int64_t co = 0; co < Cout; ++co)
    for (int64_t ci = 0; ci < Cin; ++ci)
      for (int64_t tap = 0; tap < 9; ++tap)
        o[(co * Cin + ci) * 9 + tap] = m[(((tap * cib_n + ci / 16) * cob_n + co / 16) * 16 + ci % 16) * 16 + co % 16];
  return weight_and_bias_grads(dw, bias_part, nchunk, x.scalar_type());
}

// (dL/dw, dL/db) of conv3x3 (conv3x3_kernels.h, conv3x3_weight_grad_t): chunks of tiles in parallel, each into
// its own partial sums; the chunks are added in order in double and G^T . G is applied in double, so the result
// does not depend on the thread count. At most 16 chunks (the partials are 16 x 36 x Cin x Cout values at most:
// 9.4 MB for 64 -> 64 channels in float32), each a whole number of tile groups, at least 4. The bias gradient (the
// sum of grad over (N, H, W)) comes from the kernel's own reads of grad: a separate sum cost ~2.5% of a LatticeNet
// training step (b16 LR 48, 2-core Xeon, 2026-11-29).
std::tuple<at::Tensor, at::Tensor> conv3x3_weight_grad(const at::Tensor& x, const at::Tensor& grad) {
  check_input(x, "x");
  check_cpu(x, "x");
  const int64_t N = x.size(0), Cin = x.size(1), H = x.size(2), W = x.size(3);
  TORCH_CHECK(grad.dim() == 4 && grad.size(0) == N && grad.size(2) == H && grad.size(3) == W && grad.size(1) > 0,
              "lattice_kernels: conv3x3_weight_grad grad must be (N, Cout, H, W) with (N, H, W) = (", N, ", ", H, ", ",
              W, ") of x, got ", grad.sizes());
  TORCH_CHECK(grad.scalar_type() == x.scalar_type() && grad.device() == x.device(),
              "lattice_kernels: conv3x3_weight_grad grad must have x's dtype and device (", x.scalar_type(), ", ",
              x.device(), "), got ", grad.scalar_type(), ", ", grad.device());
  const int64_t Cout = grad.size(1);
  const bool il = is_interleaved(x);
  auto [xt, xv] = operand(x, il);
  auto [gt, gv] = operand(grad, il);
  if (x.scalar_type() == at::kBFloat16 && kernels().conv3x3_bf16_weight_grad_chunks != nullptr)
    return conv3x3_weight_grad_bf16_direct(xt, xv, gt, gv);
  const at::ScalarType acc = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const int64_t TH = (H + 3) / 4, TW = (W + 3) / 4, group = winograd_group(), total = N * TH * TW;
  const int64_t per = (total + 15) / 16, chunk = std::max<int64_t>(4, (per + group - 1) / group) * group;
  const int64_t nchunk = (total + chunk - 1) / chunk;
  at::Tensor part = at::empty({nchunk, 36, Cin, Cout}, x.options().dtype(acc));
  at::Tensor bias_part = at::empty({nchunk, Cout}, x.options().dtype(at::kDouble));
  const Conv3x3Args fwd{dtype_of(x, "x"), N, H, W, TH, TW, Cin, Cout, xv, gv, W * xv.sp, xv.sp, W * gv.sp, gv.sp,
                        il, nullptr, nullptr, false, 0.0, group};
  const Conv3x3WeightGradArgs args{fwd, gv, W * gv.sp, gv.sp, chunk, part.data_ptr(), bias_part.data_ptr<double>()};
  const size_t scratch_bytes = static_cast<size_t>(conv3x3_scratch_elements(group, Cin, Cout)) * at::elementSize(acc);
  at::parallel_for(0, nchunk, 1, [&](int64_t b0, int64_t e0) {
    std::vector<double> s((scratch_bytes + sizeof(double) - 1) / sizeof(double));
    kernels().conv3x3_weight_grad_chunks(args, b0, e0, s.data());
  });
  at::Tensor dw = at::empty({Cout, Cin, 3, 3}, x.options().dtype(at::kDouble));
  if (acc == at::kDouble)
    finish_weight_grad(part.data_ptr<double>(), nchunk, Cin, Cout, dw.data_ptr<double>());
  else
    finish_weight_grad(part.data_ptr<float>(), nchunk, Cin, Cout, dw.data_ptr<double>());
  return weight_and_bias_grads(dw, bias_part, nchunk, x.scalar_type());
}

}  // namespace
}  // namespace cpu
}  // namespace lk

TORCH_LIBRARY_IMPL(lattice_kernels, CPU, m) {
  m.impl("conv3x3", &lk::cpu::conv3x3);
  m.impl("conv3x3_weight_grad", &lk::cpu::conv3x3_weight_grad);
}
