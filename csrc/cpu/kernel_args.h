// Torch-free argument blocks shared by the CPU kernels (*_kernels.h) and their bindings (channel_stats.cpp,
// butterfly.cpp, conv3x3.cpp). DType and View (../tensor_view.h) are the CUDA launchers' too.
//
// A 4-D tensor (N, C, H, W) is seen as (N, C, P) with P = H*W and element strides (sn, sc, sp). Every operand of one
// call shares the same unit-stride axis: "planar" (sp == 1, NCHW-like) or "interleaved" (sc == 1, channels_last-like).
// Channel slices of a contiguous tensor keep that property, which is how butterfly writes p and q into the two halves
// of one (N, 2C, H, W) buffer.
#pragma once
#include <cstdint>

#include "../tensor_view.h"

namespace lk {

struct Geometry {
  int64_t N = 0, C = 0, P = 0;
  bool interleaved = false;
  // Planar: a work item is (row = n*C + c, chunk of `chunk` elements). Interleaved: (n, chunk of `chunk` pixels),
  // all C channels at once. The chunking depends on the shape only, never on the thread count, so every partial
  // result and every merge happens in the same order on every run.
  int64_t chunk = 0;
  int64_t nchunk = 0;
  // Write outputs with streaming (non-temporal) stores: set by the binding when the call writes more than the
  // caches hold, where the read-for-ownership of every destination line would only add memory traffic.
  bool stream = false;
  int64_t items() const { return (interleaved ? N : N * C) * nchunk; }
  int64_t chunk_len(int64_t k) const {
    int64_t rest = P - k * chunk;
    return rest < chunk ? rest : chunk;
  }
};

// Per (n, c, chunk) partial statistics, laid out [n][c][k] (planar) or [n][k][c] (interleaved): `mean` and `m2`
// (sum of squared deviations) of the chunk, in double.
struct Partials {
  void* mean = nullptr;
  void* m2 = nullptr;
  int64_t index(const Geometry& g, int64_t n, int64_t c, int64_t k) const {
    return g.interleaved ? (n * g.nchunk + k) * g.C + c : (n * g.C + c) * g.nchunk + k;
  }
};

struct StatsArgs {
  DType dtype;
  Geometry g;
  View x;
  Partials part;
};

// p = a1*x1 + a2*x2 and q = b1*x1 + b2*x2; coefficients are (N, C) arrays in the accumulation type (ones where the
// user passed none). With q_stats, the partial statistics of q (as stored, after rounding to the output dtype).
struct ButterflyArgs {
  DType dtype;
  Geometry g;
  View x1, x2, p, q;
  const void* a1;
  const void* a2;
  const void* b1;
  const void* b2;
  bool q_stats;
  Partials part;
};

// dq' = dq + gm_q/P + bs_q*(q - mean_q), with q recomputed from x1, x2 and bs_q = gs_q / ((P-1)*std_q) folded by the
// binding (zero when q had no statistics), then dx1 = a1*dp + b1*dq', dx2 = a2*dp + b2*dq' and the per-(n, c, chunk)
// partial sums of dp*x1, dp*x2, dq'*x1, dq'*x2 (the coefficient gradients), in `sums` laid out like Partials times 4.
struct ButterflyBackwardArgs {
  DType dtype;
  Geometry g;
  View dp, dq, x1, x2, dx1, dx2;
  const void* a1;
  const void* a2;
  const void* b1;
  const void* b2;
  const void* gm_q;   // (N, C): grad of mean_q divided by P
  const void* bs_q;   // (N, C)
  const void* mean_q; // (N, C)
  void* sums;         // double[4 * N * C * nchunk], see sums_index
  int64_t sums_index(int64_t n, int64_t c, int64_t k, int which) const {
    int64_t per = g.N * g.C * g.nchunk;
    int64_t base = g.interleaved ? (n * g.nchunk + k) * g.C + c : (n * g.C + c) * g.nchunk + k;
    return which * per + base;
  }
};

// dx = a + b*(x - mean) per (n, c): a = gm/P, b = gs/((P-1)*std), folded by the binding.
struct StatsBackwardArgs {
  DType dtype;
  Geometry g;
  View x, dx;
  const void* a;
  const void* b;
  const void* mean;
};


// conv3x3 (stride 1, padding 1) by Winograd F(4x4, 3x3): the output in 4x4 tiles, each computed from the 6x6 input
// tile around it: v = B^T d B per tile and input channel, m[k] = v[k] u[k] per transform point k (u = G w G^T,
// transformed by the binding), y = A^T m A + bias per tile and output channel, then LeakyReLU when has_slope.
// x and y share a layout: interleaved (sc == 1) or planar (sw == 1).
struct Conv3x3Args {
  DType dtype;
  int64_t N, H, W, TH, TW, Cin, Cout;
  View x, y;
  int64_t x_sh, x_sw, y_sh, y_sw;  // row and column strides
  bool interleaved;
  const void* u;     // [36][Cin][Cout], accumulation type (float; double for F64)
  const void* bias;  // Cout values of the accumulation type, or null
  bool has_slope;
  double slope;
  int64_t group;     // tiles per work item; see conv3x3_scratch_elements
};

// The scratch of one work item: 36 planes of group x C transformed values, for C = Cin (input transform) and
// C = Cout (products), each plane padded by 16 elements. Unpadded, a plane of 24 tiles x 64 channels is 6 KiB, so
// the 36 values of one tile and channel fall into two of the 64 sets of a 48 KiB 12-way L1 and evict each other:
// a conv with Cout = 64 took 9.2 ms against 6.6 ms for Cout = 48 with the same multiply-adds (1x64x180x320 fp32,
// AVX-512, 2-core Xeon, 2026-11-29).
inline int64_t conv3x3_plane_stride(int64_t group, int64_t C) { return group * C + 16; }

// conv3x3 (stride 1, padding 1) of bf16 x and weights as a direct convolution (kernels_amx.cpp): a work item is
// a band of `rows` output rows of one image; the band's rows + 2 input rows are copied, zero-padded, into the
// scratch as [rows + 2][w_p + 2][cin_p] bf16 (cin_p: Cin rounded up to 32, w_p: W rounded up to 32), then each
// 32-pixel x 32-channel output block (16 channels for an odd last 16) is the sum over the 9 taps and cin_p / 32
// channel blocks of AMX tile products, float32 sums, then + bias, LeakyReLU when has_slope, rounded to bf16. x and
// y share a layout.
struct Conv3x3DirectArgs {
  int64_t N, H, W, Cin, Cout;
  View x, y;                       // bf16
  int64_t x_sh, x_sw, y_sh, y_sw;  // row and column strides
  const uint16_t* w;  // bf16 [9][cin_p / 32][cout_p / 16][16][16][2]: w[co][ci][tap], ci = 32 kb + 2 k + e
  const float* bias;  // cout_p values (zeros past Cout, and for no bias)
  bool has_slope;
  double slope;
  int64_t rows, cin_p, cout_p, w_p;  // cout_p: Cout rounded up to 16
};
inline int64_t conv3x3_direct_band_elements(const Conv3x3DirectArgs& a) { return (a.rows + 2) * (a.w_p + 2) * a.cin_p; }
// Scratch bytes of one call of the kernel: the band, then 4 tiles of 16 x 16 float32 sums.
inline int64_t conv3x3_direct_scratch_bytes(const Conv3x3DirectArgs& a) {
  return conv3x3_direct_band_elements(a) * 2 + 4 * 256 * 4;
}

// The weight and bias gradients of conv3x3 for bf16 x and dy on AMX tiles (kernels_amx.cpp): dw[co][ci][tap] =
// sum over pixels of dy[co][p] x[ci][p + tap]. A work item is a chunk of `chunk` consecutive bands (a band: `rows`
// output rows of one image; both fixed by the shape, never by the thread count). Per band, x's rows + 2 rows are
// copied, zero-padded, into planes [cin_p][plane] of the padded rows laid end to end (row pitch W + 2), so a tap is an
// offset along the plane, and dy's rows, with the same pitch and zeros in the 2 pad columns, as bf16 pairs of
// pixels [k_p / 2][cout_p][2]; the chunk's sums go to its partials in float32, [9][cin_p / 16][cout_p / 16][16][16]
// tiles (ci rows, co columns), and the sums of dy per output channel to its bias partials in double.
struct Conv3x3DirectWeightGradArgs {
  int64_t N, H, W, Cin, Cout;
  View x, dy;                        // bf16, one layout
  int64_t x_sh, x_sw, dy_sh, dy_sw;  // row and column strides
  int64_t rows, chunk, cin_p, cout_p;  // cin_p, cout_p: Cin, Cout rounded up to 16
  float* partials;        // [nchunk][9 * cin_p * cout_p]
  double* bias_partials;  // [nchunk][Cout]
  int64_t bands() const { return N * ((H + rows - 1) / rows); }
  int64_t plane() const { return ((rows + 2) * (W + 2) + 64 + 31) / 32 * 32; }
  int64_t k_p() const { return (rows * (W + 2) + 31) / 32 * 32; }
};
inline int64_t conv3x3_direct_weight_grad_scratch_bytes(const Conv3x3DirectWeightGradArgs& a) {
  return (a.cin_p * a.plane() + a.k_p() * a.cout_p) * 2 + a.cout_p * 4;
}

// The weight gradient of conv3x3 through the same Winograd algorithm: the forward is y_t = A^T (U . V_t) A per tile
// t with U = G w G^T and V_t = B^T x_t B, so dL/dw = G^T (sum_t (A dy_t A^T) . V_t) G. The kernel forms, per chunk
// of `chunk` consecutive tiles (fixed by the shape, never by the thread count), the partial sums
// P[k][ci][co] = sum_t V_t[k][ci] (A dy_t A^T)[k][co] over the chunk's tiles in order, `group` tiles at a time;
// the binding adds the chunks in order (in double) and applies G^T . G. The bias gradient comes from the same reads
// of dy: per chunk, the sum of dy over its tiles' pixels (each group summed in the accumulation type, the groups
// added in double). `fwd` describes x as in the forward (y, u, bias and the slope unused); dy has y's shape and x's
// layout; dy past the image edge (partial tiles) is zero.
struct Conv3x3WeightGradArgs {
  Conv3x3Args fwd;
  View dy;
  int64_t dy_sh, dy_sw;
  int64_t chunk;
  void* partials;        // [nchunk][36][Cin][Cout], accumulation type
  double* bias_partials;  // [nchunk][Cout]
};
// Scratch elements of one work item of the forward (and of the weight gradient, which also keeps Cout sums).
inline int64_t conv3x3_scratch_elements(int64_t group, int64_t Cin, int64_t Cout) {
  return 36 * (conv3x3_plane_stride(group, Cin) + conv3x3_plane_stride(group, Cout)) + Cout;
}

}  // namespace lk
