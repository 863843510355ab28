// The shared part of the CPU bindings (binding.h) and the instruction-set query of the Python module.
#include "binding.h"

#include <cstdlib>
#include <string>

namespace lk {
namespace cpu {

namespace {

KernelSet baseline_set() {
  return {"baseline",         isa_baseline::stats_partials, isa_baseline::butterfly_forward,
          isa_baseline::butterfly_backward, isa_baseline::stats_backward, isa_baseline::conv3x3_tiles};
}

}  // namespace

// The instruction set is chosen once: LATTICE_KERNELS_CPU_ISA=baseline|avx2 forces one (tests run both), otherwise
// AVX2 when the CPU has AVX2, FMA and F16C.
const KernelSet& kernels() {
  static const KernelSet chosen = [] {
    const char* env = std::getenv("LATTICE_KERNELS_CPU_ISA");
    const std::string want = env ? env : "";
    if (want == "baseline") return baseline_set();
#if defined(LK_HAVE_AVX2)
    __builtin_cpu_init();
    const bool has_avx2 =
        __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
    const KernelSet avx2{"avx2",
                         isa_avx2::stats_partials,
                         isa_avx2::butterfly_forward,
                         isa_avx2::butterfly_backward,
                         isa_avx2::stats_backward,
                         isa_avx2::conv3x3_tiles};
    TORCH_CHECK(want.empty() || want == "avx2", "LATTICE_KERNELS_CPU_ISA must be 'baseline' or 'avx2', got '", want,
                "'");
    TORCH_CHECK(want != "avx2" || has_avx2, "LATTICE_KERNELS_CPU_ISA=avx2 but this CPU lacks AVX2/FMA/F16C");
    if (has_avx2) return avx2;
#else
    TORCH_CHECK(want.empty(), "LATTICE_KERNELS_CPU_ISA=", want, " but this build has only the baseline kernels");
#endif
    return baseline_set();
  }();
  return chosen;
}

namespace {

// Outputs of a call that writes at least this many bytes are written with streaming stores (AVX2 build). Measured
// on the 2-core EPYC (32 MiB L3), median of 30 calls: butterfly at 1x64x180x320 fp32 (29 MiB written) took 2.02 ms
// with plain stores and 1.22 ms with streaming ones; LatticeNet x4 at LR 320x180 under torch.compile, 465 vs
// 458 ms. LATTICE_KERNELS_STREAM_BYTES overrides it (0: always, -1: never).
int64_t stream_threshold() {
  static const int64_t bytes = [] {
    const char* env = std::getenv("LATTICE_KERNELS_STREAM_BYTES");
    return env && *env ? std::atoll(env) : int64_t(8) << 20;
  }();
  return bytes;
}

}  // namespace

bool stream_outputs(const at::Tensor& like, int64_t n_outputs) {
  const int64_t t = stream_threshold();
  return t >= 0 && n_outputs * like.numel() * like.element_size() >= t;
}

void check_cpu(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), "lattice_kernels: ", name, " must be a CPU tensor for the CPU kernels, got ",
              t.device());
}

// Merges the per-chunk (mean, M2) of every (n, c) into mean and std. All chunks at once (Chan's combination
// generalised to K parts): mean = sum(n_k m_k) / P, M2 = sum(M2_k + n_k (m_k - mean)^2), in double and in chunk
// order. Only non-negative terms are added, so nothing cancels when |mean| >> std. P == 1 gives std = 0/0 = NaN,
// as torch.std does.
std::pair<at::Tensor, at::Tensor> merge_stats(const Geometry& g, const at::Tensor& pm, const at::Tensor& pv,
                                              const at::Tensor& x) {
  at::Tensor mean = at::empty({g.N, g.C}, x.options().dtype(at::kDouble));
  at::Tensor stdv = at::empty({g.N, g.C}, x.options().dtype(at::kDouble));
  const double* m = pm.data_ptr<double>();
  const double* v = pv.data_ptr<double>();
  double* om = mean.data_ptr<double>();
  double* os = stdv.data_ptr<double>();
  Partials part;
  at::parallel_for(0, g.N * g.C, 256, [&](int64_t b, int64_t e) {
    for (int64_t nc = b; nc < e; ++nc) {
      const int64_t n = nc / g.C, c = nc % g.C;
      double total = 0;
      for (int64_t k = 0; k < g.nchunk; ++k) total += double(g.chunk_len(k)) * m[part.index(g, n, c, k)];
      const double mu = total / double(g.P);
      double m2 = 0;
      for (int64_t k = 0; k < g.nchunk; ++k) {
        const int64_t i = part.index(g, n, c, k);
        const double d = m[i] - mu;
        m2 += v[i] + double(g.chunk_len(k)) * d * d;
      }
      om[nc] = mu;
      os[nc] = std::sqrt(m2 / double(g.P - 1));
    }
  });
  const at::ScalarType st = stats_type(x);
  return {mean.to(st), stdv.to(st)};
}

}  // namespace cpu

const char* cpu_isa_name() { return cpu::kernels().isa; }

}  // namespace lk
