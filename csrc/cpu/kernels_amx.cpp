// conv3x3 of bfloat16 tensors as a direct convolution on AMX tiles (Intel AMX-BF16): the kernel set "amx" is the
// AVX-512 one with this convolution for bf16 inputs. Products of bf16 values are exact in float32 (but TDPBF16PS
// treats denormal inputs as zero and flushes denormal results) and summed in float32 in a fixed order (tap by tap,
// 32 input channels at a time), so the result does not depend on the thread count. The standard headers are
// included before the target pragma so that nothing they define is compiled for AMX.
#include <cstdint>
#include <cstring>
#include <immintrin.h>
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include "kernel_args.h"
#include "kernels.h"

namespace lk {
namespace isa_amx {

namespace {

// CPUID.(EAX=7, ECX=0): EDX bit 22 AMX-BF16, bit 24 AMX-TILE; CPUID.(EAX=7, ECX=1): EAX bit 5 AVX512_BF16 (the
// epilogue's conversion). XCR0 bits 17 and 18: the OS saves the tile state.
bool cpu_has_amx_bf16() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(0), "c"(0));
  if (a < 7) return false;
  __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(7), "c"(0));
  if (!((d >> 22) & 1u) || !((d >> 24) & 1u)) return false;
  __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(7), "c"(1));
  if (!((a >> 5) & 1u)) return false;
  __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(1), "c"(0));
  if (!((c >> 27) & 1u)) return false;  // OSXSAVE, without which xgetbv faults
  unsigned lo = 0, hi = 0;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return ((lo >> 17) & 3u) == 3u;
}

}  // namespace

bool usable() {
  static const bool ok = [] {
    if (!cpu_has_amx_bf16()) return false;
#if defined(__linux__)
    // Linux hands out the tile data state only to processes that ask for it (ARCH_REQ_XCOMP_PERM, feature 18:
    // XTILEDATA); without it the first tile instruction raises SIGILL.
    return syscall(SYS_arch_prctl, 0x1023, 18) == 0;
#else
    return false;
#endif
  }();
  return ok;
}

}  // namespace isa_amx
}  // namespace lk

#pragma GCC push_options
#pragma GCC target("amx-tile,amx-bf16,avx512f,avx512vl,avx512bw,avx512dq,avx512bf16,avx2,fma,f16c")
// GCC 12's AVX-512 intrinsics start from _mm512_undefined_*() (`__m512i __Y = __Y;`), which -Wmaybe-uninitialized
// reports once inlined (GCC bug 105593, fixed in GCC 13).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace lk {
namespace isa_amx {

namespace {

// Tiles 0-3: float32 sums of a 32-pixel x 32-channel output block (2 x 2 tiles of 16 x 16); 4-5: the 16-pixel
// halves of the input block (16 rows of 32 bf16 channels); 6-7: the two 16-channel halves of the weights
// (16 rows of 16 channel pairs).
struct alignas(64) TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

inline void store_block(const Conv3x3DirectArgs& a, const float* c, int64_t n, int64_t h, int64_t w0, int64_t co0,
                        int nt) {
  const int64_t W = a.W, Cout = a.Cout;
  uint16_t* y = static_cast<uint16_t*>(a.y.data) + n * a.y.sn + h * a.y_sh;
  const __m512 slope = _mm512_set1_ps(static_cast<float>(a.slope));
  for (int t = 0; t < 4; ++t) {
    const int64_t wb = w0 + 16 * (t >> 1), cb = co0 + 16 * (t & 1);
    if (wb >= W || cb >= Cout || (t & 1) >= nt) continue;
    const float* ct = c + 256 * t;
    const __m512 bias = _mm512_loadu_ps(a.bias + cb);  // the binding pads bias to cout_p values
    const int64_t nw = W - wb < 16 ? W - wb : 16, nc = Cout - cb < 16 ? Cout - cb : 16;
    if (a.y.sc == 1) {
      const __mmask16 keep = static_cast<__mmask16>((1u << nc) - 1u);
      for (int64_t i = 0; i < nw; ++i) {
        __m512 v = _mm512_add_ps(_mm512_load_ps(ct + 16 * i), bias);
        if (a.has_slope) v = _mm512_mask_mul_ps(v, _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_LT_OQ), v, slope);
        _mm256_mask_storeu_epi16(y + (wb + i) * a.y_sw + cb, keep, reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(v)));
      }
    } else {
      // Planar y: the tile is [pixel][channel]; each channel's 16 pixels are one contiguous run of y.
      alignas(64) float col[16];
      const __mmask16 keep = static_cast<__mmask16>((1u << nw) - 1u);
      for (int64_t j = 0; j < nc; ++j) {
        for (int i = 0; i < 16; ++i) col[i] = ct[16 * i + j];
        __m512 v = _mm512_add_ps(_mm512_load_ps(col), _mm512_set1_ps(a.bias[cb + j]));
        if (a.has_slope) v = _mm512_mask_mul_ps(v, _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_LT_OQ), v, slope);
        _mm256_mask_storeu_epi16(y + (cb + j) * a.y.sc + wb * a.y_sw, keep,
                                 reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(v)));
      }
    }
  }
}

