// CPU implementations of the lattice_kernels ops: argument checks, layout, at::parallel_for over the work items
// of the torch-free kernels (kernels_impl.h), and the fixed-order merges of their partial results.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "../binding_common.h"
#include "coefficient_mlp.h"
#include "kernels.h"

namespace lk {

namespace {

KernelSet baseline_set() {
  return {"baseline",         isa_baseline::stats_partials, isa_baseline::butterfly_forward,
          isa_baseline::butterfly_backward, isa_baseline::stats_backward, isa_baseline::conv3x3_tiles};
}

// The instruction set is chosen once: LATTICE_KERNELS_CPU_ISA=baseline|avx2 forces one (tests run both), otherwise
// AVX2 when the CPU has AVX2, FMA and F16C.
const KernelSet& kernels() {
  static const KernelSet chosen = [] {
    const char* env = std::getenv("LATTICE_KERNELS_CPU_ISA");
    const std::string want = env ? env : "";
    if (want == "baseline") return baseline_set();
#if defined(LK_HAVE_AVX2)
    __builtin_cpu_init();
    const bool has_avx2 =
        __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
    const KernelSet avx2{"avx2",
                         isa_avx2::stats_partials,
                         isa_avx2::butterfly_forward,
                         isa_avx2::butterfly_backward,
                         isa_avx2::stats_backward,
                         isa_avx2::conv3x3_tiles};
    TORCH_CHECK(want.empty() || want == "avx2", "LATTICE_KERNELS_CPU_ISA must be 'baseline' or 'avx2', got '", want,
                "'");
    TORCH_CHECK(want != "avx2" || has_avx2, "LATTICE_KERNELS_CPU_ISA=avx2 but this CPU lacks AVX2/FMA/F16C");
    if (has_avx2) return avx2;
#else
    TORCH_CHECK(want.empty(), "LATTICE_KERNELS_CPU_ISA=", want, " but this build has only the baseline kernels");
#endif
    return baseline_set();
  }();
  return chosen;
}

// Outputs of a call that writes at least this many bytes are written with streaming stores (AVX2 build). Measured
// on the 2-core EPYC (32 MiB L3), median of 30 calls: butterfly at 1x64x180x320 fp32 (29 MiB written) took 2.02 ms
// with plain stores and 1.22 ms with streaming ones; LatticeNet x4 at LR 320x180 under torch.compile, 465 vs
// 458 ms. LATTICE_KERNELS_STREAM_BYTES overrides it (0: always, -1: never).
int64_t stream_threshold() {
  static const int64_t bytes = [] {
    const char* env = std::getenv("LATTICE_KERNELS_STREAM_BYTES");
    return env && *env ? std::atoll(env) : int64_t(8) << 20;
  }();
  return bytes;
}

bool stream_outputs(const at::Tensor& like, int64_t n_outputs) {
  const int64_t t = stream_threshold();
  return t >= 0 && n_outputs * like.numel() * like.element_size() >= t;
}

// Runs fn(begin, end, scratch) over the work items in parallel; each call gets a scratch of 4*C doubles. Grain:
// about 32K elements per task, so small tensors stay on one thread.
template <class F> void for_items(const Geometry& g, F fn) {
  const int64_t per_item = g.interleaved ? g.chunk * g.C : g.chunk;
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, per_item));
  at::parallel_for(0, g.items(), grain, [&](int64_t b, int64_t e) {
    std::vector<double> scratch(4 * g.C);
    fn(b, e, scratch.data());
  });
}

void check_cpu(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), "lattice_kernels: ", name, " must be a CPU tensor for the CPU kernels, got ",
              t.device());
}

