// CPU binding of butterfly, butterfly_stacked, butterfly_out and butterfly_backward: checks, layout, the parallel
// loop over the kernels of butterfly_kernels.h and the fixed-order merges of their partial results.
#include <torch/library.h>
#include "binding.h"

namespace lk {
namespace cpu {
namespace {

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

}  // namespace
}  // namespace cpu
}  // namespace lk

TORCH_LIBRARY_IMPL(lattice_kernels, CPU, m) {
  m.impl("butterfly", &lk::cpu::butterfly);
  m.impl("butterfly_stacked", &lk::cpu::butterfly_stacked);
  m.impl("butterfly_out", &lk::cpu::butterfly_out);
  m.impl("butterfly_backward", &lk::cpu::butterfly_backward);
}