// Rows ih of x (zero outside the image) into the band's scratch: pixel (r, 1 + w) at (r * (w_p + 2) + 1 + w) * cin_p,
// channels past Cin and pixels past the image zero.
inline void pack_row(const Conv3x3DirectArgs& a, uint16_t* dst, int64_t n, int64_t ih) {
  const int64_t cp = a.cin_p, wide = a.w_p + 2;
  if (ih < 0 || ih >= a.H) {
    std::memset(dst, 0, static_cast<size_t>(wide * cp) * 2);
    return;
  }
  const uint16_t* x = static_cast<const uint16_t*>(a.x.data) + n * a.x.sn + ih * a.x_sh;
  std::memset(dst, 0, static_cast<size_t>(cp) * 2);
  std::memset(dst + (a.W + 1) * cp, 0, static_cast<size_t>((wide - a.W - 1) * cp) * 2);
  if (a.x.sc == 1) {
    for (int64_t w = 0; w < a.W; ++w) {
      uint16_t* d = dst + (w + 1) * cp;
      std::memcpy(d, x + w * a.x_sw, static_cast<size_t>(a.Cin) * 2);
      if (cp > a.Cin) std::memset(d + a.Cin, 0, static_cast<size_t>(cp - a.Cin) * 2);
    }
  } else {
    for (int64_t w = 0; w < a.W; ++w) std::memset(dst + (w + 1) * cp + a.Cin, 0, static_cast<size_t>(cp - a.Cin) * 2);
    for (int64_t c = 0; c < a.Cin; ++c) {
      const uint16_t* xc = x + c * a.x.sc;
      uint16_t* d = dst + cp + c;
      for (int64_t w = 0; w < a.W; ++w) d[w * cp] = xc[w * a.x_sw];
    }
  }
}

// The sums of a 32-pixel x (16 NT)-channel output block into c (tiles [pixel half][channel half], 16 x 16 each):
// the input block starts at `base` (the band's pixel of the first output, tap (0, 0)), the channels at 16 nb.
template <int NT>
inline void forward_block(const Conv3x3DirectArgs& a, const uint16_t* base, int64_t wide, int64_t nb, float* c) {
  const int64_t cp = a.cin_p, kb_n = cp / 32, nb16 = a.cout_p / 16, astride = cp * 2;
  _tile_zero(0);
  _tile_zero(2);
  if constexpr (NT == 2) {
    _tile_zero(1);
    _tile_zero(3);
  }
  for (int tap = 0; tap < 9; ++tap) {
    const uint16_t* arow = base + ((tap / 3) * wide + tap % 3) * cp;
    const uint16_t* wt = a.w + (tap * kb_n * nb16 + nb) * 512;
    for (int64_t kb = 0; kb < kb_n; ++kb) {
      _tile_loadd(4, arow + kb * 32, astride);
      _tile_loadd(5, arow + 16 * cp + kb * 32, astride);
      _tile_loadd(6, wt + kb * nb16 * 512, 64);
      _tile_dpbf16ps(0, 4, 6);
      _tile_dpbf16ps(2, 5, 6);
      if constexpr (NT == 2) {
        _tile_loadd(7, wt + kb * nb16 * 512 + 512, 64);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(3, 5, 7);
      }
    }
  }
  _tile_stored(0, c, 64);
  _tile_stored(2, c + 512, 64);
  if constexpr (NT == 2) {
    _tile_stored(1, c + 256, 64);
    _tile_stored(3, c + 768, 64);
  }
}

}  // namespace