// Merges the per-chunk (mean, M2) of every (n, c) into mean and std. All chunks at once (Chan's combination
// generalised to K parts): mean = sum(n_k m_k) / P, M2 = sum(M2_k + n_k (m_k - mean)^2), in double and in chunk
// order. Only non-negative terms are added, so nothing cancels when |mean| >> std. P == 1 gives std = 0/0 = NaN,
// as torch.std does.
std::pair<at::Tensor, at::Tensor> merge_stats(const Geometry& g, const at::Tensor& pm, const at::Tensor& pv,
                                              const at::Tensor& x) {
  at::Tensor mean = at::empty({g.N, g.C}, x.options().dtype(at::kDouble));
  at::Tensor stdv = at::empty({g.N, g.C}, x.options().dtype(at::kDouble));
  const double* m = pm.data_ptr<double>();
  const double* v = pv.data_ptr<double>();
  double* om = mean.data_ptr<double>();
  double* os = stdv.data_ptr<double>();
  Partials part;
  at::parallel_for(0, g.N * g.C, 256, [&](int64_t b, int64_t e) {
    for (int64_t nc = b; nc < e; ++nc) {
      const int64_t n = nc / g.C, c = nc % g.C;
      double total = 0;
      for (int64_t k = 0; k < g.nchunk; ++k) total += double(g.chunk_len(k)) * m[part.index(g, n, c, k)];
      const double mu = total / double(g.P);
      double m2 = 0;
      for (int64_t k = 0; k < g.nchunk; ++k) {
        const int64_t i = part.index(g, n, c, k);
        const double d = m[i] - mu;
        m2 += v[i] + double(g.chunk_len(k)) * d * d;
      }
      om[nc] = mu;
      os[nc] = std::sqrt(m2 / double(g.P - 1));
    }
  });
  const at::ScalarType st = stats_type(x);
  return {mean.to(st), stdv.to(st)};
}

std::pair<at::Tensor, at::Tensor> stats_impl(const at::Tensor& x) {
  const bool il = is_interleaved(x);
  auto [xt, xv] = operand(x, il);
  const Geometry g = make_geometry(xt, il);
  const auto dopt = x.options().dtype(at::kDouble);
  at::Tensor pm = at::empty({g.N * g.C * g.nchunk}, dopt), pv = at::empty({g.N * g.C * g.nchunk}, dopt);
  const StatsArgs args{dtype_of(x, "x"), g, xv, Partials{pm.data_ptr(), pv.data_ptr()}};
  for_items(g, [&](int64_t b, int64_t e, void* s) { kernels().stats_partials(args, b, e, s); });
  return merge_stats(g, pm, pv, x);
}

at::Tensor stats_backward_impl(const at::Tensor& grad_mean, const at::Tensor& grad_std, const at::Tensor& x,
                               const at::Tensor& mean, const at::Tensor& stdv) {
  const bool il = is_interleaved(x);
  auto [xt, xv] = operand(x, il);
  Geometry g = make_geometry(xt, il);
  g.stream = stream_outputs(x, 1);
  auto [a, b] = fold_stats_grads(per_channel(grad_mean, x, "grad_mean"), per_channel(grad_std, x, "grad_std"),
                                 per_channel(stdv, x, "std"), g.P);
  const at::Tensor m = per_channel(mean, x, "mean");
  at::Tensor dx = new_like_layout(x, il);
  View dv;
  view_of(dx, il, dv);
  const StatsBackwardArgs args{dtype_of(x, "x"), g, xv, dv, a.data_ptr(), b.data_ptr(), m.data_ptr()};
  for_items(g, [&](int64_t b0, int64_t e0, void*) { kernels().stats_backward(args, b0, e0); });
  return dx;
}

// ---------------------------------------------------------------------------------------------------------------
// ops

std::tuple<at::Tensor, at::Tensor> channel_stats(const at::Tensor& x) {
  check_input(x, "x");
  check_cpu(x, "x");
  auto [mean, stdv] = stats_impl(x);
  return {mean, stdv};
}

at::Tensor channel_stats_backward(const at::Tensor& grad_mean, const at::Tensor& grad_std, const at::Tensor& x,
                                  const at::Tensor& mean, const at::Tensor& stdv) {
  check_input(x, "x");
  check_cpu(x, "x");
  return stats_backward_impl(grad_mean, grad_std, x, mean, stdv);
}

struct Mlp {
  at::Tensor w1, b1, w2, b2;
};

