// The shared part of the CPU bindings (binding.h) and the instruction-set query of the Python module.
#include "binding.h"

#include <cstdlib>
#include <string>
#include <vector>

namespace lk {
namespace cpu {

namespace {

#define LK_KERNEL_SET(name, ns) \
  KernelSet { name, ns::stats_partials, ns::butterfly_forward, ns::butterfly_backward, ns::stats_backward, \
              ns::conv3x3_tiles, ns::conv3x3_weight_grad_chunks }

struct IsaChoice {
  const char* name;
  bool supported;
  KernelSet set;
};

// The kernel sets of this build, from the most capable down; `supported` says whether this CPU runs them.
std::vector<IsaChoice> isa_choices() {
  std::vector<IsaChoice> out;
#if defined(LK_HAVE_AVX2)
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
  const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
                      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq");
  KernelSet amx = LK_KERNEL_SET("amx", isa_avx512);
  amx.conv3x3_bf16_bands = isa_amx::conv3x3_bf16_bands;
  amx.conv3x3_bf16_weight_grad_chunks = isa_amx::conv3x3_bf16_weight_grad_chunks;
  out.push_back({"amx", avx512 && isa_amx::usable(), amx});
  out.push_back({"avx512", avx512, LK_KERNEL_SET("avx512", isa_avx512)});
  out.push_back({"avx2", avx2, LK_KERNEL_SET("avx2", isa_avx2)});
#endif
  out.push_back({"baseline", true, LK_KERNEL_SET("baseline", isa_baseline)});
  return out;
}

#undef LK_KERNEL_SET

}  // namespace

bool has_bf16_arithmetic() {
#if defined(LK_HAVE_AVX2)
  __builtin_cpu_init();
  // AVX512_BF16 alone: every AMX-BF16 CPU has it, and clang before 19 rejects the "amx-bf16" feature name.
  return __builtin_cpu_supports("avx512bf16");
#else
  return false;
#endif
}

std::vector<std::string> supported_isas() {
  std::vector<std::string> out;
  for (const IsaChoice& c : isa_choices())
    if (c.supported) out.push_back(c.name);
  return out;
}

// The instruction set chosen among `choices` (this build's sets, most capable first; second: whether the CPU runs
// it) for LATTICE_KERNELS_CPU_ISA = want: empty picks the most capable one the CPU runs (baseline always runs); a
// name forces that set, and a set the CPU lacks or a name this build does not have is an error that says what
// would work.
std::string choose_isa(const std::string& want, const std::vector<std::pair<std::string, bool>>& choices) {
  std::string names, runs;
  for (const auto& [name, ok] : choices) {
    names += std::string(names.empty() ? "'" : ", '") + name + "'";
    if (ok) runs += (runs.empty() ? "" : ", ") + name;
  }
  for (const auto& [name, ok] : choices) {
    if (want.empty() ? !ok : want != name) continue;
    TORCH_CHECK(ok, "LATTICE_KERNELS_CPU_ISA=", want, " but this CPU lacks ", name, " (it runs ", runs,
                "); unset it or pick one of those");
    return name;
  }
  TORCH_CHECK(!want.empty(), "lattice_kernels: no instruction set of this build (", names, ") runs on this CPU");
  TORCH_CHECK(false, "LATTICE_KERNELS_CPU_ISA must be one of ", names, " (this build), got '", want, "'");
}

// The instruction set is chosen once: LATTICE_KERNELS_CPU_ISA=amx|avx512|avx2|baseline forces one (tests run each the
// CPU has), otherwise the most capable one this CPU runs (AVX-512 with AMX-BF16, AVX-512 F/VL/BW/DQ, else AVX2 with
// FMA and F16C).
const KernelSet& kernels() {
  static const KernelSet chosen = [] {
    const char* env = std::getenv("LATTICE_KERNELS_CPU_ISA");
    const std::vector<IsaChoice> choices = isa_choices();
    std::vector<std::pair<std::string, bool>> offered;
    for (const IsaChoice& c : choices) offered.emplace_back(c.name, c.supported);
    const std::string name = choose_isa(env ? env : "", offered);
    for (const IsaChoice& c : choices)
      if (name == c.name) return c.set;
    TORCH_CHECK(false, "lattice_kernels: internal error: no kernel set named ", name);
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