void conv3x3_bf16_bands(const Conv3x3DirectArgs& a, int64_t begin, int64_t end, void* scratch) {
  TileConfig cfg;
  for (int t = 0; t < 8; ++t) {
    cfg.rows[t] = 16;
    cfg.colsb[t] = 64;
  }
  _tile_loadconfig(&cfg);
  const int64_t cp = a.cin_p, wide = a.w_p + 2, nb16 = a.cout_p / 16;
  uint16_t* xs = static_cast<uint16_t*>(scratch);
  float* c = reinterpret_cast<float*>(xs + conv3x3_direct_band_elements(a));
  const int64_t bands = (a.H + a.rows - 1) / a.rows;
  for (int64_t item = begin; item < end; ++item) {
    const int64_t n = item / bands, h0 = (item % bands) * a.rows;
    const int64_t rows = a.H - h0 < a.rows ? a.H - h0 : a.rows;
    for (int64_t r = 0; r < rows + 2; ++r) pack_row(a, xs + r * wide * cp, n, h0 - 1 + r);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t w0 = 0; w0 < a.W; w0 += 32)
        for (int64_t nb = 0; nb < nb16; nb += 2) {
          // 32 output channels at a time; an odd last block of 16 alone (Cout = 48 would waste 1/4 of the products
          // on zero weights in blocks of 32)
          if (nb + 1 < nb16)
            forward_block<2>(a, xs + (r * wide + w0) * cp, wide, nb, c);
          else
            forward_block<1>(a, xs + (r * wide + w0) * cp, wide, nb, c);
          store_block(a, c, n, h0 + r, w0, nb * 16, nb + 1 < nb16 ? 2 : 1);
        }
  }
  _tile_release();
}

namespace {

// x's band (input rows h0 - 1 ... h0 + rows) into planes: xp[ci][rr * (W + 2) + col] = x[ci][h0 - 1 + rr][col - 1],
// zero outside the image, past Cin and in each plane's tail.
inline void pack_planes(const Conv3x3DirectWeightGradArgs& a, uint16_t* xp, int64_t n, int64_t h0, int64_t rows) {
  const int64_t pitch = a.W + 2, plane = a.plane();
  std::memset(xp, 0, static_cast<size_t>(a.cin_p * plane) * 2);
  const uint16_t* x = static_cast<const uint16_t*>(a.x.data) + n * a.x.sn;
  for (int64_t rr = 0; rr < rows + 2; ++rr) {
    const int64_t ih = h0 - 1 + rr;
    if (ih < 0 || ih >= a.H) continue;
    const uint16_t* xr = x + ih * a.x_sh;
    uint16_t* d = xp + rr * pitch + 1;
    if (a.x.sc == 1) {
      // 16 pixels x a channel pair per 32-bit gather, split into the two planes (a scalar copy took ~30% of the
      // kernel at 16x64x48x48, 2-core Xeon, 2026-12-08); an odd last channel alone.
      const __m512i idx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                             _mm512_set1_epi32(static_cast<int>(a.x_sw * 2)));
      for (int64_t w0 = 0; w0 < a.W; w0 += 16) {
        const int64_t nw = a.W - w0 < 16 ? a.W - w0 : 16;
        const __mmask16 m = static_cast<__mmask16>((1u << nw) - 1u);
        const uint16_t* src = xr + w0 * a.x_sw;
        for (int64_t ci = 0; ci + 1 < a.Cin; ci += 2) {
          const __m512i v = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), m, idx, src + ci, 1);
          _mm256_mask_storeu_epi16(d + ci * plane + w0, m, _mm512_cvtepi32_epi16(v));
          _mm256_mask_storeu_epi16(d + (ci + 1) * plane + w0, m, _mm512_cvtepi32_epi16(_mm512_srli_epi32(v, 16)));
        }
        if (a.Cin % 2)
          for (int64_t w = 0; w < nw; ++w) d[(a.Cin - 1) * plane + w0 + w] = src[w * a.x_sw + a.Cin - 1];
      }
    } else {
      for (int64_t ci = 0; ci < a.Cin; ++ci)
        for (int64_t w = 0; w < a.W; ++w) d[ci * plane + w] = xr[ci * a.x.sc + w * a.x_sw];
    }
  }
}