Mlp check_mlp(const at::Tensor& x, const at::Tensor& w1, const at::Tensor& b1, const at::Tensor& w2,
              const at::Tensor& b2, const char* branch) {
  const int64_t C = x.size(1);
  const at::ScalarType st = stats_type(x);
  TORCH_CHECK(w1.dim() == 2 && w1.size(1) == C && w1.size(0) >= 1, "lattice_kernels: w1", branch,
              " must have shape (R, C) with C = ", C, ", got ", w1.sizes());
  const int64_t R = w1.size(0);
  TORCH_CHECK(b1.dim() == 1 && b1.size(0) == R, "lattice_kernels: b1", branch, " must have shape (", R, "), got ",
              b1.sizes());
  TORCH_CHECK(w2.dim() == 2 && w2.size(0) == C && w2.size(1) == R, "lattice_kernels: w2", branch,
              " must have shape (", C, ", ", R, "), got ", w2.sizes());
  TORCH_CHECK(b2.dim() == 1 && b2.size(0) == C, "lattice_kernels: b2", branch, " must have shape (", C, "), got ",
              b2.sizes());
  for (const at::Tensor* t : {&w1, &b1, &w2, &b2}) {
    TORCH_CHECK(t->scalar_type() == st, "lattice_kernels: the weights of the ", branch, " branch must be ", st,
                ", got ", t->scalar_type());
    TORCH_CHECK(t->device() == x.device(), "lattice_kernels: the weights of the ", branch, " branch are on ",
                t->device(), " but x is on ", x.device());
  }
  return {w1.contiguous(), b1.contiguous(), w2.contiguous(), b2.contiguous()};
}

