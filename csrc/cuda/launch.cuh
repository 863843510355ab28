// Kernel launch, dynamic shared memory and global memory access, written once for both compilers: nvcc (the GPU
// build: a plain <<<grid, block, smem, stream>>> launch, plain loads and stores) and the host compiler of the CPU
// execution harness (csrc/cuda_emu), which runs the same kernel with the launch checks of a GPU and can record
// every global access with its address (tools/gpu_efficiency: sectors per warp request). Errors are read with
// cudaGetLastError() as usual.
//
// Every global load and store of a kernel goes through LK_LOAD(pointer) / LK_STORE(pointer, value); shared memory
// and registers are accessed directly.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>

namespace lk {
namespace cuda {

#if defined(__CUDACC__)

#define LK_LOAD(p) (*(p))
#define LK_STORE(p, v) ::lk::cuda::global_store((p), (v))

template <class T, class V> __device__ __forceinline__ void global_store(T* p, const V& v) { *p = v; }
// One 16-byte store. A plain uint4 store of a vector assembled element by element leaves nvcc's PTX with four
// 4-byte stores (butterfly_backward_planar, bf16 butterfly_planar: CUDA 13.0, sm_90; tools/gpu_efficiency saw it).
// No "memory" clobber: no kernel reads back what it stores through here (outputs never alias inputs, the
// bindings refuse it), and the clobber kept the next iteration's loads behind the store.
__device__ __forceinline__ void global_store(uint4* p, const uint4& v) {
  asm volatile("st.global.v4.b32 [%0], {%1, %2, %3, %4};" ::"l"(p), "r"(v.x), "r"(v.y), "r"(v.z), "r"(v.w));
}

template <auto Kernel, class... Args>
inline void launch(dim3 grid, dim3 block, size_t dynamic_smem, cudaStream_t stream, Args... args) {
  Kernel<<<grid, block, dynamic_smem, stream>>>(args...);
}

// The block's dynamic shared memory (the launch's dynamic_smem bytes) as T*.
template <class T> __device__ __forceinline__ T* dynamic_shared() {
  extern __shared__ unsigned char lk_dynamic_smem[];
  return reinterpret_cast<T*>(lk_dynamic_smem);
}

#else

#define LK_LOAD(p) ::lk_emu::traced_load((p), __FILE__, __LINE__)
#define LK_STORE(p, v) ::lk_emu::traced_store((p), (v), __FILE__, __LINE__)

template <auto Kernel, class... Args>
inline void launch(dim3 grid, dim3 block, size_t dynamic_smem, cudaStream_t, Args... args) {
  lk_emu::launch(lk_emu::kernel_name<Kernel>(), grid, block, dynamic_smem, [&] { Kernel(args...); });
}

template <class T> inline T* dynamic_shared() { return reinterpret_cast<T*>(lk_emu::dynamic_shared()); }

#endif

}  // namespace cuda
}  // namespace lk
