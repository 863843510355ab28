// What the torch-free CPU kernels share: element conversions, the vector types, per-dtype traits, streaming stores and
// the statistics building blocks. Included once per instruction set by kernels_<isa>.cpp inside its own namespace
// (LK_ISA_NS), before the kernels of each op family (channel_stats_kernels.h, butterfly_kernels.h,
// conv3x3_kernels.h), so the same source is compiled for the baseline x86-64/aarch64 target and for
// AVX2+FMA+F16C, and the binding picks one at run time. Everything here is `static inline` or a template inside
// that namespace: no symbol is shared between the per-ISA objects, and nothing here allocates (a std:: template
// instantiated under another target could leak into the other objects); the interleaved layouts get a scratch of
// 4*C accumulators from the binding.
//
// Inner loops use GCC vector types of LK_VEC_BYTES bytes: 32 (8 floats or 4 doubles; two SSE registers on the
// baseline target) or, in the AVX-512 build, 64 (16 floats or 8 doubles),
// sums keep kAcc independent vector accumulators to hide the add latency, and every reduction has a fixed order:
// the result never depends on the thread count.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "kernel_args.h"

#if defined(LK_STREAM_STORES)
#include <immintrin.h>
#endif

namespace lk {
namespace LK_ISA_NS {

#ifndef LK_VEC_BYTES
#define LK_VEC_BYTES 32
#endif
typedef float vf __attribute__((vector_size(LK_VEC_BYTES)));
typedef double vd __attribute__((vector_size(LK_VEC_BYTES)));
typedef uint32_t vu __attribute__((vector_size(LK_VEC_BYTES)));
typedef int32_t vi __attribute__((vector_size(LK_VEC_BYTES)));
typedef uint16_t vh __attribute__((vector_size(LK_VEC_BYTES / 2)));
// Half-width vectors, for the channels past the last full vector of the convolution's GEMM.
typedef float vf_half __attribute__((vector_size(LK_VEC_BYTES / 2)));
typedef double vd_half __attribute__((vector_size(LK_VEC_BYTES / 2)));

constexpr int kAcc = 4;

template <class V, class P> static inline V load_raw(const P* p) {
  V v;
  std::memcpy(&v, p, sizeof(V));
  return v;
}
template <class V, class P> static inline void store_raw(P* p, V v) { std::memcpy(p, &v, sizeof(V)); }
template <class To, class From> static inline To bitcast(From f) {
  static_assert(sizeof(To) == sizeof(From), "bitcast size");
  To t;
  std::memcpy(&t, &f, sizeof(To));
  return t;
}

static inline uint32_t bits_of(float f) { return bitcast<uint32_t>(f); }
static inline float float_of(uint32_t u) { return bitcast<float>(u); }

// IEEE binary16 <-> binary32 without branches, scalar and 8-wide; round-to-nearest-even like c10::Half.
static inline float half_to_float(uint16_t h) {
  const uint32_t w = static_cast<uint32_t>(h) << 16;
  const uint32_t sign = w & 0x80000000u;
  const uint32_t two_w = w + w;
  const float normalized = float_of((two_w >> 4) + (0xE0u << 23)) * 0x1.0p-112f;
  const float denormalized = float_of((two_w >> 17) | (126u << 23)) - 0.5f;
  const uint32_t mag = two_w < (1u << 27) ? bits_of(denormalized) : bits_of(normalized);
  return float_of(sign | mag);
}
static inline vf half_to_float(vh h) {
  const vu w = __builtin_convertvector(h, vu) << 16;
  const vu sign = w & 0x80000000u;
  const vu two_w = w + w;
  const vf normalized = bitcast<vf>((two_w >> 4) + (0xE0u << 23)) * 0x1.0p-112f;
  const vf denormalized = bitcast<vf>((two_w >> 17) | (126u << 23)) - 0.5f;
  const vu mag = two_w < (1u << 27) ? bitcast<vu>(denormalized) : bitcast<vu>(normalized);
  return bitcast<vf>(sign | mag);
}
static inline uint16_t float_to_half(float f) {
  float base = (std::fabs(f) * 0x1.0p+112f) * 0x1.0p-110f;
  const uint32_t w = bits_of(f);
  const uint32_t shl1_w = w + w;
  const uint32_t sign = w & 0x80000000u;
  uint32_t bias = shl1_w & 0xFF000000u;
  bias = bias < 0x71000000u ? 0x71000000u : bias;
  base = float_of((bias >> 1) + 0x07800000u) + base;
  const uint32_t b = bits_of(base);
  const uint32_t nonsign = ((b >> 13) & 0x00007C00u) + (b & 0x00000FFFu);
  return static_cast<uint16_t>((sign >> 16) | (shl1_w > 0xFF000000u ? 0x7E00u : nonsign));
}
static inline vh float_to_half(vf f) {
  const vu w = bitcast<vu>(f);
  vf base = (bitcast<vf>(w & 0x7FFFFFFFu) * 0x1.0p+112f) * 0x1.0p-110f;
  const vu shl1_w = w + w;
  const vu sign = w & 0x80000000u;
  vu bias = shl1_w & 0xFF000000u;
  bias = bias < 0x71000000u ? vu{} + 0x71000000u : bias;
  base = bitcast<vf>((bias >> 1) + 0x07800000u) + base;
  const vu b = bitcast<vu>(base);
  const vu nonsign = ((b >> 13) & 0x00007C00u) + (b & 0x00000FFFu);
  const vu r = (sign >> 16) | (shl1_w > 0xFF000000u ? vu{} + 0x7E00u : nonsign);
  return __builtin_convertvector(r, vh);
}
static inline float bf16_to_float(uint16_t h) { return float_of(static_cast<uint32_t>(h) << 16); }
static inline vf bf16_to_float(vh h) { return bitcast<vf>(__builtin_convertvector(h, vu) << 16); }
static inline uint16_t float_to_bf16(float f) {
  const uint32_t u = bits_of(f);
  const uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
  return static_cast<uint16_t>(f != f ? 0x7FC0u : rounded);
}
static inline vh float_to_bf16(vf f) {
  const vu u = bitcast<vu>(f);
  const vu rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
  const vu r = f != f ? vu{} + 0x7FC0u : rounded;
  return __builtin_convertvector(r, vh);
}

// Storage type S, accumulation type A and its vector V (W lanes); ld/st convert S <-> A (rounding once).
template <DType D> struct Traits;
// Non-temporal ("streaming") stores of one vector, for outputs too large to stay in cache: they skip the read for
// ownership of the destination line. Only the AVX2 and AVX-512 builds have them; they need an address aligned to the
// vector size (else a plain store).
#if defined(LK_STREAM_STORES)
static inline bool aligned_to(const void* p, uintptr_t bytes) { return (reinterpret_cast<uintptr_t>(p) & (bytes - 1)) == 0; }
#if LK_VEC_BYTES == 64
static inline void stream(float* p, vf v) {
  if (aligned_to(p, 64)) _mm512_stream_ps(p, bitcast<__m512>(v)); else store_raw(p, v);
}
static inline void stream(double* p, vd v) {
  if (aligned_to(p, 64)) _mm512_stream_pd(p, bitcast<__m512d>(v)); else store_raw(p, v);
}
static inline void stream(uint16_t* p, vh v) {
  if (aligned_to(p, 32)) _mm256_stream_si256(reinterpret_cast<__m256i*>(p), bitcast<__m256i>(v)); else store_raw(p, v);
}
#else
static inline void stream(float* p, vf v) {
  if (aligned_to(p, 32)) _mm256_stream_ps(p, bitcast<__m256>(v)); else store_raw(p, v);
}
static inline void stream(double* p, vd v) {
  if (aligned_to(p, 32)) _mm256_stream_pd(p, bitcast<__m256d>(v)); else store_raw(p, v);
}
static inline void stream(uint16_t* p, vh v) {
  if (aligned_to(p, 16)) _mm_stream_si128(reinterpret_cast<__m128i*>(p), bitcast<__m128i>(v)); else store_raw(p, v);
}
#endif
static inline void stream_fence() { _mm_sfence(); }
#else
template <class P, class V> static inline void stream(P* p, V v) { store_raw(p, v); }
static inline void stream_fence() {}
#endif

template <> struct Traits<DType::F32> {
  using S = float; using A = float; using V = vf;
  static constexpr int W = LK_VEC_BYTES / 4;
  static inline A ld(S v) { return v; }
  static inline S st(A v) { return v; }
  static inline V vld(const S* p) { return load_raw<V>(p); }
  static inline void vst(S* p, V v) { store_raw(p, v); }
  static inline void vst_nt(S* p, V v) { stream(p, v); }
  static inline V vround(V v) { return v; }
};
template <> struct Traits<DType::F64> {
  using S = double; using A = double; using V = vd;
  static constexpr int W = LK_VEC_BYTES / 8;
  static inline A ld(S v) { return v; }
  static inline S st(A v) { return v; }
  static inline V vld(const S* p) { return load_raw<V>(p); }
  static inline void vst(S* p, V v) { store_raw(p, v); }
  static inline void vst_nt(S* p, V v) { stream(p, v); }
  static inline V vround(V v) { return v; }
};
template <> struct Traits<DType::F16> {
  using S = uint16_t; using A = float; using V = vf;
  static constexpr int W = LK_VEC_BYTES / 4;
  static inline A ld(S v) { return half_to_float(v); }
  static inline S st(A v) { return float_to_half(v); }
  static inline V vld(const S* p) { return half_to_float(load_raw<vh>(p)); }
  static inline void vst(S* p, V v) { store_raw(p, float_to_half(v)); }
  static inline void vst_nt(S* p, V v) { stream(p, float_to_half(v)); }
  static inline V vround(V v) { return half_to_float(float_to_half(v)); }
};
template <> struct Traits<DType::BF16> {
  using S = uint16_t; using A = float; using V = vf;
  static constexpr int W = LK_VEC_BYTES / 4;
  static inline A ld(S v) { return bf16_to_float(v); }
  static inline S st(A v) { return float_to_bf16(v); }
  static inline V vld(const S* p) { return bf16_to_float(load_raw<vh>(p)); }
  static inline void vst(S* p, V v) { store_raw(p, float_to_bf16(v)); }
  static inline void vst_nt(S* p, V v) { stream(p, float_to_bf16(v)); }
  static inline V vround(V v) { return bf16_to_float(float_to_bf16(v)); }
};

// Store of an output vector: streaming when the call's outputs are large (see Geometry::stream).
template <class Tr> static inline void put(typename Tr::S* p, typename Tr::V v, bool nt) {
  if (nt) Tr::vst_nt(p, v); else Tr::vst(p, v);
}

// Every lane a. (a - 0 is a for every a, signed zeros included, so it folds to a broadcast load; `V{} + a` cannot
// fold, and costs a scalar add and a register broadcast on the FMA ports in the convolution's GEMM.)
template <class V, class A> static inline V splat(A a) { return a - V{}; }

// Sum of the lanes of one vector, pairwise in a fixed order.
template <class A, class V, int W> static inline A hsum(V v) {
  A t[W];
  std::memcpy(t, &v, sizeof(V));
  for (int w = W / 2; w >= 1; w /= 2)
    for (int j = 0; j < w; ++j) t[j] = t[j] + t[j + w];
  return t[0];
}
template <class Tr> static inline typename Tr::A reduce(const typename Tr::V* acc) {
  typename Tr::V s = (acc[0] + acc[1]) + (acc[2] + acc[3]);
  return hsum<typename Tr::A, typename Tr::V, Tr::W>(s);
}

// Sources of the values whose statistics are taken: stored data, or q recomputed from x1 and x2 (and rounded to
// the storage type as the stored q is) so that q need not be read back after a streaming store.
template <class Tr> struct Stored {
  const typename Tr::S* __restrict__ x;
  int64_t sp;  // pixel stride (interleaved sources)
  typename Tr::V vld(int64_t i) const { return Tr::vld(x + i); }
  typename Tr::A ld(int64_t i) const { return Tr::ld(x[i]); }
  typename Tr::V vld(int64_t p, int64_t c) const { return Tr::vld(x + p * sp + c); }
  typename Tr::A ld(int64_t p, int64_t c) const { return Tr::ld(x[p * sp + c]); }
};
// Planar: q = b1*x1 + b2*x2 with scalar coefficients.
template <class Tr> struct RecomputedRow {
  const typename Tr::S* __restrict__ x1;
  const typename Tr::S* __restrict__ x2;
  typename Tr::A b1, b2;
  typename Tr::V vld(int64_t i) const {
    return Tr::vround(splat<typename Tr::V>(b1) * Tr::vld(x1 + i) + splat<typename Tr::V>(b2) * Tr::vld(x2 + i));
  }
  typename Tr::A ld(int64_t i) const { return Tr::ld(Tr::st(b1 * Tr::ld(x1[i]) + b2 * Tr::ld(x2[i]))); }
};
// Interleaved: q = b1[c]*x1 + b2[c]*x2 per channel.
template <class Tr> struct RecomputedPixels {
  const typename Tr::S* __restrict__ x1;
  const typename Tr::S* __restrict__ x2;
  int64_t sp1, sp2;
  const typename Tr::A* __restrict__ b1;
  const typename Tr::A* __restrict__ b2;
  typename Tr::V vld(int64_t p, int64_t c) const {
    using V = typename Tr::V;
    return Tr::vround(load_raw<V>(b1 + c) * Tr::vld(x1 + p * sp1 + c) + load_raw<V>(b2 + c) * Tr::vld(x2 + p * sp2 + c));
  }
  typename Tr::A ld(int64_t p, int64_t c) const {
    return Tr::ld(Tr::st(b1[c] * Tr::ld(x1[p * sp1 + c]) + b2[c] * Tr::ld(x2[p * sp2 + c])));
  }
};

template <class Tr, class Src> static inline typename Tr::A span_sum(const Src& x, int64_t L) {
  using A = typename Tr::A;
  using V = typename Tr::V;
  constexpr int W = Tr::W;
  V acc[kAcc] = {};
  int64_t i = 0;
  for (; i + kAcc * W <= L; i += kAcc * W)
    for (int j = 0; j < kAcc; ++j) acc[j] += x.vld(i + j * W);
  for (; i + W <= L; i += W) acc[0] += x.vld(i);
  A tail = 0;
  for (; i < L; ++i) tail += x.ld(i);
  return reduce<Tr>(acc) + tail;
}

// Mean and M2 of a span of L >= 1 values that sits in L1: a first pass gives a trial mean m~, a second the
// compensated sums of d = x - m~ (mean = m~ + sum(d)/L, M2 = sum(d^2) - sum(d)^2/L). Accurate when |mean| >> std,
// unlike a raw sum of squares. The results are double so that the merge of the chunks keeps the digits of the mean
// that m~ alone (rounded to float) would lose.
template <class Tr, class Src> static inline void span_stats(const Src& x, int64_t L, double& mean, double& m2) {
  using A = typename Tr::A;
  using V = typename Tr::V;
  constexpr int W = Tr::W;
  const A mt = span_sum<Tr>(x, L) / A(L);
  const V vm = splat<V>(mt);
  V s1[kAcc] = {}, s2[kAcc] = {};
  int64_t i = 0;
  for (; i + kAcc * W <= L; i += kAcc * W)
    for (int j = 0; j < kAcc; ++j) {
      const V d = x.vld(i + j * W) - vm;
      s1[j] += d;
      s2[j] += d * d;
    }
  for (; i + W <= L; i += W) {
    const V d = x.vld(i) - vm;
    s1[0] += d;
    s2[0] += d * d;
  }
  A t1 = 0, t2 = 0;
  for (; i < L; ++i) {
    const A d = x.ld(i) - mt;
    t1 += d;
    t2 += d * d;
  }
  const double S1 = double(reduce<Tr>(s1) + t1), S2 = double(reduce<Tr>(s2) + t2), inv = 1.0 / double(L);
  mean = double(mt) + S1 * inv;
  const double v = S2 - S1 * S1 * inv;
  m2 = v > 0.0 ? v : 0.0;
}

// f(std::integral_constant<int, n>) for a run-time 1 <= n <= N (nothing for n = 0): a loop remainder handled by
// the kernel instantiated for exactly that many vectors or rows.
template <int N, class F> static inline void with_count(int64_t n, F f) {
  if constexpr (N > 0) {
    if (n == N) f(std::integral_constant<int, N>{}); else with_count<N - 1>(n, f);
  }
}

// Per-channel loops of the interleaved layout: fv(c) over c = 0, W, 2W, ... then fs(c) over the scalar tail.
template <int W, class FV, class FS> static inline void over_channels(int64_t C, FV fv, FS fs) {
  int64_t c = 0;
  for (; c + W <= C; c += W) fv(c);
  for (; c < C; ++c) fs(c);
}

static inline void finish_channel(double mt, double S1, double S2, int64_t L, double& mean, double& m2) {
  const double inv = 1.0 / double(L), v = S2 - S1 * S1 * inv;
  m2 = v > 0.0 ? v : 0.0;
  mean = mt + S1 * inv;
}

// The trial means of NB vectors of interleaved channels [c0, c0 + NB*W) over L pixels, accumulated in registers.
template <class Tr, int NB, class Src>
static inline void pixels_sum(const Src& x, int64_t L, int64_t c0, typename Tr::A* __restrict__ mt) {
  using A = typename Tr::A;
  using V = typename Tr::V;
  constexpr int W = Tr::W;
  V acc[NB] = {};
  for (int64_t p = 0; p < L; ++p)
    for (int j = 0; j < NB; ++j) acc[j] += x.vld(p, c0 + j * W);
  for (int j = 0; j < NB; ++j) store_raw(mt + c0 + j * W, acc[j] / splat<V>(A(L)));
}

// The compensated deviation sums of the same channels around the trial means (the chunk is in L1 by now).
template <class Tr, int NB, class Src>
static inline void pixels_dev(const Src& x, int64_t L, int64_t c0, const typename Tr::A* __restrict__ mt,
                              double* __restrict__ mean, double* __restrict__ m2) {
  using A = typename Tr::A;
  using V = typename Tr::V;
  constexpr int W = Tr::W;
  V m[NB], s1[NB] = {}, s2[NB] = {};
  for (int j = 0; j < NB; ++j) m[j] = load_raw<V>(mt + c0 + j * W);
  for (int64_t p = 0; p < L; ++p)
    for (int j = 0; j < NB; ++j) {
      const V d = x.vld(p, c0 + j * W) - m[j];
      s1[j] += d;
      s2[j] += d * d;
    }
  for (int j = 0; j < NB; ++j) {
    A a1[W], a2[W];
    std::memcpy(a1, &s1[j], sizeof(V));
    std::memcpy(a2, &s2[j], sizeof(V));
    for (int l = 0; l < W; ++l) {
      const int64_t c = c0 + j * W + l;
      finish_channel(mt[c], a1[l], a2[l], L, mean[c], m2[c]);
    }
  }
}

// Statistics of L pixels of C interleaved channels, per channel into mean[C], m2[C]. The first pass takes up to
// 8 vectors (a whole pixel for the usual C = 64) at a time so that it walks memory in order; the second, 4 at a
// time (12 live vector registers).
template <class Tr, class Src>
static inline void pixels_stats(const Src& x, int64_t L, int64_t C, double* __restrict__ mean,
                                double* __restrict__ m2, typename Tr::A* __restrict__ mt) {
  using A = typename Tr::A;
  constexpr int W = Tr::W;
  int64_t c = 0;
  for (; c + 8 * W <= C; c += 8 * W) pixels_sum<Tr, 8>(x, L, c, mt);
  with_count<7>((C - c) / W, [&](auto nb) { pixels_sum<Tr, decltype(nb)::value>(x, L, c, mt); });
  c = 0;
  for (; c + 4 * W <= C; c += 4 * W) pixels_dev<Tr, 4>(x, L, c, mt, mean, m2);
  with_count<3>((C - c) / W, [&](auto nb) { pixels_dev<Tr, decltype(nb)::value>(x, L, c, mt, mean, m2); });
  c = C / W * W;
  for (; c < C; ++c) {
    A s = 0;
    for (int64_t p = 0; p < L; ++p) s += x.ld(p, c);
    mt[c] = s / A(L);
    A t1 = 0, t2 = 0;
    for (int64_t p = 0; p < L; ++p) {
      const A d = x.ld(p, c) - mt[c];
      t1 += d;
      t2 += d * d;
    }
    finish_channel(mt[c], t1, t2, L, mean[c], m2[c]);
  }
}

template <class S> static inline S* at(const View& v, int64_t n, int64_t c, int64_t p) {
  return static_cast<S*>(v.data) + n * v.sn + c * v.sc + p * v.sp;
}

#define LK_DISPATCH_DTYPE(dtype, fn, ...)                 \
  switch (dtype) {                                         \
    case DType::F32: fn<DType::F32>(__VA_ARGS__); break;   \
    case DType::F64: fn<DType::F64>(__VA_ARGS__); break;   \
    case DType::F16: fn<DType::F16>(__VA_ARGS__); break;   \
    case DType::BF16: fn<DType::BF16>(__VA_ARGS__); break; \
  }

}  // namespace LK_ISA_NS
}  // namespace lk
