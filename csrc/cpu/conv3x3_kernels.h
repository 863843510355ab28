// Torch-free Winograd F(4x4, 3x3) convolution (see Conv3x3Args). Included after kernel_common.h by
// kernels_<isa>.cpp, inside the same per-ISA namespace, so it shares Traits and the vector types.
//
// Interpolation points 0, -1, 1, 1/2, -2 and infinity (Barabasz et al., "Error analysis and improving the accuracy
// of Winograd convolution", 2020). Measured in float32 against float64 on 1x64x33x41 -> 48 random inputs: max error
// 2.0-2.3e-6 of max |y|, against 5.4-6.1e-6 with the usual 0, +-1, +-2 (Lavin & Gray 2016).
//   B^T = [1 -3/2 -2 3/2 1 0; 0 1 -5/2 1/2 1 0; 0 -1 1/2 5/2 1 0; 0 -2 -1 2 1 0; 0 1/2 -1 -1/2 1 0;
//          0 1 -3/2 -2 3/2 1]
//   A^T = [1 1 1 1 1 0; 0 -1 1 1/2 -2 0; 0 1 1 1/4 4 0; 0 -1 1 1/8 -8 1]
// (G, for the weights, is applied by the binding in double.) One vector carries W channels of one pixel, so the
// transforms are the same arithmetic for every lane and need no shuffles; channels past the last full vector run
// the same code on scalars.
//
// A work item is a group of consecutive tiles (in (n, tile row, tile column) order): its 36 transformed planes
// (group x Cin), the 36 products with the transformed weights (group x Cout) and the output transform all happen
// in the calling thread's scratch, which stays in its L2 cache. The products are a register-blocked GEMM written
// here: every sum runs over Cin in order, so the result does not depend on the thread count, and no BLAS call
// (with threading of its own) sits inside the pipeline.
#include <type_traits>

