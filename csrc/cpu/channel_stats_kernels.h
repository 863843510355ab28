// Torch-free CPU kernels of channel_stats (and of combination_coefficients, which reduces the same way): partial
// (mean, M2) per work item, and the backward dx = a + b*(x - mean). Included after kernel_common.h by
// kernels_<isa>.cpp, inside the same per-ISA namespace.
namespace lk {
namespace LK_ISA_NS {

// ---------------------------------------------------------------------------------------------------------------
// channel_stats: partial (mean, M2) per work item; the binding merges them in chunk order.

template <DType D> static void stats_partials_t(const StatsArgs& a, int64_t begin, int64_t end, void* scratch) {
  using Tr = Traits<D>;
  using S = typename Tr::S;
  using A = typename Tr::A;
  const Geometry& g = a.g;
  double* pm = static_cast<double*>(a.part.mean);
  double* pv = static_cast<double*>(a.part.m2);
  for (int64_t it = begin; it < end; ++it) {
    if (!g.interleaved) {
      const int64_t row = it / g.nchunk, k = it % g.nchunk, n = row / g.C, c = row % g.C;
      const int64_t idx = a.part.index(g, n, c, k);
      span_stats<Tr>(Stored<Tr>{at<const S>(a.x, n, c, k * g.chunk), 1}, g.chunk_len(k), pm[idx], pv[idx]);
    } else {
      const int64_t n = it / g.nchunk, k = it % g.nchunk;
      const int64_t idx = a.part.index(g, n, 0, k);
      pixels_stats<Tr>(Stored<Tr>{at<const S>(a.x, n, 0, k * g.chunk), a.x.sp}, g.chunk_len(k), g.C, pm + idx,
                       pv + idx, static_cast<A*>(scratch));
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// channel_stats backward: dx = a + b*(x - mean), one pass, x - mean never stored.

template <DType D> static void stats_backward_t(const StatsBackwardArgs& a, int64_t begin, int64_t end) {
  using Tr = Traits<D>;
  using S = typename Tr::S;
  using A = typename Tr::A;
  using V = typename Tr::V;
  constexpr int W = Tr::W;
  const Geometry& g = a.g;
  const A* CA = static_cast<const A*>(a.a);
  const A* CB = static_cast<const A*>(a.b);
  const A* M = static_cast<const A*>(a.mean);
  const bool nt = g.stream;
  for (int64_t it = begin; it < end; ++it) {
    if (!g.interleaved) {
      const int64_t row = it / g.nchunk, k = it % g.nchunk, n = row / g.C, c = row % g.C, off = k * g.chunk;
      const int64_t L = g.chunk_len(k);
      const A ca = CA[row], cb = CB[row], m = M[row];
      const V vca = splat<V>(ca), vcb = splat<V>(cb), vm = splat<V>(m);
      const S* __restrict__ x = at<const S>(a.x, n, c, off);
      S* __restrict__ dx = at<S>(a.dx, n, c, off);
      int64_t i = 0;
      for (; i + W <= L; i += W) put<Tr>(dx + i, vca + vcb * (Tr::vld(x + i) - vm), nt);
      for (; i < L; ++i) dx[i] = Tr::st(ca + cb * (Tr::ld(x[i]) - m));
    } else {
      const int64_t n = it / g.nchunk, k = it % g.nchunk, off = k * g.chunk, C = g.C;
      const int64_t L = g.chunk_len(k), nc = n * C;
      const A* __restrict__ ca = CA + nc;
      const A* __restrict__ cb = CB + nc;
      const A* __restrict__ m = M + nc;
      for (int64_t px = 0; px < L; ++px) {
        const S* __restrict__ x = at<const S>(a.x, n, 0, off + px);
        S* __restrict__ dx = at<S>(a.dx, n, 0, off + px);
        over_channels<W>(
            C,
            [&](int64_t c) {
              put<Tr>(dx + c, load_raw<V>(ca + c) + load_raw<V>(cb + c) * (Tr::vld(x + c) - load_raw<V>(m + c)), nt);
            },
            [&](int64_t c) { dx[c] = Tr::st(ca[c] + cb[c] * (Tr::ld(x[c]) - m[c])); });
      }
    }
  }
}

void stats_partials(const StatsArgs& a, int64_t begin, int64_t end, void* scratch) {
  LK_DISPATCH_DTYPE(a.dtype, stats_partials_t, a, begin, end, scratch)
}
void stats_backward(const StatsBackwardArgs& a, int64_t begin, int64_t end) {
  LK_DISPATCH_DTYPE(a.dtype, stats_backward_t, a, begin, end)
  stream_fence();
}

}  // namespace LK_ISA_NS
}  // namespace lk
