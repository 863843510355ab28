// CPU binding of channel_stats and combination_coefficients (and their backward passes): checks, layout, the
// parallel loop over the kernels of channel_stats_kernels.h, the fixed-order merge, the coefficient MLP.
#include <torch/library.h>
#include "binding.h"
#include "coefficient_mlp.h"

namespace lk {
namespace cpu {
namespace {

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
  TORCH_CHECK(ws.w1.size(0) == R, "lattice_kernels: w1s must have as many rows as w1m (", R, "), got ",
              ws.w1.size(0));
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

at::Tensor coefficients_from_stats(const at::Tensor& mean, const at::Tensor& stdv, const at::Tensor& w1m,
                                   const at::Tensor& b1m, const at::Tensor& w2m, const at::Tensor& b2m,
                                   const at::Tensor& w1s, const at::Tensor& b1s, const at::Tensor& w2s,
                                   const at::Tensor& b2s) {
  auto [m, s] = check_stats(mean, stdv);
  check_cpu(m, "mean");
  const Mlp wm = check_mlp(m, w1m, b1m, w2m, b2m, "m (mean)");
  const Mlp ws = check_mlp(m, w1s, b1s, w2s, b2s, "s (std)");
  const int64_t N = m.size(0), C = m.size(1), R = wm.w1.size(0);
  TORCH_CHECK(ws.w1.size(0) == R, "lattice_kernels: w1s must have as many rows as w1m (", R, "), got ",
              ws.w1.size(0));
  at::Tensor cc = at::empty_like(m);
  AT_DISPATCH_FLOATING_TYPES(m.scalar_type(), "coefficients_from_stats", [&] {
    coefficient_mlp_forward<scalar_t>(m.data_ptr<scalar_t>(), s.data_ptr<scalar_t>(), weights_of<scalar_t>(wm),
                                      weights_of<scalar_t>(ws), N, C, R, cc.data_ptr<scalar_t>());
  });
  return cc;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
           at::Tensor>
coefficients_from_stats_backward(const at::Tensor& grad, const at::Tensor& mean, const at::Tensor& stdv,
                                 const at::Tensor& w1m, const at::Tensor& b1m, const at::Tensor& w2m,
                                 const at::Tensor& b2m, const at::Tensor& w1s, const at::Tensor& b1s,
                                 const at::Tensor& w2s, const at::Tensor& b2s) {
  auto [m, s] = check_stats(mean, stdv);
  check_cpu(m, "mean");
  const Mlp wm = check_mlp(m, w1m, b1m, w2m, b2m, "m (mean)");
  const Mlp ws = check_mlp(m, w1s, b1s, w2s, b2s, "s (std)");
  const at::Tensor g = per_channel(grad, m, "grad");
  const int64_t N = m.size(0), C = m.size(1), R = wm.w1.size(0);
  TORCH_CHECK(ws.w1.size(0) == R, "lattice_kernels: w1s must have as many rows as w1m (", R, "), got ",
              ws.w1.size(0));
  at::Tensor gmean = at::empty_like(m), gstd = at::empty_like(s);
  Mlp gm{at::empty_like(wm.w1), at::empty_like(wm.b1), at::empty_like(wm.w2), at::empty_like(wm.b2)};
  Mlp gs{at::empty_like(ws.w1), at::empty_like(ws.b1), at::empty_like(ws.w2), at::empty_like(ws.b2)};
  AT_DISPATCH_FLOATING_TYPES(m.scalar_type(), "coefficients_from_stats_backward", [&] {
    auto grads_of = [](Mlp& t) {
      return MlpGrads<scalar_t>{t.w1.data_ptr<scalar_t>(), t.b1.data_ptr<scalar_t>(), t.w2.data_ptr<scalar_t>(),
                                t.b2.data_ptr<scalar_t>()};
    };
    mlp_branch_backward<scalar_t>(g.data_ptr<scalar_t>(), m.data_ptr<scalar_t>(), weights_of<scalar_t>(wm), N, C, R,
                                  gmean.data_ptr<scalar_t>(), grads_of(gm));
    mlp_branch_backward<scalar_t>(g.data_ptr<scalar_t>(), s.data_ptr<scalar_t>(), weights_of<scalar_t>(ws), N, C, R,
                                  gstd.data_ptr<scalar_t>(), grads_of(gs));
  });
  return {gmean, gstd, gm.w1, gm.b1, gm.w2, gm.b2, gs.w1, gs.b1, gs.w2, gs.b2};
}

}  // namespace
}  // namespace cpu
}  // namespace lk

TORCH_LIBRARY_IMPL(lattice_kernels, CPU, m) {
  m.impl("coefficients_from_stats", &lk::cpu::coefficients_from_stats);
  m.impl("coefficients_from_stats_backward", &lk::cpu::coefficients_from_stats_backward);
  m.impl("channel_stats", &lk::cpu::channel_stats);
  m.impl("channel_stats_backward", &lk::cpu::channel_stats_backward);
  m.impl("combination_coefficients", &lk::cpu::combination_coefficients);
  m.impl("combination_coefficients_backward", &lk::cpu::combination_coefficients_backward);
}
