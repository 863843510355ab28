// Torch-free Winograd F(4x4, 3x3) transforms of conv3x3 (see WinogradArgs). Included after kernels_impl.h by
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

// Input transform of the channels [c, c + lanes(T)) of one tile whose top-left input pixel is (h0, w0); pixels
// outside the image are the conv's zero padding.
template <class Tr, bool IL, class T>
static inline void input_tile(const WinogradArgs& a, const typename Tr::S* xn, int64_t h0, int64_t w0, int64_t c,
                              typename Tr::A* v, int64_t p) {
  using A = typename Tr::A;
  T t[6][6];
  for (int j = 0; j < 6; ++j) {
    const int64_t w = w0 + j;
    T d[6], o[6];
    for (int i = 0; i < 6; ++i) {
      const int64_t h = h0 + i;
      d[i] = (h >= 0 && h < a.H && w >= 0 && w < a.W) ? load_lanes<Tr, IL, T>(xn + h * a.sh + w * a.sw + c * a.x.sc,
                                                                              a.x.sc)
                                                      : T{};
    }
    winograd_in_1d<T, A>(d, o);
    for (int i = 0; i < 6; ++i) t[i][j] = o[i];
  }
  for (int i = 0; i < 6; ++i) {
    T o[6];
    winograd_in_1d<T, A>(t[i], o);
    for (int j = 0; j < 6; ++j) store_acc<T, A>(v + ((6 * i + j) * a.tiles + p) * a.C + c, o[j]);
  }
}

// Output transform of the channels [c, c + lanes(T)) of one tile whose top-left output pixel is (h0, w0), with
// the bias and the activation; pixels past the image edge are not written.
template <class Tr, bool IL, class T>
static inline void output_tile(const WinogradArgs& a, typename Tr::S* yn, int64_t h0, int64_t w0, int64_t c,
                               const typename Tr::A* m, int64_t p) {
  using A = typename Tr::A;
  T u[4][6];
  for (int j = 0; j < 6; ++j) {
    T col[6], o[4];
    for (int i = 0; i < 6; ++i) col[i] = load_acc<T, A>(m + ((6 * i + j) * a.tiles + p) * a.C + c);
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
      store_lanes<Tr, IL, T>(yn + h * a.sh + (w0 + j) * a.sw + c * a.x.sc, a.x.sc, y);
    }
  }
}

template <DType D, bool IL> static void winograd_input_t(const WinogradArgs& a, int64_t begin, int64_t end) {
  using Tr = Traits<D>;
  using S = typename Tr::S;
  using A = typename Tr::A;
  const S* x = static_cast<const S*>(a.x.data);
  A* v = static_cast<A*>(a.t);
  for (int64_t r = begin; r < end; ++r) {
    const int64_t row = a.row0 + r, n = row / a.TH, ti = row % a.TH;
    for (int64_t tj = 0; tj < a.TW; ++tj) {
      const int64_t p = r * a.TW + tj;
      int64_t c = 0;
      for (; c + Tr::W <= a.C; c += Tr::W)
        input_tile<Tr, IL, typename Tr::V>(a, x + n * a.x.sn, 4 * ti - 1, 4 * tj - 1, c, v, p);
      for (; c < a.C; ++c) input_tile<Tr, IL, A>(a, x + n * a.x.sn, 4 * ti - 1, 4 * tj - 1, c, v, p);
    }
  }
}

template <DType D, bool IL> static void winograd_output_t(const WinogradArgs& a, int64_t begin, int64_t end) {
  using Tr = Traits<D>;
  using S = typename Tr::S;
  using A = typename Tr::A;
  S* y = static_cast<S*>(a.x.data);
  const A* m = static_cast<const A*>(a.t);
  for (int64_t r = begin; r < end; ++r) {
    const int64_t row = a.row0 + r, n = row / a.TH, ti = row % a.TH;
    for (int64_t tj = 0; tj < a.TW; ++tj) {
      const int64_t p = r * a.TW + tj;
      int64_t c = 0;
      for (; c + Tr::W <= a.C; c += Tr::W)
        output_tile<Tr, IL, typename Tr::V>(a, y + n * a.x.sn, 4 * ti, 4 * tj, c, m, p);
      for (; c < a.C; ++c) output_tile<Tr, IL, A>(a, y + n * a.x.sn, 4 * ti, 4 * tj, c, m, p);
    }
  }
}

#define LK_WINOGRAD_CASE(fn, D) \
  case D: return a.interleaved ? fn<D, true>(a, begin, end) : fn<D, false>(a, begin, end);
#define LK_WINOGRAD_DISPATCH(fn)         \
  switch (a.dtype) {                     \
    LK_WINOGRAD_CASE(fn, DType::F32)     \
    LK_WINOGRAD_CASE(fn, DType::F64)     \
    LK_WINOGRAD_CASE(fn, DType::F16)     \
    LK_WINOGRAD_CASE(fn, DType::BF16)    \
  }

void winograd_input(const WinogradArgs& a, int64_t begin, int64_t end) { LK_WINOGRAD_DISPATCH(winograd_input_t) }
void winograd_output(const WinogradArgs& a, int64_t begin, int64_t end) { LK_WINOGRAD_DISPATCH(winograd_output_t) }

#undef LK_WINOGRAD_DISPATCH
#undef LK_WINOGRAD_CASE

}  // namespace LK_ISA_NS
}  // namespace lk