// dy's band into pixel pairs: gv[q / 2][co][q % 2] = dy[co][h0 + r][c] at q = r * (W + 2) + c for c < W, zero in
// the 2 pad columns, past Cout and up to k_p; colsum[co] += the band's dy (float32 sums per band).
inline void pack_pairs(const Conv3x3DirectWeightGradArgs& a, uint16_t* gv, float* colsum, int64_t n, int64_t h0,
                       int64_t rows) {
  const int64_t pitch = a.W + 2, cp = a.cout_p;
  std::memset(gv, 0, static_cast<size_t>(a.k_p() * cp) * 2);
  const uint16_t* dy = static_cast<const uint16_t*>(a.dy.data) + n * a.dy.sn;
  uint32_t* g32 = reinterpret_cast<uint32_t*>(gv);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < a.W; ++c) {
      const int64_t q = r * pitch + c;
      const uint16_t* src = dy + (h0 + r) * a.dy_sh + c * a.dy_sw;
      uint32_t* dst = g32 + (q / 2) * cp;
      const int shift = static_cast<int>(q & 1) * 16;
      for (int64_t co0 = 0; co0 < a.Cout; co0 += 16) {
        const int64_t nc = a.Cout - co0 < 16 ? a.Cout - co0 : 16;
        const __mmask16 m = static_cast<__mmask16>((1u << nc) - 1u);
        __m512i v;
        if (a.dy.sc == 1) {
          v = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, src + co0));
        } else {
          alignas(32) uint16_t tmp[16] = {};
          for (int64_t j = 0; j < nc; ++j) tmp[j] = src[(co0 + j) * a.dy.sc];
          v = _mm512_cvtepu16_epi32(_mm256_load_si256(reinterpret_cast<const __m256i*>(tmp)));
        }
        _mm512_storeu_ps(colsum + co0, _mm512_add_ps(_mm512_loadu_ps(colsum + co0),
                                                     _mm512_castsi512_ps(_mm512_slli_epi32(v, 16))));
        const __m512i sh = shift ? _mm512_slli_epi32(v, 16) : v;
        _mm512_storeu_si512(dst + co0, _mm512_or_si512(_mm512_loadu_si512(dst + co0), sh));
      }
    }
}

// Adds pixels [kb0, kb1) of a block of (16 MT) ci x (16 NT) co to its float32 sums at t00 (tiles [ci half][co
// half], 16 x 16 each, rows of co): a0 the first ci's plane at the tap's offset, b0 the pixel pairs at the first co.
template <int MT, int NT>
inline void weight_grad_block(float* t00, int64_t cob_n, const uint16_t* a0, int64_t plane, const uint16_t* b0,
                              int64_t cout_p, int64_t kb0, int64_t kb1) {
  float* t10 = t00 + cob_n * 256;
  _tile_loadd(0, t00, 64);
  if constexpr (NT == 2) _tile_loadd(1, t00 + 256, 64);
  if constexpr (MT == 2) _tile_loadd(2, t10, 64);
  if constexpr (MT == 2 && NT == 2) _tile_loadd(3, t10 + 256, 64);
  for (int64_t k0 = kb0; k0 < kb1; k0 += 32) {
    _tile_loadd(4, a0 + k0, plane * 2);
    _tile_loadd(6, b0 + k0 * cout_p, cout_p * 4);
    _tile_dpbf16ps(0, 4, 6);
    if constexpr (NT == 2) {
      _tile_loadd(7, b0 + k0 * cout_p + 32, cout_p * 4);
      _tile_dpbf16ps(1, 4, 7);
    }
    if constexpr (MT == 2) {
      _tile_loadd(5, a0 + 16 * plane + k0, plane * 2);
      _tile_dpbf16ps(2, 5, 6);
    }
    if constexpr (MT == 2 && NT == 2) _tile_dpbf16ps(3, 5, 7);
  }
  _tile_stored(0, t00, 64);
  if constexpr (NT == 2) _tile_stored(1, t00 + 256, 64);
  if constexpr (MT == 2) _tile_stored(2, t10, 64);
  if constexpr (MT == 2 && NT == 2) _tile_stored(3, t10 + 256, 64);
}

}  // namespace

