// butterfly (p = a1*x1 + a2*x2, q = b1*x1 + b2*x2, with the statistics of q in the same pass) and its fused
// backward (dx1, dx2 and the per-(n, c) sums that are the coefficient gradients, in one pass).
#include "common.cuh"

namespace lk {
namespace cuda {

template <class A> struct Coefs {
  A a1, a2, b1, b2;
};

template <class A> __device__ __forceinline__ A coef(const void* p, int64_t i) {
  return p ? LK_LOAD(static_cast<const A*>(p) + i) : A(1);
}

template <class A> __device__ __forceinline__ Coefs<A> coefs_at(const Coefficients& c, int64_t i) {
  return {coef<A>(c.a1, i), coef<A>(c.a2, i), coef<A>(c.b1, i), coef<A>(c.b2, i)};
}

// The coefficients of channels i .. i + V (i a multiple of V, aligned16 arrays), 16 bytes per load.
template <class A, int V> __device__ __forceinline__ void coefs_of(const Coefficients& c, int64_t i, Coefs<A> (&k)[V]) {
  A a1[V], a2[V], b1[V], b2[V];
  load_channels(c.a1, i, a1);
  load_channels(c.a2, i, a2);
  load_channels(c.b1, i, b1);
  load_channels(c.b2, i, b2);
  for (int j = 0; j < V; ++j) k[j] = {a1[j], a2[j], b1[j], b2[j]};
}

struct FwdPtrs {
  View x1, x2, p, q;
};

// q's statistics use the stored (rounded) q, shifted by q at the row's first pixel.
template <class T, bool VEC, bool QSTATS>
__global__ void butterfly_planar(FwdPtrs t, int64_t C, int64_t P, int64_t split, Coefficients cp,
                                 Stats<typename AccOf<T>::type>* __restrict__ part) {
  using A = typename AccOf<T>::type;
  const int64_t nc = blockIdx.x, n = nc / C, c = nc % C, s = blockIdx.y, S = gridDim.y;
  const Coefs<A> k = coefs_at<A>(cp, nc);
  const T* x1 = static_cast<const T*>(t.x1.data) + n * t.x1.sn + c * t.x1.sc;
  const T* x2 = static_cast<const T*>(t.x2.data) + n * t.x2.sn + c * t.x2.sc;
  T* p = static_cast<T*>(t.p.data) + n * t.p.sn + c * t.p.sc;
  T* q = static_cast<T*>(t.q.data) + n * t.q.sn + c * t.q.sc;
  A shift = 0;
  if constexpr (QSTATS) shift = to_acc(from_acc<T>(k.b1 * to_acc(LK_LOAD(x1)) + k.b2 * to_acc(LK_LOAD(x2))));
  const int64_t p0 = s * split, p1 = min(P, p0 + split);
  A cnt = 0, sum = 0, sq = 0;
  if constexpr (VEC) {
    constexpr int V = Vec16<T>::kN;
    for (int64_t i = p0 + int64_t(threadIdx.x) * V; i < p1; i += int64_t(kThreads) * V) {
      const Vec16<T> v1 = LK_LOAD(reinterpret_cast<const Vec16<T>*>(x1 + i));
      const Vec16<T> v2 = LK_LOAD(reinterpret_cast<const Vec16<T>*>(x2 + i));
      Vec16<T> op, oq;
#pragma unroll
      for (int j = 0; j < V; ++j) {
        const A a = to_acc(v1.v[j]), b = to_acc(v2.v[j]);
        op.v[j] = from_acc<T>(k.a1 * a + k.a2 * b);
        oq.v[j] = from_acc<T>(k.b1 * a + k.b2 * b);
        if constexpr (QSTATS) {
          const A d = to_acc(oq.v[j]) - shift;
          sum += d;
          sq += d * d;
        }
      }
      LK_STORE(reinterpret_cast<uint4*>(p + i), as_uint4(op));
      LK_STORE(reinterpret_cast<uint4*>(q + i), as_uint4(oq));
      cnt += A(V);
    }
  } else {
    for (int64_t i = p0 + threadIdx.x; i < p1; i += kThreads) {
      const A a = to_acc(LK_LOAD(x1 + i * t.x1.sp)), b = to_acc(LK_LOAD(x2 + i * t.x2.sp));
      LK_STORE(p + i * t.p.sp, from_acc<T>(k.a1 * a + k.a2 * b));
      const T qv = from_acc<T>(k.b1 * a + k.b2 * b);
      LK_STORE(q + i * t.q.sp, qv);
      if constexpr (QSTATS) {
        const A d = to_acc(qv) - shift;
        sum += d;
        sq += d * d;
      }
      cnt += A(1);
    }
  }
  if constexpr (QSTATS) {
    const Stats<A> r = block_merge(from_sums(cnt, sum, sq));
    if (threadIdx.x == 0) {
      LK_STORE(part + nc * S + s, r);  // mean relative to the shift
      if (s == 0) LK_STORE(reinterpret_cast<A*>(part + gridDim.x * S) + nc, shift);
    }
  }
}

template <class T, bool QSTATS>
__global__ void butterfly_interleaved(FwdPtrs t, int64_t C, int64_t P, int64_t split, int64_t ncb, Coefficients cp,
                                      Stats<typename AccOf<T>::type>* __restrict__ part) {
  using A = typename AccOf<T>::type;
  const int64_t n = blockIdx.x / ncb, c = (blockIdx.x % ncb) * kLanesC + threadIdx.x, s = blockIdx.y, S = gridDim.y;
  const bool valid = c < C;
  const int64_t cc = valid ? c : 0;
  const Coefs<A> k = coefs_at<A>(cp, n * C + cc);
  const T* x1 = static_cast<const T*>(t.x1.data) + n * t.x1.sn + cc * t.x1.sc;
  const T* x2 = static_cast<const T*>(t.x2.data) + n * t.x2.sn + cc * t.x2.sc;
  T* p = static_cast<T*>(t.p.data) + n * t.p.sn + cc * t.p.sc;
  T* q = static_cast<T*>(t.q.data) + n * t.q.sn + cc * t.q.sc;
  A shift = 0;
  if constexpr (QSTATS) shift = to_acc(from_acc<T>(k.b1 * to_acc(LK_LOAD(x1)) + k.b2 * to_acc(LK_LOAD(x2))));
  const int64_t p0 = s * split, p1 = min(P, p0 + split);
  A cnt = 0, sum = 0, sq = 0;
  if (valid)
    for (int64_t i = p0 + threadIdx.y; i < p1; i += kRowsP) {
      const A a = to_acc(LK_LOAD(x1 + i * t.x1.sp)), b = to_acc(LK_LOAD(x2 + i * t.x2.sp));
      LK_STORE(p + i * t.p.sp, from_acc<T>(k.a1 * a + k.a2 * b));
      const T qv = from_acc<T>(k.b1 * a + k.b2 * b);
      LK_STORE(q + i * t.q.sp, qv);
      if constexpr (QSTATS) {
        const A d = to_acc(qv) - shift;
        sum += d;
        sq += d * d;
      }
      cnt += A(1);
    }
  if constexpr (QSTATS) {
    const Stats<A> r = rows_merge(from_sums(cnt, sum, sq));
    if (threadIdx.y == 0 && valid) {
      const int64_t NC = int64_t(gridDim.x / ncb) * C;
      LK_STORE(part + (n * C + c) * S + s, r);  // mean relative to the shift
      if (s == 0) LK_STORE(reinterpret_cast<A*>(part + NC * S) + n * C + c, shift);
    }
  }
}

// The same on a vectorised interleaved block (common.cuh): V channels of a pixel per 16-byte load and store.
template <class T, bool QSTATS>
__global__ void butterfly_interleaved_vec(FwdPtrs t, int64_t C, int64_t P, int64_t split, int64_t ncb, Coefficients cp,
                                          Stats<typename AccOf<T>::type>* __restrict__ part) {
  using A = typename AccOf<T>::type;
  constexpr int V = Vec16<T>::kN;
  const int64_t n = blockIdx.x / ncb, c0 = ((blockIdx.x % ncb) * blockDim.x + threadIdx.x) * V, s = blockIdx.y;
  const int64_t S = gridDim.y;
  const bool valid = c0 < C;
  const int64_t cc = valid ? c0 : 0;
  Coefs<A> k[V];
  coefs_of(cp, n * C + cc, k);
  const T* x1 = static_cast<const T*>(t.x1.data) + n * t.x1.sn + cc;
  const T* x2 = static_cast<const T*>(t.x2.data) + n * t.x2.sn + cc;
  T* p = static_cast<T*>(t.p.data) + n * t.p.sn + cc;
  T* q = static_cast<T*>(t.q.data) + n * t.q.sn + cc;
  A shift[V], sum[V], sq[V];
  for (int j = 0; j < V; ++j) shift[j] = sum[j] = sq[j] = A(0);
  if constexpr (QSTATS) {
    const Vec16<T> f1 = LK_LOAD(reinterpret_cast<const Vec16<T>*>(x1));
    const Vec16<T> f2 = LK_LOAD(reinterpret_cast<const Vec16<T>*>(x2));
    for (int j = 0; j < V; ++j)
      shift[j] = to_acc(from_acc<T>(k[j].b1 * to_acc(f1.v[j]) + k[j].b2 * to_acc(f2.v[j])));
  }
  const int64_t p0 = s * split, p1 = min(P, p0 + split);
  A cnt = 0;
  if (valid)
    for (int64_t i = p0 + threadIdx.y; i < p1; i += blockDim.y) {
      const Vec16<T> v1 = LK_LOAD(reinterpret_cast<const Vec16<T>*>(x1 + i * t.x1.sp));
      const Vec16<T> v2 = LK_LOAD(reinterpret_cast<const Vec16<T>*>(x2 + i * t.x2.sp));
      Vec16<T> op, oq;
#pragma unroll
      for (int j = 0; j < V; ++j) {
        const A a = to_acc(v1.v[j]), b = to_acc(v2.v[j]);
        op.v[j] = from_acc<T>(k[j].a1 * a + k[j].a2 * b);
        oq.v[j] = from_acc<T>(k[j].b1 * a + k[j].b2 * b);
        if constexpr (QSTATS) {
          const A d = to_acc(oq.v[j]) - shift[j];
          sum[j] += d;
          sq[j] += d * d;
        }
      }
      LK_STORE(reinterpret_cast<uint4*>(p + i * t.p.sp), as_uint4(op));
      LK_STORE(reinterpret_cast<uint4*>(q + i * t.q.sp), as_uint4(oq));
      cnt += A(1);
    }
  if constexpr (QSTATS) {
    Stats<A> st[V];
    for (int j = 0; j < V; ++j) st[j] = from_sums(cnt, sum[j], sq[j]);
    rows_merge_vec(st);
    if (threadIdx.y == 0 && valid) {
      const int64_t NC = int64_t(gridDim.x / ncb) * C;
      for (int j = 0; j < V; ++j) {
        LK_STORE(part + (n * C + c0 + j) * S + s, st[j]);  // mean relative to the shift
        if (s == 0) LK_STORE(reinterpret_cast<A*>(part + NC * S) + n * C + c0 + j, shift[j]);
      }
    }
  }
}

cudaError_t butterfly(DType dtype, const View& x1, const View& x2, const View& p, const View& q,
                      const Shape& s, const Coefficients& c, void* mean_q, void* std_q, void* workspace,
                      cudaStream_t stream) {
  const FwdPtrs t{x1, x2, p, q};
  const bool qs = mean_q != nullptr;
  LK_CUDA_DISPATCH(dtype, {
    using A = typename AccOf<T>::type;
    auto* part = static_cast<Stats<A>*>(workspace);
    const dim3 g = grid_of(s), b = block_of(s);
    if (interleaved_vectorizable(s, sizeof(T), {&x1, &x2, &p, &q}) && aligned16({c.a1, c.a2, c.b1, c.b2})) {
      const dim3 vg = vec_grid_of(s, sizeof(T)), vb = vec_block_of(s, sizeof(T));
      const int64_t ncb = vec_channel_blocks(s, sizeof(T));
      if (qs) launch<butterfly_interleaved_vec<T, true>>(vg, vb, 0, stream, t, s.C, s.P, split_len(s), ncb, c, part);
      else launch<butterfly_interleaved_vec<T, false>>(vg, vb, 0, stream, t, s.C, s.P, split_len(s), ncb, c, part);
    } else if (s.interleaved) {
      if (qs)
        launch<butterfly_interleaved<T, true>>(g, b, 0, stream, t, s.C, s.P, split_len(s), channel_blocks(s), c, part);
      else
        launch<butterfly_interleaved<T, false>>(g, b, 0, stream, t, s.C, s.P, split_len(s), channel_blocks(s), c, part);
    } else if (vectorizable(s, sizeof(T), {&x1, &x2, &p, &q})) {
      if (qs) launch<butterfly_planar<T, true, true>>(g, b, 0, stream, t, s.C, s.P, split_len(s), c, part);
      else launch<butterfly_planar<T, true, false>>(g, b, 0, stream, t, s.C, s.P, split_len(s), c, part);
    } else {
      if (qs) launch<butterfly_planar<T, false, true>>(g, b, 0, stream, t, s.C, s.P, split_len(s), c, part);
      else launch<butterfly_planar<T, false, false>>(g, b, 0, stream, t, s.C, s.P, split_len(s), c, part);
    }
    cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess || !qs) return err;
    const int64_t NC = s.N * s.C;
    launch<merge_splits<A>>(dim3(static_cast<unsigned>(NC)), dim3(kThreads), 0, stream, part, num_splits(s),
                            static_cast<A*>(mean_q), static_cast<A*>(std_q));
    return cudaGetLastError();
  })
  return cudaErrorInvalidValue;
}

// ---------------------------------------------------------------------------------------------------------------
// backward

struct BwdPtrs {
  View dp, dq, x1, x2, dx1, dx2;
};

template <class A> struct QGrad {
  A gm, bs, mq;
};

template <class A> __device__ __forceinline__ QGrad<A> qgrad_at(const void* gm, const void* bs, const void* mq,
                                                               int64_t i) {
  if (!gm) return {A(0), A(0), A(0)};
  return {LK_LOAD(static_cast<const A*>(gm) + i), LK_LOAD(static_cast<const A*>(bs) + i),
          LK_LOAD(static_cast<const A*>(mq) + i)};
}

template <class T>
__device__ __forceinline__ void backward_element(const Coefs<typename AccOf<T>::type>& k,
                                                 const QGrad<typename AccOf<T>::type>& g, T gp_t, T gq_t, T x1_t,
                                                 T x2_t, T& dx1, T& dx2, typename AccOf<T>::type* r) {
  using A = typename AccOf<T>::type;
  const A gp = to_acc(gp_t), a = to_acc(x1_t), b = to_acc(x2_t);
  const A gq = to_acc(gq_t) + g.gm + g.bs * ((k.b1 * a + k.b2 * b) - g.mq);
  dx1 = from_acc<T>(k.a1 * gp + k.b1 * gq);
  dx2 = from_acc<T>(k.a2 * gp + k.b2 * gq);
  r[0] += gp * a;
  r[1] += gp * b;
  r[2] += gq * a;
  r[3] += gq * b;
}

template <class T, bool VEC>
__global__ void butterfly_backward_planar(BwdPtrs t, int64_t C, int64_t P, int64_t split, Coefficients cp, const void* gm,
                                          const void* bs, const void* mq, typename AccOf<T>::type* __restrict__ part) {
  using A = typename AccOf<T>::type;
  const int64_t nc = blockIdx.x, n = nc / C, c = nc % C, s = blockIdx.y, S = gridDim.y, NC = gridDim.x;
  const Coefs<A> k = coefs_at<A>(cp, nc);
  const QGrad<A> g = qgrad_at<A>(gm, bs, mq, nc);
  auto row = [&](const View& v) { return static_cast<T*>(v.data) + n * v.sn + c * v.sc; };
  const T* dp = row(t.dp);
  const T* dq = row(t.dq);
  const T* x1 = row(t.x1);
  const T* x2 = row(t.x2);
  T* dx1 = row(t.dx1);
  T* dx2 = row(t.dx2);
  A r[4] = {0, 0, 0, 0};
  const int64_t p0 = s * split, p1 = min(P, p0 + split);
  if constexpr (VEC) {
    constexpr int V = Vec16<T>::kN;
    for (int64_t i = p0 + int64_t(threadIdx.x) * V; i < p1; i += int64_t(kThreads) * V) {
      const Vec16<T> vp = LK_LOAD(reinterpret_cast<const Vec16<T>*>(dp + i));
      const Vec16<T> vq = LK_LOAD(reinterpret_cast<const Vec16<T>*>(dq + i));
      const Vec16<T> v1 = LK_LOAD(reinterpret_cast<const Vec16<T>*>(x1 + i));
      const Vec16<T> v2 = LK_LOAD(reinterpret_cast<const Vec16<T>*>(x2 + i));
      Vec16<T> o1, o2;
#pragma unroll
      for (int j = 0; j < V; ++j) backward_element<T>(k, g, vp.v[j], vq.v[j], v1.v[j], v2.v[j], o1.v[j], o2.v[j], r);
      LK_STORE(reinterpret_cast<uint4*>(dx1 + i), as_uint4(o1));
      LK_STORE(reinterpret_cast<uint4*>(dx2 + i), as_uint4(o2));
    }
  } else {
    for (int64_t i = p0 + threadIdx.x; i < p1; i += kThreads) {
      T o1, o2;
      backward_element<T>(k, g, LK_LOAD(dp + i * t.dp.sp), LK_LOAD(dq + i * t.dq.sp), LK_LOAD(x1 + i * t.x1.sp),
                          LK_LOAD(x2 + i * t.x2.sp), o1, o2, r);
      LK_STORE(dx1 + i * t.dx1.sp, o1);
      LK_STORE(dx2 + i * t.dx2.sp, o2);
    }
  }
  for (int w = 0; w < 4; ++w) {
    const A v = block_sum(r[w]);
    if (threadIdx.x == 0) LK_STORE(part + (w * NC + nc) * S + s, v);
  }
}

template <class T>
__global__ void butterfly_backward_interleaved(BwdPtrs t, int64_t C, int64_t P, int64_t split, int64_t ncb, Coefficients cp,
                                               const void* gm, const void* bs, const void* mq,
                                               typename AccOf<T>::type* __restrict__ part) {
  using A = typename AccOf<T>::type;
  const int64_t n = blockIdx.x / ncb, c = (blockIdx.x % ncb) * kLanesC + threadIdx.x, s = blockIdx.y, S = gridDim.y;
  const int64_t N = gridDim.x / ncb, NC = N * C;
  const bool valid = c < C;
  const int64_t cc = valid ? c : 0;
  const Coefs<A> k = coefs_at<A>(cp, n * C + cc);
  const QGrad<A> g = qgrad_at<A>(gm, bs, mq, n * C + cc);
  auto at = [&](const View& v, int64_t i) { return static_cast<T*>(v.data) + n * v.sn + cc * v.sc + i * v.sp; };
  A r[4] = {0, 0, 0, 0};
  const int64_t p0 = s * split, p1 = min(P, p0 + split);
  if (valid)
    for (int64_t i = p0 + threadIdx.y; i < p1; i += kRowsP) {
      T o1, o2;
      backward_element<T>(k, g, LK_LOAD(at(t.dp, i)), LK_LOAD(at(t.dq, i)), LK_LOAD(at(t.x1, i)), LK_LOAD(at(t.x2, i)),
                          o1, o2, r);
      LK_STORE(at(t.dx1, i), o1);
      LK_STORE(at(t.dx2, i), o2);
    }
  for (int w = 0; w < 4; ++w) {
    const A v = rows_sum(r[w]);
    if (threadIdx.y == 0 && valid) LK_STORE(part + (w * NC + n * C + c) * S + s, v);
  }
}

template <class T>
__global__ void butterfly_backward_interleaved_vec(BwdPtrs t, int64_t C, int64_t P, int64_t split, int64_t ncb,
                                                   Coefficients cp, const void* gm, const void* bs, const void* mq,
                                                   typename AccOf<T>::type* __restrict__ part) {
  using A = typename AccOf<T>::type;
  constexpr int V = Vec16<T>::kN;
  const int64_t n = blockIdx.x / ncb, c0 = ((blockIdx.x % ncb) * blockDim.x + threadIdx.x) * V, s = blockIdx.y;
  const int64_t S = gridDim.y, NC = int64_t(gridDim.x / ncb) * C;
  const bool valid = c0 < C;
  const int64_t cc = valid ? c0 : 0;
  Coefs<A> k[V];
  coefs_of(cp, n * C + cc, k);
  A gmv[V], bsv[V], mqv[V];
  load_channels(gm, n * C + cc, gmv, A(0));
  load_channels(gm ? bs : nullptr, n * C + cc, bsv, A(0));
  load_channels(gm ? mq : nullptr, n * C + cc, mqv, A(0));
  QGrad<A> g[V];
  for (int j = 0; j < V; ++j) g[j] = {gmv[j], bsv[j], mqv[j]};
  auto at = [&](const View& v, int64_t i) { return static_cast<T*>(v.data) + n * v.sn + cc + i * v.sp; };
  A r[4][V];
  for (int w = 0; w < 4; ++w)
    for (int j = 0; j < V; ++j) r[w][j] = A(0);
  const int64_t p0 = s * split, p1 = min(P, p0 + split);
  if (valid)
    for (int64_t i = p0 + threadIdx.y; i < p1; i += blockDim.y) {
      const Vec16<T> vp = LK_LOAD(reinterpret_cast<const Vec16<T>*>(at(t.dp, i)));
      const Vec16<T> vq = LK_LOAD(reinterpret_cast<const Vec16<T>*>(at(t.dq, i)));
      const Vec16<T> v1 = LK_LOAD(reinterpret_cast<const Vec16<T>*>(at(t.x1, i)));
      const Vec16<T> v2 = LK_LOAD(reinterpret_cast<const Vec16<T>*>(at(t.x2, i)));
      Vec16<T> o1, o2;
#pragma unroll
      for (int j = 0; j < V; ++j) {
        A e[4] = {0, 0, 0, 0};
        backward_element<T>(k[j], g[j], vp.v[j], vq.v[j], v1.v[j], v2.v[j], o1.v[j], o2.v[j], e);
        for (int w = 0; w < 4; ++w) r[w][j] += e[w];
      }
      LK_STORE(reinterpret_cast<uint4*>(at(t.dx1, i)), as_uint4(o1));
      LK_STORE(reinterpret_cast<uint4*>(at(t.dx2, i)), as_uint4(o2));
    }
  for (int w = 0; w < 4; ++w) {
    rows_sum_vec(r[w]);
    if (threadIdx.y == 0 && valid)
      for (int j = 0; j < V; ++j) LK_STORE(part + (w * NC + n * C + c0 + j) * S + s, r[w][j]);
  }
}

// The S split sums of every row, one block of kThreads per row: strided per thread in order, then block_sum's
// fixed tree (deterministic, not serial in S).
template <class A>
__global__ void sum_splits(const A* __restrict__ part, int64_t S, A* __restrict__ out) {
  const int64_t row = blockIdx.x;
  A acc = 0;
  for (int64_t s = threadIdx.x; s < S; s += kThreads) acc += LK_LOAD(part + row * S + s);
  acc = block_sum(acc);
  if (threadIdx.x == 0) LK_STORE(out + row, acc);
}

size_t butterfly_workspace_bytes(DType dtype, const Shape& s) {
  const size_t acc = dtype == DType::F64 ? sizeof(double) : sizeof(float);
  return acc * size_t(s.N * s.C) * size_t(3 * num_splits(s) + 1);
}

size_t butterfly_backward_workspace_bytes(DType dtype, const Shape& s) {
  const size_t acc = dtype == DType::F64 ? sizeof(double) : sizeof(float);
  return 4 * acc * size_t(s.N * s.C * num_splits(s));
}

cudaError_t butterfly_backward(DType dtype, const View& dp, const View& dq, const View& x1,
                               const View& x2, const View& dx1, const View& dx2, const Shape& s,
                               const Coefficients& c, const void* gm, const void* bs, const void* mq, void* sums,
                               void* workspace, cudaStream_t stream) {
  const BwdPtrs t{dp, dq, x1, x2, dx1, dx2};
  LK_CUDA_DISPATCH(dtype, {
    using A = typename AccOf<T>::type;
    auto* part = static_cast<A*>(workspace);
    const dim3 g = grid_of(s), b = block_of(s);
    if (interleaved_vectorizable(s, sizeof(T), {&dp, &dq, &x1, &x2, &dx1, &dx2}) &&
        aligned16({c.a1, c.a2, c.b1, c.b2, gm, bs, mq}))
      launch<butterfly_backward_interleaved_vec<T>>(vec_grid_of(s, sizeof(T)), vec_block_of(s, sizeof(T)), 0, stream, t,
                                                    s.C, s.P, split_len(s), vec_channel_blocks(s, sizeof(T)), c, gm,
                                                    bs, mq, part);
    else if (s.interleaved)
      launch<butterfly_backward_interleaved<T>>(g, b, 0, stream, t, s.C, s.P, split_len(s), channel_blocks(s), c, gm,
                                                bs, mq, part);
    else if (vectorizable(s, sizeof(T), {&dp, &dq, &x1, &x2, &dx1, &dx2}))
      launch<butterfly_backward_planar<T, true>>(g, b, 0, stream, t, s.C, s.P, split_len(s), c, gm, bs, mq, part);
    else
      launch<butterfly_backward_planar<T, false>>(g, b, 0, stream, t, s.C, s.P, split_len(s), c, gm, bs, mq, part);
    cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;
    const int64_t rows = 4 * s.N * s.C;
    launch<sum_splits<A>>(dim3(static_cast<unsigned>(rows)), dim3(kThreads), 0, stream, part, num_splits(s),
                          static_cast<A*>(sums));
    return cudaGetLastError();
  })
  return cudaErrorInvalidValue;
}

}  // namespace cuda
}  // namespace lk
