// Torch-free CUDA launchers of the lattice_kernels ops: raw pointers, sizes, strides and a stream. Compiled by
// nvcc alone (the test suite runs `nvcc -c` on every .cu file), bound to the op schemas by ops_cuda.cpp.
//
// A 4-D tensor (N, C, H, W) is seen as (N, C, P = H*W) with element strides (sn, sc, sp): planar (sp == 1) or
// interleaved (sc == 1, channels_last). Statistics and coefficients are float (double for double inputs).
// Absent coefficients (nullptr) are the constant 1. Every reduction is split over P into a number of parts fixed
// by the shape, merged with Chan's formula in a fixed order: no float atomics, bitwise reproducible. The bits
// depend on the shape and on whether the operands allow 16-byte vectors (C or H*W a multiple of the vector width,
// 16-byte aligned pointers): the vector paths sum in another order.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "../tensor_view.h"

namespace lk {
namespace cuda {

// The operand types of the CPU kernels too (../tensor_view.h): DType, View (data, sn, sc, sp).
using ::lk::DType;
using ::lk::View;

struct Shape {
  int64_t N, C, P;
  bool interleaved;
};

// Bytes of scratch the launchers below need (a caller-provided workspace; nothing is allocated here).
size_t stats_workspace_bytes(DType dtype, const Shape& s);
size_t butterfly_workspace_bytes(DType dtype, const Shape& s);
size_t butterfly_backward_workspace_bytes(DType dtype, const Shape& s);

// mean, std: (N, C) in the statistics type.
cudaError_t channel_stats(DType dtype, const View& x, const Shape& s, void* mean, void* std, void* workspace,
                          cudaStream_t stream);

// The same reduction, its last stage also running the coefficient MLP (w1: (R, C), b1: (R), w2: (C, R), b2: (C),
// in the statistics type; m = mean branch, s = std branch): cc = 0.5 * (sigmoid(...mean...) + sigmoid(...std...)).
struct MlpWeights {
  const void* w1m; const void* b1m; const void* w2m; const void* b2m;
  const void* w1s; const void* b1s; const void* w2s; const void* b2s;
  int64_t R;
};
cudaError_t combination_coefficients(DType dtype, const View& x, const Shape& s, const MlpWeights& w, void* cc,
                                     void* mean, void* std, void* workspace, cudaStream_t stream);

// The coefficient MLP alone on given statistics: mean, std, cc (N, C) contiguous in stats_dtype (F32 or F64), one
// launch.
cudaError_t coefficients_from_stats(DType stats_dtype, const void* mean, const void* std, int64_t N, int64_t C,
                                    const MlpWeights& w, void* cc, cudaStream_t stream);

// dx = a + b * (x - mean), per (n, c) a, b, mean in the statistics type.
cudaError_t channel_stats_backward(DType dtype, const View& x, const View& dx, const Shape& s, const void* a,
                                   const void* b, const void* mean, cudaStream_t stream);

struct Coefficients {
  const void* a1; const void* a2; const void* b1; const void* b2;
};

// p = a1*x1 + a2*x2, q = b1*x1 + b2*x2; with mean_q != nullptr also the statistics of q (as stored).
cudaError_t butterfly(DType dtype, const View& x1, const View& x2, const View& p, const View& q,
                      const Shape& s, const Coefficients& c, void* mean_q, void* std_q, void* workspace,
                      cudaStream_t stream);

// dq' = dq + gm + bs*(q - mq) (when gm != nullptr; q recomputed), dx1 = a1*dp + b1*dq', dx2 = a2*dp + b2*dq', and
// sums[4][N*C] = per (n, c) sums of dp*x1, dp*x2, dq'*x1, dq'*x2 in the statistics type.
cudaError_t butterfly_backward(DType dtype, const View& dp, const View& dq, const View& x1,
                               const View& x2, const View& dx1, const View& dx2, const Shape& s,
                               const Coefficients& c, const void* gm, const void* bs, const void* mq, void* sums,
                               void* workspace, cudaStream_t stream);

}  // namespace cuda
}  // namespace lk
