// Device helpers shared by the lattice_kernels CUDA kernels: element conversion, 16-byte vector access,
// (count, mean, M2) statistics merged with Chan's formula in a fixed order across threads, warps and blocks.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>
#include <initializer_list>

#include "kernels.h"
#include "launch.cuh"

namespace lk {
namespace cuda {

constexpr int kThreads = 256;     // planar blocks: 256 threads along P
constexpr int kLanesC = 32;       // scalar interleaved blocks: 32 channel lanes (a warp reads 32 consecutive channels)
constexpr int kRowsP = 8;         // ... by 8 pixel rows (the vectorised ones: see vec_lanes)
constexpr int64_t kSplitPlanar = 8192;      // pixels per split (planar): 32 per thread
constexpr int64_t kSplitInterleaved = 256;  // pixels per split (interleaved, both paths): 32 per scalar pixel row

template <class T> struct AccOf { using type = float; };
template <> struct AccOf<double> { using type = double; };

__device__ __forceinline__ float to_acc(float v) { return v; }
__device__ __forceinline__ double to_acc(double v) { return v; }
__device__ __forceinline__ float to_acc(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_acc(__nv_bfloat16 v) { return __bfloat162float(v); }

template <class T> __device__ __forceinline__ T from_acc(typename AccOf<T>::type v);
template <> __device__ __forceinline__ float from_acc<float>(float v) { return v; }
template <> __device__ __forceinline__ double from_acc<double>(double v) { return v; }
template <> __device__ __forceinline__ __half from_acc<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_acc<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

// A 16-byte vector of T (4 floats, 8 halves, 2 doubles): consecutive pixels of an aligned planar row, or
// consecutive channels of an aligned channels_last pixel.
template <class T> struct alignas(16) Vec16 {
  static constexpr int kN = 16 / sizeof(T);
  T v[kN];
};

// A Vec16 from the uint4 of one 16-byte load.
template <class T> __device__ __forceinline__ Vec16<T> vec16_of(const uint4& u) {
  Vec16<T> v;
  memcpy(&v, &u, sizeof v);
  return v;
}

// The 16 bytes of v as one uint4, for LK_STORE's one 16-byte store (see launch.cuh).
template <class T> __device__ __forceinline__ uint4 as_uint4(const Vec16<T>& v) {
  uint4 u;
  memcpy(&u, &v, sizeof u);
  return u;
}

template <class A> struct Stats {
  A n, mean, m2;
};

template <class A> __device__ __forceinline__ Stats<A> merge(const Stats<A>& a, const Stats<A>& b) {
  const A n = a.n + b.n;
  const A frac = n > A(0) ? b.n / n : A(0);
  const A delta = b.mean - a.mean;
  return {n, a.mean + delta * frac, a.m2 + b.m2 + delta * delta * a.n * frac};
}

// Per-thread sums of shifted values -> (count, mean, M2).
template <class A> __device__ __forceinline__ Stats<A> from_sums(A cnt, A sum, A sq) {
  if (cnt <= A(0)) return {A(0), A(0), A(0)};
  const A mean = sum / cnt;
  const A m2 = sq - sum * mean;
  // A NaN or an infinity among the values makes m2 NaN (inf - inf): NaN statistics, as the op contract says
  // (ops/reference.py); the clamp below would turn it into 0.
  if (m2 != m2) return {cnt, m2, m2};
  return {cnt, mean, m2 > A(0) ? m2 : A(0)};
}

template <class A> __device__ __forceinline__ Stats<A> warp_merge(Stats<A> s) {
  for (int off = 16; off > 0; off >>= 1) {
    Stats<A> o{__shfl_down_sync(0xffffffffu, s.n, off), __shfl_down_sync(0xffffffffu, s.mean, off),
               __shfl_down_sync(0xffffffffu, s.m2, off)};
    s = merge(s, o);
  }
  return s;
}

template <class A> __device__ __forceinline__ A warp_sum(A v) {
  for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
  return v;
}

// Merge of a planar block's 256 thread statistics: warps in a fixed tree, then the 8 warp results in order.
template <class A> __device__ Stats<A> block_merge(Stats<A> s) {
  __shared__ A sh[3][kThreads / 32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  s = warp_merge(s);
  if (lane == 0) {
    sh[0][warp] = s.n;
    sh[1][warp] = s.mean;
    sh[2][warp] = s.m2;
  }
  __syncthreads();
  Stats<A> r{A(0), A(0), A(0)};
  if (threadIdx.x == 0)
    for (int w = 0; w < kThreads / 32; ++w) r = merge(r, Stats<A>{sh[0][w], sh[1][w], sh[2][w]});
  __syncthreads();  // sh is free again: a second call may write it
  return r;  // valid in thread 0
}

template <class A> __device__ A block_sum(A v) {
  __shared__ A sh[kThreads / 32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = warp_sum(v);
  if (lane == 0) sh[warp] = v;
  __syncthreads();
  A r = A(0);
  if (threadIdx.x == 0)
    for (int w = 0; w < kThreads / 32; ++w) r += sh[w];
  __syncthreads();
  return r;  // valid in thread 0
}

// Merge across the kRowsP pixel rows of an interleaved block, per channel lane, in row order.
template <class A> __device__ Stats<A> rows_merge(Stats<A> s) {
  __shared__ A sh[3][kRowsP][kLanesC];
  sh[0][threadIdx.y][threadIdx.x] = s.n;
  sh[1][threadIdx.y][threadIdx.x] = s.mean;
  sh[2][threadIdx.y][threadIdx.x] = s.m2;
  __syncthreads();
  Stats<A> r{A(0), A(0), A(0)};
  if (threadIdx.y == 0)
    for (int y = 0; y < kRowsP; ++y)
      r = merge(r, Stats<A>{sh[0][y][threadIdx.x], sh[1][y][threadIdx.x], sh[2][y][threadIdx.x]});
  __syncthreads();  // sh is free again: a second call may write it
  return r;  // valid in row 0
}

template <class A> __device__ A rows_sum(A v) {
  __shared__ A sh[kRowsP][kLanesC];
  sh[threadIdx.y][threadIdx.x] = v;
  __syncthreads();
  A r = A(0);
  if (threadIdx.y == 0)
    for (int y = 0; y < kRowsP; ++y) r += sh[y][threadIdx.x];
  __syncthreads();
  return r;  // valid in row 0
}

// The S split statistics of every (n, c) row merged, one block of kThreads per row: thread t merges splits t,
// t + kThreads, ... in order, then block_merge combines the threads in its fixed tree, so the tail is
// O(S / kThreads + log) deep and the result bitwise reproducible. part holds [NC][S] statistics whose means are
// relative to the row's shift, then the NC shifts: mean = shift + merged mean, std unbiased (NaN for one pixel).
template <class A>
__global__ void merge_splits(const Stats<A>* __restrict__ part, int64_t S, A* __restrict__ mean,
                             A* __restrict__ stdv) {
  const int64_t row = blockIdx.x, NC = gridDim.x;
  Stats<A> r{A(0), A(0), A(0)};
  for (int64_t s = threadIdx.x; s < S; s += kThreads) r = merge(r, LK_LOAD(part + row * S + s));
  r = block_merge(r);
  if (threadIdx.x == 0) {
    LK_STORE(mean + row, LK_LOAD(reinterpret_cast<const A*>(part + NC * S) + row) + r.mean);
    LK_STORE(stdv + row, sqrt(r.m2 / (r.n - A(1))));
  }
}

// Pixels per split: the base length, grown (in whole multiples of it) so that the splits fit gridDim.y <= 65535.
// A function of the shape only, so every kernel of a call and every run agree on it.
inline int64_t split_len(const Shape& s) {
  const int64_t base = s.interleaved ? kSplitInterleaved : kSplitPlanar;
  const int64_t min_len = (s.P + 65534) / 65535;
  return base * ((min_len + base - 1) / base);
}
inline int64_t num_splits(const Shape& s) { return (s.P + split_len(s) - 1) / split_len(s); }
inline int64_t channel_blocks(const Shape& s) { return (s.C + kLanesC - 1) / kLanesC; }

// The launch grid shared by every kernel: planar (N*C, splits) x 256 threads; interleaved
// (N*channel_blocks, splits) x (32 channel lanes, 8 pixel rows).
inline dim3 grid_of(const Shape& s) {
  return dim3(static_cast<unsigned>(s.interleaved ? s.N * channel_blocks(s) : s.N * s.C),
              static_cast<unsigned>(num_splits(s)));
}
inline dim3 block_of(const Shape& s) { return s.interleaved ? dim3(kLanesC, kRowsP) : dim3(kThreads); }

// Whether every planar row of these operands can be read/written with 16-byte vectors.
inline bool vectorizable(const Shape& s, int elem_bytes, std::initializer_list<const View*> ts) {
  if (s.interleaved) return false;
  const int64_t n = 16 / elem_bytes;
  if (s.P % n || kSplitPlanar % n) return false;
  for (const View* t : ts) {
    if (t->sp != 1 || t->sc % n || t->sn % n) return false;
    if (reinterpret_cast<uintptr_t>(t->data) % 16) return false;
  }
  return true;
}

// Vectorised interleaved blocks (channels_last, C a multiple of the 16-byte vector width V): a thread reads the V
// consecutive channels of one pixel as one 16-byte vector. blockDim = (lanes, kThreads / lanes): `lanes` channel
// groups of V by rows of pixels, so a warp reads 32 whole vectors, 512 contiguous bytes when C * elem >= 512
// (the scalar interleaved block reads 32 elements of one pixel: 128 bytes in float32, 64 in bfloat16).
inline int64_t vec_lanes(const Shape& s, int elem_bytes) {
  const int64_t groups = s.C / (16 / elem_bytes);
  int64_t lanes = 8;  // at least 8 (kThreads / 8 = 32 rows): fewer would leave most of a warp's lanes idle ...
  while (lanes < groups && lanes < kLanesC) lanes *= 2;  // ... at most 32 (one warp across channels)
  return lanes;
}
inline int64_t vec_channel_blocks(const Shape& s, int elem_bytes) {
  const int64_t groups = s.C / (16 / elem_bytes), lanes = vec_lanes(s, elem_bytes);
  return (groups + lanes - 1) / lanes;
}
inline dim3 vec_grid_of(const Shape& s, int elem_bytes) {
  return dim3(static_cast<unsigned>(s.N * vec_channel_blocks(s, elem_bytes)), static_cast<unsigned>(num_splits(s)));
}
inline dim3 vec_block_of(const Shape& s, int elem_bytes) {
  const int64_t lanes = vec_lanes(s, elem_bytes);
  return dim3(static_cast<unsigned>(lanes), static_cast<unsigned>(kThreads / lanes));
}

// Whether every pixel of these interleaved operands can be read/written as 16-byte vectors of channels.
inline bool interleaved_vectorizable(const Shape& s, int elem_bytes, std::initializer_list<const View*> ts) {
  if (!s.interleaved) return false;
  const int64_t n = 16 / elem_bytes;
  if (s.C % n) return false;
  for (const View* t : ts) {
    if (t->sc != 1 || t->sp % n || t->sn % n) return false;
    if (reinterpret_cast<uintptr_t>(t->data) % 16) return false;
  }
  return true;
}

// Whether every per-channel array (nullptr: absent) is 16-byte aligned: a vectorised interleaved thread reads its
// V channels' values with load_channels.
inline bool aligned16(std::initializer_list<const void*> ps) {
  for (const void* p : ps)
    if (reinterpret_cast<uintptr_t>(p) % 16) return false;
  return true;
}

// out[j] = p[i + j] for j < V (absent p: `absent`), 16 bytes per load; i is a multiple of V and p 16-byte aligned.
// (One scalar load per channel would make every warp request touch a sector per channel group.)
template <class A, int V>
__device__ __forceinline__ void load_channels(const void* p, int64_t i, A (&out)[V], A absent = A(1)) {
  constexpr int K = 16 / sizeof(A);
  static_assert(V % K == 0, "V channels of per-channel values must fill whole 16-byte vectors");
  if (!p) {
    for (int j = 0; j < V; ++j) out[j] = absent;
    return;
  }
  for (int j = 0; j < V; j += K) {
    const Vec16<A> v = LK_LOAD(reinterpret_cast<const Vec16<A>*>(static_cast<const A*>(p) + i + j));
    for (int k = 0; k < K; ++k) out[j + k] = v.v[k];
  }
}

// The merge across the pixel rows (threadIdx.y) of a vectorised interleaved block, per channel of each thread's
// V, in row order; the result is valid in row 0. Shared memory: 3 x kThreads x V accumulators (12 KiB in
// float32 and float64, 24 KiB in bfloat16 and float16).
template <class A, int V> __device__ void rows_merge_vec(Stats<A> (&st)[V]) {
  __shared__ A sh[3][kThreads * V];
  const int lanes = blockDim.x, rows = blockDim.y, at = (threadIdx.y * lanes + threadIdx.x) * V;
  for (int j = 0; j < V; ++j) {
    sh[0][at + j] = st[j].n;
    sh[1][at + j] = st[j].mean;
    sh[2][at + j] = st[j].m2;
  }
  __syncthreads();
  if (threadIdx.y == 0)
    for (int j = 0; j < V; ++j) {
      Stats<A> r{A(0), A(0), A(0)};
      for (int y = 0; y < rows; ++y) {
        const int i = (y * lanes + threadIdx.x) * V + j;
        r = merge(r, Stats<A>{sh[0][i], sh[1][i], sh[2][i]});
      }
      st[j] = r;
    }
  __syncthreads();  // sh is free again
}

// The sum across the pixel rows of a vectorised interleaved block, per channel of each thread's V, in row order;
// valid in row 0.
template <class A, int V> __device__ void rows_sum_vec(A (&v)[V]) {
  __shared__ A sh[kThreads * V];
  const int lanes = blockDim.x, rows = blockDim.y;
  for (int j = 0; j < V; ++j) sh[(threadIdx.y * lanes + threadIdx.x) * V + j] = v[j];
  __syncthreads();
  if (threadIdx.y == 0)
    for (int j = 0; j < V; ++j) {
      A r = A(0);
      for (int y = 0; y < rows; ++y) r += sh[(y * lanes + threadIdx.x) * V + j];
      v[j] = r;
    }
  __syncthreads();  // sh is free again
}

#define LK_CUDA_DISPATCH(dtype, ...)                        \
  switch (dtype) {                                           \
    case DType::F32: { using T = float; __VA_ARGS__ } break;   \
    case DType::F64: { using T = double; __VA_ARGS__ } break;  \
    case DType::F16: { using T = __half; __VA_ARGS__ } break;  \
    case DType::BF16: { using T = __nv_bfloat16; __VA_ARGS__ } break; \
  }

}  // namespace cuda
}  // namespace lk