void conv3x3_bf16_weight_grad_chunks(const Conv3x3DirectWeightGradArgs& a, int64_t begin, int64_t end,
                                     void* scratch) {
  TileConfig cfg;
  for (int t = 0; t < 8; ++t) {
    cfg.rows[t] = 16;
    cfg.colsb[t] = 64;
  }
  _tile_loadconfig(&cfg);
  const int64_t pitch = a.W + 2, plane = a.plane(), kp = a.k_p(), cib_n = a.cin_p / 16, cob_n = a.cout_p / 16;
  const int64_t part_size = 9 * a.cin_p * a.cout_p, per_image = (a.H + a.rows - 1) / a.rows, bands = a.bands();
  uint16_t* xp = static_cast<uint16_t*>(scratch);
  uint16_t* gv = xp + a.cin_p * plane;
  float* colsum = reinterpret_cast<float*>(gv + kp * a.cout_p);
  for (int64_t item = begin; item < end; ++item) {
    float* part = a.partials + item * part_size;
    double* bpart = a.bias_partials + item * a.Cout;
    std::memset(part, 0, static_cast<size_t>(part_size) * 4);
    for (int64_t co = 0; co < a.Cout; ++co) bpart[co] = 0;
    for (int64_t band = item * a.chunk; band < (item + 1) * a.chunk && band < bands; ++band) {
      const int64_t n = band / per_image, h0 = (band % per_image) * a.rows;
      const int64_t rows = a.H - h0 < a.rows ? a.H - h0 : a.rows;
      pack_planes(a, xp, n, h0, rows);
      std::memset(colsum, 0, static_cast<size_t>(a.cout_p) * 4);
      pack_pairs(a, gv, colsum, n, h0, rows);
      for (int64_t co = 0; co < a.Cout; ++co) bpart[co] += colsum[co];
      // 256 pixels at a time, all taps of a block of 32 ci x 32 co: the block's 32 planes and dy pairs for them
      // (~16 KiB each) stay in L1 across the 9 taps. Looping over the taps outside, every tile came from L2, which
      // bound the kernel (3.0 ms at 16x64x48x48 -> 48 channels, 2-core Xeon, 2026-12-08).
      for (int64_t kb0 = 0; kb0 < kp; kb0 += 256) {
        const int64_t kb1 = kb0 + 256 < kp ? kb0 + 256 : kp;
        for (int64_t cib = 0; cib < cib_n; cib += 2)
          for (int64_t cob = 0; cob < cob_n; cob += 2)
            for (int tap = 0; tap < 9; ++tap) {
              // blocks of 32 ci x 32 co; an odd last block of 16 of either alone
              float* t00 = part + ((tap * cib_n + cib) * cob_n + cob) * 256;
              const uint16_t* a0 = xp + cib * 16 * plane + (tap / 3) * pitch + tap % 3;
              const uint16_t* b0 = gv + cob * 32;
              const bool m2 = cib + 1 < cib_n, n2 = cob + 1 < cob_n;
              if (m2 && n2)
                weight_grad_block<2, 2>(t00, cob_n, a0, plane, b0, a.cout_p, kb0, kb1);
              else if (m2)
                weight_grad_block<2, 1>(t00, cob_n, a0, plane, b0, a.cout_p, kb0, kb1);
              else if (n2)
                weight_grad_block<1, 2>(t00, cob_n, a0, plane, b0, a.cout_p, kb0, kb1);
              else
                weight_grad_block<1, 1>(t00, cob_n, a0, plane, b0, a.cout_p, kb0, kb1);
            }
      }
    }
  }
  _tile_release();
}

}  // namespace isa_amx
}  // namespace lk

#pragma GCC diagnostic pop
#pragma GCC pop_options
