// Small deliberately broken kernels (and their correct twins) that prove the checkers of the CPU execution harness
// can fail: an off-by-one read (AddressSanitizer), a misaligned 16-byte vector load (UBSan), a missing barrier
// before reading another thread's shared word (the race check), a full-mask shuffle after some lanes exited (the
// harness's own warp check), the block/row merges of csrc/cuda/common.cuh
// called twice with and without their trailing barrier (the race of issue #13 item 5), and launches that break
// the limits of a GPU. Compiled into the harness module only; never part of the library.
#include <string>
#include <vector>

#include "common.cuh"

namespace samples {

using lk::cuda::kLanesC;
using lk::cuda::kRowsP;
using lk::cuda::kThreads;
using lk::cuda::launch;
using lk::cuda::Stats;

// out[i] = in[i + 1] for every i < n: reads in[n], one past the end.
__global__ void off_by_one(const float* in, float* out, int64_t n) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) out[i] = in[i + 1];
}

// A 16-byte vector load from in + 1 (4-byte aligned only).
__global__ void misaligned_vector(const float* in, float* out, int64_t) {
  const auto v = *reinterpret_cast<const lk::cuda::Vec16<float>*>(in + 1);
  if (threadIdx.x == 0) out[0] = v.v[0];
}

// Each thread publishes in[t] in shared memory and reads its neighbour's word; BARRIER = false omits the barrier.
template <bool BARRIER> __global__ void neighbour(const float* in, float* out, int64_t) {
  __shared__ float sh[kThreads];
  const int t = threadIdx.x;
  sh[t] = in[t];
  if constexpr (BARRIER) __syncthreads();
  out[t] = sh[(t + 1) % kThreads];
}

// The block merge of common.cuh as it was before issue #13 item 5: no barrier after thread 0 reads sh.
template <class A> __device__ Stats<A> block_merge_without_trailing_barrier(Stats<A> s) {
  __shared__ A sh[3][kThreads / 32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  s = lk::cuda::warp_merge(s);
  if (lane == 0) {
    sh[0][warp] = s.n;
    sh[1][warp] = s.mean;
    sh[2][warp] = s.m2;
  }
  __syncthreads();
  Stats<A> r{A(0), A(0), A(0)};
  if (threadIdx.x == 0)
    for (int w = 0; w < kThreads / 32; ++w) r = lk::cuda::merge(r, Stats<A>{sh[0][w], sh[1][w], sh[2][w]});
  return r;
}

// Two block merges in one kernel (of in[t] and of 2 * in[t]): out = (mean1, m2_1, mean2, m2_2).
template <bool FIXED> __global__ void block_merge_twice(const float* in, float* out, int64_t) {
  const float v = in[threadIdx.x];
  const Stats<float> a{1.0f, v, 0.0f}, b{1.0f, 2.0f * v, 0.0f};
  Stats<float> r1, r2;
  if constexpr (FIXED) {
    r1 = lk::cuda::block_merge(a);
    r2 = lk::cuda::block_merge(b);
  } else {
    r1 = block_merge_without_trailing_barrier(a);
    r2 = block_merge_without_trailing_barrier(b);
  }
  if (threadIdx.x == 0) {
    out[0] = r1.mean;
    out[1] = r1.m2;
    out[2] = r2.mean;
    out[3] = r2.m2;
  }
}

// Two row merges in one (32, 8) block: per lane x, out[x] = merged mean of in[y*32+x], out[32+x] of twice that.
__global__ void rows_merge_twice(const float* in, float* out, int64_t) {
  const float v = in[threadIdx.y * kLanesC + threadIdx.x];
  const Stats<float> r1 = lk::cuda::rows_merge(Stats<float>{1.0f, v, 0.0f});
  const Stats<float> r2 = lk::cuda::rows_merge(Stats<float>{1.0f, 2.0f * v, 0.0f});
  if (threadIdx.y == 0) {
    out[threadIdx.x] = r1.mean;
    out[kLanesC + threadIdx.x] = r2.mean;
  }
}

// Half of the first warp returns before a full-mask shuffle: the other lanes wait for lanes that have exited.
__global__ void shuffle_after_exit(const float* in, float* out, int64_t) {
  if (threadIdx.x >= 16 && threadIdx.x < 32) return;
  out[threadIdx.x] = __shfl_down_sync(0xffffffffu, in[threadIdx.x], 1);
}

// The efficiency model's planted defects (tools/gpu_efficiency): grid-stride copies of n floats. coalesced_copy and
// vector_copy are the correct twins; strided_copy reads in a transposed order (consecutive lanes n / 32 floats apart:
// one sector per lane, 4 of 32 bytes used), scalar_copy moves 4 bytes per lane where 16 were possible.
__global__ void coalesced_copy(const float* __restrict__ in, float* __restrict__ out, int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    LK_STORE(out + i, LK_LOAD(in + i));
}
__global__ void strided_copy(const float* __restrict__ in, float* __restrict__ out, int64_t n) {
  const int64_t rows = n / 32;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    LK_STORE(out + i, LK_LOAD(in + (i % 32) * rows + i / 32));
}
__global__ void vector_copy(const float* __restrict__ in, float* __restrict__ out, int64_t n) {
  using V = lk::cuda::Vec16<float>;
  for (int64_t i = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) * V::kN; i < n;
       i += int64_t(gridDim.x) * blockDim.x * V::kN)
    LK_STORE(reinterpret_cast<V*>(out + i), LK_LOAD(reinterpret_cast<const V*>(in + i)));
}
__global__ void scalar_copy(const float* __restrict__ in, float* __restrict__ out, int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    LK_STORE(out + i, LK_LOAD(in + i));
}