template <class A> MlpWeights<A> weights_of(const Mlp& m) {
  return {m.w1.data_ptr<A>(), m.b1.data_ptr<A>(), m.w2.data_ptr<A>(), m.b2.data_ptr<A>()};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> combination_coefficients(
    const at::Tensor& x, const at::Tensor& w1m, const at::Tensor& b1m, const at::Tensor& w2m, const at::Tensor& b2m,
    const at::Tensor& w1s, const at::Tensor& b1s, const at::Tensor& w2s, const at::Tensor& b2s) {
  check_input(x, "x");
  check_cpu(x, "x");
  const Mlp wm = check_mlp(x, w1m, b1m, w2m, b2m, "m (mean)");
  const Mlp ws = check_mlp(x, w1s, b1s, w2s, b2s, "s (std)");
  auto [mean, stdv] = stats_impl(x);
  at::Tensor cc = at::empty_like(mean);
  const int64_t N = x.size(0), C = x.size(1), R = wm.w1.size(0);
  TORCH_CHECK(ws.w1.size(0) == R, "lattice_kernels: w1s must have as many rows as w1m (", R, "), got ",
              ws.w1.size(0));
  AT_DISPATCH_FLOATING_TYPES(mean.scalar_type(), "combination_coefficients", [&] {
    coefficient_mlp_forward<scalar_t>(mean.data_ptr<scalar_t>(), stdv.data_ptr<scalar_t>(), weights_of<scalar_t>(wm),
                                      weights_of<scalar_t>(ws), N, C, R, cc.data_ptr<scalar_t>());
  });
  return {cc, mean, stdv};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
combination_coefficients_backward(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& mean,
                                  const at::Tensor& stdv, const at::Tensor& w1m, const at::Tensor& b1m,
                                  const at::Tensor& w2m, const at::Tensor& b2m, const at::Tensor& w1s,
                                  const at::Tensor& b1s, const at::Tensor& w2s, const at::Tensor& b2s) {
  check_input(x, "x");
  check_cpu(x, "x");
  const Mlp wm = check_mlp(x, w1m, b1m, w2m, b2m, "m (mean)");
  const Mlp ws = check_mlp(x, w1s, b1s, w2s, b2s, "s (std)");
  const at::Tensor g = per_channel(grad, x, "grad");
  const at::Tensor m = per_channel(mean, x, "mean"), s = per_channel(stdv, x, "std");
  const int64_t N = x.size(0), C = x.size(1), R = wm.w1.size(0);
  at::Tensor gmean = at::empty_like(m), gstd = at::empty_like(s);
  Mlp gm{at::empty_like(wm.w1), at::empty_like(wm.b1), at::empty_like(wm.w2), at::empty_like(wm.b2)};
  Mlp gs{at::empty_like(ws.w1), at::empty_like(ws.b1), at::empty_like(ws.w2), at::empty_like(ws.b2)};
  AT_DISPATCH_FLOATING_TYPES(m.scalar_type(), "combination_coefficients_backward", [&] {
    auto grads_of = [](Mlp& t) {
      return MlpGrads<scalar_t>{t.w1.data_ptr<scalar_t>(), t.b1.data_ptr<scalar_t>(), t.w2.data_ptr<scalar_t>(),
                                t.b2.data_ptr<scalar_t>()};
    };
    mlp_branch_backward<scalar_t>(g.data_ptr<scalar_t>(), m.data_ptr<scalar_t>(), weights_of<scalar_t>(wm), N, C, R,
                                  gmean.data_ptr<scalar_t>(), grads_of(gm));
    mlp_branch_backward<scalar_t>(g.data_ptr<scalar_t>(), s.data_ptr<scalar_t>(), weights_of<scalar_t>(ws), N, C, R,
                                  gstd.data_ptr<scalar_t>(), grads_of(gs));
  });
  at::Tensor dx = stats_backward_impl(gmean, gstd, x, m, s);
  return {dx, gm.w1, gm.b1, gm.w2, gm.b2, gs.w1, gs.b1, gs.w2, gs.b2};
}

// p and q are views to write (fresh tensors, the halves of one, or of the caller's out) in layout `il`.
std::tuple<at::Tensor, at::Tensor> butterfly_into(const at::Tensor& x1, const at::Tensor& x2,
                                                  const c10::optional<at::Tensor>& alpha1,
                                                  const c10::optional<at::Tensor>& alpha2,
                                                  const c10::optional<at::Tensor>& beta1,
                                                  const c10::optional<at::Tensor>& beta2, bool q_stats,
                                                  const at::Tensor& p, const at::Tensor& q, bool il) {
  auto [x1t, v1] = operand(x1, il);
  auto [x2t, v2] = operand(x2, il);
  View vp, vq;
  TORCH_CHECK(view_of(p, il, vp) && view_of(q, il, vq), "lattice_kernels: internal error: output layout");
  const at::Tensor a1 = coefficient_or_ones(alpha1, x1, "alpha1"), a2 = coefficient_or_ones(alpha2, x1, "alpha2");
  const at::Tensor b1 = coefficient_or_ones(beta1, x1, "beta1"), b2 = coefficient_or_ones(beta2, x1, "beta2");
  Geometry g = make_geometry(x1t, il);
  g.stream = stream_outputs(x1, 2);
  const auto dopt = x1.options().dtype(at::kDouble);
  const int64_t np = q_stats ? g.N * g.C * g.nchunk : 0;
  at::Tensor pm = at::empty({np}, dopt), pv = at::empty({np}, dopt);
  const ButterflyArgs args{dtype_of(x1, "x1"), g,           v1,          v2,          vp, vq,
                           a1.data_ptr(),      a2.data_ptr(), b1.data_ptr(), b2.data_ptr(), q_stats,
                           Partials{pm.data_ptr(), pv.data_ptr()}};
  for_items(g, [&](int64_t b, int64_t e, void* s) { kernels().butterfly_forward(args, b, e, s); });
  if (!q_stats) {
    const auto sopt = x1.options().dtype(stats_type(x1));
    return {at::empty({0}, sopt), at::empty({0}, sopt)};
  }
  auto [mean, stdv] = merge_stats(g, pm, pv, x1);
  return {mean, stdv};
}

void check_cpu_pair(const at::Tensor& x1, const at::Tensor& x2) {
  check_pair(x1, x2);
  check_cpu(x1, "x1");
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> butterfly(
    const at::Tensor& x1, const at::Tensor& x2, const c10::optional<at::Tensor>& alpha1,
    const c10::optional<at::Tensor>& alpha2, const c10::optional<at::Tensor>& beta1,
    const c10::optional<at::Tensor>& beta2, bool q_stats) {
  check_cpu_pair(x1, x2);
  const bool il = is_interleaved(x1);
  at::Tensor p = new_like_layout(x1, il), q = new_like_layout(x1, il);
  auto [mean, stdv] = butterfly_into(x1, x2, alpha1, alpha2, beta1, beta2, q_stats, p, q, il);
  return {p, q, mean, stdv};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> butterfly_stacked(
    const at::Tensor& x1, const at::Tensor& x2, const c10::optional<at::Tensor>& alpha1,
    const c10::optional<at::Tensor>& alpha2, const c10::optional<at::Tensor>& beta1,
    const c10::optional<at::Tensor>& beta2, bool q_stats) {
  check_cpu_pair(x1, x2);
  const bool il = is_interleaved(x1);
  const int64_t C = x1.size(1);
  at::Tensor pq = new_like_layout(x1, il, 2 * C);
  auto [mean, stdv] =
      butterfly_into(x1, x2, alpha1, alpha2, beta1, beta2, q_stats, pq.narrow(1, 0, C), pq.narrow(1, C, C), il);
  return {pq, mean, stdv};
}

std::tuple<at::Tensor, at::Tensor> butterfly_out(const at::Tensor& x1, const at::Tensor& x2,
                                                 const c10::optional<at::Tensor>& alpha1,
                                                 const c10::optional<at::Tensor>& alpha2,
                                                 const c10::optional<at::Tensor>& beta1,
                                                 const c10::optional<at::Tensor>& beta2, bool q_stats,
                                                 at::Tensor& out) {
  check_cpu_pair(x1, x2);
  auto [il, p, q] = out_halves(out, x1, x2);
  return butterfly_into(x1, x2, alpha1, alpha2, beta1, beta2, q_stats, p, q, il);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> butterfly_backward(
    const at::Tensor& grad_p, const at::Tensor& grad_q, const c10::optional<at::Tensor>& grad_mean_q,
    const c10::optional<at::Tensor>& grad_std_q, const at::Tensor& x1, const at::Tensor& x2,
    const c10::optional<at::Tensor>& alpha1, const c10::optional<at::Tensor>& alpha2,
    const c10::optional<at::Tensor>& beta1, const c10::optional<at::Tensor>& beta2,
    const c10::optional<at::Tensor>& mean_q, const c10::optional<at::Tensor>& std_q) {
  check_cpu_pair(x1, x2);
  check_like(grad_p, x1, "grad_p", "x1");
  check_like(grad_q, x1, "grad_q", "x1");
  const bool il = is_interleaved(x1);
  auto [x1t, v1] = operand(x1, il);
  auto [x2t, v2] = operand(x2, il);
  auto [gpt, vgp] = operand(grad_p, il);
  auto [gqt, vgq] = operand(grad_q, il);
  Geometry g = make_geometry(x1t, il);
  g.stream = stream_outputs(x1, 2);
  const at::Tensor a1 = coefficient_or_ones(alpha1, x1, "alpha1"), a2 = coefficient_or_ones(alpha2, x1, "alpha2");
  const at::Tensor b1 = coefficient_or_ones(beta1, x1, "beta1"), b2 = coefficient_or_ones(beta2, x1, "beta2");
  const auto sopt = x1.options().dtype(stats_type(x1));
  auto [gm, bs, mq] = q_stats_grads(grad_mean_q, grad_std_q, mean_q, std_q, x1, g.P);
  if (!gm.defined()) gm = bs = mq = at::zeros({g.N, g.C}, sopt);
  at::Tensor dx1 = new_like_layout(x1, il), dx2 = new_like_layout(x1, il);
  View vd1, vd2;
  view_of(dx1, il, vd1);
  view_of(dx2, il, vd2);
  at::Tensor sums = at::empty({4 * g.N * g.C * g.nchunk}, x1.options().dtype(at::kDouble));
  const ButterflyBackwardArgs args{dtype_of(x1, "x1"), g,  vgp,           vgq,           v1,           v2,
                                   vd1,                vd2, a1.data_ptr(), a2.data_ptr(), b1.data_ptr(), b2.data_ptr(),
                                   gm.data_ptr(),      bs.data_ptr(), mq.data_ptr(), sums.data_ptr()};
  for_items(g, [&](int64_t b, int64_t e, void* s) { kernels().butterfly_backward(args, b, e, s); });
  // Coefficient gradients: the chunk sums of each (n, c) added in chunk order, in double.
  at::Tensor red = at::empty({4, g.N, g.C}, x1.options().dtype(at::kDouble));
  const double* sp = sums.data_ptr<double>();
  double* rp = red.data_ptr<double>();
  at::parallel_for(0, g.N * g.C, 256, [&](int64_t b, int64_t e) {
    for (int64_t nc = b; nc < e; ++nc)
      for (int w = 0; w < 4; ++w) {
        double acc = 0;
        for (int64_t k = 0; k < g.nchunk; ++k) acc += sp[args.sums_index(nc / g.C, nc % g.C, k, w)];
        rp[w * g.N * g.C + nc] = acc;
      }
  });
  red = red.to(stats_type(x1));
  const auto pick = [&](const c10::optional<at::Tensor>& coef, int w) {
    return present(coef) ? red[w].clone() : at::empty({0}, sopt);
  };
  return {dx1, dx2, pick(alpha1, 0), pick(alpha2, 1), pick(beta1, 2), pick(beta2, 3)};
}

// ---------------------------------------------------------------------------------------------------------------
// conv3x3 by Winograd F(4x4, 3x3) (conv3x3_impl.h): each thread takes groups of tiles through input transform,
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
// conv3x3_impl.h, and (0, 0, 1) for infinity), computed in double and rounded once to the accumulation type.
at::Tensor winograd_weights(const at::Tensor& w, at::ScalarType acc) {
  const at::Tensor g = at::tensor({1.0, 0.0, 0.0, -1.0 / 3, 1.0 / 3, -1.0 / 3, 1.0 / 3, 1.0 / 3, 1.0 / 3,
                                   -16.0 / 15, -8.0 / 15, -4.0 / 15, 1.0 / 15, -2.0 / 15, 4.0 / 15, 0.0, 0.0, 1.0},
                                  at::TensorOptions().dtype(at::kDouble))
                           .view({6, 3});
  const at::Tensor u = at::matmul(at::matmul(g, w.to(at::kDouble)), g.t());  // (Cout, Cin, 6, 6)
  return u.permute({2, 3, 1, 0}).reshape({36, w.size(1), w.size(0)}).to(acc).contiguous();
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
  const size_t scratch_bytes = static_cast<size_t>(36 * group * (Cin + Cout)) * at::elementSize(acc);
  at::parallel_for(0, items, 1, [&](int64_t b0, int64_t e0) {
    std::vector<double> s((scratch_bytes + sizeof(double) - 1) / sizeof(double));  // aligned for float and double
    kernels().conv3x3_tiles(args, b0, e0, s.data());
  });
  return y;
}

}  // namespace

const char* cpu_isa_name() { return kernels().isa; }

}  // namespace lk

TORCH_LIBRARY_IMPL(lattice_kernels, CPU, m) {
  m.impl("channel_stats", &lk::channel_stats);
  m.impl("channel_stats_backward", &lk::channel_stats_backward);
  m.impl("combination_coefficients", &lk::combination_coefficients);
  m.impl("combination_coefficients_backward", &lk::combination_coefficients_backward);
  m.impl("butterfly", &lk::butterfly);
  m.impl("butterfly_stacked", &lk::butterfly_stacked);
  m.impl("butterfly_out", &lk::butterfly_out);
  m.impl("butterfly_backward", &lk::butterfly_backward);
  m.impl("conv3x3", &lk::conv3x3);
}
