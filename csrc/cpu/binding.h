// What the CPU bindings of the op families share: the kernel set chosen for this CPU, the streaming-store rule, the
// parallel loop over work items and the fixed-order merge of partial statistics.
#pragma once
#include <ATen/Parallel.h>

#include <string>
#include <utility>
#include <vector>

#include "../binding_common.h"
#include "kernels.h"

namespace lk {
namespace cpu {

// The kernels of the instruction set chosen once for this process (LATTICE_KERNELS_CPU_ISA, else the CPU's best).
const KernelSet& kernels();
std::vector<std::string> supported_isas();
// Whether this CPU has bf16 arithmetic (AVX512_BF16; every AMX-BF16 CPU has it too), which oneDNN uses for bf16
// convolutions and GEMMs.
bool has_bf16_arithmetic();
std::string choose_isa(const std::string& want, const std::vector<std::pair<std::string, bool>>& choices);

// Whether a call writing n_outputs tensors like `like` uses streaming stores (LATTICE_KERNELS_STREAM_BYTES).
bool stream_outputs(const at::Tensor& like, int64_t n_outputs);

void check_cpu(const at::Tensor& t, const char* name);

// mean and std (N, C) in the statistics type from per-chunk (mean, M2) partials of every (n, c).
std::pair<at::Tensor, at::Tensor> merge_stats(const Geometry& g, const at::Tensor& pm, const at::Tensor& pv,
                                              const at::Tensor& x);

// Runs fn(begin, end, scratch) over the work items in parallel; each call gets a scratch of 4*C doubles. Grain:
// about 32K elements per task, so small tensors stay on one thread.
template <class F> void for_items(const Geometry& g, F fn) {
  const int64_t per_item = g.interleaved ? g.chunk * g.C : g.chunk;
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, per_item));
  at::parallel_for(0, g.items(), grain, [&](int64_t b, int64_t e) {
    std::vector<double> scratch(4 * g.C);
    fn(b, e, scratch.data());
  });
}

}  // namespace cpu
}  // namespace lk
