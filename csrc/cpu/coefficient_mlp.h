// Torch-free forward and backward of the combination-coefficient MLP on per-(n, c) statistics:
//   cc = 0.5 * (sigmoid(W2m relu(W1m mean + b1m) + b2m) + sigmoid(W2s relu(W1s std + b1s) + b2s))
// mean, std, cc: (N, C); W1: (R, C); b1: (R); W2: (C, R); b2: (C); all row-major in the statistics type A.
// The sizes are tiny (R = C/16), so plain loops; dot products accumulate in double, sums over n in a fixed order.
#pragma once
#include <cmath>
#include <cstdint>
#include <vector>

namespace lk {

template <class A> struct MlpWeights {
  const A* w1; const A* b1; const A* w2; const A* b2;
};

template <class A> struct MlpGrads {
  A* w1; A* b1; A* w2; A* b2;
};

// One branch for sample n: hidden pre-activations h[R] and sigmoid outputs s[C].
template <class A>
inline void mlp_branch(const A* u, const MlpWeights<A>& w, int64_t C, int64_t R, double* h, double* s) {
  for (int64_t r = 0; r < R; ++r) {
    double acc = w.b1[r];
    for (int64_t c = 0; c < C; ++c) acc += double(w.w1[r * C + c]) * double(u[c]);
    h[r] = acc;
  }
  for (int64_t c = 0; c < C; ++c) {
    double acc = w.b2[c];
    // relu written to keep a NaN (the std at H*W = 1), as torch's does
    for (int64_t r = 0; r < R; ++r) acc += double(w.w2[c * R + r]) * (h[r] <= 0 ? 0.0 : h[r]);
    s[c] = 1.0 / (1.0 + std::exp(-acc));
  }
}

template <class A>
void coefficient_mlp_forward(const A* mean, const A* stdv, const MlpWeights<A>& wm, const MlpWeights<A>& ws,
                             int64_t N, int64_t C, int64_t R, A* cc) {
  std::vector<double> h(R), sm(C), ss(C);
  for (int64_t n = 0; n < N; ++n) {
    mlp_branch(mean + n * C, wm, C, R, h.data(), sm.data());
    mlp_branch(stdv + n * C, ws, C, R, h.data(), ss.data());
    for (int64_t c = 0; c < C; ++c) cc[n * C + c] = A(0.5 * (sm[c] + ss[c]));
  }
}

// Backward of one branch: given grad_cc (N, C), accumulates the weight grads and writes grad_u (N, C).
template <class A>
void mlp_branch_backward(const A* grad_cc, const A* u, const MlpWeights<A>& w, int64_t N, int64_t C, int64_t R,
                         A* grad_u, const MlpGrads<A>& gw) {
  std::vector<double> h(R), s(C), dz(N * C), dh(N * R);
  std::vector<double> hs(N * R);
  for (int64_t n = 0; n < N; ++n) {
    mlp_branch(u + n * C, w, C, R, h.data(), s.data());
    for (int64_t r = 0; r < R; ++r) hs[n * R + r] = h[r];
    for (int64_t c = 0; c < C; ++c) dz[n * C + c] = 0.5 * double(grad_cc[n * C + c]) * s[c] * (1.0 - s[c]);
    for (int64_t r = 0; r < R; ++r) {
      double acc = 0;
      for (int64_t c = 0; c < C; ++c) acc += double(w.w2[c * R + r]) * dz[n * C + c];
      dh[n * R + r] = h[r] > 0 ? acc : 0.0;
    }
    for (int64_t c = 0; c < C; ++c) {
      double acc = 0;
      for (int64_t r = 0; r < R; ++r) acc += double(w.w1[r * C + c]) * dh[n * R + r];
      grad_u[n * C + c] = A(acc);
    }
  }
  for (int64_t c = 0; c < C; ++c) {
    double gb = 0;
    for (int64_t n = 0; n < N; ++n) gb += dz[n * C + c];
    gw.b2[c] = A(gb);
    for (int64_t r = 0; r < R; ++r) {
      double acc = 0;
      for (int64_t n = 0; n < N; ++n) acc += dz[n * C + c] * (hs[n * R + r] <= 0 ? 0.0 : hs[n * R + r]);
      gw.w2[c * R + r] = A(acc);
    }
  }
  for (int64_t r = 0; r < R; ++r) {
    double gb = 0;
    for (int64_t n = 0; n < N; ++n) gb += dh[n * R + r];
    gw.b1[r] = A(gb);
    for (int64_t c = 0; c < C; ++c) {
      double acc = 0;
      for (int64_t n = 0; n < N; ++n) acc += dh[n * R + r] * double(u[n * C + c]);
      gw.w1[r * C + c] = A(acc);
    }
  }
}

}  // namespace lk
