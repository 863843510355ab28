// Planted defects that prove compute-sanitizer works on the machine before the library is checked with it
// (tools/gpu_check.sh, stage sanitize): `oob` writes one element past its buffer (memcheck must report it),
// `race` reads a shared-memory word that another warp writes, with no barrier between (racecheck must report it).
//     nvcc -arch=sm_90 -o planted tools/sanitizer_planted.cu && compute-sanitizer --tool memcheck ./planted oob
#include <cstdio>
#include <cstring>
#include <cuda_runtime.h>

__global__ void write_one_past(float* out, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) out[i + 1] = 1.0f;  // the defect: out[n] is written by the last thread
}

__global__ void read_without_barrier(float* out) {
  __shared__ float word[64];
  word[threadIdx.x] = static_cast<float>(threadIdx.x);
  // the defect: no __syncthreads() here, so thread t reads a word written by a thread of another warp
  out[threadIdx.x] = word[(threadIdx.x + 32) % 64];
}

int main(int argc, char** argv) {
  if (argc != 2 || (std::strcmp(argv[1], "oob") != 0 && std::strcmp(argv[1], "race") != 0)) {
    std::fprintf(stderr, "usage: %s oob|race\n", argv[0]);
    return 2;
  }
  const int n = 256;
  float* buf = nullptr;
  if (cudaMalloc(&buf, n * sizeof(float)) != cudaSuccess) {
    std::fprintf(stderr, "cudaMalloc failed\n");
    return 1;
  }
  if (std::strcmp(argv[1], "oob") == 0) {
    write_one_past<<<1, n>>>(buf, n);
  } else {
    read_without_barrier<<<1, 64>>>(buf);
  }
  cudaError_t err = cudaDeviceSynchronize();
  std::printf("%s: %s\n", argv[1], cudaGetErrorString(err));
  cudaFree(buf);
  return 0;
}
