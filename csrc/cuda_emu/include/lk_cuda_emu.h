// The CPU execution harness of lattice_kernels' CUDA kernels: what the kernels use of CUDA, mapped onto the host.
//
// The real csrc/cuda/*.cu sources are compiled as host C++ against this header (it stands in for cuda_runtime.h,
// cuda_fp16.h and cuda_bf16.h). A launch runs every block of the grid, one after another; the threads of a block
// run as fibers (one per CUDA thread, each on its own stack) under a scheduler that switches only at
// __syncthreads (a barrier among the block's live threads) and warp intrinsics (an exchange among the 32 lanes of
// the warp), in an order that a seed can shuffle. Launches are checked as a GPU checks them (block <= 1024
// threads, gridDim.y/z <= 65535, dynamic shared memory <= 48 KiB, no empty grid); a failure names the kernel.
// `__shared__` variables are one copy per block (thread_local storage of the OS thread running the block).
// Arithmetic is the host's IEEE arithmetic: no fused multiply-add contraction and a correctly rounded libm, where
// nvcc contracts a*b+c into FMA by default and __expf-class functions differ by a few ulp.
#pragma once
#include <math.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __launch_bounds__(...)
#define __shared__ thread_local

struct uint3 {
  unsigned int x, y, z;
};

struct alignas(16) uint4 {
  unsigned int x, y, z, w;
};

struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
};

typedef struct CUstream_st* cudaStream_t;

enum cudaError_t : int {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorLaunchFailure = 719,
};

namespace lk_emu {

// ---- the running kernel, block and thread (set by the scheduler) ----------------------------------------------
struct ThreadCtx {
  uint3 tid;
};
extern thread_local ThreadCtx* g_thread;
extern thread_local uint3 g_block_idx;
extern thread_local dim3 g_block_dim;
extern thread_local dim3 g_grid_dim;

void syncthreads();
void syncwarp(unsigned mask);
// Lane exchange: every lane of `mask` deposits `bits`, then reads the bits deposited by lane `src` (its own bits
// when src is outside the warp or not in mask).
uint64_t warp_exchange(unsigned mask, uint64_t bits, int src_lane);
int lane_id();
void* dynamic_shared();

// ---- global memory accesses (LK_LOAD / LK_STORE of csrc/cuda/launch.cuh) ----------------------------------------
// While tracing is on, every access is recorded with the running launch, block, thread, source line and its
// per-thread sequence number at that line: lanes of one warp with the same line and sequence number issue one
// warp-level request on a GPU.
extern bool g_tracing;
void record_access(const void* address, unsigned bytes, bool store, const char* file, int line);
template <class T> inline T traced_load(const T* p, const char* file, int line) {
  if (g_tracing) record_access(p, sizeof(T), false, file, line);
  return *p;
}
template <class T, class V> inline void traced_store(T* p, const V& v, const char* file, int line) {
  if (g_tracing) record_access(p, sizeof(T), true, file, line);
  *p = v;
}

// ---- launch ----------------------------------------------------------------------------------------------------
cudaError_t launch(const char* kernel, dim3 grid, dim3 block, size_t dynamic_smem, const std::function<void()>& body);
cudaError_t take_last_error();
cudaError_t peek_last_error();

// The kernel's name with its template arguments, e.g. "lk::cuda::stats_partial_planar<float, true>".
std::string name_from_signature(const char* pretty_function);
template <auto Kernel> const char* kernel_name() {
  static const std::string name = name_from_signature(__PRETTY_FUNCTION__);
  return name.c_str();
}

// ---- half types: round-to-nearest-even conversions ------------------------------------------------------------
inline uint32_t f32_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float f32_from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
uint16_t f32_to_f16_rn(float f);
float f16_to_f32(uint16_t h);
inline uint16_t f32_to_bf16_rn(float f) {
  const uint32_t u = f32_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);  // quiet NaN
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
inline float bf16_to_f32(uint16_t h) { return f32_from_bits(uint32_t(h) << 16); }

}  // namespace lk_emu

// threadIdx etc. as in CUDA: read-only values of the running fiber / block.
#define threadIdx (static_cast<const uint3&>(::lk_emu::g_thread->tid))
#define blockIdx (static_cast<const uint3&>(::lk_emu::g_block_idx))
#define blockDim (static_cast<const dim3&>(::lk_emu::g_block_dim))
#define gridDim (static_cast<const dim3&>(::lk_emu::g_grid_dim))

struct __half {
  uint16_t bits;
};
struct __nv_bfloat16 {
  uint16_t bits;
};
inline float __half2float(__half h) { return lk_emu::f16_to_f32(h.bits); }
inline __half __float2half_rn(float f) { return __half{lk_emu::f32_to_f16_rn(f)}; }
inline float __bfloat162float(__nv_bfloat16 h) { return lk_emu::bf16_to_f32(h.bits); }
inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __nv_bfloat16{lk_emu::f32_to_bf16_rn(f)}; }

inline void __syncthreads() { lk_emu::syncthreads(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) { lk_emu::syncwarp(mask); }

namespace lk_emu {
template <class T> inline T shfl(unsigned mask, T v, int src) {
  static_assert(sizeof(T) <= 8, "warp exchange of more than 8 bytes");
  uint64_t b = 0;
  std::memcpy(&b, &v, sizeof(T));
  b = warp_exchange(mask, b, src);
  T r;
  std::memcpy(&r, &b, sizeof(T));
  return r;
}
}  // namespace lk_emu

// width = 32 only (all the kernels use).
template <class T> inline T __shfl_sync(unsigned mask, T v, int src) { return lk_emu::shfl(mask, v, src & 31); }
template <class T> inline T __shfl_down_sync(unsigned mask, T v, unsigned d) {
  const int l = lk_emu::lane_id() + int(d);
  return lk_emu::shfl(mask, v, l < 32 ? l : -1);
}
template <class T> inline T __shfl_up_sync(unsigned mask, T v, unsigned d) {
  const int l = lk_emu::lane_id() - int(d);
  return lk_emu::shfl(mask, v, l >= 0 ? l : -1);
}
template <class T> inline T __shfl_xor_sync(unsigned mask, T v, int m) {
  return lk_emu::shfl(mask, v, (lk_emu::lane_id() ^ m) & 31);
}

// CUDA's overloaded min/max of the device math library.
template <class T> inline T min(T a, T b) { return b < a ? b : a; }
template <class T> inline T max(T a, T b) { return a < b ? b : a; }

inline cudaError_t cudaGetLastError() { return lk_emu::take_last_error(); }
inline cudaError_t cudaPeekAtLastError() { return lk_emu::peek_last_error(); }
inline const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
  }
  return "unknown error";
}
