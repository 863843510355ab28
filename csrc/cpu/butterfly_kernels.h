// Torch-free CPU kernels of butterfly: the forward (with the statistics of q) and the fused backward. Included after
// kernel_common.h by kernels_<isa>.cpp, inside the same per-ISA namespace.
namespace lk {
namespace LK_ISA_NS {

// ---------------------------------------------------------------------------------------------------------------
// butterfly forward, with the statistics of q computed from the freshly written (cache-resident) q chunk.

template <DType D>
static void butterfly_forward_t(const ButterflyArgs& a, int64_t begin, int64_t end, void* scratch) {
  using Tr = Traits<D>;
  using S = typename Tr::S;
  using A = typename Tr::A;
  using V = typename Tr::V;
  constexpr int W = Tr::W;
  const Geometry& g = a.g;
  const A* A1 = static_cast<const A*>(a.a1);
  const A* A2 = static_cast<const A*>(a.a2);
  const A* B1 = static_cast<const A*>(a.b1);
  const A* B2 = static_cast<const A*>(a.b2);
  double* pm = static_cast<double*>(a.part.mean);
  double* pv = static_cast<double*>(a.part.m2);
  const bool nt = g.stream;
  for (int64_t it = begin; it < end; ++it) {
    if (!g.interleaved) {
      const int64_t row = it / g.nchunk, k = it % g.nchunk, n = row / g.C, c = row % g.C, off = k * g.chunk;
      const int64_t L = g.chunk_len(k);
      const A a1 = A1[row], a2 = A2[row], b1 = B1[row], b2 = B2[row];
      const V va1 = splat<V>(a1), va2 = splat<V>(a2), vb1 = splat<V>(b1), vb2 = splat<V>(b2);
      const S* __restrict__ x1 = at<const S>(a.x1, n, c, off);
      const S* __restrict__ x2 = at<const S>(a.x2, n, c, off);
      S* __restrict__ p = at<S>(a.p, n, c, off);
      S* __restrict__ q = at<S>(a.q, n, c, off);
      int64_t i = 0;
      for (; i + W <= L; i += W) {
        const V v1 = Tr::vld(x1 + i), v2 = Tr::vld(x2 + i);
        put<Tr>(p + i, va1 * v1 + va2 * v2, nt);
        put<Tr>(q + i, vb1 * v1 + vb2 * v2, nt);
      }
      for (; i < L; ++i) {
        const A v1 = Tr::ld(x1[i]), v2 = Tr::ld(x2[i]);
        p[i] = Tr::st(a1 * v1 + a2 * v2);
        q[i] = Tr::st(b1 * v1 + b2 * v2);
      }
      if (a.q_stats) {  // from x1, x2 (in L1), not from q (maybe streamed past the cache)
        const int64_t idx = a.part.index(g, n, c, k);
        span_stats<Tr>(RecomputedRow<Tr>{x1, x2, b1, b2}, L, pm[idx], pv[idx]);
      }
    } else {
      const int64_t n = it / g.nchunk, k = it % g.nchunk, off = k * g.chunk, C = g.C;
      const int64_t L = g.chunk_len(k);
      const A* __restrict__ a1 = A1 + n * C;
      const A* __restrict__ a2 = A2 + n * C;
      const A* __restrict__ b1 = B1 + n * C;
      const A* __restrict__ b2 = B2 + n * C;
      for (int64_t px = 0; px < L; ++px) {
        const S* __restrict__ x1 = at<const S>(a.x1, n, 0, off + px);
        const S* __restrict__ x2 = at<const S>(a.x2, n, 0, off + px);
        S* __restrict__ p = at<S>(a.p, n, 0, off + px);
        S* __restrict__ q = at<S>(a.q, n, 0, off + px);
        over_channels<W>(
            C,
            [&](int64_t c) {
              const V v1 = Tr::vld(x1 + c), v2 = Tr::vld(x2 + c);
              put<Tr>(p + c, load_raw<V>(a1 + c) * v1 + load_raw<V>(a2 + c) * v2, nt);
              put<Tr>(q + c, load_raw<V>(b1 + c) * v1 + load_raw<V>(b2 + c) * v2, nt);
            },
            [&](int64_t c) {
              const A v1 = Tr::ld(x1[c]), v2 = Tr::ld(x2[c]);
              p[c] = Tr::st(a1[c] * v1 + a2[c] * v2);
              q[c] = Tr::st(b1[c] * v1 + b2[c] * v2);
            });
      }
      if (a.q_stats) {
        const int64_t idx = a.part.index(g, n, 0, k);
        const RecomputedPixels<Tr> q{at<const S>(a.x1, n, 0, off), at<const S>(a.x2, n, 0, off), a.x1.sp, a.x2.sp, b1, b2};
        pixels_stats<Tr>(q, L, C, pm + idx, pv + idx, static_cast<A*>(scratch));
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// butterfly backward: one pass over dp, dq, x1, x2 gives dx1, dx2 and the partial sums of the coefficient grads.

template <DType D>
static void butterfly_backward_t(const ButterflyBackwardArgs& a, int64_t begin, int64_t end, void* scratch) {
  using Tr = Traits<D>;
  using S = typename Tr::S;
  using A = typename Tr::A;
  using V = typename Tr::V;
  constexpr int W = Tr::W;
  const Geometry& g = a.g;
  const A* A1 = static_cast<const A*>(a.a1);
  const A* A2 = static_cast<const A*>(a.a2);
  const A* B1 = static_cast<const A*>(a.b1);
  const A* B2 = static_cast<const A*>(a.b2);
  const A* GM = static_cast<const A*>(a.gm_q);
  const A* BS = static_cast<const A*>(a.bs_q);
  const A* MQ = static_cast<const A*>(a.mean_q);
  double* sums = static_cast<double*>(a.sums);
  const bool nt = g.stream;
  for (int64_t it = begin; it < end; ++it) {
    if (!g.interleaved) {
      const int64_t row = it / g.nchunk, k = it % g.nchunk, n = row / g.C, c = row % g.C, off = k * g.chunk;
      const int64_t L = g.chunk_len(k);
      const A a1 = A1[row], a2 = A2[row], b1 = B1[row], b2 = B2[row], gm = GM[row], bs = BS[row], mq = MQ[row];
      const V va1 = splat<V>(a1), va2 = splat<V>(a2), vb1 = splat<V>(b1), vb2 = splat<V>(b2);
      const V vgm = splat<V>(gm), vbs = splat<V>(bs), vmq = splat<V>(mq);
      const S* __restrict__ dp = at<const S>(a.dp, n, c, off);
      const S* __restrict__ dq = at<const S>(a.dq, n, c, off);
      const S* __restrict__ x1 = at<const S>(a.x1, n, c, off);
      const S* __restrict__ x2 = at<const S>(a.x2, n, c, off);
      S* __restrict__ dx1 = at<S>(a.dx1, n, c, off);
      S* __restrict__ dx2 = at<S>(a.dx2, n, c, off);
      V r0 = {}, r1 = {}, r2 = {}, r3 = {};
      int64_t i = 0;
      for (; i + W <= L; i += W) {
        const V gp = Tr::vld(dp + i), v1 = Tr::vld(x1 + i), v2 = Tr::vld(x2 + i);
        const V gq = Tr::vld(dq + i) + vgm + vbs * ((vb1 * v1 + vb2 * v2) - vmq);
        put<Tr>(dx1 + i, va1 * gp + vb1 * gq, nt);
        put<Tr>(dx2 + i, va2 * gp + vb2 * gq, nt);
        r0 += gp * v1;
        r1 += gp * v2;
        r2 += gq * v1;
        r3 += gq * v2;
      }
      A t0 = 0, t1 = 0, t2 = 0, t3 = 0;
      for (; i < L; ++i) {
        const A gp = Tr::ld(dp[i]), v1 = Tr::ld(x1[i]), v2 = Tr::ld(x2[i]);
        const A gq = Tr::ld(dq[i]) + gm + bs * ((b1 * v1 + b2 * v2) - mq);
        dx1[i] = Tr::st(a1 * gp + b1 * gq);
        dx2[i] = Tr::st(a2 * gp + b2 * gq);
        t0 += gp * v1;
        t1 += gp * v2;
        t2 += gq * v1;
        t3 += gq * v2;
      }
      sums[a.sums_index(n, c, k, 0)] = double(hsum<A, V, W>(r0) + t0);
      sums[a.sums_index(n, c, k, 1)] = double(hsum<A, V, W>(r1) + t1);
      sums[a.sums_index(n, c, k, 2)] = double(hsum<A, V, W>(r2) + t2);
      sums[a.sums_index(n, c, k, 3)] = double(hsum<A, V, W>(r3) + t3);
    } else {
      const int64_t n = it / g.nchunk, k = it % g.nchunk, off = k * g.chunk, C = g.C;
      const int64_t L = g.chunk_len(k), nc = n * C;
      const A* __restrict__ a1 = A1 + nc;
      const A* __restrict__ a2 = A2 + nc;
      const A* __restrict__ b1 = B1 + nc;
      const A* __restrict__ b2 = B2 + nc;
      const A* __restrict__ gm = GM + nc;
      const A* __restrict__ bs = BS + nc;
      const A* __restrict__ mq = MQ + nc;
      A* __restrict__ r0 = static_cast<A*>(scratch);
      A* __restrict__ r1 = r0 + C;
      A* __restrict__ r2 = r0 + 2 * C;
      A* __restrict__ r3 = r0 + 3 * C;
      for (int64_t c = 0; c < 4 * C; ++c) r0[c] = 0;
      for (int64_t px = 0; px < L; ++px) {
        const S* __restrict__ dp = at<const S>(a.dp, n, 0, off + px);
        const S* __restrict__ dq = at<const S>(a.dq, n, 0, off + px);
        const S* __restrict__ x1 = at<const S>(a.x1, n, 0, off + px);
        const S* __restrict__ x2 = at<const S>(a.x2, n, 0, off + px);
        S* __restrict__ dx1 = at<S>(a.dx1, n, 0, off + px);
        S* __restrict__ dx2 = at<S>(a.dx2, n, 0, off + px);
        over_channels<W>(
            C,
            [&](int64_t c) {
              const V gp = Tr::vld(dp + c), v1 = Tr::vld(x1 + c), v2 = Tr::vld(x2 + c);
              const V vb1 = load_raw<V>(b1 + c), vb2 = load_raw<V>(b2 + c);
              const V gq = Tr::vld(dq + c) + load_raw<V>(gm + c) +
                           load_raw<V>(bs + c) * ((vb1 * v1 + vb2 * v2) - load_raw<V>(mq + c));
              put<Tr>(dx1 + c, load_raw<V>(a1 + c) * gp + vb1 * gq, nt);
              put<Tr>(dx2 + c, load_raw<V>(a2 + c) * gp + vb2 * gq, nt);
              store_raw(r0 + c, load_raw<V>(r0 + c) + gp * v1);
              store_raw(r1 + c, load_raw<V>(r1 + c) + gp * v2);
              store_raw(r2 + c, load_raw<V>(r2 + c) + gq * v1);
              store_raw(r3 + c, load_raw<V>(r3 + c) + gq * v2);
            },
            [&](int64_t c) {
              const A gp = Tr::ld(dp[c]), v1 = Tr::ld(x1[c]), v2 = Tr::ld(x2[c]);
              const A gq = Tr::ld(dq[c]) + gm[c] + bs[c] * ((b1[c] * v1 + b2[c] * v2) - mq[c]);
              dx1[c] = Tr::st(a1[c] * gp + b1[c] * gq);
              dx2[c] = Tr::st(a2[c] * gp + b2[c] * gq);
              r0[c] += gp * v1;
              r1[c] += gp * v2;
              r2[c] += gq * v1;
              r3[c] += gq * v2;
            });
      }
      for (int64_t c = 0; c < C; ++c) {
        sums[a.sums_index(n, c, k, 0)] = double(r0[c]);
        sums[a.sums_index(n, c, k, 1)] = double(r1[c]);
        sums[a.sums_index(n, c, k, 2)] = double(r2[c]);
        sums[a.sums_index(n, c, k, 3)] = double(r3[c]);
      }
    }
  }
}

// Streaming stores are weakly ordered: fence before the work item's results are handed to other threads.
void butterfly_forward(const ButterflyArgs& a, int64_t begin, int64_t end, void* scratch) {
  LK_DISPATCH_DTYPE(a.dtype, butterfly_forward_t, a, begin, end, scratch)
  stream_fence();
}
void butterfly_backward(const ButterflyBackwardArgs& a, int64_t begin, int64_t end, void* scratch) {
  LK_DISPATCH_DTYPE(a.dtype, butterfly_backward_t, a, begin, end, scratch)
  stream_fence();
}

}  // namespace LK_ISA_NS
}  // namespace lk
