// CUDA implementations of the lattice_kernels ops: argument checks, layout, workspace from PyTorch's caching
// allocator, the current stream and a device guard around the torch-free launchers of kernels.h.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../binding_common.h"
#include "kernels.h"

namespace lk {
namespace {

cuda::Shape shape_of(const at::Tensor& x, bool il) {
  return {x.size(0), x.size(1), x.size(2) * x.size(3), il};
}

void check_cuda(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.is_cuda(), "lattice_kernels: ", name, " must be a CUDA tensor for the CUDA kernels, got ", t.device());
}

void check_launch(cudaError_t err, const char* what) {
  TORCH_CHECK(err == cudaSuccess, "lattice_kernels: CUDA launch of ", what, " failed: ", cudaGetErrorString(err));
}

at::Tensor workspace(const at::Tensor& like, size_t bytes) {
  return at::empty({static_cast<int64_t>(bytes)}, like.options().dtype(at::kByte));
}

const void* ptr_or_null(const c10::optional<at::Tensor>& t) {
  return t.has_value() && t->defined() && t->numel() > 0 ? t->data_ptr() : nullptr;
}

std::tuple<at::Tensor, at::Tensor> stats_impl(const at::Tensor& x) {
  const bool il = is_interleaved(x);
  auto [xt, xv] = operand(x, il);
  const cuda::Shape s = shape_of(xt, il);
  const auto sopt = x.options().dtype(stats_type(x));
  at::Tensor mean = at::empty({s.N, s.C}, sopt), stdv = at::empty({s.N, s.C}, sopt);
  at::Tensor ws = workspace(x, cuda::stats_workspace_bytes(dtype_of(x, "x"), s));
  check_launch(cuda::channel_stats(dtype_of(x, "x"), xv, s, mean.data_ptr(), stdv.data_ptr(), ws.data_ptr(),
                                   c10::cuda::getCurrentCUDAStream().stream()),
               "channel_stats");
  return {mean, stdv};
}

at::Tensor stats_backward_impl(const at::Tensor& grad_mean, const at::Tensor& grad_std, const at::Tensor& x,
                               const at::Tensor& mean, const at::Tensor& stdv) {
  const bool il = is_interleaved(x);
  auto [xt, xv] = operand(x, il);
  const cuda::Shape s = shape_of(xt, il);
  auto [a, b] = fold_stats_grads(per_channel(grad_mean, x, "grad_mean"), per_channel(grad_std, x, "grad_std"),
                                 per_channel(stdv, x, "std"), s.P);
  const at::Tensor m = per_channel(mean, x, "mean");
  at::Tensor dx = new_like_layout(x, il);
  View dv;
  view_of(dx, il, dv);
  check_launch(cuda::channel_stats_backward(dtype_of(x, "x"), xv, dv, s, a.data_ptr(), b.data_ptr(),
                                            m.data_ptr(), c10::cuda::getCurrentCUDAStream().stream()),
               "channel_stats_backward");
  return dx;
}

std::tuple<at::Tensor, at::Tensor> channel_stats(const at::Tensor& x) {
  check_input(x, "x");
  check_cuda(x, "x");
  const c10::cuda::CUDAGuard guard(x.device());
  return stats_impl(x);
}

at::Tensor channel_stats_backward(const at::Tensor& grad_mean, const at::Tensor& grad_std, const at::Tensor& x,
                                  const at::Tensor& mean, const at::Tensor& stdv) {
  check_input(x, "x");
  check_cuda(x, "x");
  const c10::cuda::CUDAGuard guard(x.device());
  return stats_backward_impl(grad_mean, grad_std, x, mean, stdv);
}

std::array<at::Tensor, 8> mlp_weights(const at::Tensor& x, std::array<const at::Tensor*, 8> w) {
  const int64_t C = x.size(1);
  const int64_t R = w[0]->dim() == 2 ? w[0]->size(0) : -1;
  const char* names[8] = {"w1m", "b1m", "w2m", "b2m", "w1s", "b1s", "w2s", "b2s"};
  std::array<at::Tensor, 8> out;
  for (int i = 0; i < 8; ++i) {
    const at::Tensor& t = *w[i];
    const bool ok = (i % 4 == 0) ? (t.dim() == 2 && t.size(0) == R && t.size(1) == C)
                    : (i % 4 == 1) ? (t.dim() == 1 && t.size(0) == R)
                    : (i % 4 == 2) ? (t.dim() == 2 && t.size(0) == C && t.size(1) == R)
                                   : (t.dim() == 1 && t.size(0) == C);
    TORCH_CHECK(ok && R >= 1, "lattice_kernels: ", names[i], " has shape ", t.sizes(), ", which does not fit C = ", C,
                " and R = ", R);
    TORCH_CHECK(t.scalar_type() == stats_type(x), "lattice_kernels: ", names[i], " must be ", stats_type(x));
    TORCH_CHECK(t.device() == x.device(), "lattice_kernels: ", names[i], " is on ", t.device(), " but x is on ",
                x.device());
    out[i] = t.contiguous();
  }
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> combination_coefficients(
    const at::Tensor& x, const at::Tensor& w1m, const at::Tensor& b1m, const at::Tensor& w2m, const at::Tensor& b2m,
    const at::Tensor& w1s, const at::Tensor& b1s, const at::Tensor& w2s, const at::Tensor& b2s) {
  check_input(x, "x");
  check_cuda(x, "x");
  const c10::cuda::CUDAGuard guard(x.device());
  const auto w = mlp_weights(x, {&w1m, &b1m, &w2m, &b2m, &w1s, &b1s, &w2s, &b2s});
  const bool il = is_interleaved(x);
  auto [xt, xv] = operand(x, il);
  const cuda::Shape s = shape_of(xt, il);
  const auto sopt = x.options().dtype(stats_type(x));
  at::Tensor cc = at::empty({s.N, s.C}, sopt), mean = at::empty({s.N, s.C}, sopt), stdv = at::empty({s.N, s.C}, sopt);
  at::Tensor ws = workspace(x, cuda::stats_workspace_bytes(dtype_of(x, "x"), s));
  const cuda::MlpWeights mw{w[0].data_ptr(), w[1].data_ptr(), w[2].data_ptr(), w[3].data_ptr(),
                            w[4].data_ptr(), w[5].data_ptr(), w[6].data_ptr(), w[7].data_ptr(), w[0].size(0)};
  check_launch(cuda::combination_coefficients(dtype_of(x, "x"), xv, s, mw, cc.data_ptr(), mean.data_ptr(),
                                              stdv.data_ptr(), ws.data_ptr(), c10::cuda::getCurrentCUDAStream().stream()),
               "combination_coefficients");
  return {cc, mean, stdv};
}

// The MLP backward is tiny ((N, C) by (C, C/16)): ATen ops on the device, then one fused pass over x.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> branch_backward(
    const at::Tensor& g, const at::Tensor& u, const at::Tensor& w1, const at::Tensor& b1, const at::Tensor& w2,
    const at::Tensor& b2) {
  const at::Tensor pre = at::addmm(b1, u, w1.t());
  const at::Tensor h = pre.clamp_min(0);
  const at::Tensor s = at::sigmoid(at::addmm(b2, h, w2.t()));
  const at::Tensor dz = g * s * (1 - s) * 0.5;
  const at::Tensor dh = at::mm(dz, w2) * (pre > 0);
  return {at::mm(dh, w1), at::mm(dh.t(), u), dh.sum(0), at::mm(dz.t(), h), dz.sum(0)};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
combination_coefficients_backward(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& mean,
                                  const at::Tensor& stdv, const at::Tensor& w1m, const at::Tensor& b1m,
                                  const at::Tensor& w2m, const at::Tensor& b2m, const at::Tensor& w1s,
                                  const at::Tensor& b1s, const at::Tensor& w2s, const at::Tensor& b2s) {
  check_input(x, "x");
  check_cuda(x, "x");
  const c10::cuda::CUDAGuard guard(x.device());
  const auto w = mlp_weights(x, {&w1m, &b1m, &w2m, &b2m, &w1s, &b1s, &w2s, &b2s});
  const at::Tensor g = per_channel(grad, x, "grad");
  auto [dm, gw1m, gb1m, gw2m, gb2m] = branch_backward(g, mean, w[0], w[1], w[2], w[3]);
  auto [ds, gw1s, gb1s, gw2s, gb2s] = branch_backward(g, stdv, w[4], w[5], w[6], w[7]);
  at::Tensor dx = stats_backward_impl(dm, ds, x, mean, stdv);
  return {dx, gw1m, gb1m, gw2m, gb2m, gw1s, gb1s, gw2s, gb2s};
}

at::Tensor coefficients_from_stats(const at::Tensor& mean, const at::Tensor& stdv, const at::Tensor& w1m,
                                   const at::Tensor& b1m, const at::Tensor& w2m, const at::Tensor& b2m,
                                   const at::Tensor& w1s, const at::Tensor& b1s, const at::Tensor& w2s,
                                   const at::Tensor& b2s) {
  auto [m, s] = check_stats(mean, stdv);
  check_cuda(m, "mean");
  const c10::cuda::CUDAGuard guard(m.device());
  const auto w = mlp_weights(m, {&w1m, &b1m, &w2m, &b2m, &w1s, &b1s, &w2s, &b2s});
  at::Tensor cc = at::empty_like(m);
  const cuda::MlpWeights mw{w[0].data_ptr(), w[1].data_ptr(), w[2].data_ptr(), w[3].data_ptr(),
                            w[4].data_ptr(), w[5].data_ptr(), w[6].data_ptr(), w[7].data_ptr(), w[0].size(0)};
  check_launch(cuda::coefficients_from_stats(m.scalar_type() == at::kDouble ? cuda::DType::F64 : cuda::DType::F32,
                                             m.data_ptr(), s.data_ptr(), m.size(0), m.size(1), mw, cc.data_ptr(),
                                             c10::cuda::getCurrentCUDAStream().stream()),
               "coefficients_from_stats");
  return cc;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
           at::Tensor>
coefficients_from_stats_backward(const at::Tensor& grad, const at::Tensor& mean, const at::Tensor& stdv,
                                 const at::Tensor& w1m, const at::Tensor& b1m, const at::Tensor& w2m,
                                 const at::Tensor& b2m, const at::Tensor& w1s, const at::Tensor& b1s,
                                 const at::Tensor& w2s, const at::Tensor& b2s) {
  auto [m, s] = check_stats(mean, stdv);
  check_cuda(m, "mean");
  const c10::cuda::CUDAGuard guard(m.device());
  const auto w = mlp_weights(m, {&w1m, &b1m, &w2m, &b2m, &w1s, &b1s, &w2s, &b2s});
  const at::Tensor g = per_channel(grad, m, "grad");
  auto [dm, gw1m, gb1m, gw2m, gb2m] = branch_backward(g, m, w[0], w[1], w[2], w[3]);
  auto [ds, gw1s, gb1s, gw2s, gb2s] = branch_backward(g, s, w[4], w[5], w[6], w[7]);
  return {dm, ds, gw1m, gb1m, gw2m, gb2m, gw1s, gb1s, gw2s, gb2s};
}

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
  const auto coef = [&](const c10::optional<at::Tensor>& t, const char* name) {
    return t.has_value() && t->defined() ? per_channel(*t, x1, name) : at::Tensor();
  };
  const at::Tensor a1 = coef(alpha1, "alpha1"), a2 = coef(alpha2, "alpha2"), b1 = coef(beta1, "beta1"),
                   b2 = coef(beta2, "beta2");
  const auto raw = [](const at::Tensor& t) { return t.defined() ? t.data_ptr() : nullptr; };
  const cuda::Shape s = shape_of(x1t, il);
  const auto sopt = x1.options().dtype(stats_type(x1));
  at::Tensor mean = at::empty({q_stats ? s.N : 0, q_stats ? s.C : 0}, sopt);
  at::Tensor stdv = at::empty_like(mean);
  at::Tensor ws = workspace(x1, q_stats ? cuda::butterfly_workspace_bytes(dtype_of(x1, "x1"), s) : 0);
  check_launch(cuda::butterfly(dtype_of(x1, "x1"), v1, v2, vp, vq, s,
                               {raw(a1), raw(a2), raw(b1), raw(b2)}, q_stats ? mean.data_ptr() : nullptr,
                               q_stats ? stdv.data_ptr() : nullptr, ws.data_ptr(), c10::cuda::getCurrentCUDAStream().stream()),
               "butterfly");
  if (!q_stats) return {at::empty({0}, sopt), at::empty({0}, sopt)};
  return {mean, stdv};
}

void check_cuda_pair(const at::Tensor& x1, const at::Tensor& x2) {
  check_pair(x1, x2);
  check_cuda(x1, "x1");
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> butterfly(
    const at::Tensor& x1, const at::Tensor& x2, const c10::optional<at::Tensor>& alpha1,
    const c10::optional<at::Tensor>& alpha2, const c10::optional<at::Tensor>& beta1,
    const c10::optional<at::Tensor>& beta2, bool q_stats) {
  check_cuda_pair(x1, x2);
  const c10::cuda::CUDAGuard guard(x1.device());
  const bool il = is_interleaved(x1);
  at::Tensor p = new_like_layout(x1, il), q = new_like_layout(x1, il);
  auto [mean, stdv] = butterfly_into(x1, x2, alpha1, alpha2, beta1, beta2, q_stats, p, q, il);
  return {p, q, mean, stdv};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> butterfly_stacked(
    const at::Tensor& x1, const at::Tensor& x2, const c10::optional<at::Tensor>& alpha1,
    const c10::optional<at::Tensor>& alpha2, const c10::optional<at::Tensor>& beta1,
    const c10::optional<at::Tensor>& beta2, bool q_stats) {
  check_cuda_pair(x1, x2);
  const c10::cuda::CUDAGuard guard(x1.device());
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
  check_cuda_pair(x1, x2);
  const c10::cuda::CUDAGuard guard(x1.device());
  auto [il, p, q] = out_halves(out, x1, x2);
  return butterfly_into(x1, x2, alpha1, alpha2, beta1, beta2, q_stats, p, q, il);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> butterfly_backward(
    const at::Tensor& grad_p, const at::Tensor& grad_q, const c10::optional<at::Tensor>& grad_mean_q,
    const c10::optional<at::Tensor>& grad_std_q, const at::Tensor& x1, const at::Tensor& x2,
    const c10::optional<at::Tensor>& alpha1, const c10::optional<at::Tensor>& alpha2,
    const c10::optional<at::Tensor>& beta1, const c10::optional<at::Tensor>& beta2,
    const c10::optional<at::Tensor>& mean_q, const c10::optional<at::Tensor>& std_q) {
  check_cuda_pair(x1, x2);
  check_like(grad_p, x1, "grad_p", "x1");
  check_like(grad_q, x1, "grad_q", "x1");
  const c10::cuda::CUDAGuard guard(x1.device());
  const bool il = is_interleaved(x1);
  auto [x1t, v1] = operand(x1, il);
  auto [x2t, v2] = operand(x2, il);
  auto [gpt, vgp] = operand(grad_p, il);
  auto [gqt, vgq] = operand(grad_q, il);
  const cuda::Shape s = shape_of(x1t, il);
  const auto sopt = x1.options().dtype(stats_type(x1));
  const auto coef = [&](const c10::optional<at::Tensor>& t, const char* name) {
    return present(t) ? per_channel(*t, x1, name) : at::Tensor();
  };
  const at::Tensor a1 = coef(alpha1, "alpha1"), a2 = coef(alpha2, "alpha2"), b1 = coef(beta1, "beta1"),
                   b2 = coef(beta2, "beta2");
  const auto raw = [](const at::Tensor& t) -> const void* { return t.defined() ? t.data_ptr() : nullptr; };
  auto [gm, bs, mq] = q_stats_grads(grad_mean_q, grad_std_q, mean_q, std_q, x1, s.P);
  at::Tensor dx1 = new_like_layout(x1, il), dx2 = new_like_layout(x1, il);
  View vd1, vd2;
  view_of(dx1, il, vd1);
  view_of(dx2, il, vd2);
  at::Tensor sums = at::empty({4, s.N, s.C}, sopt);
  at::Tensor ws = workspace(x1, cuda::butterfly_backward_workspace_bytes(dtype_of(x1, "x1"), s));
  check_launch(cuda::butterfly_backward(dtype_of(x1, "x1"), vgp, vgq, v1, v2, vd1, vd2, s,
                                        {raw(a1), raw(a2), raw(b1), raw(b2)}, raw(gm), raw(bs), raw(mq),
                                        sums.data_ptr(), ws.data_ptr(), c10::cuda::getCurrentCUDAStream().stream()),
               "butterfly_backward");
  const auto pick = [&](const c10::optional<at::Tensor>& c, int w) {
    return present(c) ? sums[w].clone() : at::empty({0}, sopt);
  };
  return {dx1, dx2, pick(alpha1, 0), pick(alpha2, 1), pick(beta1, 2), pick(beta2, 3)};
}

}  // namespace
}  // namespace lk

TORCH_LIBRARY_IMPL(lattice_kernels, CUDA, m) {
  m.impl("channel_stats", &lk::channel_stats);
  m.impl("channel_stats_backward", &lk::channel_stats_backward);
  m.impl("combination_coefficients", &lk::combination_coefficients);
  m.impl("combination_coefficients_backward", &lk::combination_coefficients_backward);
  m.impl("coefficients_from_stats", &lk::coefficients_from_stats);
  m.impl("coefficients_from_stats_backward", &lk::coefficients_from_stats_backward);
  m.impl("butterfly", &lk::butterfly);
  m.impl("butterfly_stacked", &lk::butterfly_stacked);
  m.impl("butterfly_out", &lk::butterfly_out);
  m.impl("butterfly_backward", &lk::butterfly_backward);
}