__global__ void nothing(const float*, float*, int64_t) {}

}  // namespace samples

cudaError_t lk_run_sample(const std::string& name, float* in, float* out, int64_t n, const std::vector<int64_t>& cfg) {
  using namespace samples;
  cudaGetLastError();
  if (name == "off_by_one")
    launch<off_by_one>(dim3(unsigned((n + 255) / 256)), dim3(256), 0, nullptr, in, out, n);
  else if (name == "misaligned_vector")
    launch<misaligned_vector>(dim3(1), dim3(32), 0, nullptr, in, out, n);
  else if (name == "missing_barrier")
    launch<neighbour<false>>(dim3(1), dim3(kThreads), 0, nullptr, in, out, n);
  else if (name == "with_barrier")
    launch<neighbour<true>>(dim3(1), dim3(kThreads), 0, nullptr, in, out, n);
  else if (name == "block_merge_twice_unfixed")
    launch<block_merge_twice<false>>(dim3(1), dim3(kThreads), 0, nullptr, in, out, n);
  else if (name == "block_merge_twice")
    launch<block_merge_twice<true>>(dim3(1), dim3(kThreads), 0, nullptr, in, out, n);
  else if (name == "shuffle_after_exit")
    launch<shuffle_after_exit>(dim3(1), dim3(64), 0, nullptr, in, out, n);
  else if (name == "rows_merge_twice")
    launch<rows_merge_twice>(dim3(1), dim3(kLanesC, kRowsP), 0, nullptr, in, out, n);
  else if (name == "coalesced_copy")
    launch<coalesced_copy>(dim3(2), dim3(256), 0, nullptr, in, out, n);
  else if (name == "strided_copy" && n % 32 == 0)
    launch<strided_copy>(dim3(2), dim3(256), 0, nullptr, in, out, n);
  else if (name == "vector_copy" && n % 4 == 0)
    launch<vector_copy>(dim3(2), dim3(256), 0, nullptr, in, out, n);
  else if (name == "scalar_copy")
    launch<scalar_copy>(dim3(2), dim3(256), 0, nullptr, in, out, n);
  else if (name == "launch" && cfg.size() == 7)  // (grid x, y, z, block x, y, z, dynamic smem)
    launch<nothing>(dim3(unsigned(cfg[0]), unsigned(cfg[1]), unsigned(cfg[2])),
                    dim3(unsigned(cfg[3]), unsigned(cfg[4]), unsigned(cfg[5])), size_t(cfg[6]), nullptr, in, out, n);
  else
    return cudaErrorInvalidValue;
  return cudaGetLastError();
}
