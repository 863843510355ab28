// channel_stats, combination_coefficients and the channel_stats backward: split reductions over P (partials of
// values shifted by the row's first element), a second stage merging the splits of each row in a fixed tree
// (merge_splits), for combination_coefficients a third running the coefficient MLP, and a one-pass backward.
#include "common.cuh"

namespace lk {
namespace cuda {

// part[(n*C + c)*S + s] = statistics of x[n, c, p] - x[n, c, 0] over split s; the shift x[n, c, 0] after the
// partials (at part + N*C*S, one per row).
template <class T, bool VEC>
__global__ void stats_partial_planar(const T* __restrict__ x, int64_t C, int64_t P, int64_t split, int64_t sn, int64_t sc,
                                     int64_t sp, Stats<typename AccOf<T>::type>* __restrict__ part) {
  using A = typename AccOf<T>::type;
  const int64_t nc = blockIdx.x, n = nc / C, c = nc % C, s = blockIdx.y, S = gridDim.y;
  const T* base = x + n * sn + c * sc;
  const A shift = to_acc(LK_LOAD(base));
  const int64_t p0 = s * split, p1 = min(P, p0 + split);
  A cnt = 0, sum = 0, sq = 0;
  if constexpr (VEC) {
    constexpr int V = Vec16<T>::kN;
    for (int64_t p = p0 + int64_t(threadIdx.x) * V; p < p1; p += int64_t(kThreads) * V) {
      const Vec16<T> v = LK_LOAD(reinterpret_cast<const Vec16<T>*>(base + p));
#pragma unroll
      for (int i = 0; i < V; ++i) {
        const A d = to_acc(v.v[i]) - shift;
        sum += d;
        sq += d * d;
      }
      cnt += A(V);
    }
  } else {
    for (int64_t p = p0 + threadIdx.x; p < p1; p += kThreads) {
      const A d = to_acc(LK_LOAD(base + p * sp)) - shift;
      sum += d;
      sq += d * d;
      cnt += A(1);
    }
  }
  const Stats<A> r = block_merge(from_sums(cnt, sum, sq));
  if (threadIdx.x == 0) {
    LK_STORE(part + nc * S + s, r);
    if (s == 0) LK_STORE(reinterpret_cast<A*>(part + gridDim.x * S) + nc, shift);
  }
}

template <class T>
__global__ void stats_partial_interleaved(const T* __restrict__ x, int64_t C, int64_t P, int64_t split, int64_t sn, int64_t sc,
                                          int64_t sp, int64_t ncb, Stats<typename AccOf<T>::type>* __restrict__ part) {
  using A = typename AccOf<T>::type;
  const int64_t n = blockIdx.x / ncb, c = (blockIdx.x % ncb) * kLanesC + threadIdx.x, s = blockIdx.y, S = gridDim.y;
  const bool valid = c < C;
  const T* base = x + n * sn + (valid ? c : 0) * sc;
  const A shift = to_acc(LK_LOAD(base));
  const int64_t p0 = s * split, p1 = min(P, p0 + split);
  A cnt = 0, sum = 0, sq = 0;
  if (valid)
    for (int64_t p = p0 + threadIdx.y; p < p1; p += kRowsP) {
      const A d = to_acc(LK_LOAD(base + p * sp)) - shift;
      sum += d;
      sq += d * d;
      cnt += A(1);
    }
  const Stats<A> r = rows_merge(from_sums(cnt, sum, sq));
  if (threadIdx.y == 0 && valid) {
    LK_STORE(part + (n * C + c) * S + s, r);
    if (s == 0) LK_STORE(reinterpret_cast<A*>(part + int64_t(gridDim.x / ncb) * C * S) + n * C + c, shift);
  }
}

// The same on a vectorised interleaved block (common.cuh): each thread reads V channels of a pixel per load.
template <class T>
__global__ void stats_partial_interleaved_vec(const T* __restrict__ x, int64_t C, int64_t P, int64_t split,
                                              int64_t sn, int64_t sp, int64_t ncb,
                                              Stats<typename AccOf<T>::type>* __restrict__ part) {
  using A = typename AccOf<T>::type;
  constexpr int V = Vec16<T>::kN;
  const int64_t n = blockIdx.x / ncb, c0 = ((blockIdx.x % ncb) * blockDim.x + threadIdx.x) * V, s = blockIdx.y;
  const int64_t S = gridDim.y;
  const bool valid = c0 < C;
  const T* base = x + n * sn + (valid ? c0 : 0);
  const Vec16<T> first = LK_LOAD(reinterpret_cast<const Vec16<T>*>(base));
  A shift[V], sum[V], sq[V];
  for (int j = 0; j < V; ++j) {
    shift[j] = to_acc(first.v[j]);
    sum[j] = sq[j] = A(0);
  }
  const int64_t p0 = s * split, p1 = min(P, p0 + split);
  A cnt = 0;
  auto add = [&](const Vec16<T>& v) {
#pragma unroll
    for (int j = 0; j < V; ++j) {
      const A d = to_acc(v.v[j]) - shift[j];
      sum[j] += d;
      sq[j] += d * d;
    }
    cnt += A(1);
  };
  if (valid) {
    // Four pixels per step, their loads issued together (a plain loop keeps one load in flight in bfloat16, and
    // `#pragma unroll` guards each load by its own bound check; tools/gpu_efficiency); the sums in pixel order.
    const int64_t step = blockDim.y;
    int64_t p = p0 + threadIdx.y;
    for (; p + 3 * step < p1; p += 4 * step) {
      uint4 v[4];
#pragma unroll
      for (int u = 0; u < 4; ++u) v[u] = LK_LOAD(reinterpret_cast<const uint4*>(base + (p + u * step) * sp));
#pragma unroll
      for (int u = 0; u < 4; ++u) add(vec16_of<T>(v[u]));
    }
    for (; p < p1; p += step) add(vec16_of<T>(LK_LOAD(reinterpret_cast<const uint4*>(base + p * sp))));
  }
  Stats<A> st[V];
  for (int j = 0; j < V; ++j) st[j] = from_sums(cnt, sum[j], sq[j]);
  rows_merge_vec(st);
  if (threadIdx.y == 0 && valid) {
    const int64_t NC = int64_t(gridDim.x / ncb) * C;
    for (int j = 0; j < V; ++j) {
      LK_STORE(part + (n * C + c0 + j) * S + s, st[j]);
      if (s == 0) LK_STORE(reinterpret_cast<A*>(part + NC * S) + n * C + c0 + j, shift[j]);
    }
  }
}

template <class A> __device__ __forceinline__ A sigmoid(A z) { return A(1) / (A(1) + exp(-z)); }

// The coefficient MLP, one block per sample n, on the merged statistics: hidden units (mean branch, then std
// branch) one warp each, in dynamic shared memory [2*R]; then cc = 0.5 * (sigmoid(mean branch) + sigmoid(std branch)).
template <class A>
__global__ void coefficient_mlp(int64_t C, const A* __restrict__ mean, const A* __restrict__ stdv, MlpWeights w,
                                A* __restrict__ cc) {
  A* hidden = dynamic_shared<A>();
  const int64_t n = blockIdx.x, R = w.R;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  for (int64_t j = warp; j < 2 * R; j += warps) {
    const bool std_branch = j >= R;
    const int64_t r = std_branch ? j - R : j;
    const A* w1 = static_cast<const A*>(std_branch ? w.w1s : w.w1m);
    const A* u = (std_branch ? stdv : mean) + n * C;
    A acc = 0;
    for (int64_t c = lane; c < C; c += 32) acc += LK_LOAD(w1 + r * C + c) * LK_LOAD(u + c);
    acc = warp_sum(acc);
    if (lane == 0) {
      const A h = acc + LK_LOAD(static_cast<const A*>(std_branch ? w.b1s : w.b1m) + r);
      hidden[j] = h <= A(0) ? A(0) : h;  // relu that keeps NaN (std at H*W = 1), as torch.relu
    }
  }
  __syncthreads();
  const A* w2m = static_cast<const A*>(w.w2m);
  const A* w2s = static_cast<const A*>(w.w2s);
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    A zm = LK_LOAD(static_cast<const A*>(w.b2m) + c), zs = LK_LOAD(static_cast<const A*>(w.b2s) + c);
    for (int64_t r = 0; r < R; ++r) {
      zm += LK_LOAD(w2m + c * R + r) * hidden[r];
      zs += LK_LOAD(w2s + c * R + r) * hidden[R + r];
    }
    LK_STORE(cc + n * C + c, A(0.5) * (sigmoid(zm) + sigmoid(zs)));
  }
}

template <class A>
cudaError_t launch_mlp(const A* mean, const A* stdv, int64_t N, int64_t C, const MlpWeights& w, A* cc,
                       cudaStream_t stream) {
  const size_t smem = sizeof(A) * size_t(2 * w.R);
  if (smem > 48 * 1024 || N < 1) return cudaErrorInvalidConfiguration;
  launch<coefficient_mlp<A>>(dim3(static_cast<unsigned>(N)), dim3(kThreads), smem, stream, C, mean, stdv, w, cc);
  return cudaGetLastError();
}

template <class T>
cudaError_t launch_stats(const View& x, const Shape& s, void* mean, void* stdv, const MlpWeights* w, void* cc,
                         void* workspace, cudaStream_t stream) {
  using A = typename AccOf<T>::type;
  const T* xp = static_cast<const T*>(x.data);
  auto* part = static_cast<Stats<A>*>(workspace);
  if (interleaved_vectorizable(s, sizeof(T), {&x}))
    launch<stats_partial_interleaved_vec<T>>(vec_grid_of(s, sizeof(T)), vec_block_of(s, sizeof(T)), 0, stream, xp, s.C,
                                             s.P, split_len(s), x.sn, x.sp, vec_channel_blocks(s, sizeof(T)), part);
  else if (s.interleaved)
    launch<stats_partial_interleaved<T>>(grid_of(s), block_of(s), 0, stream, xp, s.C, s.P, split_len(s), x.sn, x.sc,
                                         x.sp, channel_blocks(s), part);
  else if (vectorizable(s, sizeof(T), {&x}))
    launch<stats_partial_planar<T, true>>(grid_of(s), block_of(s), 0, stream, xp, s.C, s.P, split_len(s), x.sn, x.sc,
                                          x.sp, part);
  else
    launch<stats_partial_planar<T, false>>(grid_of(s), block_of(s), 0, stream, xp, s.C, s.P, split_len(s), x.sn,
                                           x.sc, x.sp, part);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  launch<merge_splits<A>>(dim3(static_cast<unsigned>(s.N * s.C)), dim3(kThreads), 0, stream, part, num_splits(s),
                          static_cast<A*>(mean), static_cast<A*>(stdv));
  err = cudaGetLastError();
  if (err != cudaSuccess || !cc) return err;
  return launch_mlp<A>(static_cast<const A*>(mean), static_cast<const A*>(stdv), s.N, s.C, *w, static_cast<A*>(cc),
                       stream);
}

size_t stats_workspace_bytes(DType dtype, const Shape& s) {
  const size_t acc = dtype == DType::F64 ? sizeof(double) : sizeof(float);
  return acc * size_t(s.N * s.C) * size_t(3 * num_splits(s) + 1);  // [NC][S] statistics, then NC shifts
}

cudaError_t channel_stats(DType dtype, const View& x, const Shape& s, void* mean, void* stdv, void* workspace,
                          cudaStream_t stream) {
  LK_CUDA_DISPATCH(dtype, return launch_stats<T>(x, s, mean, stdv, nullptr, nullptr, workspace, stream);)
  return cudaErrorInvalidValue;
}

cudaError_t combination_coefficients(DType dtype, const View& x, const Shape& s, const MlpWeights& w, void* cc,
                                     void* mean, void* stdv, void* workspace, cudaStream_t stream) {
  LK_CUDA_DISPATCH(dtype, return launch_stats<T>(x, s, mean, stdv, &w, cc, workspace, stream);)
  return cudaErrorInvalidValue;
}

cudaError_t coefficients_from_stats(DType stats_dtype, const void* mean, const void* stdv, int64_t N, int64_t C,
                                    const MlpWeights& w, void* cc, cudaStream_t stream) {
  if (stats_dtype == DType::F64)
    return launch_mlp<double>(static_cast<const double*>(mean), static_cast<const double*>(stdv), N, C, w,
                              static_cast<double*>(cc), stream);
  if (stats_dtype == DType::F32)
    return launch_mlp<float>(static_cast<const float*>(mean), static_cast<const float*>(stdv), N, C, w,
                             static_cast<float*>(cc), stream);
  return cudaErrorInvalidValue;
}

// ---------------------------------------------------------------------------------------------------------------
// backward: dx = a + b * (x - mean)

template <class T, bool VEC>
__global__ void stats_backward_planar(const T* __restrict__ x, T* __restrict__ dx, int64_t C, int64_t P, int64_t split, View xs,
                                      View ds, const typename AccOf<T>::type* __restrict__ a,
                                      const typename AccOf<T>::type* __restrict__ b,
                                      const typename AccOf<T>::type* __restrict__ mean) {
  using A = typename AccOf<T>::type;
  const int64_t nc = blockIdx.x, n = nc / C, c = nc % C;
  const A ca = LK_LOAD(a + nc), cb = LK_LOAD(b + nc), m = LK_LOAD(mean + nc);
  const T* xb = x + n * xs.sn + c * xs.sc;
  T* db = dx + n * ds.sn + c * ds.sc;
  const int64_t p0 = int64_t(blockIdx.y) * split, p1 = min(P, p0 + split);
  if constexpr (VEC) {
    constexpr int V = Vec16<T>::kN;
    for (int64_t p = p0 + int64_t(threadIdx.x) * V; p < p1; p += int64_t(kThreads) * V) {
      const Vec16<T> v = LK_LOAD(reinterpret_cast<const Vec16<T>*>(xb + p));
      Vec16<T> o;
#pragma unroll
      for (int i = 0; i < V; ++i) o.v[i] = from_acc<T>(ca + cb * (to_acc(v.v[i]) - m));
      LK_STORE(reinterpret_cast<uint4*>(db + p), as_uint4(o));
    }
  } else {
    for (int64_t p = p0 + threadIdx.x; p < p1; p += kThreads)
      LK_STORE(db + p * ds.sp, from_acc<T>(ca + cb * (to_acc(LK_LOAD(xb + p * xs.sp)) - m)));
  }
}

template <class T>
__global__ void stats_backward_interleaved(const T* __restrict__ x, T* __restrict__ dx, int64_t C, int64_t P, int64_t split,
                                           int64_t ncb, View xs, View ds,
                                           const typename AccOf<T>::type* __restrict__ a,
                                           const typename AccOf<T>::type* __restrict__ b,
                                           const typename AccOf<T>::type* __restrict__ mean) {
  using A = typename AccOf<T>::type;
  const int64_t n = blockIdx.x / ncb, c = (blockIdx.x % ncb) * kLanesC + threadIdx.x;
  if (c >= C) return;
  const A ca = LK_LOAD(a + n * C + c), cb = LK_LOAD(b + n * C + c), m = LK_LOAD(mean + n * C + c);
  const T* xb = x + n * xs.sn + c * xs.sc;
  T* db = dx + n * ds.sn + c * ds.sc;
  const int64_t p0 = int64_t(blockIdx.y) * split, p1 = min(P, p0 + split);
  for (int64_t p = p0 + threadIdx.y; p < p1; p += kRowsP)
    LK_STORE(db + p * ds.sp, from_acc<T>(ca + cb * (to_acc(LK_LOAD(xb + p * xs.sp)) - m)));
}

template <class T>
__global__ void stats_backward_interleaved_vec(const T* __restrict__ x, T* __restrict__ dx, int64_t C, int64_t P,
                                               int64_t split, int64_t ncb, View xs, View ds,
                                               const typename AccOf<T>::type* __restrict__ a,
                                               const typename AccOf<T>::type* __restrict__ b,
                                               const typename AccOf<T>::type* __restrict__ mean) {
  using A = typename AccOf<T>::type;
  constexpr int V = Vec16<T>::kN;
  const int64_t n = blockIdx.x / ncb, c0 = ((blockIdx.x % ncb) * blockDim.x + threadIdx.x) * V;
  if (c0 >= C) return;
  A ca[V], cb[V], m[V];
  load_channels(a, n * C + c0, ca);
  load_channels(b, n * C + c0, cb);
  load_channels(mean, n * C + c0, m);
  const T* xb = x + n * xs.sn + c0;
  T* db = dx + n * ds.sn + c0;
  const int64_t p0 = int64_t(blockIdx.y) * split, p1 = min(P, p0 + split);
  auto one = [&](const uint4& u) {
    const Vec16<T> v = vec16_of<T>(u);
    Vec16<T> o;
#pragma unroll
    for (int j = 0; j < V; ++j) o.v[j] = from_acc<T>(ca[j] + cb[j] * (to_acc(v.v[j]) - m[j]));
    return as_uint4(o);
  };
  // Four pixels per step, their loads issued together (as in stats_partial_interleaved_vec).
  const int64_t step = blockDim.y;
  int64_t p = p0 + threadIdx.y;
  for (; p + 3 * step < p1; p += 4 * step) {
    uint4 v[4];
#pragma unroll
    for (int u = 0; u < 4; ++u) v[u] = LK_LOAD(reinterpret_cast<const uint4*>(xb + (p + u * step) * xs.sp));
#pragma unroll
    for (int u = 0; u < 4; ++u) LK_STORE(reinterpret_cast<uint4*>(db + (p + u * step) * ds.sp), one(v[u]));
  }
  for (; p < p1; p += step)
    LK_STORE(reinterpret_cast<uint4*>(db + p * ds.sp), one(LK_LOAD(reinterpret_cast<const uint4*>(xb + p * xs.sp))));
}

cudaError_t channel_stats_backward(DType dtype, const View& x, const View& dx, const Shape& s, const void* a,
                                   const void* b, const void* mean, cudaStream_t stream) {
  LK_CUDA_DISPATCH(dtype, {
    using A = typename AccOf<T>::type;
    const T* xp = static_cast<const T*>(x.data);
    T* dp = static_cast<T*>(dx.data);
    const A* ap = static_cast<const A*>(a);
    const A* bp = static_cast<const A*>(b);
    const A* mp = static_cast<const A*>(mean);
    if (interleaved_vectorizable(s, sizeof(T), {&x, &dx}) && aligned16({a, b, mean}))
      launch<stats_backward_interleaved_vec<T>>(vec_grid_of(s, sizeof(T)), vec_block_of(s, sizeof(T)), 0, stream, xp,
                                                dp, s.C, s.P, split_len(s), vec_channel_blocks(s, sizeof(T)), x, dx,
                                                ap, bp, mp);
    else if (s.interleaved)
      launch<stats_backward_interleaved<T>>(grid_of(s), block_of(s), 0, stream, xp, dp, s.C, s.P, split_len(s),
                                            channel_blocks(s), x, dx, ap, bp, mp);
    else if (vectorizable(s, sizeof(T), {&x, &dx}))
      launch<stats_backward_planar<T, true>>(grid_of(s), block_of(s), 0, stream, xp, dp, s.C, s.P, split_len(s), x, dx,
                                             ap, bp, mp);
    else
      launch<stats_backward_planar<T, false>>(grid_of(s), block_of(s), 0, stream, xp, dp, s.C, s.P, split_len(s), x,
                                              dx, ap, bp, mp);
    return cudaGetLastError();
  })
  return cudaErrorInvalidValue;
}

}  // namespace cuda
}  // namespace lk