namespace lk {
namespace LK_ISA_NS {

// o = B^T d for one line of 6 values.
template <class T, class A> static inline void winograd_in_1d(const T* d, T* o) {
  const T d42 = d[4] - d[2], d31 = d[3] - d[1];
  o[0] = (d[0] + d31 * A(1.5)) + (d[4] - d[2] * A(2));
  o[1] = (d[1] + d[4]) + (d[3] * A(0.5) - d[2] * A(2.5));
  o[2] = (d[4] - d[1]) + (d[2] * A(0.5) + d[3] * A(2.5));
  o[3] = d42 + d31 * A(2);
  o[4] = d42 - d31 * A(0.5);
  o[5] = (d[1] + d[5]) + ((d[4] - d[2]) * A(1.5) - d[3] * A(2));
}

// o = A^T m for one line of 6 values.
template <class T, class A> static inline void winograd_out_1d(const T* m, T* o) {
  const T s12 = m[1] + m[2], d21 = m[2] - m[1];
  o[0] = (m[0] + s12) + (m[3] + m[4]);
  o[1] = d21 + (m[3] * A(0.5) - m[4] * A(2));
  o[2] = s12 + (m[3] * A(0.25) + m[4] * A(4));
  o[3] = (d21 + m[5]) + (m[3] * A(0.125) - m[4] * A(8));
}

// o = A m for one line of 4 values (A = (A^T)^T, 6 x 4): the output transform's adjoint, for the weight gradient.
template <class T, class A> static inline void winograd_grad_1d(const T* m, T* o) {
  const T s02 = m[0] + m[2], s13 = m[1] + m[3];
  o[0] = m[0];
  o[1] = s02 - s13;
  o[2] = s02 + s13;
  o[3] = (m[0] + m[1] * A(0.5)) + (m[2] * A(0.25) + m[3] * A(0.125));
  o[4] = (m[0] - m[1] * A(2)) + (m[2] * A(4) - m[3] * A(8));
  o[5] = m[3];
}

// Lanes of channel values at one pixel: a vector load when channels are interleaved, else one load per lane.
template <class Tr, bool IL, class T> static inline T load_lanes(const typename Tr::S* p, int64_t sc) {
  if constexpr (std::is_same_v<T, typename Tr::A>) {
    return Tr::ld(*p);
  } else if constexpr (IL) {
    return Tr::vld(p);
  } else {
    T v;
    for (int l = 0; l < Tr::W; ++l) v[l] = Tr::ld(p[l * sc]);
    return v;
  }
}

template <class Tr, bool IL, class T> static inline void store_lanes(typename Tr::S* p, int64_t sc, T v) {
  if constexpr (std::is_same_v<T, typename Tr::A>) {
    *p = Tr::st(v);
  } else if constexpr (IL) {
    Tr::vst(p, v);
  } else {
    for (int l = 0; l < Tr::W; ++l) p[l * sc] = Tr::st(v[l]);
  }
}

template <class T, class A> static inline T load_acc(const A* p) {
  if constexpr (std::is_same_v<T, A>) return *p; else return load_raw<T>(p);
}
template <class T, class A> static inline void store_acc(A* p, T v) {
  if constexpr (std::is_same_v<T, A>) *p = v; else store_raw(p, v);
}

// Input transform of the channels [c, c + lanes(T)) of one tile whose top-left input pixel is (h0, w0), into
// v[k][t][c] (plane stride `ps` elements); pixels outside the image are the conv's zero padding.
template <class Tr, bool IL, class T>
static inline void input_tile(const Conv3x3Args& a, const typename Tr::S* xn, int64_t h0, int64_t w0, int64_t c,
                              typename Tr::A* v, int64_t t, int64_t ps) {
  using A = typename Tr::A;
  T tmp[6][6];
  for (int j = 0; j < 6; ++j) {
    const int64_t w = w0 + j;
    T d[6], o[6];
    for (int i = 0; i < 6; ++i) {
      const int64_t h = h0 + i;
      d[i] = (h >= 0 && h < a.H && w >= 0 && w < a.W)
                 ? load_lanes<Tr, IL, T>(xn + h * a.x_sh + w * a.x_sw + c * a.x.sc, a.x.sc)
                 : T{};
    }
    winograd_in_1d<T, A>(d, o);
    for (int i = 0; i < 6; ++i) tmp[i][j] = o[i];
  }
  for (int i = 0; i < 6; ++i) {
    T o[6];
    winograd_in_1d<T, A>(tmp[i], o);
    for (int j = 0; j < 6; ++j) store_acc<T, A>(v + (6 * i + j) * ps + t * a.Cin + c, o[j]);
  }
}

// Output transform of the channels [c, c + lanes(T)) of one tile whose top-left output pixel is (h0, w0), from
// m[k][t][c], with the bias and the activation; pixels past the image edge are not written.
template <class Tr, bool IL, class T>
static inline void output_tile(const Conv3x3Args& a, typename Tr::S* yn, int64_t h0, int64_t w0, int64_t c,
                               const typename Tr::A* m, int64_t t, int64_t ps) {
  using A = typename Tr::A;
  T u[4][6];
  for (int j = 0; j < 6; ++j) {
    T col[6], o[4];
    for (int i = 0; i < 6; ++i) col[i] = load_acc<T, A>(m + (6 * i + j) * ps + t * a.Cout + c);
    winograd_out_1d<T, A>(col, o);
    for (int i = 0; i < 4; ++i) u[i][j] = o[i];
  }
  const T bias = a.bias ? load_acc<T, A>(static_cast<const A*>(a.bias) + c) : T{};
  const A slope = static_cast<A>(a.slope);
  for (int i = 0; i < 4; ++i) {
    const int64_t h = h0 + i;
    if (h >= a.H) break;
    T o[4];
    winograd_out_1d<T, A>(u[i], o);
    for (int j = 0; j < 4 && w0 + j < a.W; ++j) {
      T y = o[j] + bias;
      if (a.has_slope) y = y > A(0) ? y : y * slope;
      store_lanes<Tr, IL, T>(yn + h * a.y_sh + (w0 + j) * a.y_sw + c * a.y.sc, a.y.sc, y);
    }
  }
}

// The products of both passes are m (rows x Cout) (+)= v u with u (K x Cout) and m row-major; v (rows x K) is
// read at v[r * vs.rs + k * vs.ks]: row-major (rs = K, ks = 1) in the forward, transposed (rs = 1, ks = rows) in the
// weight gradient, whose products sum over tiles.
struct Strides {
  int64_t rs, ks;
};

// m[r][co] (+)= sum_k v[r][k] u[k][co] for rows [0, RP) and the NV vectors of columns from co: RP x NV vector
// accumulators, NV weight vectors and a broadcast must fit the registers (16 with AVX2, 32 with AVX-512; see
// gemm_rows). ACC: add to m instead of overwriting it.
template <class A, class V, int W, int RP, int NV, bool ACC>
static inline void gemm_tile(const A* __restrict__ v, Strides vs, const A* __restrict__ u, A* __restrict__ m,
                             int64_t K, int64_t Cout, int64_t co) {
  V acc[RP][NV];
  for (int r = 0; r < RP; ++r)
    for (int j = 0; j < NV; ++j) acc[r][j] = ACC ? load_raw<V>(m + r * Cout + co + j * W) : V{};
  for (int64_t k = 0; k < K; ++k) {
    V b[NV];
    for (int j = 0; j < NV; ++j) b[j] = load_raw<V>(u + k * Cout + co + j * W);
    for (int r = 0; r < RP; ++r) {
      const V x = splat<V>(v[r * vs.rs + k * vs.ks]);
      for (int j = 0; j < NV; ++j) acc[r][j] += x * b[j];
    }
  }
  for (int r = 0; r < RP; ++r)
    for (int j = 0; j < NV; ++j) store_raw(m + r * Cout + co + j * W, acc[r][j]);
}

// All rows of the NV column vectors from co, RP rows at a time, then the remaining rows in one tile.
template <class A, class V, int W, int NV, int RP, bool ACC>
static inline void gemm_columns(const A* v, Strides vs, const A* u, A* m, int64_t rows, int64_t K, int64_t Cout,
                                int64_t co) {
  int64_t r = 0;
  for (; r + RP <= rows; r += RP) gemm_tile<A, V, W, RP, NV, ACC>(v + r * vs.rs, vs, u, m + r * Cout, K, Cout, co);
  with_count<RP - 1>(rows - r, [&](auto rp) {
    gemm_tile<A, V, W, decltype(rp)::value, NV, ACC>(v + r * vs.rs, vs, u, m + r * Cout, K, Cout, co);
  });
}

// Register blocks (rows x column vectors) of the GEMM by the number of column vectors left: with AVX2's 16 vector
// registers 4 x 3 (12 accumulators); with AVX-512's 32, 6 x 4 (24), 8 x 3 (24), 12 x 2 (24) or 12 x 1.
#if LK_VEC_BYTES == 64
constexpr int kGemmMaxVectors = 4;
template <int NV> constexpr int gemm_rows() { return NV == 4 ? 6 : NV == 3 ? 8 : 12; }
#else
constexpr int kGemmMaxVectors = 3;
template <int NV> constexpr int gemm_rows() { return 4; }
#endif

// m (rows x Cout) (+)= v (rows x K, strides vs) u (K x Cout); sums over k in order.
template <class A, class V, int W, bool ACC>
static inline void gemm(const A* v, Strides vs, const A* u, A* m, int64_t rows, int64_t K, int64_t Cout) {
  constexpr int NV = kGemmMaxVectors;
  int64_t co = 0;
  for (; co + NV * W <= Cout; co += NV * W)
    gemm_columns<A, V, W, NV, gemm_rows<NV>(), ACC>(v, vs, u, m, rows, K, Cout, co);
  with_count<NV - 1>((Cout - co) / W, [&](auto nv) {
    constexpr int n = decltype(nv)::value;
    gemm_columns<A, V, W, n, gemm_rows<n>(), ACC>(v, vs, u, m, rows, K, Cout, co);
  });
  co += (Cout - co) / W * W;
  using VH = std::conditional_t<std::is_same_v<A, float>, vf_half, vd_half>;
  if (co + W / 2 <= Cout) {  // half a vector of columns
    gemm_columns<A, VH, W / 2, 1, gemm_rows<1>(), ACC>(v, vs, u, m, rows, K, Cout, co);
    co += W / 2;
  }
  for (; co < Cout; ++co)  // columns past the last half vector
    for (int64_t r = 0; r < rows; ++r) {
      A acc = ACC ? m[r * Cout + co] : A(0);
      for (int64_t k = 0; k < K; ++k) acc += v[r * vs.rs + k * vs.ks] * u[k * Cout + co];
      m[r * Cout + co] = acc;
    }
}

// Where tile `tile` (in (n, tile row, tile column) order) lies: its sample and tile coordinates.
struct TilePos {
  int64_t n, ti, tj;
};
static inline TilePos tile_pos(const Conv3x3Args& a, int64_t tile) {
  return {tile / (a.TH * a.TW), tile / a.TW % a.TH, tile % a.TW};
}

// fn(lanes, c) over C channels: lanes a vector V for each full vector [c, c + W), then a scalar A for each channel
// past the last one (the transforms are written once for both).
template <class Tr, class F> static inline void for_channel_lanes(int64_t C, F fn) {
  int64_t c = 0;
  for (; c + Tr::W <= C; c += Tr::W) fn(typename Tr::V{}, c);
  for (; c < C; ++c) fn(typename Tr::A{}, c);
}

// The input transform of the tiles [first, first + count), every channel, into v[k][t][ci] (plane stride `ps`):
// the forward's and the weight gradient's first step.
template <class Tr, bool IL>
static inline void input_tiles(const Conv3x3Args& a, int64_t first, int64_t count, typename Tr::A* v, int64_t ps) {
  const typename Tr::S* x = static_cast<const typename Tr::S*>(a.x.data);
  for (int64_t t = 0; t < count; ++t) {
    const TilePos p = tile_pos(a, first + t);
    for_channel_lanes<Tr>(a.Cin, [&](auto lanes, int64_t c) {
      input_tile<Tr, IL, decltype(lanes)>(a, x + p.n * a.x.sn, 4 * p.ti - 1, 4 * p.tj - 1, c, v, t, ps);
    });
  }
}

template <DType D, bool IL>
static void conv3x3_tiles_t(const Conv3x3Args& a, int64_t begin, int64_t end, void* scratch) {
  using Tr = Traits<D>;
  using S = typename Tr::S;
  using A = typename Tr::A;
  using V = typename Tr::V;
  S* y = static_cast<S*>(a.y.data);
  const A* u = static_cast<const A*>(a.u);
  const int64_t total = a.N * a.TH * a.TW;
  const int64_t vps = conv3x3_plane_stride(a.group, a.Cin), mps = conv3x3_plane_stride(a.group, a.Cout);
  A* v = static_cast<A*>(scratch);
  A* m = v + 36 * vps;
  for (int64_t item = begin; item < end; ++item) {
    const int64_t first = item * a.group, count = total - first < a.group ? total - first : a.group;
    input_tiles<Tr, IL>(a, first, count, v, vps);
    for (int k = 0; k < 36; ++k)
      gemm<A, V, Tr::W, false>(v + k * vps, Strides{a.Cin, 1}, u + k * a.Cin * a.Cout, m + k * mps, count, a.Cin,
                               a.Cout);
    for (int64_t t = 0; t < count; ++t) {
      const TilePos p = tile_pos(a, first + t);
      for_channel_lanes<Tr>(a.Cout, [&](auto lanes, int64_t c) {
        output_tile<Tr, IL, decltype(lanes)>(a, y + p.n * a.y.sn, 4 * p.ti, 4 * p.tj, c, m, t, mps);
      });
    }
  }
}

// (A dy A^T) of the channels [c, c + lanes(T)) of one output tile whose top-left pixel is (h0, w0), into
// g[k][t][c] (plane stride `ps`), and the tile's 16 values of dy (column by column) added to sum[c]; pixels past
// the image edge are zero.
template <class Tr, bool IL, class T>
static inline void grad_tile(const Conv3x3WeightGradArgs& a, const typename Tr::S* dyn, int64_t h0, int64_t w0,
                             int64_t c, typename Tr::A* g, int64_t t, int64_t ps, typename Tr::A* sum) {
  using A = typename Tr::A;
  const Conv3x3Args& f = a.fwd;
  T tmp[6][4];
  T s = load_acc<T, A>(sum + c);
  for (int j = 0; j < 4; ++j) {
    const int64_t w = w0 + j;
    T d[4], o[6];
    for (int i = 0; i < 4; ++i) {
      const int64_t h = h0 + i;
      d[i] = (h < f.H && w < f.W) ? load_lanes<Tr, IL, T>(dyn + h * a.dy_sh + w * a.dy_sw + c * a.dy.sc, a.dy.sc)
                                  : T{};
    }
    s += (d[0] + d[1]) + (d[2] + d[3]);
    winograd_grad_1d<T, A>(d, o);
    for (int i = 0; i < 6; ++i) tmp[i][j] = o[i];
  }
  store_acc<T, A>(sum + c, s);
  for (int i = 0; i < 6; ++i) {
    T o[6];
    winograd_grad_1d<T, A>(tmp[i], o);
    for (int j = 0; j < 6; ++j) store_acc<T, A>(g + (6 * i + j) * ps + t * f.Cout + c, o[j]);
  }
}

// Chunks [begin, end) of the weight gradient (see Conv3x3WeightGradArgs): per group of tiles, the input transform
// of x into v[k][t][ci] and A dy A^T into g[k][t][co], then P[k] (Cin x Cout) (+)= v[k]^T g[k]; the group's sum of
// dy (gsum, in the scratch after g) is added to the chunk's bias partial in double.
template <DType D, bool IL>
static void conv3x3_weight_grad_t(const Conv3x3WeightGradArgs& a, int64_t begin, int64_t end, void* scratch) {
  using Tr = Traits<D>;
  using S = typename Tr::S;
  using A = typename Tr::A;
  using V = typename Tr::V;
  const Conv3x3Args& f = a.fwd;
  const S* dy = static_cast<const S*>(a.dy.data);
  const int64_t total = f.N * f.TH * f.TW;
  const int64_t vps = conv3x3_plane_stride(f.group, f.Cin), gps = conv3x3_plane_stride(f.group, f.Cout);
  A* v = static_cast<A*>(scratch);
  A* g = v + 36 * vps;
  A* gsum = g + 36 * gps;
  for (int64_t chunk = begin; chunk < end; ++chunk) {
    A* part = static_cast<A*>(a.partials) + chunk * 36 * f.Cin * f.Cout;
    double* bpart = a.bias_partials + chunk * f.Cout;
    for (int64_t co = 0; co < f.Cout; ++co) bpart[co] = 0.0;
    const int64_t last = (chunk + 1) * a.chunk < total ? (chunk + 1) * a.chunk : total;
    for (int64_t first = chunk * a.chunk; first < last; first += f.group) {
      const int64_t count = last - first < f.group ? last - first : f.group;
      for (int64_t co = 0; co < f.Cout; ++co) gsum[co] = A(0);
      input_tiles<Tr, IL>(f, first, count, v, vps);
      for (int64_t t = 0; t < count; ++t) {
        const TilePos p = tile_pos(f, first + t);
        for_channel_lanes<Tr>(f.Cout, [&](auto lanes, int64_t c) {
          grad_tile<Tr, IL, decltype(lanes)>(a, dy + p.n * a.dy.sn, 4 * p.ti, 4 * p.tj, c, g, t, gps, gsum);
        });
      }
      for (int64_t co = 0; co < f.Cout; ++co) bpart[co] += double(gsum[co]);
      for (int k = 0; k < 36; ++k) {
        A* pk = part + k * f.Cin * f.Cout;
        const Strides vt{1, f.Cin};  // v[k] transposed: rows ci, sum over the tiles t
        if (first == chunk * a.chunk)
          gemm<A, V, Tr::W, false>(v + k * vps, vt, g + k * gps, pk, f.Cin, count, f.Cout);
        else
          gemm<A, V, Tr::W, true>(v + k * vps, vt, g + k * gps, pk, f.Cin, count, f.Cout);
      }
    }
  }
}

#define LK_CONV3X3_WGRAD_CASE(D) \
  case D: return a.fwd.interleaved ? conv3x3_weight_grad_t<D, true>(a, begin, end, scratch) \
                                   : conv3x3_weight_grad_t<D, false>(a, begin, end, scratch);

void conv3x3_weight_grad_chunks(const Conv3x3WeightGradArgs& a, int64_t begin, int64_t end, void* scratch) {
  switch (a.fwd.dtype) {
    LK_CONV3X3_WGRAD_CASE(DType::F32)
    LK_CONV3X3_WGRAD_CASE(DType::F64)
    LK_CONV3X3_WGRAD_CASE(DType::F16)
    LK_CONV3X3_WGRAD_CASE(DType::BF16)
  }
}

#undef LK_CONV3X3_WGRAD_CASE

#define LK_CONV3X3_CASE(D) \
  case D: return a.interleaved ? conv3x3_tiles_t<D, true>(a, begin, end, scratch) \
                               : conv3x3_tiles_t<D, false>(a, begin, end, scratch);

void conv3x3_tiles(const Conv3x3Args& a, int64_t begin, int64_t end, void* scratch) {
  switch (a.dtype) {
    LK_CONV3X3_CASE(DType::F32)
    LK_CONV3X3_CASE(DType::F64)
    LK_CONV3X3_CASE(DType::F16)
    LK_CONV3X3_CASE(DType::BF16)
  }
}

#undef LK_CONV3X3_CASE

}  // namespace LK_ISA_NS
}  // namespace lk
